"""processor.pool with real worker processes, read by an inbox loop as the daemon does."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonkit import wait_for

from processor import pool as pool_module
from processor.executor import Task
from processor.inbox import Inbox, InboxSink
from processor.pool import LocalPool
from processor.runner import Outcome
from spool.errors import ErrorType


@contextlib.contextmanager
def one_worker_pool(module: str = "ptools") -> Iterator[tuple[LocalPool, Inbox]]:
    """A pool of one worker whose workers import the tools of ``module``."""
    inbox = Inbox()
    pool = LocalPool(1, tool_modules=[module])
    pool.start(InboxSink(inbox))
    try:
        yield pool, inbox
    finally:
        pool.shutdown()
        inbox.close()


@pytest.fixture
def started() -> Iterator[tuple[LocalPool, Inbox]]:
    with one_worker_pool() as both:
        workers_ready(*both)
        yield both


def finished(inbox: Inbox, timeout_s: float = 30.0, pool: LocalPool | None = None) -> Outcome:
    """Run the loop's side (reads, posts) until an outcome comes; with ``pool``, ask it
    for free slots each round, as the daemon does at each dispatch and heartbeat."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pool is not None:
            pool.free_slots()
        inbox.wait(0.05)
        while (event := inbox.get()) is not None:
            if event[0] == "finished":
                outcome: Outcome = event[1]
                return outcome
    raise AssertionError("no outcome")


def task(job_id: str, tool: str, tmp_path: Path, timeout_s: float = 30.0,
         **params: Any) -> Task:
    return Task(job_id, tool, params, timeout_s, str(tmp_path), 1)


def test_a_result_comes_back_through_the_loops_reads(started: tuple[LocalPool, Inbox],
                                                    tmp_path: Path) -> None:
    pool, inbox = started
    assert pool.free_slots() == 1
    pool.submit(task("one", "t_big", tmp_path, mb=3))
    assert pool.free_slots() == 0 and pool.busy() == 1
    outcome = finished(inbox)
    assert outcome.ok and outcome.job_id == "one"
    assert outcome.result_json is not None and len(outcome.result_json) > 3 << 20
    assert pool.free_slots() == 1 and pool.busy() == 0


