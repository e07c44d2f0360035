"""The failures of a job's earlier runs (``earlier_errors``, :mod:`spool.history`) in
the spool library: recovery's requeues of a dead processor's runs, ``retry``, cancel,
the reader's views, the bound, and files written before the field.

The processor's own requeues and the CLI beside a real daemon are in
``tests/processor/test_earlier_errors.py``.
"""

from __future__ import annotations

import orjson
import pytest
from spoolkit import FakeClock, Holders, done_record, read_json, submit

from spool.cli.render import record_lines
from spool.client import Client
from spool.errors import ErrorType
from spool.history import (
    EARLIER_KEPT,
    EARLIER_MAX_BYTES,
    EARLIER_MESSAGE_CHARS,
    entry,
    retry_error,
)
from spool.jobfile import parse_job, record_from_job
from spool.models import (
    EARLIER_DROPPED_MAX,
    ErrorInfo,
    Job,
    Record,
    job_bytes,
    parse_record,
    schemas,
)
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def kinds(entries: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(e["attempt"], e["type"]) for e in entries]


def test_recovery_requeues_add_each_abandoned_run_and_the_record_keeps_them(
        spool: Spool, clock: FakeClock, holders: Holders) -> None:
    submit(spool, "dies", max_attempts=3)
    for ran in (1, 2):
        holders.sigkill(holders.hold(ids=["dies"]))
        assert Recovery(spool).scan().requeued == ["dies"]
        job = read_json(spool.layout.job(P, "dies"))
        assert job["attempts"] == ran and job["error"]["type"] == "abandoned"
        history = job["error"]["earlier_errors"]
        assert kinds(history) == [(n, "abandoned") for n in range(1, ran + 1)], job
        assert history[-1]["finished_at"] == clock.now().isoformat().replace("+00:00", "Z")
        assert "traceback" not in history[-1]
        clock.advance(10)
    # The reader's view of the pending job: the history beside its error, not in it.
    reader = Client(spool.layout, spool.mover).reader
    pending = reader.get("dies")
    assert [e.attempt for e in pending.earlier_errors or []] == [1, 2]
    assert pending.error is not None and type(pending.error) is ErrorInfo
    assert "earlier_errors" not in orjson.loads(orjson.dumps(
        pending.error.model_dump(exclude_none=True)))

    holders.sigkill(holders.hold(ids=["dies"]))  # the third run dies too: abandoned
    assert Recovery(spool).scan().abandoned == ["dies"]
    rec = read_json(spool.layout.job(F, "dies"))
    assert rec["attempts"] == 3 and rec["error"]["type"] == "abandoned"
    assert "earlier_errors" not in rec["error"]
    assert kinds(rec["earlier_errors"]) == [(1, "abandoned"), (2, "abandoned")]
    lines = [line for line in record_lines(parse_record(
        spool.layout.job(F, "dies").read_bytes())) if line.startswith("earlier ")]
    assert len(lines) == 2 and lines[0].startswith("earlier     attempt 1 abandoned at ")


def test_a_poison_job_of_100_attempts_keeps_its_last_10_failures(
        spool: Spool, clock: FakeClock) -> None:
    """Each requeue adds one failure; past 10 the oldest are dropped and counted, so its
    job file stops growing.  (A claim closed without a move leaves what a dead
    processor leaves: a running file no lease holds.)"""
    submit(spool, "poison", max_attempts=100)
    sizes = {}
    for ran in range(1, 101):
        claim = spool.claim("poison")
        assert claim is not None
        claim.close()
        report = Recovery(spool).scan()
        clock.advance(1)
        if ran < 100:
            assert report.requeued == ["poison"], ran
            sizes[ran] = spool.layout.job(P, "poison").stat().st_size
    assert report.abandoned == ["poison"]
    rec = read_json(spool.layout.job(F, "poison"))
    assert rec["attempts"] == 100 and rec["error"]["type"] == "abandoned"
    assert [e["attempt"] for e in rec["earlier_errors"]] == list(range(90, 100))
    assert rec["earlier_errors_dropped"] == 89
    assert len(rec["earlier_errors"]) == EARLIER_KEPT
    # Bounded: once ten are kept the file stops growing (from 20 on the numbers in it
    # have as many digits).
    assert abs(sizes[99] - sizes[20]) <= 2, sizes
    assert sizes[99] - sizes[1] <= EARLIER_MAX_BYTES, sizes


