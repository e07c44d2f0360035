"""Recovery out of descriptors decides nothing on what it could not read.

Whether an orphan's run was recorded (a completion cut short) or already requeued (a
requeue cut short) is read from the files beside it.  A read that found no descriptor
read as "no such file": the recovery pass then requeued a run whose record was already
written (the job ran twice), or failed ``abandoned`` a run whose requeue was already in
``pending/``.  Such a read is now the pass's trouble (the processor's I/O pause): the
orphan stays as it was, and the next pass, with descriptors, settles it.

The shortage is made for the one read (``open`` failing with EMFILE for that path):
with a limit alone, the pass's own writes would fail first.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from spoolkit import Holders, locate, submit

from spool import entries
from spool.lease import open_nofollow
from spool.models import Job, job_bytes
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def _killed_holding(spool: Spool, job_id: str, **args: object) -> None:
    """A process claims ``job_id`` (and does what ``args`` say), then dies by SIGKILL."""
    holders = Holders(spool)
    try:
        holders.sigkill(holders.hold(ids=[job_id], **args))
    finally:
        holders.close()


def _no_descriptor_for(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    opened: Callable[[str | os.PathLike[str]], int] = open_nofollow

    def short(target: str | os.PathLike[str]) -> int:
        if os.fspath(target) == os.fspath(path):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(target))
        return opened(target)

    monkeypatch.setattr(entries, "open_nofollow", short)


def test_a_record_that_cannot_be_read_is_not_taken_for_none(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's record, written in the claim's own tick of the file clock, is read to
    tell this run's from the run's before it: unread, the run was requeued to run again."""
    submit(spool, "tick", max_attempts=3)
    _killed_holding(spool, "tick", finish=["tick"])
    record = spool.layout.job(D, "tick")
    claimed = os.lstat(spool.layout.job(R, "tick")).st_ctime_ns
    os.utime(record, ns=(claimed, claimed))
    before = record.read_bytes()
    with monkeypatch.context() as patch:
        _no_descriptor_for(patch, record)
        with pytest.raises(OSError) as raised:
            Recovery(spool).scan()
    assert raised.value.errno == errno.EMFILE
    assert locate(spool.layout, "tick") == [R, D]  # as it was: nothing decided
    report = Recovery(spool).scan()
    assert report.finished == ["tick"] and report.requeued == []
    assert locate(spool.layout, "tick") == [D]
    assert record.read_bytes() == before


def test_a_requeue_that_cannot_be_read_is_not_taken_for_a_newer_drop(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between writing its requeue and removing the running file: unread, the
    requeue was taken for a newer drop, and the run failed ``abandoned`` beside it."""
    submit(spool, "again", max_attempts=3)
    _killed_holding(spool, "again")
    running = Job.model_validate_json(spool.layout.job(R, "again").read_bytes())
    requeued = job_bytes(running.model_copy(update={"attempts": 1}))
    pending = spool.layout.job(P, "again")
    pending.write_bytes(requeued)
    with monkeypatch.context() as patch:
        _no_descriptor_for(patch, pending)
        with pytest.raises(OSError) as raised:
            Recovery(spool).scan()
    assert raised.value.errno == errno.EMFILE
    assert locate(spool.layout, "again") == [P, R]
    report = Recovery(spool).scan()
    assert report.finished == ["again"] and report.abandoned == []
    assert locate(spool.layout, "again") == [P]
    assert pending.read_bytes() == requeued
