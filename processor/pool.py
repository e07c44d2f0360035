"""The local COMPUTE pool: exactly ``JOB_NUM`` killable worker processes.

One monitor thread owns the waiting: it sleeps in ``connection.wait`` on every
worker's pipe and process sentinel until a message, a death or the nearest
deadline.  A task past its deadline is killed with its whole process group
and reported ``timeout``; a worker that dies on its own (``os._exit``, a
segfault, the OOM killer) fails only its task as ``worker_crashed``.  Either
way the slot gets a fresh worker before it is offered again, so the pool is
always whole.

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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
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
    pending_spawn: bool = field(default=True)
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
        self._thread = threading.Thread(target=self._monitor, name="pool-monitor", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Kill every worker (and its tool's processes); no outcomes are reported."""
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

    # -- dispatch ---------------------------------------------------------------------

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
            if slot is None:  # the free worker died between free_slots() and now
                if self._sink is not None:
                    self._sink.finished(Outcome(task.job_id, ErrorType.WORKER_CRASHED,
                                                "its worker died before the job reached it",
                                                retryable=True))
                return
            slot.task = task
            slot.started = time.monotonic()
            slot.deadline = slot.started + task.timeout_s
            slot.kill_reason = None
            try:
                assert slot.conn is not None
                slot.conn.send(task)
            except OSError:
                slot.kill_reason = None  # the worker is dying: its sentinel reports the crash
            # The monitor already waits on this worker's pipe; it needs waking only when
            # the new deadline comes before its own next wake-up.
            early = slot.deadline < self._wake_at
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

    # -- monitor thread ---------------------------------------------------------------

    def _monitor(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                waitables: dict[Any, _Slot] = {}
                for slot in self._slots:
                    if slot.process is not None:
                        waitables[slot.process.sentinel] = slot
                    if slot.conn is not None:
                        waitables[slot.conn] = slot
                timeout = self._next_timeout()
                self._wake_at = time.monotonic() + timeout
            ready = wait([*waitables, self._wake_r], timeout)
            if self._wake_r in ready:
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
            for item in ready:
                owner = waitables.get(item)
                if owner is None:
                    continue
                if isinstance(item, Connection):
                    self._drain(owner)
                else:
                    self._on_exit(owner)
            self._enforce_deadlines()

    def _next_timeout(self) -> float:
        deadlines = [s.deadline for s in self._slots if s.task is not None and not s.kill_reason]
        if not deadlines:
            return _IDLE_WAIT_S
        return max(0.0, min(deadlines) - time.monotonic())

    def _drain(self, slot: _Slot) -> None:
        conn = slot.conn
        while conn is not None:
            try:
                if not conn.poll():
                    return
                message = conn.recv()
            except (EOFError, OSError):
                with self._lock:
                    if slot.conn is conn:
                        slot.conn = None  # the sentinel tells the rest
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
            with self._lock:
                if message[2] and slot.conn is not None:
                    # Retiring after SPOOL_WORKER_MAX_JOBS: never offered again, replaced on exit.
                    slot.conn.close()
                    slot.conn = None
                if slot.task is None or slot.task.job_id != outcome.job_id or slot.kill_reason:
                    return  # killed meanwhile: the kill reason wins
                slot.task = None
            sink.finished(outcome)
        elif kind == "fatal":
            log.error("worker cannot start: %s", message[1])

    def _on_exit(self, slot: _Slot) -> None:
        self._drain(slot)  # a result sent just before exiting still counts
        with self._lock:
            process = slot.process
            if process is None or process.is_alive():
                return
            process.join(timeout=0)
            task, reason = slot.task, slot.kill_reason
            slot.task, slot.kill_reason = None, None
            for end in (slot.conn, slot.lifeline):
                if end is not None:
                    end.close()
            slot.conn, slot.process, slot.lifeline = None, None, None
            if not self._stopping:
                self._spawn(slot)
        if task is not None and self._sink is not None:
            self._sink.finished(_death_outcome(task, reason, process.exitcode,
                                               time.monotonic() - slot.started, process.pid))

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