def test_a_worker_that_cannot_be_replaced_is_retried_and_its_job_still_reported(
        started: tuple[LocalPool, Inbox], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool, inbox = started
    real = pool._ctx.Process
    refusals: list[str] = []

    def refuse_once(*args: Any, **kwargs: Any) -> Any:
        if not refusals:
            refusals.append("refused")
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(pool._ctx, "Process", refuse_once)
    monkeypatch.setattr(pool_module, "_RESPAWN_RETRY_S", 2.0)
    # The pool's clock moves only when the test moves it: a 2 s stall of the host
    # before the look no longer makes the retry due (it offered a worker).
    clock = StoppedClock()
    monkeypatch.setattr(pool_module, "time", clock)
    pool.submit(task("crash", "t_crash", tmp_path))
    outcome = finished(inbox)
    assert outcome.error_type is ErrorType.WORKER_CRASHED and outcome.job_id == "crash"
    assert refusals == ["refused"]
    assert pool.free_slots() == 0, "no worker to offer until the retry"
    clock.now += 1.9
    assert pool.free_slots() == 0, "no worker to offer until the retry"
    clock.now += 0.2
    wait_free(pool, inbox)
    pool.submit(task("after", "t_pid", tmp_path))
    assert finished(inbox).ok


class StoppedClock:
    """Stands in for the pool module's ``time``: ``monotonic()`` is ``now``, which only
    the test moves."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


class TimerGate:
    """Holds the pool's deadline timer until :meth:`open`: what the worker did before a
    deadline was enforced is then up to the test, not to how fast the host runs (a
    0.3 s deadline counted from ``submit`` also covered a worker still starting, and
    any stall of it)."""

    def __init__(self, pool: LocalPool, monkeypatch: pytest.MonkeyPatch) -> None:
        self._opened = threading.Event()
        self.passed = threading.Event()  # the timer checked deadlines after open()
        enforce = pool._enforce_deadlines

        def gated() -> None:
            self._opened.wait()
            enforce()
            self.passed.set()

        monkeypatch.setattr(pool, "_enforce_deadlines", gated)

    def open(self) -> None:
        self._opened.set()


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_result_that_arrived_wins_over_a_deadline_the_loop_was_late_for(
        started: tuple[LocalPool, Inbox], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop is busy (here: not reading) while a quick job's deadline passes; the
    timer kills the worker, but the result already sent is what the job gets."""
    pool, inbox = started
    gate = TimerGate(pool, monkeypatch)
    slot = pool._slots[0]
    try:
        pool.submit(task("quick", "t_pid", tmp_path, timeout_s=0.3))
        assert slot.channel is not None and slot.process is not None
        worker = slot.process
        wait_for(lambda: readable(slot.channel.fileno()), 30, "the result in the worker's pipe")
        time.sleep(max(0.0, slot.deadline - time.monotonic()))  # the deadline is past
    finally:
        gate.open()
    assert gate.passed.wait(10), "the timer never checked the deadline"
    wait_for(lambda: readable(worker.sentinel), 30, "the timer to kill the worker")
    outcome = finished(inbox)  # the result waited unread while the timer killed the worker
    assert outcome.ok and outcome.job_id == "quick", outcome
    # the killed worker is not offered again: the next job goes to its successor
    pool.submit(task("next", "t_pid", tmp_path))
    assert finished(inbox).ok


def test_a_worker_dead_before_its_deadline_is_reported_once_and_deadlines_go_on(
        started: tuple[LocalPool, Inbox], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that died on its own is found by the timer once its deadline passes
    (the loop being late); the timer leaves it to the loop and keeps working."""
    pool, inbox = started
    gate = TimerGate(pool, monkeypatch)
    slot = pool._slots[0]
    try:
        pool.submit(task("crash", "t_crash", tmp_path, timeout_s=0.3))
        assert slot.process is not None
        worker = slot.process
        wait_for(lambda: readable(worker.sentinel), 30, "the worker to die")  # dead on its own
        time.sleep(max(0.0, slot.deadline - time.monotonic()))  # the loop reads nothing yet
    finally:
        gate.open()
    assert gate.passed.wait(10), "the timer never checked the deadline"
    assert slot.deadline == math.inf, "the timer leaves a dead worker to the loop"
    outcome = finished(inbox)
    assert outcome.error_type is ErrorType.WORKER_CRASHED, outcome
    wait_free(pool, inbox)
    started_at = time.monotonic()
    pool.submit(task("stuck", "t_record", tmp_path, timeout_s=0.5, seconds=60))
    outcome = finished(inbox)
    assert outcome.error_type is ErrorType.TIMEOUT, outcome
    assert time.monotonic() - started_at < 10


def wait_free(pool: LocalPool, inbox: Inbox) -> None:
    deadline = time.monotonic() + 10
    while pool.free_slots() == 0:
        assert time.monotonic() < deadline, "no worker came free"
        inbox.wait(0.05)
    workers_ready(pool, inbox)


def workers_ready(pool: LocalPool, inbox: Inbox, timeout_s: float = 30.0) -> None:
    """Run the loop's reads until every worker said it loaded its tools: a task's time
    limit starts then, and these tests time it from its send."""
    deadline = time.monotonic() + timeout_s
    while not all(slot.ready for slot in pool._slots):
        assert time.monotonic() < deadline, "a worker never loaded its tools"
        inbox.wait(0.05)


def test_a_worker_stopped_halfway_through_its_result_never_holds_the_loop(
        started: tuple[LocalPool, Inbox], tmp_path: Path) -> None:
    """Reads take what has arrived: with the sender frozen mid-message, the loop's
    reads return at once (a blocking recv would wait for the rest for ever)."""
    pool, inbox = started
    pid_file = tmp_path / "pid"
    pool.submit(task("big", "t_big", tmp_path, mb=24, pid_file=str(pid_file)))
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the tool never ran"
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    time.sleep(0.5)  # pickled and sending: blocked on the full pipe, nobody reads
    os.kill(pid, signal.SIGSTOP)
    try:
        pumped = threading.Event()

        def pump() -> None:
            for _ in range(20):
                inbox.wait(0.05)
                assert inbox.get() is None, "no outcome can be whole yet"
            pumped.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        reader.join(10)
        assert pumped.is_set(), "a read of the frozen worker's pipe blocked the loop"
    finally:
        os.kill(pid, signal.SIGCONT)
    outcome = finished(inbox)
    assert outcome.ok and outcome.result_json is not None
    assert len(outcome.result_json) > 24 << 20


@contextlib.contextmanager
def flaky_pool(module_dir: Path, module: str, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[tuple[LocalPool, Inbox]]:
    """:func:`one_worker_pool` of ``module`` (from ``module_dir``), its workers started
    again 0.2 s after one says it cannot start."""
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setattr(pool_module, "_RESPAWN_RETRY_S", 0.2)
    with one_worker_pool(module) as both:
        yield both


def test_a_worker_that_cannot_start_hands_its_task_to_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that says it cannot start (its threads refused under a limit on
    processes, its tools not importable) before it reads its task: the task is not the
    job's crash, and the next worker, started after a pause, runs it.  Before, the job
    failed as worker_crashed without having run, and the slot was forked again at once."""
    marker = tmp_path / "failed-once"
    module = f"flaky_start_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(
        "import os, time\n"
        "from ptools import Pid\n"
        "class FlakyPid(Pid):\n"
        "    name = 'f_pid'\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    time.sleep(0.5)  # the task is sent meanwhile\n"
        "    raise RuntimeError(\"can't start new thread\")\n")
    with flaky_pool(tmp_path, module, monkeypatch) as (pool, inbox):
        pool.submit(task("first", "f_pid", tmp_path))
        outcome = finished(inbox, pool=pool)
        assert marker.exists(), "the first worker did not fail"
        assert outcome.ok and outcome.job_id == "first", outcome
        assert pool.busy() == 0
        assert pool.room() == 1, "a worker started again: the pool has its room back"


def test_the_room_leaves_out_only_the_workers_that_cannot_start() -> None:
    """Of two workers, one cannot start: the room is the other one, not none (one failing
    start said 0 beside a healthy worker, and any worker's ready, a healthy one's after
    it loaded a tool's modules, said the whole pool again: h398).  The pool's own
    bookkeeping of what its workers said, on a pool not started (its workers are forked
    alike from one forkserver: one cannot be made to fail alone)."""
    pool = LocalPool(2, tool_modules=[])
    failing, healthy = pool._slots
    assert pool.room() == 2
    pool._cannot_start(failing, "SPOOL_TOOLS module 'gone' failed to import")
    assert pool.room() == 1
    pool._ready(healthy)  # (after a quant tool's modules loaded, say)
    assert pool.room() == 1, "another worker's ready is not the failing one's"
    pool._ready(failing)  # its next worker loaded its tools
    assert pool.room() == 2


def test_a_task_no_worker_can_start_for_fails_after_its_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that never start (a tool module that imports only in the processor):
    a task waits no longer than its timeout, then fails as worker_crashed saying why."""
    module = f"never_starts_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(
        "import time\n"
        "time.sleep(0.3)  # the task is sent meanwhile\n"
        "raise RuntimeError('not here')\n")
    with flaky_pool(tmp_path, module, monkeypatch) as (pool, inbox):
        pool.submit(task("never", "t_pid", tmp_path, timeout_s=1.5))
        outcome = finished(inbox, pool=pool)
        assert outcome.job_id == "never"
        assert outcome.error_type is ErrorType.WORKER_CRASHED
        assert outcome.message is not None and "no worker could start" in outcome.message
        assert "not here" in outcome.message
        assert outcome.duration_s >= 1.5
        assert pool.busy() == 0
        # The status file's compute_room: none while no worker can start (said whole, the
        # stats and spoolq_compute_room told nothing of it: h394).
        assert pool.room() == 0


def test_a_task_sent_to_a_worker_that_died_idle_goes_to_the_next_one(
        started: tuple[LocalPool, Inbox], tmp_path: Path) -> None:
    """An idle worker killed (the OOM killer) before the loop saw its death: the task
    sent to it met a closed pipe, and the sentinel's report failed the job
    worker_crashed, with the default max_attempts for good, though no worker ever read
    it (a review, strace holding the claim while the worker was killed).  It goes to the
    next worker."""
    pool, inbox = started
    process = pool._slots[0].process
    assert process is not None and process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(process.pid), 10, "the worker to die")
    pool.submit(task("sent-to-the-dead", "t_pid", tmp_path))  # the loop has not looked
    outcome = finished(inbox, pool=pool)
    assert outcome.ok and outcome.job_id == "sent-to-the-dead", outcome
    assert outcome.result_json is not None
    assert str(process.pid).encode() not in outcome.result_json


def _alive(pid: int) -> bool:
    """``pid`` is there, or not reaped yet: its state "Z" is not enough, as a process's
    first thread is a zombie while its other threads still exit, with its descriptors
    (the task pipe) still open."""
    return os.path.exists(f"/proc/{pid}")


def test_a_large_task_for_a_worker_still_loading_its_tools_does_not_hold_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task given a worker still importing its tools was written at once, blocking: one
    larger than the pipe held the loop (and every FAST job, heartbeat and stop) until the
    import was over (a review: 600 KB of params, an 8 s import, a FAST echo 7 s late).
    It is sent once the worker says it loaded them."""
    module = f"slow_import_{os.getpid()}"
    # The import lasts until the test has timed the submit (60 s at most), not a fixed
    # 2.5 s: a worker's start on a loaded host ate into that, and the submit's bound had to
    # be under what was left of it.  Held, the submit waits the whole 60 s.
    loaded = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        "import os, time\nfrom ptools import Pid\n"
        "class SlowPid(Pid):\n    name = 's_pid'\n"
        f"deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(loaded)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n")
    with flaky_pool(tmp_path, module, monkeypatch) as (pool, inbox):
        assert not pool._slots[0].ready
        began = time.monotonic()
        pool.submit(task("large", "s_pid", tmp_path, log="x" * 600_000))
        took = time.monotonic() - began
        assert not pool._slots[0].ready, "the import was over before the submit"
        loaded.touch()
        outcome = finished(inbox, pool=pool)
    assert took < 10.0, f"the submit waited {took:.1f} s for the worker's import"
    assert outcome.ok and outcome.job_id == "large", outcome


