"""A result the spool's file system has no room for fails its job, and only its job.

Taken for disk trouble, such a record was tried again after each pause for ever: every
claim paused meanwhile, a cancel never applied, a stop requeued the run to do it all
again (QA: a 30 MB result on a disk with 13 MB free stopped the spool for good).  And a
record written after a pause kept the duration the run had, not the pause's too.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from finishkit import NoStatus, claimed_run, new_spool

from processor import finish
from processor.finish import LARGE_RESULT_BYTES, Finisher
from processor.run import Run
from processor.runner import Outcome
from processor.tools import BaseTool
from spool.clock import SystemClock
from spool.errors import SpoolIOError
from spool.models import Job
from spool.states import JobState
from spool.transitions import Spool

BIG = b'"' + b"x" * (LARGE_RESULT_BYTES + 10) + b'"'


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return new_spool(tmp_path)


@pytest.fixture
def run(spool: Spool) -> Iterator[Run]:
    with claimed_run(spool, Job(tool="big"), BaseTool, 60.0) as run:
        yield run


TROUBLE: list[SpoolIOError] = []
"""What the processor's end took for disk trouble (it pauses every claim for it)."""


def _finisher(spool: Spool) -> Finisher:
    def end(run: Run, action: Callable[[], Any]) -> None:
        """As the processor's ``_end``: disk trouble starts its I/O pause, then is raised."""
        try:
            action()
        except SpoolIOError as exc:
            TROUBLE.append(exc)
            raise

    TROUBLE.clear()
    return Finisher(spool, SystemClock(), NoStatus(), lambda job: 1, end)  # type: ignore[arg-type]


def _statvfs_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = os.statvfs

    class Room:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_frsize, self.f_bavail = 1, free
            self.f_files, self.f_favail = st.f_files, st.f_favail

    monkeypatch.setattr(finish.os, "statvfs", lambda path: Room(real(path)))


def _failed(spool: Spool) -> dict[str, Any]:
    assert not spool.layout.job(JobState.RUNNING, "j").exists()
    assert not spool.layout.job(JobState.DONE, "j").exists()
    record: dict[str, Any] = orjson.loads(spool.layout.job(JobState.FAILED, "j").read_bytes())
    return record


def _refusing(code: int) -> Callable[[Any, Any], None]:
    """A ``Spool.complete`` the disk refuses with ``code``, as the mover says it."""
    def refused(claim: Any, record: Any) -> None:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as exc:
            raise SpoolIOError(f"cannot publish j.json: {os.strerror(code)}") from exc

    return refused


def test_a_result_larger_than_the_room_left_fails_its_job(
        spool: Spool, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    _statvfs_free(monkeypatch, len(BIG) // 2)
    _finisher(spool).record(run, Outcome("j", result_json=BIG))
    error = _failed(spool)["error"]
    assert error["type"] == "tool_error"
    assert error["message"] == (
        f"the result ({len(BIG):,} bytes) could not be written to the spool: not enough room "
        f"({len(BIG) // 2:,} bytes free on its file system)")
    assert TROUBLE == []


def test_a_result_the_disk_refuses_fails_its_job(spool: Spool, run: Run,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """statvfs said there was room (a quota, a file size limit, a race): the refusal
    itself fails the job, when the result is large."""
    monkeypatch.setattr(spool, "complete", _refusing(errno.EDQUOT))
    _finisher(spool).record(run, Outcome("j", result_json=BIG))
    assert "could not be written to the spool: Disk quota exceeded" in \
        _failed(spool)["error"]["message"]
    assert TROUBLE == [], "no pause of every claim for one job's result"


def test_a_file_size_limit_fails_the_job_whatever_its_size(
        spool: Spool, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """EFBIG (RLIMIT_FSIZE: systemd's LimitFSIZE=) came out of the spool as a bare
    OSError, past every handler: the processor's loop crashed (review)."""
    def too_big(claim: Any, record: Any) -> None:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(spool, "complete", too_big)
    _finisher(spool).record(run, Outcome("j", result_json=b'"small"'))
    assert "could not be written to the spool: File too large" in \
        _failed(spool)["error"]["message"]
    assert TROUBLE == []


def test_a_small_results_refusal_is_disk_trouble_as_before(
        spool: Spool, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "complete", _refusing(errno.ENOSPC))
    with pytest.raises(SpoolIOError):
        _finisher(spool).record(run, Outcome("j", result_json=b'"small"'))
    assert spool.layout.job(JobState.RUNNING, "j").exists()


def test_a_record_written_after_a_pause_keeps_the_runs_own_duration(
        spool: Spool, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    finisher = _finisher(spool)
    real = spool.complete
    monkeypatch.setattr(spool, "complete", lambda claim, record: (_ for _ in ()).throw(
        SpoolIOError("cannot publish j.json: Input/output error")))
    with pytest.raises(SpoolIOError):
        finisher.record(run, Outcome("j", result_json=b"1"))
    ended = run.ended
    assert ended is not None
    time.sleep(0.3)  # the pause
    monkeypatch.setattr(spool, "complete", real)
    finisher.record(run, Outcome("j", result_json=b"1"))
    record = orjson.loads(spool.layout.job(JobState.DONE, "j").read_bytes())
    assert record["duration_s"] == round(ended[0] - run.started, 6) < 0.3
