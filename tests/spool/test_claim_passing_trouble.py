"""A claim whose look at its job's open file fails for a passing reason (ESTALE: an NFS
handle gone stale; ENOMEM: kernel memory short; ENOLCK: no lock to be had) raises the
spool trouble the processor waits out (:class:`~spool.errors.SpoolIOError`), the job
queued again, as the open's same errors do.  Raised raw (an ``OSError``), they crashed
the processor (a traceback, exit 1); after the move, the job was left in ``running/``
with its lease closed, an orphan the next scan failed ``abandoned``, never run.  Only an
EIO is the file's own trouble (:class:`~spool.errors.UnreadableDrop`)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import spool.lease
from spool.claim import take
from spool.errors import SpoolIOError, UnreadableDrop
from spool.fsops import Mover, StrPath
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")

JOB = b'{"tool": "echo", "params": {}}'
NEWER = b'{"tool": "echo", "params": {"message": "the newer drop"}}'
_REAL_FSTAT = os.fstat


def _spool(tmp_path: Path) -> tuple[Mover, Path, Path]:
    mover = Mover(Layout(tmp_path / "spool"), FsyncMode.NEVER)
    mover.make_folders()
    src = Path(mover.layout.job_str(JobState.PENDING, "j1"))
    dst = Path(mover.layout.job_str(JobState.RUNNING, "j1"))
    src.write_bytes(JOB)
    return mover, src, dst


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _fstat_failing(where: Path, code: int) -> Callable[[int], os.stat_result]:
    """os.fstat, failing with ``code`` for a descriptor open at ``where``."""
    def fstat(fd: int) -> os.stat_result:
        if os.readlink(f"/proc/self/fd/{fd}") == os.fspath(where):
            raise _error(code)
        return _REAL_FSTAT(fd)
    return fstat


def _replacing(mover: Mover, src: Path) -> Callable[..., bool]:
    """``mover.move``, a newer drop put at ``src`` just before the claim's move."""
    real = mover.move
    done: list[bool] = []

    def move(a: StrPath, b: StrPath, **kw: object) -> bool:
        if not done and os.fspath(a) == os.fspath(src):
            done.append(True)
            spare = src.with_name("newer.tmp")
            spare.write_bytes(NEWER)
            os.replace(spare, src)
        return real(a, b, **kw)  # type: ignore[arg-type]
    return move


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOMEM], ids=["ESTALE", "ENOMEM"])
def test_a_pending_file_whose_fstat_fails_for_now_is_spool_trouble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(os, "fstat", _fstat_failing(src, code))
    with pytest.raises(SpoolIOError, match="cannot claim j1") as raised:
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not isinstance(raised.value, UnreadableDrop)
    assert src.read_bytes() == JOB and not dst.exists()


def test_a_pending_file_whose_lock_finds_no_lock_is_spool_trouble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mover, src, dst = _spool(tmp_path)

    def try_lock(fd: int) -> bool:
        raise _error(errno.ENOLCK)

    monkeypatch.setattr("spool.claim.try_lock", try_lock)
    with pytest.raises(SpoolIOError, match="cannot claim j1: No locks available"):
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert src.read_bytes() == JOB and not dst.exists()


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOMEM], ids=["ESTALE", "ENOMEM"])
def test_a_moved_job_not_looked_up_for_now_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The lstat of the job just moved into ``running/`` fails, then (the disk the same)
    the give-back's: the job goes back to ``pending/`` all the same."""
    mover, src, dst = _spool(tmp_path)
    real_lstat = os.lstat

    def lstat(path: StrPath) -> os.stat_result:
        if os.fspath(path) == os.fspath(dst):
            raise _error(code)
        return real_lstat(path)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(SpoolIOError, match="cannot claim j1") as raised:
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not isinstance(raised.value, UnreadableDrop)
    assert not dst.exists(), "the job was left in running/ with no lease"
    assert src.read_bytes() == JOB


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOMEM], ids=["ESTALE", "ENOMEM"])
def test_a_newer_drop_whose_fstat_fails_for_now_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing(mover, src))
    monkeypatch.setattr(os, "fstat", _fstat_failing(dst, code))
    with pytest.raises(SpoolIOError, match="cannot claim j1") as raised:
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not isinstance(raised.value, UnreadableDrop)
    assert not dst.exists(), "the newer drop was left in running/ with no lease"
    assert src.read_bytes() == NEWER


def test_a_newer_drop_whose_lock_finds_no_lock_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing(mover, src))
    real_lock = spool.lease.try_lock
    locks = [0]

    def try_lock(fd: int) -> bool:
        locks[0] += 1
        if locks[0] == 2:  # the newer drop's, in running/
            raise _error(errno.ENOLCK)
        return real_lock(fd)

    monkeypatch.setattr("spool.claim.try_lock", try_lock)
    with pytest.raises(SpoolIOError, match="cannot claim j1: No locks available"):
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not dst.exists(), "the newer drop was left in running/ with no lease"
    assert src.read_bytes() == NEWER


def test_an_error_that_is_no_disk_trouble_still_gives_the_newer_drop_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error the claim has no name for (a bug: EBADF) is raised as it is, the newer
    drop given back first."""
    mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing(mover, src))
    monkeypatch.setattr(os, "fstat", _fstat_failing(dst, errno.EBADF))
    with pytest.raises(OSError) as raised:
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert raised.value.errno == errno.EBADF
    assert not dst.exists() and src.read_bytes() == NEWER


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOMEM], ids=["ESTALE", "ENOMEM"])
def test_a_moved_job_whose_read_fails_for_now_is_spool_trouble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Its read failing for a passing reason, the claim is given back and raised as the
    spool trouble its fstat's same error is, the job queued again at the pause's end:
    taken for the file's own (an EIO's UnreadableDrop), it was said unreadable and left
    until the next scan, no pause for the spool's trouble."""
    mover, src, dst = _spool(tmp_path)
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}") == os.fspath(dst):
            raise _error(code)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", read)
    with pytest.raises(SpoolIOError, match="cannot claim j1") as raised:
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not isinstance(raised.value, UnreadableDrop)
    assert not dst.exists() and src.read_bytes() == JOB