def test_an_entry_keeps_the_start_of_a_long_message_and_no_traceback() -> None:
    error = ErrorInfo(type=ErrorType.TOOL_ERROR, message="x" * 5000, traceback="T" * 9000)
    kept = entry(error, 3, None)
    assert len(kept.message) == EARLIER_MESSAGE_CHARS and kept.message.endswith("…")
    assert set(kept.model_dump(exclude_none=True)) == {"attempt", "type", "message"}


def test_retry_keeps_the_history_and_adds_the_final_error(spool: Spool,
                                                          clock: FakeClock,
                                                          holders: Holders) -> None:
    submit(spool, "twice", max_attempts=2)
    for _ in range(2):
        holders.sigkill(holders.hold(ids=["twice"]))
        Recovery(spool).scan()
        clock.advance(5)
    failed = parse_record(spool.layout.job(F, "twice").read_bytes())
    assert failed.finished_at is not None

    pending = spool.retry("twice")
    assert pending.attempts == 0
    assert [(e.attempt, e.type, e.finished_at) for e in pending.earlier_errors or []] == [
        (1, ErrorType.ABANDONED, (failed.earlier_errors or [])[0].finished_at),
        (2, ErrorType.ABANDONED, failed.finished_at)]
    job = read_json(spool.layout.job(P, "twice"))
    assert job["attempts"] == 0 and "retry_at" not in job["error"]
    assert len(job["error"]["earlier_errors"]) == 2
    # As show and retry print it: the failure the retry follows once, as the last error
    # (it was an "earlier" line too, then "last error" with its words again).
    shown = [line for line in record_lines(Client(spool.layout, spool.mover).reader.get(
        "twice")) if line.startswith(("earlier ", "last error "))]
    assert [line.split(" at ")[0] for line in shown] == [
        "earlier     attempt 1 abandoned", "last error  attempt 2 abandoned"], shown

    # The record of the run after the retry (as the processor builds it from the job)
    # keeps both, its own attempt counted from 1 again.
    claim = spool.claim("twice")
    assert claim is not None
    spool.complete(claim, done_record(claim, {"ok": True}))
    done = read_json(spool.layout.job(D, "twice"))
    assert done["attempts"] == 1
    assert kinds(done["earlier_errors"]) == [(1, "abandoned"), (2, "abandoned")]


def test_a_pending_retry_cancelled_keeps_its_history(spool: Spool,
                                                     holders: Holders) -> None:
    submit(spool, "waits", max_attempts=3)
    holders.sigkill(holders.hold(ids=["waits"]))
    Recovery(spool).scan()
    client = Client(spool.layout, spool.mover)
    rec = client.cancel("waits")
    assert rec.state is F and rec.error is not None and rec.error.type is ErrorType.CANCELLED
    stored = read_json(spool.layout.job(F, "waits"))
    assert kinds(stored["earlier_errors"]) == [(1, "abandoned")]


