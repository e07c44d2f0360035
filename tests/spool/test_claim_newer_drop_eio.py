"""A claim that finds a newer drop in ``running/`` (the file replaced between its open and
its move) and whose look at that newer file fails with EIO (a bad sector under its inode):
that file's trouble, as the first file's.  The error got out raw (an ``OSError``, not
:class:`~spool.errors.UnreadableDrop`): the processor crashed (a traceback, exit 1), the
newer drop left in ``running/`` with no lease, and the descriptor of the newer drop was
left open when its first fstat or its lock failed."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import spool.lease
from spool.claim import take
from spool.errors import UnreadableDrop
from spool.fsops import Mover, StrPath
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState

_REAL_FSTAT = os.fstat


def _replacing_mover(mover: Mover, src: Path, newer: bytes) -> Callable[..., bool]:
    """``mover.move``, a newer drop put at ``src`` just before the claim's move."""
    real = mover.move
    done: list[bool] = []

    def move(a: StrPath, b: StrPath, **kw: object) -> bool:
        if not done and os.fspath(a) == os.fspath(src):
            done.append(True)
            spare = src.with_name("newer.tmp")
            spare.write_bytes(newer)
            os.replace(spare, src)
        return real(a, b, **kw)  # type: ignore[arg-type]
    return move


def _failing_fstat(newer: bytes, nth: int) -> Callable[[int], os.stat_result]:
    """os.fstat, failing with EIO at the ``nth`` look at the newer drop's inode."""
    seen = [0]

    def fstat(fd: int) -> os.stat_result:
        st = _REAL_FSTAT(fd)
        if st.st_size == len(newer) and os.readlink(f"/proc/self/fd/{fd}").endswith(
                "j1.json"):
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return st
    return fstat


def _spool(tmp_path: Path) -> tuple[Layout, Mover, Path, Path]:
    layout = Layout(tmp_path / "spool")
    mover = Mover(layout, FsyncMode.NEVER)
    mover.make_folders()
    src = Path(layout.job_str(JobState.PENDING, "j1"))
    dst = Path(layout.job_str(JobState.RUNNING, "j1"))
    src.write_bytes(b'{"tool": "echo", "params": {}}')
    return layout, mover, src, dst


NEWER = b'{"tool": "echo", "params": {"message": "the newer drop"}}'


def test_a_newer_drop_the_disk_cannot_stat_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    _, mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing_mover(mover, src, NEWER))
    monkeypatch.setattr(os, "fstat", _failing_fstat(NEWER, 1))
    with pytest.raises(UnreadableDrop, match="cannot claim j1: Input/output error"):
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not dst.exists(), "the newer drop was left in running/"
    assert src.read_bytes() == NEWER


def test_a_newer_drop_whose_lock_fails_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    _, mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing_mover(mover, src, NEWER))
    real_lock = spool.lease.try_lock
    locks = [0]

    def try_lock(fd: int) -> bool:
        locks[0] += 1
        if locks[0] == 2:  # the newer drop's, in running/
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_lock(fd)

    monkeypatch.setattr("spool.claim.try_lock", try_lock)
    with pytest.raises(UnreadableDrop, match="cannot claim j1: Input/output error"):
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert not dst.exists(), "the newer drop was left in running/"
    assert src.read_bytes() == NEWER


def test_a_newer_drop_is_claimed_as_it_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    """The disk sound, the newer drop is the one claimed, its content read whole."""
    _, mover, src, dst = _spool(tmp_path)
    monkeypatch.setattr(mover, "move", _replacing_mover(mover, src, NEWER))
    claim = take(mover, src, dst, "j1")
    assert claim is not None
    try:
        assert claim.data == NEWER and dst.read_bytes() == NEWER and not src.exists()
    finally:
        claim.close()


def test_a_claimed_file_unreadable_then_not_looked_up_is_given_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None) -> None:
    """The read of the job just moved into ``running/`` fails with EIO, and so does the
    give-back's lstat of it: the give-back did nothing, the job left in ``running/`` with
    its lease closed (an orphan under a live processor, failed ``abandoned``)."""
    _, mover, src, dst = _spool(tmp_path)
    real_lstat, real_read = os.lstat, os.read
    looks = [0]

    def lstat(path: StrPath) -> os.stat_result:
        if os.fspath(path) == os.fspath(dst):
            looks[0] += 1
            if looks[0] == 2:  # the give-back's, after the claim's own went through
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_lstat(path)

    def read(fd: int, n: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}") == os.fspath(dst):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_read(fd, n)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "read", read)
    with pytest.raises(UnreadableDrop, match="cannot claim j1: Input/output error"):
        take(mover, src, dst, "j1")
    monkeypatch.undo()
    assert looks[0] == 2
    assert not dst.exists(), "the job was left in running/ with no lease"
    assert src.exists()
