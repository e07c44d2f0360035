"""``fast_running`` in the status file (and so in ``spoolq stats`` and
``GET /api/v1/stats``): FAST jobs running, not the threads of runs already over; and
the FAST lane's bound on those threads and its deadlines (:mod:`processor.fast_lane`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

from processor.builtin import Echo
from processor.fast_lane import FastLane
from processor.run import Run
from processor.runner import Outcome
from processor.tools import BaseTool, ExecutionMode
from spool.claim import Claim
from spool.clock import SystemClock
from spool.errors import ErrorType
from spool.models import Job, Record
from spool.states import JobState

StartDaemon = Callable[..., Daemon]


def _beat_after(d: Daemon, when: str) -> dict[str, Any]:
    """The first status file written after ``when`` (a record's ``finished_at``)."""
    moment = datetime.fromisoformat(when)
    status: dict[str, Any] = wait_for(
        lambda: (s := d.status()) and datetime.fromisoformat(s["heartbeat_at"]) > moment
        and s, 20, "a heartbeat after the record")
    return status


def test_a_timed_out_fast_job_is_no_fast_job_running(spool_root: Path, daemon: StartDaemon,
                                                     tmp_path: Path) -> None:
    """A FAST job past its timeout fails at once and its thread is abandoned, still in
    the tool; ``fast_running`` counted that thread as a job running for as long as the
    tool went on (for good, for a tool hung for good), with no job in ``running/``."""
    d = daemon()
    release = tmp_path / "release"
    drop(spool_root, "works", {"tool": "t_fast_record", "params": {
        "seconds": 8, "release": str(release)}})
    wait_for(lambda: d.status()["fast_running"] == 1, 20, "the FAST job counted running")
    release.touch()
    assert _beat_after(d, wait_record(spool_root, "works")["finished_at"])[
        "fast_running"] == 0
    drop(spool_root, "hangs", {"tool": "t_fast_hang", "params": {"seconds": 60}})
    rec = wait_record(spool_root, "hangs")
    assert rec["error"]["type"] == "timeout"
    assert any(e.get("abandoned_threads") == 1 for e in d.events())  # the thread goes on
    assert _beat_after(d, rec["finished_at"])["fast_running"] == 0


def test_stuck_fast_threads_past_their_bound_hold_the_fast_lane(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A FAST tool that never returns leaves a thread per run; the lane takes no more
    FAST runs once ``STUCK_FAST_PER_THREAD`` (4) x ``SPOOL_FAST_THREADS`` are left, so
    hung tools cannot pile up threads without bound.  COMPUTE jobs still run, and once
    the stuck tools return, the FAST job that waited runs."""
    d = daemon(SPOOL_FAST_THREADS="1")
    release = tmp_path / "release"
    for i in range(4):
        drop(spool_root, f"hang{i}", {"tool": "t_fast_record", "timeout": 0.3, "params": {
            "seconds": 60, "release": str(release)}})
        assert wait_record(spool_root, f"hang{i}")["error"]["type"] == "timeout"
    assert any(e.get("abandoned_threads") == 4 for e in d.events()), d.logs()[-3000:]
    drop(spool_root, "waits", {"tool": "echo", "params": {"message": "after the stuck"}})
    drop(spool_root, "compute", {"tool": "t_record"})
    _beat_after(d, wait_record(spool_root, "compute")["finished_at"])
    assert (spool_root / "pending" / "waits.json").exists(), "run beside 4 stuck threads"
    release.touch()
    assert wait_record(spool_root, "waits")["state"] == "done"


def _lane_with_run(tmp_path: Path, job_id: str, started: float,
                   finish: Callable[[Run, Outcome], None], relay: Any = None
                   ) -> tuple[FastLane, Run]:
    """A FAST lane of one thread (no inbox: a test calls its loop's side itself), and an
    ``echo`` run of it claimed at ``started`` (monotonic) with 0.5 s to run."""
    runs: dict[str, Run] = {}
    lane = FastLane(1, relay, None, runs, data_dir=tmp_path, resources={},  # type: ignore[arg-type]
                    finish=finish, unblock=lambda job_id: None, clock=SystemClock())
    runs[job_id] = Run(Claim(job_id, -1, b"", 0, 0), Job(tool="echo"), BaseTool,
                       Record(id=job_id, state=JobState.RUNNING, tool="echo"),
                       started=started, timeout_s=0.5, mode=ExecutionMode.FAST)
    return lane, runs[job_id]


def test_a_fast_outcome_posted_past_its_deadline_is_a_timeout(tmp_path: Path) -> None:
    """A FAST tool that held the loop thread past its run's deadline (the loop moved to
    a standby) and returns before the loop's deadline wake: the run fails ``timeout``,
    as it would a moment later, not ``done`` with a result past its time."""
    finished: list[Outcome] = []
    lane, run = _lane_with_run(tmp_path, "late", time.monotonic() - 1.0,
                               lambda run, outcome: finished.append(outcome))
    lane.busy = 1
    lane.returned(run, Outcome("late", result_json=b"{}"), time.monotonic())
    assert [o.error_type for o in finished] == [ErrorType.TIMEOUT]
    assert lane.busy == 0


def test_a_fast_tool_that_returned_in_time_is_judged_by_its_return_not_the_read(
        tmp_path: Path) -> None:
    """Read by the loop after its deadline (the loop held meanwhile), a return that came
    within the run's time is the run's outcome, and its record's times are the
    return's: the run was failed ``timeout`` with a duration of the loop's wait (h358)."""
    finished: list[tuple[Run, Outcome]] = []
    started = time.monotonic() - 1.0
    lane, run = _lane_with_run(tmp_path, "held", started,
                               lambda run, outcome: finished.append((run, outcome)))
    lane.busy = 1
    before = datetime.now(UTC)
    lane.returned(run, Outcome("held", result_json=b"{}"), started + 0.2)
    after = datetime.now(UTC)
    [(ended, outcome)] = finished
    assert ended is run and outcome.error_type is None
    assert run.ended is not None and run.ended[0] == started + 0.2
    # 0.8 s before the read, which came between ``before`` and ``after``.
    assert before - timedelta(seconds=0.85) <= run.ended[1] <= after - timedelta(seconds=0.75)
    assert lane.busy == 0


def test_a_fast_run_waiting_for_the_loop_past_its_time_still_runs(tmp_path: Path) -> None:
    """A FAST job's time counts from its tool's start: one still waiting for the loop
    thread when its time since the claim is up is neither failed by the loop's expiry
    nor skipped, but run, its outcome recorded (counted from the claim, a loop held up
    by a stalled log reader failed such runs ``timeout`` unrun, QA)."""
    finished: list[Outcome] = []
    started: list[str] = []

    class Relay:
        def run_inline(self, *args: Any) -> tuple[bool, Outcome]:
            started.append(args[2])
            return True, Outcome(args[2], result_json=b"{}")

    lane, run = _lane_with_run(tmp_path, "queued", time.monotonic() - 1.0,
                               lambda run, outcome: finished.append(outcome), Relay())
    lane.start(run, BaseTool, {})
    assert list(lane.deadlines()) == []
    lane.expire(time.monotonic())
    assert finished == []
    assert lane.run_next()
    assert started == ["queued"] and [o.error_type for o in finished] == [None]
    assert lane.busy == 0


def test_a_slow_fast_tool_is_said_in_a_warning_once(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A FAST tool that took seconds was done without a word, while the FAST jobs beside
    it waited on the processor: nothing told its author it is COMPUTE work (QA h395).
    Said once per tool, not at every run; a quick run says nothing."""
    finished: list[Outcome] = []
    took = [0.05, 2.0, 2.5, 3.0]

    class Relay:
        def run_inline(self, *args: Any) -> tuple[bool, Outcome]:
            return True, Outcome(args[2], result_json=b"{}", duration_s=took.pop(0))

    class Mine(BaseTool):
        name = "echo"

    caplog.set_level(logging.WARNING, logger="spoolq.processor")
    lane, first = _lane_with_run(tmp_path, "j0", time.monotonic(),
                                 lambda run, outcome: finished.append(outcome), Relay())
    for n in range(4):
        run = first if n == 0 else _lane_with_run(tmp_path, f"j{n}", time.monotonic(),
                                                  lambda run, outcome: None)[1]
        run.tool = Echo if n == 1 else Mine  # a built-in's slow run says nothing
        lane.runs[run.claim.job_id] = run
        lane.start(run, BaseTool, {})
        assert lane.run_next()
        if n == 0:
            assert not caplog.records
    assert [o.error_type for o in finished] == [None] * 4
    [warning] = [r for r in caplog.records if "FAST tool ran for over a second" in r.message]
    assert "ExecutionMode.COMPUTE" in warning.message
    assert warning.fields == {"id": "j2", "tool": "echo", "duration_s": 2.5}  # type: ignore[attr-defined]