def test_files_without_the_field_read_as_before(spool: Spool, clock: FakeClock) -> None:
    """A job file and a record an earlier version wrote carry no history: read as none."""
    old_job = {"tool": "echo", "attempts": 1, "max_attempts": 3,
               "error": {"type": "timeout", "message": "slow",
                         "retry_at": "2026-01-01T00:00:00Z"}}
    job = parse_job(orjson.dumps(old_job))
    assert job.error is not None and job.error.earlier_errors is None
    assert "earlier_errors" not in orjson.loads(job_bytes(job))["error"]
    old_record = {"id": "old", "tool": "echo", "state": "failed", "attempts": 1,
                  "error": {"type": "timeout", "message": "slow"}}
    rec = parse_record(orjson.dumps(old_record))
    assert rec.earlier_errors is None and rec.earlier_errors_dropped is None
    assert not [line for line in record_lines(rec) if line.startswith("earlier")]
    # Its retry's history then starts with its final error.
    (spool.layout.job(F, "old")).write_bytes(orjson.dumps(old_record))
    assert kinds([e.model_dump() for e in spool.retry("old").earlier_errors or []]) == [
        (1, ErrorType.TIMEOUT)]


def test_a_retry_an_earlier_version_requeued_keeps_its_failure_after_an_upgrade(
        spool: Spool) -> None:
    """An earlier version's requeue for a retry wrote its error with no history: the
    processor that took the job over after an upgrade started the history without that
    failure, and the job's final record listed attempt 2 of 3 alone (QA, upgrade)."""
    old_file = {"tool": "echo", "attempts": 1, "max_attempts": 3,
                "error": {"type": "timeout", "message": "killed after 2 s (timeout)",
                          "retry_at": "2026-01-01T00:00:00Z"}}
    spool.layout.job(P, "up").write_bytes(orjson.dumps(old_file))
    view = Client(spool.layout, spool.mover).reader.get("up")
    assert kinds([e.model_dump() for e in view.earlier_errors or []]) == [
        (1, ErrorType.TIMEOUT)]
    claim = spool.claim("up")
    assert claim is not None
    claim.close()  # its lease let go: only its bytes are judged here
    record = record_from_job(parse_job(claim.data), "up", R, claim.mtime_ns)
    assert kinds([e.model_dump() for e in record.earlier_errors or []]) == [
        (1, ErrorType.TIMEOUT)]
    # Its run ends in a retry: the history the job file carries then is both failures.
    second = retry_error(ErrorInfo(type=ErrorType.TIMEOUT, message="again"), 2, None,
                         earlier=record.earlier_errors, dropped=None, retry_at=None)
    assert kinds([e.model_dump() for e in second.earlier_errors or []]) == [
        (1, ErrorType.TIMEOUT), (2, ErrorType.TIMEOUT)]
    # A first run's file (no attempts) has no history to seed, error or not.
    fresh = record_from_job(Job.model_validate({**old_file, "attempts": 0}), "f", P, 0)
    assert fresh.earlier_errors is None


UPGRADED = {"tool": "echo", "attempts": 1,
            "error": {"type": "timeout", "message": "killed after 2 s (timeout)",
                      "retry_at": "2026-01-01T00:00:00Z"}}
"""A job file an earlier version requeued for a retry: its error, no history."""


@pytest.mark.parametrize(("max_attempts", "cancel", "history"), [
    (3, False, [(1, ErrorType.TIMEOUT), (2, ErrorType.ABANDONED)]),  # requeued
    (2, False, [(1, ErrorType.TIMEOUT)]),  # abandoned: its last attempt
    (3, True, [(1, ErrorType.TIMEOUT)]),  # cancelled while it ran
])
def test_an_orphan_an_earlier_version_requeued_keeps_its_failure(
        spool: Spool, holders: Holders, max_attempts: int, cancel: bool,
        history: list[tuple[int, ErrorType]]) -> None:
    """Recovery of such a job, run again by a processor that died: the requeue started
    its history without the earlier version's failure, and a failed record numbered
    that failure as the run just lost (a review of 090524a)."""
    spool.layout.job(P, "up").write_bytes(orjson.dumps({**UPGRADED,
                                                        "max_attempts": max_attempts}))
    holder = holders.hold(ids=["up"])
    if cancel:
        Client(spool.layout, spool.mover).cancel("up", wait_s=0)
    holders.sigkill(holder)
    Recovery(spool).scan()
    if max_attempts == 3 and not cancel:
        entries = read_json(spool.layout.job(P, "up"))["error"]["earlier_errors"]
    else:
        record = read_json(spool.layout.job(F, "up"))
        assert record["attempts"] == 2, record
        entries = record["earlier_errors"]
    assert kinds(entries) == [(n, kind.value) for n, kind in history]


