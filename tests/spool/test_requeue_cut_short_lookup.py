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

from spool.errors import SpoolIOError
from spool.fsops import StrPath
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