def test_a_timeout_while_the_worker_loads_its_tools_says_so_and_how_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task given a worker still importing its tools has READY_WAIT_S (600 s) more
    before its time limit counts; killed then, its record said "killed after 500 ms
    (timeout)", of a job that waited 600.5 s and never ran.  It says the load did not
    end, and the time waited."""
    module = f"never_loads_{os.getpid()}"
    loaded = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        "import os, time\nfrom ptools import Pid\n"
        "class SlowPid(Pid):\n    name = 's_pid'\n"
        "deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(loaded)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n")
    monkeypatch.setattr(pool_module, "READY_WAIT_S", 1.0)
    with flaky_pool(tmp_path, module, monkeypatch) as (pool, inbox):
        assert not pool._slots[0].ready
        began = time.monotonic()
        pool.submit(task("loads", "s_pid", tmp_path, timeout_s=0.5))
        outcome = finished(inbox, pool=pool)
        took = time.monotonic() - began
        loaded.touch()
    assert outcome.error_type is ErrorType.TIMEOUT and outcome.retryable, outcome
    got = re.fullmatch(r"killed: its worker had not loaded the tools after ([0-9.]+) s "
                       r"\(timeout\)", outcome.message or "")
    assert got, outcome.message
    assert 1.5 <= float(got[1]) <= took + 0.05, (got[1], took)


def test_a_large_task_for_a_frozen_ready_worker_does_not_hold_the_loop(
        started: tuple[LocalPool, Inbox], tmp_path: Path) -> None:
    """A task larger than the task pipe (256 KiB) given a ready worker that stopped
    reading (SIGSTOP, a debugger) was written on the loop thread, which waited, every
    FAST job, heartbeat and stop with it, until the task's deadline killed the worker
    (the forty-seventh session's left item).  It is written aside; the worker, let go,
    runs it."""
    pool, inbox = started
    worker = pool._slots[0].process
    assert worker is not None and worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        pool.submit(task("large", "t_pid", tmp_path, log="x" * 600_000))
        took = time.monotonic() - began
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    outcome = finished(inbox, pool=pool)
    # Written on the loop, the submit waits until the task's deadline (30 s) kills the
    # worker: 10 s leaves a loaded host room for the pickling and the writer's thread.
    assert took < 10.0, f"the submit waited {took:.1f} s for the frozen worker"
    assert outcome.ok and outcome.job_id == "large", outcome


def test_a_large_task_whose_worker_dies_before_reading_it_goes_to_the_next(
        started: tuple[LocalPool, Inbox], tmp_path: Path) -> None:
    """Written aside, a large task's failed write was said by the writer's thread, which
    raced the loop's report of the worker's death: 8 of 30 such tasks were failed
    worker_crashed, never run (the session's own review).  The death waits for the
    writer's word."""
    pool, inbox = started
    outcomes = []
    for n in range(8):
        workers_ready(pool, inbox)
        worker = pool._slots[0].process
        assert worker is not None and worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
        pool.submit(task(f"large-{n}", "t_pid", tmp_path, log="x" * 600_000))
        time.sleep(0.3)
        os.kill(worker.pid, signal.SIGKILL)
        outcomes.append(finished(inbox, pool=pool))
    assert [o.error_type for o in outcomes] == [None] * 8, outcomes


def test_a_task_held_for_a_worker_killed_while_loading_its_tools_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while it imports its tools (the OOM killer, a C extension's
    segfault) with a task held for it: the task went to the next worker, held again,
    and again, its deadline reset each time: the job stayed running for good while
    workers were forked in a loop (the session's own review).  Its death is reported."""
    module = f"dies_in_import_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(
        "import multiprocessing, os, signal, time\n"
        "from ptools import Pid\n"
        "class DPid(Pid):\n    name = 'd_pid'\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    time.sleep(0.3)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    with flaky_pool(tmp_path, module, monkeypatch) as (pool, inbox):
        pool.submit(task("doomed", "d_pid", tmp_path, timeout_s=5))
        outcome = finished(inbox, pool=pool, timeout_s=30)
    assert outcome.job_id == "doomed" and outcome.error_type is ErrorType.WORKER_CRASHED


def test_the_orphan_sweep_leaves_the_children_of_a_pid_that_is_no_forkserver_of_ours(
        ) -> None:
    """A forkserver that died and could not be started again left its pid with the pool,
    and each later worker death killed every child of that pid, another process's by
    then, whose children are none of ours (the review)."""
    import subprocess  # noqa: PLC0415 - only this test

    # A shell that is not this process's child (its parent exited), with a child.
    launcher = subprocess.run(
        ["sh", "-c", "sh -c 'sleep 30 & wait' >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True, timeout=10)
    stranger = int(launcher.stdout.split()[0])
    try:
        wait_for(lambda: len(_children(stranger)) == 1, 5, "the stranger's child")
        pool = LocalPool(1, tool_modules=[])
        pool._forkserver = stranger  # as left by a forkserver gone, its pid reused
        pool._sweep()
        time.sleep(0.3)
        assert len(_children(stranger)) == 1, "a stranger's child was killed"
    finally:
        for pid in [*_children(stranger), stranger]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(child) for child in fh.read().split()]
    except FileNotFoundError:
        return []
