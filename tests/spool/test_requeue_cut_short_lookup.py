"""A stop's requeue (``Spool.requeue_cut_short``) written, then failed by the disk
(its folder's sync), whose look for the pending file the disk fails too (EIO): raised,
left for recovery, which finishes that requeue.  ``os.path.lexists`` took the error for
no pending file; the running file's move back found the requeue at its name and was
taken for a newer drop of the id, and the run was failed ``abandoned`` beside its own
requeue: a wrong terminal record (``spoolq wait`` exited 1) for a job still to run."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from spoolkit import locate, submit

from spool import transitions
from spool.errors import SpoolIOError
from spool.fsops import StrPath, is_there
from spool.jobfile import parse_job
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_requeue_written_is_not_taken_for_a_newer_drop_when_its_lookup_fails(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x", max_attempts=3)
    claim = spool.claim("x")
    assert claim is not None
    job = parse_job(claim.data)
    pending = spool.layout.job_str(JobState.PENDING, "x")
    publish = spool.mover.publish

    def publish_then_fail(dest: StrPath, data: bytes, **kw: object) -> bool:
        publish(dest, data, **kw)  # type: ignore[arg-type]
        raise SpoolIOError("cannot sync pending/: Input/output error")

    real_lstat = os.lstat

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == pending:
            raise OSError(errno.EIO, os.strerror(errno.EIO), pending)
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(spool.mover, "publish", publish_then_fail)
    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(SpoolIOError):
        spool.requeue_cut_short(claim, job)
    monkeypatch.undo()
    claim.close()  # the processor stops: its run is left for recovery
    assert sorted(locate(spool.layout, "x")) == [JobState.PENDING, JobState.RUNNING]
    report = Recovery(spool).scan()
    assert report.finished == ["x"] and report.abandoned == []
    assert locate(spool.layout, "x") == [JobState.PENDING]
    assert parse_job(Path(pending).read_bytes()).attempts == job.attempts


def test_a_cut_short_runs_move_back_never_replaces_a_drop_made_after_its_lookup(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses the requeue's write (ENOSPC), so the running file itself goes
    back by rename; a client's newer drop of the id that lands between the look for a
    pending file and that rename stands: the move back never replaces (it returns False,
    and the caller fails the run as superseded), where a plain rename lost the newer job
    without a trace."""
    submit(spool, "x", params={"v": "old"})
    claim = spool.claim("x")
    assert claim is not None
    job = parse_job(claim.data)
    pending = spool.layout.job_str(JobState.PENDING, "x")
    newer = b'{"tool": "echo", "params": {"v": "new"}}'

    def refuse(dest: StrPath, data: bytes, **kw: object) -> bool:
        raise SpoolIOError("cannot publish x.json: No space left on device")

    def is_there_then_a_drop(path: StrPath, what: str) -> bool:
        there = is_there(path, what)
        if os.fspath(path) == pending and not there:
            Path(pending).write_bytes(newer)  # the client's drop, just after the lookup
        return there

    monkeypatch.setattr(spool.mover, "publish", refuse)
    monkeypatch.setattr(transitions, "is_there", is_there_then_a_drop)
    try:
        assert spool.requeue_cut_short(claim, job) is False
        assert not claim.closed, "a refused requeue leaves the claim with the caller"
    finally:
        monkeypatch.undo()
        claim.close()
    assert Path(pending).read_bytes() == newer
    assert sorted(locate(spool.layout, "x")) == [JobState.PENDING, JobState.RUNNING]