def test_a_views_attempts_of_1_0_seed_as_the_job_reads_them(spool: Spool) -> None:
    """``"attempts": 1.0`` is 1 to the job's model: the reader's view seeded nothing."""
    spool.layout.job(P, "f").write_bytes(orjson.dumps({**UPGRADED, "attempts": 1.0}))
    view = Client(spool.layout, spool.mover).reader.get("f")
    assert kinds([e.model_dump() for e in view.earlier_errors or []]) == [
        (1, ErrorType.TIMEOUT)]


def test_the_schema_publishes_the_history() -> None:
    both = schemas()
    record = both["record"]
    assert {"earlier_errors", "earlier_errors_dropped"} <= set(record["properties"])
    assert record["properties"]["earlier_errors"]["description"]
    entry_schema = record["$defs"]["EarlierError"]
    assert set(entry_schema["properties"]) == {"attempt", "type", "message", "finished_at"}
    # A job file carries it in its error (an earlier processor ignores an error's
    # unknown fields, and refuses a job's).
    assert "earlier_errors" not in both["job"]["properties"]
    assert "earlier_errors" in both["job"]["$defs"]["RetryErrorInfo"]["properties"]
    with pytest.raises(ValueError, match="Extra inputs"):
        Job.model_validate({"tool": "echo", "earlier_errors": []})
    assert Record.model_fields["earlier_errors"].default is None


def _forged(n: int, message: str = "m") -> list[dict[str, object]]:
    return [{"attempt": 1, "type": "tool_error", "message": message,
             "finished_at": "2026-01-01T00:00:00Z"} for _ in range(n)]


def test_a_forged_history_in_a_job_file_is_held_to_the_bound() -> None:
    """What a client wrote is read as a requeue would have written it: the last 10, the
    older ones counted (up to EARLIER_DROPPED_MAX), each message cut."""
    job = parse_job(orjson.dumps({"tool": "echo", "error": {
        "type": "timeout", "message": "x", "earlier_errors": _forged(5000, "é" * 100_000),
        "earlier_errors_dropped": 2**64 - 1}}))
    assert job.error is not None and job.error.earlier_errors is not None
    assert len(job.error.earlier_errors) == EARLIER_KEPT
    assert {len(e.message) for e in job.error.earlier_errors} == {EARLIER_MESSAGE_CHARS}
    assert job.error.earlier_errors_dropped == EARLIER_DROPPED_MAX
    assert len(job_bytes(job)) < EARLIER_MAX_BYTES
    # The same history within the bound is kept as it came.
    kept = parse_job(orjson.dumps({"tool": "echo", "error": {
        "type": "timeout", "message": "x", "earlier_errors": _forged(3),
        "earlier_errors_dropped": 7}}))
    assert kept.error is not None and kept.error.earlier_errors_dropped == 7
    assert [e.message for e in kept.error.earlier_errors or []] == ["m"] * 3


def test_a_retry_of_a_record_counting_at_the_top_of_64_bits_is_written(
        spool: Spool) -> None:
    """A failed record (written by hand, or by an earlier version from a forged job) whose
    dropped count its retry raises: the count stops at EARLIER_DROPPED_MAX, where it
    passed orjson's 64 bits and the retry raised TypeError."""
    record = {"id": "top", "tool": "echo", "state": "failed", "attempts": 1,
              "error": {"type": "timeout", "message": "slow"},
              "earlier_errors": _forged(EARLIER_KEPT), "earlier_errors_dropped": 2**64 - 1}
    spool.layout.job(F, "top").write_bytes(orjson.dumps(record))
    pending = spool.retry("top")
    assert pending.earlier_errors_dropped == EARLIER_DROPPED_MAX
    job = read_json(spool.layout.job(P, "top"))
    assert job["error"]["earlier_errors_dropped"] == EARLIER_DROPPED_MAX
    assert job["error"]["earlier_errors"][-1]["message"] == "slow"


