"""A child forked without an exec does not hold this process's claim leases.

A FAST tool runs on a thread of the processor; a child it forks (``os.fork()``,
``multiprocessing``'s fork start method) got a copy of every claim lease's descriptor
open at that moment, and a flock stays held while any copy is open.  Once the processor
was SIGKILLed, the jobs it was running stayed locked in ``running/``, taken for a live
owner's by every recovery pass, for as long as the child lived (h416).  The child closes
its copies (:func:`spool.lease._forked`); the parent's locks stay held."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from spoolkit import submit

import spool.claim as claim_module
import spool.orphans as orphans_module
from spool.claim import Claim
from spool.lease import CLAIMS, is_locked
from spool.orphans import lease
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


@contextmanager
def forked(check: Callable[[], bytes] = lambda: b"r") -> Iterator[bytes]:
    """A child forked for the block, which writes what ``check`` returns (in it, its fork
    handlers done) and waits for the block's end; what it wrote is given."""
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(from_child, check())
            os.read(to_child, 1)
        finally:
            os._exit(0)
    try:
        yield os.read(to_parent, 100)
    finally:
        os.write(from_parent, b"x")
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, to_parent, from_child):
            os.close(fd)


def _claimed(spool: Spool, job_id: str) -> tuple[Claim, Path]:
    submit(spool, job_id)
    claim = spool.claim(job_id)
    assert claim is not None
    return claim, spool.layout.job(JobState.RUNNING, job_id)


def test_a_forked_child_does_not_hold_a_claim_past_its_parent(spool: Spool) -> None:
    claim, path = _claimed(spool, "a")
    with forked() as said:
        assert said == b"r"
        assert is_locked(path), "the parent's lock stays held"
        claim.close()  # as the parent's death does
        assert is_locked(path) is False, "the child held the claim's lock"


def test_a_forked_child_does_not_hold_a_recovery_lease(spool: Spool) -> None:
    claim, path = _claimed(spool, "a")
    claim.close()
    held = lease(path, "a")
    assert held is not None
    with forked():
        assert is_locked(path)
        held.close()
        assert is_locked(path) is False, "the child held the recovery's lock"


def _say_then_wait(said: int, release: int) -> None:
    os.write(said, b"r")  # its fork handlers done
    os.read(release, 1)


def test_a_multiprocessing_fork_child_does_not_hold_a_claim(spool: Spool) -> None:
    claim, path = _claimed(spool, "a")
    heard, said = os.pipe()
    release, hold = os.pipe()
    child = multiprocessing.get_context("fork").Process(target=_say_then_wait,
                                                        args=(said, release))
    child.start()
    try:
        assert os.read(heard, 1) == b"r"
        claim.close()
        assert is_locked(path) is False, "the multiprocessing child held the claim's lock"
    finally:
        os.write(hold, b"x")
        child.join(10)
        child.close()
        for fd in (heard, said, release, hold):
            os.close(fd)


