"""A recovery pass whose flock finds no lock to be had (ENOLCK: the kernel out of memory
for lock records, or NFS's lock daemon short of them) is spool trouble that passes, as
the claim's is since ac1f7ad: the processor waits it out (its I/O pause) and tries again
at the next pass.  Raised raw, the periodic scan's OSError was none it knew (a
traceback, exit 1), and the lock of a dead owner's file left its descriptor open."""

from __future__ import annotations

import contextlib
import errno
import os

import pytest
from spoolkit import locate, submit

from spool.errors import SpoolIOError
from spool.fsops import failing_read
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _open_files() -> list[str]:
    files = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            files.append(os.readlink(f"/proc/self/fd/{fd}"))
    return files


def _no_locks(fd: int) -> bool:
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_an_orphans_lock_finding_no_lock_is_spool_trouble(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x", max_attempts=3)
    claim = spool.claim("x")
    assert claim is not None
    claim.close()  # its processor died: an orphan
    monkeypatch.setattr("spool.orphans.try_lock", _no_locks)
    with pytest.raises(SpoolIOError, match="No locks available"):
        Recovery(spool).scan()
    monkeypatch.undo()
    assert locate(spool.layout, "x") == [JobState.RUNNING]
    assert Recovery(spool).scan().requeued == ["x"]  # locks again


def test_a_dead_owners_lock_finding_no_lock_is_spool_trouble(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass raises what the processor's periodic scan waits out, and leaves no
    descriptor of the owner's lock file open."""
    lock = spool.layout.owner_lock("gone")
    lock.write_bytes(b"")
    monkeypatch.setattr("spool.lease.try_lock", _no_locks)
    with pytest.raises(OSError) as raised:
        Recovery(spool).scan()
    monkeypatch.undo()
    assert failing_read(raised.value, "recovery pass") is not None
    assert lock.exists()
    assert os.fspath(lock) not in _open_files(), "the owner's lock file was left open"
    Recovery(spool).scan()
    assert not lock.exists()

