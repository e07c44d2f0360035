"""The local COMPUTE pool: exactly ``JOB_NUM`` killable worker processes.

The daemon's loop thread reads the workers: every worker's pipe and process
sentinel is one of the loop's readers (:meth:`Sink.watch`), so a result
reaches the loop with no thread in between, and a worker's death is handled
there too.  One timer thread only keeps time: it sleeps until the nearest
deadline and kills a task past it with its whole process group, so a stuck
task dies on time even while the loop is busy.  The death then reaches the
loop through the sentinel and the task fails ``timeout``; a worker that dies
on its own (``os._exit``, a segfault, the OOM killer) fails only its task as
``worker_crashed``.  Either way the slot gets a fresh worker before it is
offered again, so the pool is always whole.

Workers come from a ``forkserver`` that preloads numpy, pandas and the tools:
a replacement costs a fork, not an interpreter start, and no worker inherits
the processor's descriptors (claim leases) or threads.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from processor.executor import Sink, Task
from processor.runner import Outcome, how_it_ended
from processor.worker import worker_main
from spool.errors import ErrorType

log = logging.getLogger("spoolq.pool")

_PRELOAD = ["numpy", "pandas", "processor.worker", "processor.quant.tools"]
_IDLE_WAIT_S = 1.0


@dataclass(slots=True)
class _Slot:
    index: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    task: Task | None = None
    deadline: float = 0.0
    kill_reason: str | None = None
    started: float = 0.0
    lifeline: Connection | None = None


class LocalPool:
    """A fixed set of worker processes with per-task hard timeouts."""

    name = "local"

    def __init__(self, size: int, *, tool_modules: list[str], memory_mb: int = 0,
                 max_jobs: int = 0) -> None:
        self.size = size
        self.tool_modules = tool_modules
        self.memory_mb = memory_mb
        self.max_jobs = max_jobs
        self._ctx: ForkServerContext = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._slots = [_Slot(i) for i in range(size)]
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._stopping = False
        self._wake_at = 0.0  # the monitor's next wake-up at the latest (under _lock)
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        with self._lock:
            for slot in self._slots:
                self._spawn(slot)
        self._thread = threading.Thread(target=self._keep_time, name="pool-timer", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Kill every worker (and its tool's processes); no outcomes are reported.

        Called on the loop thread, like everything else here but the timer.
        """
        with self._lock:
            self._stopping = True
            for slot in self._slots:
                slot.task = None
                self._kill(slot)
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(timeout=5)
            self._bury(slot)

    # -- dispatch (loop thread) -------------------------------------------------------

    def capacity(self) -> int:
        return self.size

    def free_slots(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots if s.task is None and s.conn is not None)

    def busy(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots if s.task is not None)

    def submit(self, task: Task) -> None:
        with self._lock:
            slot = next((s for s in self._slots if s.task is None and s.conn is not None), None)
            if slot is not None:
                slot.task = task
                slot.started = time.monotonic()
                slot.deadline = slot.started + task.timeout_s
                slot.kill_reason = None
                # The timer needs waking only when this deadline comes before its own
                # next wake-up.
                early = slot.deadline < self._wake_at
        if slot is None:
            self._report(Outcome(task.job_id, ErrorType.WORKER_CRASHED,
                                 "its worker died before the job reached it", retryable=True))
            return
        assert slot.conn is not None  # only this thread closes a pipe
        with contextlib.suppress(OSError):  # the worker is dying: its sentinel reports it
            slot.conn.send(task)
        if early:
            self._poke()

    def kill(self, job_id: str, reason: str) -> bool:
        with self._lock:
            for slot in self._slots:
                if slot.task is not None and slot.task.job_id == job_id:
                    slot.kill_reason = reason
                    self._kill(slot)
                    return True
        return False

    # -- reading the workers (loop thread) --------------------------------------------

    def _readable(self, slot: _Slot, conn: Connection) -> None:
        """The worker's pipe has a message (or its end): one message per call."""
        if slot.conn is not conn:
            return  # an earlier worker's pipe, closed since the poll
        try:
            message = conn.recv()
        except (EOFError, OSError):
            self._close_pipe(slot)  # the worker is gone: its sentinel tells the rest
            return
        self._handle(slot, message)

    def _handle(self, slot: _Slot, message: tuple[Any, ...]) -> None:
        kind = message[0]
        sink = self._sink
        assert sink is not None
        if kind == "progress":
            with self._lock:
                current = slot.task is not None and slot.task.job_id == message[1]
            if current:
                sink.progress(message[1], message[2], message[3])
        elif kind == "done":
            outcome: Outcome = message[1]
            if message[2]:
                # Retiring after SPOOL_WORKER_MAX_JOBS: never offered again, replaced on exit.
                self._close_pipe(slot)
            with self._lock:
                if slot.task is None or slot.task.job_id != outcome.job_id or slot.kill_reason:
                    return  # killed meanwhile: the kill reason wins
                slot.task = None
            sink.finished(outcome)
        elif kind == "fatal":
            log.error("worker cannot start: %s", message[1])

    def _exited(self, slot: _Slot, process: BaseProcess) -> None:
        """The worker's sentinel is readable: it died.  Report its task, start another."""
        if slot.process is not process or process.is_alive():
            return
        while slot.conn is not None and slot.conn.poll():
            self._readable(slot, slot.conn)  # a result sent just before exiting still counts
        process.join(timeout=0)
        with self._lock:
            task, reason = slot.task, slot.kill_reason
            slot.task, slot.kill_reason = None, None
        self._bury(slot)
        if not self._stopping:
            with self._lock:
                self._spawn(slot)
        if task is not None:
            self._report(_death_outcome(task, reason, process.exitcode,
                                        time.monotonic() - slot.started, process.pid))

    def _report(self, outcome: Outcome) -> None:
        if self._sink is not None:
            self._sink.finished(outcome)

    # -- timer thread -----------------------------------------------------------------

    def _keep_time(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                timeout = self._next_timeout()
                self._wake_at = time.monotonic() + timeout
            if self._wake_r.poll(timeout):
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
            self._enforce_deadlines()

    def _next_timeout(self) -> float:
        deadlines = [s.deadline for s in self._slots if s.task is not None and not s.kill_reason]
        if not deadlines:
            return _IDLE_WAIT_S
        return max(0.0, min(deadlines) - time.monotonic())

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                if slot.task is not None and not slot.kill_reason and now >= slot.deadline:
                    slot.kill_reason = ErrorType.TIMEOUT.value
                    self._kill(slot)

    # -- processes --------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        # Only this process holds the lifeline's write end: when it dies, however it
        # dies, the worker reads EOF and kills itself with everything its tool started.
        # (PR_SET_PDEATHSIG alone names the forkserver, which outlives the processor.)
        life_r, life_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=worker_main, name=f"spoolq-worker-{slot.index}", daemon=True,
            args=(child, self.tool_modules, self.memory_mb, self.max_jobs, life_r))
        process.start()
        child.close()
        life_r.close()
        slot.process, slot.conn, slot.lifeline = process, parent, life_w
        assert self._sink is not None
        # Bound to this pipe and process: a poll's stale readiness never reaches a successor.
        self._sink.watch(parent.fileno(), lambda: self._readable(slot, parent))
        self._sink.watch(process.sentinel, lambda: self._exited(slot, process))

    def _close_pipe(self, slot: _Slot) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None:
            assert self._sink is not None
            self._sink.unwatch(conn.fileno())
            conn.close()

    def _bury(self, slot: _Slot) -> None:
        """Forget a dead worker: stop reading it and close what led to it."""
        self._close_pipe(slot)
        if slot.process is not None:
            assert self._sink is not None
            self._sink.unwatch(slot.process.sentinel)
        if slot.lifeline is not None:
            slot.lifeline.close()
        slot.process, slot.lifeline = None, None

    @staticmethod
    def _kill(slot: _Slot) -> None:
        pid = slot.process.pid if slot.process is not None else None
        if pid is None:
            return
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"!")


def _death_outcome(task: Task, reason: str | None, exitcode: int | None, ran_s: float,
                   pid: int | None) -> Outcome:
    if reason == ErrorType.TIMEOUT.value:
        return Outcome(task.job_id, ErrorType.TIMEOUT,
                       f"killed after {task.timeout_s:g} s (timeout)", retryable=True,
                       pid=pid or 0, duration_s=ran_s)
    if reason == ErrorType.CANCELLED.value:
        return Outcome(task.job_id, ErrorType.CANCELLED, "cancelled while running",
                       pid=pid or 0, duration_s=ran_s)
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED,
                   f"worker process {how_it_ended(exitcode)}", retryable=True, pid=pid or 0,
                   duration_s=ran_s)