def test_the_readers_view_of_a_job_file_with_a_bad_history_keeps_the_job(
        spool: Spool) -> None:
    """A pending file whose error carries a history that is no list of failures (intake
    refuses it once a processor looks) is shown as the job it is, without that history:
    the history's error made the whole view a bare record (no tool, no params).  One
    past the bound is shown within it, as the job would run."""
    reader = Client(spool.layout, spool.mover).reader
    for job_id, history in {"junk": {"earlier_errors": "junk"},
                            "negative": {"earlier_errors": [], "earlier_errors_dropped": -1},
                            "many": {"earlier_errors": _forged(500, "m" * 1000)}}.items():
        spool.layout.job(P, job_id).write_bytes(orjson.dumps({
            "tool": "echo", "params": {"message": job_id},
            "error": {"type": "timeout", "message": "x", **history}}))
        rec = reader.get(job_id)
        assert (rec.tool, rec.params) == ("echo", {"message": job_id}), rec
        assert rec.error is not None and rec.error.type is ErrorType.TIMEOUT
    assert reader.get("junk").earlier_errors is None
    many = reader.get("many")
    assert len(many.earlier_errors or []) == EARLIER_KEPT
    assert many.earlier_errors_dropped == 500 - EARLIER_KEPT
    assert {len(e.message) for e in many.earlier_errors or []} == {EARLIER_MESSAGE_CHARS}


def test_recovery_requeues_an_orphan_whose_history_counts_at_the_top_of_64_bits(
        spool: Spool) -> None:
    """Left in running/ (its processor died writing the requeue that raised), the job met
    recovery at the next start, whose requeue raised the same TypeError: the processor
    stopped at every start."""
    spool.layout.job(R, "top").write_bytes(orjson.dumps({
        "tool": "echo", "max_attempts": 3, "error": {
            "type": "timeout", "message": "x", "earlier_errors": _forged(EARLIER_KEPT),
            "earlier_errors_dropped": 2**64 - 1}}))
    assert Recovery(spool).scan().requeued == ["top"]
    job = read_json(spool.layout.job(P, "top"))
    assert job["error"]["earlier_errors_dropped"] == EARLIER_DROPPED_MAX
    assert kinds(job["error"]["earlier_errors"])[-1] == (1, "abandoned")


def test_a_pending_jobs_long_last_error_is_shown_once_and_whole() -> None:
    """The history keeps a message's first EARLIER_MESSAGE_CHARS characters: a pending
    job whose last failure said more was shown twice still, an "earlier" line (cut) and
    "last error" (whole), where a shorter one is shown once (h342)."""
    message = "y" * (EARLIER_MESSAGE_CHARS + 50)
    error = ErrorInfo(type=ErrorType.TOOL_ERROR, message=message)
    history = [entry(ErrorInfo(type=ErrorType.TIMEOUT, message="slow"), 1, None),
               entry(error, 2, None)]
    rec = Record.model_validate({
        "id": "long", "tool": "echo", "state": "pending", "attempts": 2,
        "submitted_at": "2026-01-01T00:00:00Z", "error": error.model_dump(),
        "earlier_errors": [e.model_dump() for e in history]})
    shown = [line for line in record_lines(rec) if line.startswith(("earlier ", "last error"))]
    assert shown == ["earlier     attempt 1 timeout at -: slow",
                     f"last error  attempt 2 tool_error at -: {message}"], shown
