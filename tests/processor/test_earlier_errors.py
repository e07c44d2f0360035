"""The failures of a job's earlier runs (``earlier_errors``), beside a real
``spool-processor`` (DESIGN section 9, retries; :mod:`spool.history`).

A retried job's records used to tell only its last failure (a failed one) or none (a
done one): why its earlier runs failed was in the processor's ``requeued`` log lines
alone.  Now each requeue for a retry carries the failures so far in the job file's
error, and the job's records keep them: oldest first, the last 10 (with a count of the
ones dropped), no tracebacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from daemonkit import Daemon, drop, wait_for, wait_record

from spool.errors import ErrorType
from spool.history import EARLIER_KEPT, EARLIER_MAX_BYTES, EARLIER_MESSAGE_CHARS
from spool.models import EARLIER_DROPPED_MAX, EarlierError, ErrorInfo, Record, record_bytes
from spool.states import JobState

StartDaemon = Callable[..., Daemon]
CLI = [sys.executable, "-m", "spool.cli.main"]


def spoolq(root: Path, *args: str) -> list[str]:
    """``spoolq args``'s lines (exit 0)."""
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=root.parent,
                          env={**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def earlier(lines: list[str]) -> list[str]:
    """The lines of ``spoolq show`` labelled ``earlier``."""
    return [line[12:] for line in lines if line[:12].rstrip() == "earlier"]


def kinds(rec: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["attempt"], e["type"]) for e in rec.get("earlier_errors", [])]


def test_a_job_done_on_its_third_run_keeps_why_the_first_two_failed(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon()
    log = str(spool_root.parent / "starts.log")
    drop(spool_root, "flaky", {"tool": "t_flaky_kinds", "params": {"log": log}})
    drop(spool_root, "plain", {"tool": "echo", "params": {"message": "x"}})
    rec = wait_record(spool_root, "flaky", 60)
    assert (rec["state"], rec["attempts"]) == ("done", 3), rec
    assert rec["result"] == {"starts": 3} and "error" not in rec  # DESIGN: no error if done
    assert kinds(rec) == [(1, "timeout"), (2, "worker_crashed")], rec
    first, second = rec["earlier_errors"]
    assert all(set(e) == {"attempt", "type", "message", "finished_at"} for e in (first, second))
    assert first["finished_at"] < second["finished_at"] < rec["started_at"], rec
    assert "earlier_errors_dropped" not in rec
    # A job that never failed has none (the field is absent, as for records before it).
    plain = wait_record(spool_root, "plain", 30)
    assert "earlier_errors" not in plain and "earlier_errors_dropped" not in plain
    assert d.stop() == 0

    lines = spoolq(spool_root, "show", "flaky")
    shown = earlier(lines)
    assert len(shown) == 2, lines
    assert shown[0].startswith("attempt 1 timeout at "), shown
    assert shown[1].startswith("attempt 2 worker_crashed at "), shown
    as_json = orjson.loads("\n".join(spoolq(spool_root, "show", "flaky", "--json")))
    assert as_json == orjson.loads((spool_root / "done" / "flaky.json").read_bytes())
    assert earlier(spoolq(spool_root, "show", "plain")) == []


def test_a_run_its_processor_died_in_is_an_abandoned_earlier_failure(
        spool_root: Path, daemon: StartDaemon) -> None:
    release = spool_root.parent / "release"
    d = daemon()
    drop(spool_root, "orphan", {"tool": "t_record", "max_attempts": 2, "params": {
        "seconds": 60, "release": str(release)}})
    wait_for(lambda: os.listdir(spool_root / "running") == ["orphan.json"], 10, "it runs")
    d.kill()  # SIGKILL: its run is left in running/ for the next one's recovery
    release.touch()  # the run after it ends at once
    d = daemon()
    rec = wait_record(spool_root, "orphan", 30)
    assert (rec["state"], rec["attempts"]) == ("done", 2), rec
    assert kinds(rec) == [(1, "abandoned")], rec
    assert "died mid-run" in rec["earlier_errors"][0]["message"]
    recovery = next(e for e in d.events() if e.get("msg") == "recovery")
    assert recovery["requeued"] == ["orphan"]
    assert d.stop() == 0


def test_a_stops_requeue_keeps_the_history_and_adds_nothing(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A run cut short by a stop is not counted (DESIGN section 9), nor is it a failure:
    its job goes back with the history it came with."""
    history = [{"attempt": 1, "type": "timeout", "message": "took too long",
                "finished_at": "2026-01-01T00:00:00Z"}]
    d = daemon(SPOOL_GRACE_S="0.5")
    drop(spool_root, "cut", {"tool": "t_record", "max_attempts": 3, "attempts": 1,
                             "params": {"seconds": 60}, "error": {
                                 "type": "timeout", "message": "took too long",
                                 "earlier_errors": history}})
    wait_for(lambda: os.listdir(spool_root / "running") == ["cut.json"], 10, "it runs")
    assert d.stop() == 0
    job = orjson.loads((spool_root / "pending" / "cut.json").read_bytes())
    assert job["attempts"] == 1 and job["error"]["earlier_errors"] == history, job


def test_a_poison_job_retried_by_hand_keeps_its_history_within_the_bound(
        spool_root: Path, daemon: StartDaemon) -> None:
    """``spoolq retry`` resets the attempts and keeps the history, the failed record's
    final error joining it; the processor's requeues add to it, keeping the last 10 and
    counting the ones dropped."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    past = [EarlierError(attempt=1 + n % 2, type=ErrorType.TOOL_ERROR, message=f"run {n}",
                         finished_at=start + timedelta(minutes=n)) for n in range(9)]
    ended = start + timedelta(hours=1)
    (spool_root / "failed" / "poison.json").write_bytes(record_bytes(Record(
        id="poison", tool="t_fail", params={"retryable": True}, max_attempts=2,
        state=JobState.FAILED, attempts=2, submitted_at=start, started_at=ended,
        finished_at=ended, error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="final",
                                           traceback="Traceback ..."),
        earlier_errors=past, earlier_errors_dropped=3)))
    spoolq(spool_root, "retry", "poison")
    job = orjson.loads((spool_root / "pending" / "poison.json").read_bytes())
    assert job["attempts"] == 0 and "retry_at" not in job["error"]
    assert [e["message"] for e in job["error"]["earlier_errors"]] == [
        *(f"run {n}" for n in range(9)), "final"]
    assert job["error"]["earlier_errors"][-1] == {
        "attempt": 2, "type": "tool_error", "message": "final",
        "finished_at": "2026-01-01T01:00:00Z"}  # no traceback

    d = daemon()
    rec = wait_record(spool_root, "poison", 60)
    assert (rec["state"], rec["attempts"]) == ("failed", 2), rec
    assert rec["error"]["message"] == "failed on purpose"
    # Ten kept: runs 2 to 8, the old final error, this round's first run; one more
    # dropped than before.
    assert len(rec["earlier_errors"]) == EARLIER_KEPT
    assert [e["message"] for e in rec["earlier_errors"]] == [
        *(f"run {n}" for n in range(1, 9)), "final", "failed on purpose"]
    assert rec["earlier_errors"][-1]["attempt"] == 1
    assert rec["earlier_errors_dropped"] == 4
    assert d.stop() == 0
    lines = earlier(spoolq(spool_root, "show", "poison"))
    assert lines[0] == "4 older failures not kept" and len(lines) == 1 + EARLIER_KEPT, lines
    assert lines[-1].startswith("attempt 1 tool_error at ") and lines[-1].endswith(
        ": failed on purpose"), lines