def test_the_child_closes_only_the_claims_descriptors(spool: Spool, tmp_path: Path) -> None:
    """A descriptor that is no claim stays open in the child, and so does one whose number
    a claim noted but that names another file now (closed behind the registry's back)."""
    claim, _ = _claimed(spool, "a")
    other = tmp_path / "other"
    other.write_bytes(b"")
    plain = os.open(other, os.O_RDONLY | os.O_CLOEXEC)
    stale = os.open(other, os.O_RDONLY | os.O_CLOEXEC)
    CLAIMS[stale] = os.stat(spool.layout.root)  # not this file

    def still_open() -> bytes:
        return bytes([_is_open(claim.fd), _is_open(plain), _is_open(stale), len(CLAIMS)])

    try:
        with forked(still_open) as said:
            assert list(said) == [False, True, True, 0]
        noted = CLAIMS.get(claim.fd)
        assert noted is not None and noted.st_ino == os.fstat(claim.fd).st_ino, \
            "the parent's stays noted"
    finally:
        CLAIMS.pop(stale, None)
        os.close(plain)
        os.close(stale)
        claim.close()
    assert claim.fd not in CLAIMS


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def test_a_number_noted_that_names_another_devices_file_stays_open(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A number noted of a claim closed a moment ago may name, in the child, a descriptor
    a FAST tool opened meanwhile (a pipe, a socket, a file elsewhere) whose inode number
    is the job file's on its own device: the child keeps it."""
    claim, _ = _claimed(spool, "a")
    real = os.fstat

    def elsewhere(fd: int) -> os.stat_result:  # claim.fd, as another device's file
        st = real(fd)
        if fd != claim.fd:
            return st
        fields = list(st)
        fields[2] = st.st_dev + 1  # st_dev
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", elsewhere)
    try:
        with forked(lambda: bytes([_is_open(claim.fd)])) as said:
            monkeypatch.undo()
            assert said == bytes([True]), "the child closed another device's file"
    finally:
        claim.close()


class _Forks:
    """A child forked at a moment a test picks (as a FAST tool's thread forks while the
    claiming thread waits in a syscall), which lives until :meth:`end`."""

    def __init__(self) -> None:
        self.pid = 0
        self.release, self.hold = os.pipe()
        self.heard, self.said = os.pipe()

    def fork(self) -> None:
        assert not self.pid
        pid = os.fork()
        if pid == 0:
            try:
                os.write(self.said, b"r")  # its fork handlers done
                os.read(self.release, 1)
            finally:
                os._exit(0)
        self.pid = pid
        assert os.read(self.heard, 1) == b"r"

    def end(self) -> None:
        os.write(self.hold, b"x")
        if self.pid:
            os.waitpid(self.pid, 0)
        for fd in (self.release, self.hold, self.heard, self.said):
            os.close(fd)


def test_a_child_forked_during_a_claims_close_does_not_keep_its_lock(spool: Spool) -> None:
    claim, path = _claimed(spool, "a")
    child = _Forks()

    def forking_close(fd: int) -> None:  # os.close lets the GIL go before it closes
        child.fork()
        os.close(fd)

    try:
        claim.close(forking_close)
        assert child.pid
        assert is_locked(path) is False, "the child forked in the close held the lock"
    finally:
        child.end()


def test_a_child_forked_during_a_claims_open_does_not_keep_its_lock(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "a")
    child = _Forks()
    real = claim_module._open

    def forking_open(src: str, job_id: str) -> tuple[int, os.stat_result] | None:
        opened = real(src, job_id)  # its fstat lets the GIL go
        child.fork()
        return opened

    monkeypatch.setattr(claim_module, "_open", forking_open)
    try:
        claim = spool.claim("a")
        assert claim is not None and child.pid
        monkeypatch.undo()
        claim.close()
        assert is_locked(spool.layout.job(JobState.RUNNING, "a")) is False, \
            "the child forked at the claim's open held the lock taken after it"
    finally:
        child.end()


def test_a_child_forked_during_a_recovery_leases_read_does_not_keep_its_lock(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    claim, path = _claimed(spool, "a")
    claim.close()
    child = _Forks()
    real = orphans_module.read_fd

    def forking_read(fd: int, *args: object) -> bytes:  # a read lets the GIL go
        child.fork()
        return real(fd, *args)

    monkeypatch.setattr(orphans_module, "read_fd", forking_read)
    try:
        held = lease(path, "a")
        assert held is not None and child.pid
        monkeypatch.undo()
        held.close()
        assert is_locked(path) is False, "the child forked in the lease's read held its lock"
    finally:
        child.end()


def test_a_child_forked_during_recoverys_look_at_a_finishing_run_keeps_no_lock(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery tries the lock of a running file to tell a run between its record and its
    file's removal (orphans._finishing): taken, it is let go at once, unlocked, so a child
    forked in between holds nothing."""
    claim, path = _claimed(spool, "a")
    claim.close()
    child = _Forks()
    real = orphans_module.try_lock

    def forking_lock(fd: int) -> bool:  # flock lets the GIL go
        took = real(fd)
        child.fork()
        return took

    monkeypatch.setattr(orphans_module, "try_lock", forking_lock)
    try:
        assert orphans_module._finishing(spool.layout, path, "a") is True
        assert child.pid
        monkeypatch.undo()
        assert is_locked(path) is False, "the child forked at the lock's try held it"
    finally:
        child.end()
