"""A child forked without an exec does not hold this process's claim leases.

A FAST tool runs on a thread of the processor; a child it forks (``os.fork()``,
``multiprocessing``'s fork start method) got a copy of every claim lease's descriptor
open at that moment, and a flock stays held while any copy is open.  Once the processor
was SIGKILLed, the jobs it was running stayed locked in ``running/``, taken for a live
owner's by every recovery pass, for as long as the child lived (h416).  The child closes
its copies (:func:`spool.lease._forked`); the parent's locks stay held."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from spoolkit import submit

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
    CLAIMS[stale] = os.fstat(plain).st_ino + 1  # not this file's inode

    def still_open() -> bytes:
        def is_open(fd: int) -> bool:
            try:
                os.fstat(fd)
            except OSError:
                return False
            return True
        return bytes([is_open(claim.fd), is_open(plain), is_open(stale), len(CLAIMS)])

    try:
        with forked(still_open) as said:
            assert list(said) == [False, True, True, 0]
        assert CLAIMS.get(claim.fd) == os.fstat(claim.fd).st_ino, "the parent's stays noted"
    finally:
        CLAIMS.pop(stale, None)
        os.close(plain)
        os.close(stale)
        claim.close()
    assert claim.fd not in CLAIMS