def forged(n: int, message: str) -> list[dict[str, Any]]:
    return [{"attempt": 1, "type": "tool_error", "message": message,
             "finished_at": "2026-01-01T00:00:00Z"} for _ in range(n)]


def test_a_drop_forging_a_history_past_the_bound_is_cut_to_it_and_runs(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A client's job file may carry a history in its error (a job file copied back
    from pending/, or forged): it is held to the bound a requeue keeps, never carried
    whole.  A dropped count at the top of orjson's range, raised by the retry, stopped
    the processor (``Integer exceeds 64-bit range`` writing the requeue) at each start;
    thousands of entries or 150,000-character messages went into every record."""
    d = daemon()
    drop(spool_root, "count", {"tool": "t_fail", "max_attempts": 2,
                               "params": {"retryable": True},
                               "error": {"type": "timeout", "message": "x",
                                         "earlier_errors": forged(EARLIER_KEPT, "m"),
                                         "earlier_errors_dropped": 2**64 - 1}})
    drop(spool_root, "many", {"tool": "echo", "params": {"message": "ok"}, "error": {
        "type": "timeout", "message": "x", "earlier_errors": forged(5000, "m")}})
    drop(spool_root, "long", {"tool": "echo", "params": {"message": "ok"}, "error": {
        "type": "timeout", "message": "x", "earlier_errors": forged(3, "é" * 150_000)}})
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "x"}})
    assert wait_record(spool_root, "after", 30)["state"] == "done"

    count = wait_record(spool_root, "count", 30)
    assert (count["state"], count["attempts"]) == ("failed", 2), count
    assert count["earlier_errors_dropped"] == EARLIER_DROPPED_MAX, count
    assert len(count["earlier_errors"]) == EARLIER_KEPT
    assert count["earlier_errors"][-1]["message"] == "failed on purpose"
    many = wait_record(spool_root, "many", 30)
    assert many["state"] == "done" and len(many["earlier_errors"]) == EARLIER_KEPT
    assert many["earlier_errors_dropped"] == 5000 - EARLIER_KEPT
    long = wait_record(spool_root, "long", 30)
    assert long["state"] == "done"
    assert [len(e["message"]) for e in long["earlier_errors"]] == [EARLIER_MESSAGE_CHARS] * 3
    for rec in (count, many, long):  # the record's history within the bound's bytes
        assert len(orjson.dumps(rec["earlier_errors"])) < EARLIER_MAX_BYTES, rec["id"]
    assert d.running() and d.stop() == 0
