"""A run that fails ``unknown_tool`` or ``invalid_params`` keeps its job file's bytes.

DESIGN section 2: "Anything else in pending/ (..., unknown tool, invalid params) ends in
failed/ with a record that says why; the original bytes are kept (beside the record, see
section 9) so nothing a client sent is lost."  Their records held the job as parsed (a
key given twice as its last value, the spacing gone) and the file's inode was recycled
for the next record.  Now ``failed/<id>.orig`` holds the bytes, the record's ``source``
names them, and the original lives and goes with its record: replaced by the id's next
record, taken by a retry and by purge, never given a quarantine's record by recovery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from spoolkit import (
    FakeClock,
    age,
    done_record,
    drop_raw,
    listing,
    locate,
    make_spool,
    read_json,
    submit,
)

from spool.client import Client
from spool.clock import SystemClock
from spool.errors import ConflictError, ErrorType
from spool.models import ErrorInfo
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED
SENT = b'{"tool": "no_such_tool",\n "params": {"window": 5, "window": 20}}\n'


@pytest.fixture(params=["processor", "plain"])
def kept_spool(request: pytest.FixtureRequest, tmp_path: Path,
               clock: FakeClock) -> Iterator[Spool]:
    """A spool as the processor runs it (recycled inodes, followed folders), and a plain one."""
    as_processor = request.param == "processor"
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=as_processor,
                       follow=as_processor)
    try:
        yield spool
    finally:
        spool.close()


def fail_run(spool: Spool, job_id: str, kind: ErrorType = ErrorType.UNKNOWN_TOOL) -> None:
    """Claim pending ``job_id`` and fail it with ``kind`` as the processor's finisher does
    (the job file kept for the two kinds that keep it)."""
    claim = spool.claim(job_id)
    assert claim is not None
    record = done_record(claim, state=F)
    record.error = ErrorInfo(type=kind, message=f"{kind.value} here")
    spool.fail(claim, record, keep_original=kind in (ErrorType.UNKNOWN_TOOL,
                                                      ErrorType.INVALID_PARAMS))


def client_of(spool: Spool) -> Client:
    return Client(spool.layout, spool.mover, SystemClock())


@pytest.mark.parametrize("kind", [ErrorType.UNKNOWN_TOOL, ErrorType.INVALID_PARAMS])
def test_the_job_file_is_kept_byte_for_byte_beside_its_record(kept_spool: Spool,
                                                             kind: ErrorType) -> None:
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo", kind)
    assert locate(layout, "typo") == [F]
    assert layout.original("typo").read_bytes() == SENT
    record = read_json(layout.job(F, "typo"))
    assert record["error"]["type"] == kind.value
    assert record["source"] == {"name": "typo.json", "size": len(SENT), "kind": "file"}
    assert record["params"] == {"window": 20}  # as parsed: why the bytes are kept
    # The next record's inode is not the kept file's (a recycled inode would be).
    drop_raw(layout, "next.json", b'{"tool": "echo"}')
    fail_run(kept_spool, "next", ErrorType.TOOL_ERROR)
    assert layout.original("typo").read_bytes() == SENT
    assert not os.path.lexists(layout.original("next"))
    assert "source" not in read_json(layout.job(F, "next"))


@pytest.mark.parametrize("ends", [D, F])
def test_the_ids_next_record_takes_the_kept_file_away(kept_spool: Spool, ends: JobState,
                                                      ) -> None:
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo")
    submit(kept_spool, "typo")  # fixed and dropped again
    claim = kept_spool.claim("typo")
    assert claim is not None
    record = done_record(claim, {"ok": True}, state=ends)
    if ends is F:
        record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message="the tool failed")
        kept_spool.fail(claim, record)
    else:
        kept_spool.complete(claim, record)
    assert locate(layout, "typo") == [ends]
    assert not os.path.lexists(layout.original("typo"))


def test_a_second_unknown_tool_run_keeps_its_own_bytes(kept_spool: Spool) -> None:
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo")
    again = b'{"tool": "no_such_tool_either"}'
    drop_raw(layout, "typo.json", again)
    fail_run(kept_spool, "typo")
    assert layout.original("typo").read_bytes() == again
    assert read_json(layout.job(F, "typo"))["source"]["size"] == len(again)


def test_a_retry_takes_the_kept_file_with_its_record(kept_spool: Spool) -> None:
    """The job is pending again, its record and kept file gone: left, recovery gave the
    file a quarantine's record beside the pending job."""
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo")
    client_of(kept_spool).retry("typo")
    assert locate(layout, "typo") == [P]
    assert not os.path.lexists(layout.original("typo"))
    Recovery(kept_spool).scan()
    assert locate(layout, "typo") == [P]
    assert listing(layout.folder(F)) == []


def test_a_refused_retry_leaves_record_and_kept_file_as_they_were(kept_spool: Spool) -> None:
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo")
    record = layout.job(F, "typo").read_bytes()
    submit(kept_spool, "typo")  # dropped again meanwhile: the retry is refused
    with pytest.raises(ConflictError, match="already pending"):
        client_of(kept_spool).retry("typo")
    assert layout.job(F, "typo").read_bytes() == record
    assert layout.original("typo").read_bytes() == SENT


def test_purge_takes_the_kept_file_with_its_record(kept_spool: Spool) -> None:
    layout = kept_spool.layout
    drop_raw(layout, "typo.json", SENT)
    fail_run(kept_spool, "typo")
    age(layout.job(F, "typo"))
    age(layout.original("typo"))
    report = client_of(kept_spool).purge(3600)
    assert report.removed == 1, report
    assert listing(layout.folder(F)) == []
    assert not Recovery(kept_spool).scan().changed
    assert listing(layout.folder(F)) == []
