"""Progress reports are paced, a tool's repeated 1.0 too: the first goes at once, the
rest as any report.  Each went at once: a COMPUTE tool saying ``progress(1.0)`` 100,000
times blocked on every send (20 s, against 0.13 s at 0.99), a FAST one had a progress
file written for each (QA)."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor import worker
from processor.progress import PROGRESS_WRITE_S, ProgressFiles
from processor.run import Run
from processor.tools import BaseTool, ExecutionMode
from processor.worker import PROGRESS_INTERVAL_S, HeldReports, Progress
from spool.clock import SystemClock
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool


class Pipe:
    """The worker's end of its channel: what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))


class _Held:
    """The worker's held-report sender, fired by hand: the test sends a held report
    once the clock it moves says the interval is up."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[Progress, float]] = []

    def schedule(self, progress: Progress, at: float) -> None:
        self.scheduled.append((progress, at))

    def cancel(self, progress: Progress) -> None:
        self.scheduled = [s for s in self.scheduled if s[0] is not progress]


def test_a_worker_sends_the_first_done_at_once_and_paces_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]  # the worker's monotonic clock, moved by hand: on a loaded host the
    # 10,000 reports took longer than the interval and the real sender sent "saving 1"
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    pipe, held = Pipe(), _Held()
    progress = Progress(pipe, "j", held)  # type: ignore[arg-type]
    try:
        progress.report(0.5, "half")
        progress.report(1.0, "done")  # the first 1.0: at once, within the interval
        assert [m[2:] for m in pipe.sent] == [(0.5, "half"), (1.0, "done")]
        for i in range(10_000):
            progress.report(1.0, f"saving {i}")
        assert len(pipe.sent) == 2  # held: the last is sent when the interval is up
        assert [at for _, at in held.scheduled] == [clock[0] + PROGRESS_INTERVAL_S]
        clock[0] += PROGRESS_INTERVAL_S
        held.scheduled[0][0].send_held()
        assert [m[2:] for m in pipe.sent[2:]] == [(1.0, "saving 9999")]
    finally:
        progress.close()
    assert held.scheduled == []


class _Status:
    """What ProgressFiles asks of the status file: only when a write fails."""

    failing_writes: set[str] = set()

    def write_failed(self, what: str, exc: BaseException) -> None:
        raise AssertionError(f"{what}: {exc}")


def test_the_processor_writes_the_first_done_at_once_and_paces_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path / "spool")
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    spool.mover.make_folders()
    job = Job(tool="echo")
    spool.submit(job, "j")
    claim = spool.claim("j")
    assert claim is not None
    runs: dict[str, Run] = {}
    files = ProgressFiles(spool, "owner", SystemClock(), runs, _Status())  # type: ignore[arg-type]
    writes: list[str] = []
    publish = spool.publish_file
    monkeypatch.setattr(spool, "publish_file", lambda path, data, *a, **k: (
        writes.append(orjson.loads(data)["message"]), publish(path, data, *a, **k)))
    try:
        record = record_from_job(job, "j", JobState.RUNNING, claim.mtime_ns, attempts=1)
        runs["j"] = Run(claim, job, BaseTool, record, time.monotonic(), 10.0,
                        ExecutionMode.FAST)
        files.report("j", 0.5, "half")
        files.report("j", 1.0, "done")
        for i in range(2_000):
            files.report("j", 1.0, f"saving {i}")
        assert writes == ["half", "done"]  # the rest held for the interval
        time.sleep(PROGRESS_WRITE_S * 1.5)
        files.write_due(time.monotonic())
        assert writes == ["half", "done", "saving 1999"]
    finally:
        claim.close()


def test_a_report_never_starts_a_thread_and_the_held_one_is_sent_on_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A held report's timer was a thread of its own: under a limit on tasks (TasksMax)
    "can't start new thread" failed the tool ``tool_error``; under a memory cap one hung
    in ``Thread.start`` for good, the job with it (QA).  The worker's one sender, started
    with it, sends the held report; reports start no thread."""
    held = HeldReports()  # as the worker starts it, before any job
    starts: list[int] = []

    def no_thread(self: object) -> None:
        starts.append(1)
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr("threading.Thread.start", no_thread)
    pipe = Pipe()
    progress = Progress(pipe, "j", held)  # type: ignore[arg-type]
    try:
        progress.report(0.1, "a")
        for i in range(1000):
            progress.report(0.2, f"b{i}")  # within the interval: held
        assert [m[2:] for m in pipe.sent] == [(0.1, "a")] and starts == []
        deadline = time.monotonic() + 10 * PROGRESS_INTERVAL_S + 5
        while len(pipe.sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [m[2:] for m in pipe.sent] == [(0.1, "a"), (0.2, "b999")]
    finally:
        progress.close()


def test_with_no_sender_a_held_report_goes_with_the_next_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    pipe = Pipe()
    progress = Progress(pipe, "j", None)  # type: ignore[arg-type]
    progress.report(0.1, "a")
    progress.report(0.2, "b")
    clock[0] += PROGRESS_INTERVAL_S * 1.5
    progress.report(0.3, "c")
    assert [m[2:] for m in pipe.sent] == [(0.1, "a"), (0.3, "c")]
    progress.close()


def test_a_second_phase_ends_with_its_own_done_at_once() -> None:
    """A tool that goes 0 to 1 twice (two phases): its second 1.0 was held, as the
    first had gone (review)."""
    pipe = Pipe()
    progress = Progress(pipe, "j", HeldReports())  # type: ignore[arg-type]
    try:
        progress.report(1.0, "phase 1 done")
        time.sleep(PROGRESS_INTERVAL_S * 1.5)
        progress.report(0.1, "phase 2")
        progress.report(1.0, "phase 2 done")
        assert [m[3] for m in pipe.sent] == ["phase 1 done", "phase 2", "phase 2 done"]
    finally:
        progress.close()


def test_a_held_report_scheduled_before_a_direct_one_waits_its_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Scheduled, then overtaken by a report sent directly past the interval: the
    sender sent the next held one 5 ms after that one (a review)."""
    clock = [1000.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    pipe, held = Pipe(), _Held()
    progress = Progress(pipe, "j", held)  # type: ignore[arg-type]
    progress.report(0.1, "a")
    progress.report(0.2, "b")  # held, scheduled for 1000 + the interval
    clock[0] += PROGRESS_INTERVAL_S * 1.5
    progress.report(0.3, "c")  # past the interval: sent at once, b dropped
    progress.report(0.4, "d")  # held: already scheduled
    progress.send_held()  # the old schedule comes due
    assert [m[3] for m in pipe.sent] == ["a", "c"]
    assert held.scheduled[-1] == (progress, clock[0] + PROGRESS_INTERVAL_S)
    clock[0] += PROGRESS_INTERVAL_S
    progress.send_held()
    assert [m[3] for m in pipe.sent] == ["a", "c", "d"]
    progress.close()


class _FailingOnce(Pipe):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def send_bytes(self, data: bytes) -> None:
        if not self.failed and threading.current_thread().name == "lifeline":
            self.failed = True
            raise MemoryError("a send near the cap")
        super().send_bytes(data)


def test_one_failed_held_send_ends_no_later_ones() -> None:
    """An error out of a held send (a MemoryError near the cap) ended the sender's
    thread, and no later job of that worker had its held report sent (a review)."""
    held = HeldReports(None)
    pipe = _FailingOnce()
    for job in ("a", "b"):
        progress = Progress(pipe, job, held)  # type: ignore[arg-type]
        progress.report(0.1, f"{job}0")
        progress.report(0.2, f"{job}1")  # held: sent by the sender's thread
        deadline = time.monotonic() + 10 * PROGRESS_INTERVAL_S + 5
        while not pipe.failed or (job == "b" and len(pipe.sent) < 3):
            assert time.monotonic() < deadline, pipe.sent
            time.sleep(0.01)
        progress.close()
    assert [m[3] for m in pipe.sent] == ["a0", "b0", "b1"]
