"""``spoolq retry`` against a re-run of the id failing at the same time.

Retry reads ``failed/<id>.json`` (to refuse a quarantine's record and to build the
pending job), then takes the file by name into a staging name.  A re-drop of the id
that failed in between replaced the record by rename (DESIGN section 9): retry took
the new run's record, wrote the job of the record it had read into ``pending/``, and
removed the one it took.  The newer run's record was lost, and its job (a recurring
job's parameters for the day) never ran again: the day before's ran instead.  Retry
must take only the record it read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from spoolkit import done_record, listing, make_spool, submit

from spool import submission
from spool.client import Client
from spool.errors import ConflictError, ErrorType
from spool.models import ErrorInfo, Record
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, F = JobState.PENDING, JobState.FAILED


def _fail_run(spool: Spool, job_id: str, message: str) -> None:
    claim = spool.claim(job_id)
    assert claim is not None
    record = done_record(claim, None, F)
    record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message=message)
    spool.fail(claim, record)


def _after_each_read(monkeypatch: pytest.MonkeyPatch, then: list[Callable[[], None]]) -> None:
    """Make retry run the next of ``then`` right after each read of the failed record:
    between retry's read and its take."""
    read = submission._failed_record

    def hooked(fd: int, job_id: str) -> tuple[Record, os.stat_result]:
        read_and_stat = read(fd, job_id)
        if then:
            then.pop(0)()
        return read_and_stat

    monkeypatch.setattr(submission, "_failed_record", hooked)


def test_retry_takes_only_the_failed_record_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "daily", params={"message": "day 1"})
    _fail_run(spool, "daily", "day 1 failed")
    submit(spool, "daily", params={"message": "day 2"})  # fails while the retry runs
    _after_each_read(monkeypatch, [lambda: _fail_run(spool, "daily", "day 2 failed")])

    record = Client(layout, spool.mover).retry("daily")

    # The record read again is the newer run's: that run's job is the one retried.
    assert record.state is P
    assert record.params == {"message": "day 2"}
    pending = orjson.loads(layout.job(P, "daily").read_bytes())
    assert pending["params"] == {"message": "day 2"}
    assert pending["error"]["message"] == "day 2 failed"
    assert listing(layout.folder(F)) == []
    assert listing(layout.stage) == []


def test_a_retry_whose_record_keeps_being_replaced_is_a_conflict_that_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaced after every read, the record is never taken for an older one's job:
    retry gives up (a conflict), and the last run's record stays."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "daily", params={"message": "day 0"})
    _fail_run(spool, "daily", "day 0 failed")
    def rerun(day: int) -> Callable[[], None]:
        def failing_again() -> None:
            submit(spool, "daily", params={"message": f"day {day}"})
            _fail_run(spool, "daily", f"day {day} failed")
        return failing_again

    _after_each_read(monkeypatch, [rerun(1), rerun(2), rerun(3)])

    with pytest.raises(ConflictError, match="keeps failing again"):
        Client(layout, spool.mover).retry("daily")

    assert listing(layout.folder(P)) == []
    kept = orjson.loads(layout.job(F, "daily").read_bytes())
    assert kept["error"]["message"] == "day 3 failed"
    assert listing(layout.stage) == []


def test_a_quarantined_record_is_not_retried_and_says_where_its_bytes_are(
        tmp_path: Path) -> None:
    """A quarantine keeps the file beside its record: retry names it.  Recovery's record
    of a file in running/ it could not read (no processor's) kept no bytes, and retry
    said "fix the file" all the same (QA)."""
    spool = make_spool(tmp_path / "spool")
    bad = spool.layout.folder(JobState.PENDING) / "bad.json"
    bad.write_bytes(b"{not json")
    st = bad.stat()
    record = spool.quarantine("bad.json", "malformed JSON", kind="file", size=st.st_size,
                              mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    assert record is not None and record.id == "bad"
    with pytest.raises(ConflictError) as kept:
        submission.retry(spool, "bad")
    assert "fix its file (" in str(kept.value)
    assert str(spool.layout.original("bad")) in str(kept.value)
    spool.layout.original("bad").unlink()
    with pytest.raises(ConflictError) as gone:
        submission.retry(spool, "bad")
    assert "its bytes were not kept: submit the job anew" in str(gone.value), gone.value


def test_a_retry_of_a_job_quarantined_as_too_large_says_how_to_drop_it_again(
        tmp_path: Path) -> None:
    """Quarantined over SPOOL_MAX_JOB_BYTES, then the limit raised: the file needs no
    fix, and retry said "fix its file" all the same (h394).  It names the command that
    drops it again."""
    spool = make_spool(tmp_path / "the spool")  # a command to copy: the path quoted
    big = spool.layout.folder(JobState.PENDING) / "big.json"
    big.write_bytes(b'{"tool": "echo", "params": {"message": "' + b"x" * 3000 + b'"}}')
    st = big.stat()
    record = spool.quarantine("big.json", f"too large: {st.st_size} bytes is over "
                              "SPOOL_MAX_JOB_BYTES=1000", kind="file", size=st.st_size,
                              mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    assert record is not None and record.id == "big"
    with pytest.raises(ConflictError) as kept:
        submission.retry(spool, "big")
    assert "fix its file" not in str(kept.value)
    assert (f"spoolq submit --file '{spool.layout.original('big')}' --id big"
            in str(kept.value)), kept.value
