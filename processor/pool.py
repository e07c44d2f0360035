"""The local COMPUTE pool: exactly ``JOB_NUM`` killable worker processes.

The daemon's loop thread reads the workers: every worker's channel (two pipes,
:mod:`processor.channel`) and process sentinel is one of the loop's readers
(:meth:`Sink.watch`), so a result reaches the loop with no thread in between,
and a worker's death is handled there too.  Reads never block: each takes what
has arrived and unpickles the messages that are complete, so a large result, or
a worker stopped halfway through sending one, never holds the loop.  One timer
thread only keeps time: it sleeps until the nearest deadline and kills a task
past it with its whole process group, so a stuck task dies on time even while
the loop is busy.  The death then reaches the loop through the sentinel and the task
fails ``timeout`` (unless its result had already arrived: a result wins over
a deadline that passed while the loop was busy); a worker that dies on its
own (``os._exit``, a segfault, the OOM killer) fails only its task as
``worker_crashed``.  Either way the slot gets a fresh worker before it is
offered again, so the pool is always whole.  A worker that says it cannot start
(out of threads under a limit on processes, its tools not importable) before it
read its task fails nobody: the task waits for the next worker, started after a
pause (:data:`_RESPAWN_RETRY_S`), not forked again as fast as it dies.

What a worker's tool writes to fds 1 and 2 (``print``, C code, its child
processes) comes through two pipes the loop reads the same way, and is logged
as the job's (:mod:`processor.stdio_pipes`): the pool says when each task
starts and ends on its slot.

Workers come from a ``forkserver`` that preloads numpy, pandas and the tools:
a replacement costs a fork, not an interpreter start, and no worker inherits
the processor's descriptors (claim leases) or threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing as mp
import multiprocessing.forkserver
import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from processor.channel import ParentEnd, WorkerEnd, complete_messages, frame_header, open_channel
from processor.executor import READY_WAIT_S, Sink, Task, WorkerConfig
from processor.proctree import (
    DEATH_UNTOLD_S,
    ended_with_forkserver,
    ignores,
    kill_orphans,
    kill_tree,
    parent_of,
    resume_stopped_child,
)
from processor.runner import SIGKILLED_BY, Outcome, death_outcome, how_it_ended
from processor.startup import PRELOAD, start_resource_tracker
from processor.stdio_pipes import StdioPipes, Stream
from processor.worker import worker_main
from spool.errors import ErrorType

log = logging.getLogger("spoolq.pool")

# Every live worker of every pool in this process: they share one forkserver, and what
# else is its child is the leftover of a worker that died (see _sweep).
_WORKERS: set[int] = set()

_IDLE_WAIT_S = 1.0
_READ_BYTES = 1 << 20
_RESPAWN_RETRY_S = 1.0


RETIRE_WAIT_S = 5.0
"""How long a retiring worker may take to exit after its last result before it is
killed: one that hung on its way out (a tool's replacement of ``sys.stdout`` that blocks
in its flush) held its slot, one worker of JOB_NUM, for good."""
SHUTDOWN_JOIN_S = 5.0
"""How long a shutdown waits for its killed workers' ends to be told, in all."""
_RESUME_LOOK_S = 0.1
"""How often a shutdown's wait looks whether the forkserver was stopped."""


@dataclass(slots=True)
class _Slot:
    index: int
    process: BaseProcess | None = None
    channel: ParentEnd | None = None  # this end of the worker's pipes
    unread: bytearray = field(default_factory=bytearray)  # a message still arriving
    task: Task | None = None
    deadline: float = 0.0
    kill_reason: str | None = None
    killed_at: float = math.inf  # when its last kill began (monotonic, as the worker's)
    started: float = 0.0
    lifeline: Connection | None = None
    output: StdioPipes | None = None  # the read ends of the worker's fds 1 and 2
    fatal: str | None = None  # the worker said it cannot start, before reading a task
    cannot_start: bool = False  # its last worker could not start; none loaded since
    ready: bool = False  # the worker said it loaded its tools: it may be offered a task
    loading: bool = False  # it loads what its task's tool needs first (see _loading)
    unsent: bool = False  # its task's write failed: the worker died before reading it
    writer: threading.Thread | None = None  # writing its task aside (a large one)
    held: bytes = b""  # its task, framed, kept until the worker has loaded its tools
    retiring: tuple[BaseProcess, float] | None = None  # a worker to be gone by then
    forkserver: int = 0  # the pid of the forkserver its worker came from


class LocalPool:
    """A fixed set of worker processes with per-task hard timeouts."""

    name = "local"

    def __init__(self, size: int, *, tool_modules: list[str], memory_mb: int = 0,
                 max_jobs: int = 0, log_level: str = "INFO",
                 params: tuple[tuple[str, str], ...] = ()) -> None:
        self.size = size
        self.tool_modules = tool_modules
        self.config = WorkerConfig(tuple(tool_modules), memory_mb, max_jobs, log_level,
                                   params=params)
        self._ctx: ForkServerContext = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._slots = [_Slot(i) for i in range(size)]
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._stopping = False
        self._wake_at = 0.0  # the timer's next wake-up at the latest (under _lock)
        self._respawn_at = 0.0  # when to try again to start workers that failed to start
        self._buffer = bytearray(_READ_BYTES)  # the loop thread's reads of worker channels
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._forkserver = 0  # the pid of the workers' parent, once one was started
        # Tasks whose worker could not start (it said so before reading one): each goes
        # to the next worker that does, as free_slots finds one, or fails once it waited
        # as long as its timeout, counted from when it first waited (_waited: kept while
        # another worker has it, so a worker that fails it again adds no time).
        self._waiting: deque[Task] = deque()
        self._waited: dict[str, float] = {}  # job id -> when its task first waited
        self._start_failing: str | None = None  # why, since the last result came
        self._killed: list[tuple[BaseProcess, float]] = []  # deaths to hear of (under _lock)

    # -- life cycle -------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        for slot in self._slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._keep_time, name="pool-timer", daemon=True)
        self._thread.start()

    def shutdown(self) -> dict[str, float]:
        """Kill every worker (and its tool's processes); no outcomes are reported, and
        no kill goes unconfirmed here (SIGKILL, on this host).

        Called on the loop thread, like everything else here but :meth:`start`
        (before the loop runs) and the timer.
        """
        with self._lock:
            self._stopping = True
            self._waiting.clear()
            self._waited.clear()
            for slot in self._slots:
                slot.task = None
                self._kill(slot)
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # Stopped, the forkserver tells no death: the joins, then multiprocessing's own at
        # exit, hung.  Looked at while the joins wait, not once: a SIGSTOP sent just before
        # the stop may take hold after a first look.
        deadline = time.monotonic() + SHUTDOWN_JOIN_S
        for slot in self._slots:
            while slot.process is not None and slot.process.exitcode is None:
                self._resume_forkserver()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                slot.process.join(timeout=min(left, _RESUME_LOOK_S))
            self._bury(slot)
        return {}

    # -- dispatch (loop thread) -------------------------------------------------------

    def capacity(self) -> int:
        return self.size

    def room(self) -> int:
        """COMPUTE jobs the pool can run now (the status file's ``compute_room``): its
        workers but those that cannot start (a ``SPOOL_TOOLS`` module removed or broken since
        the processor started, no threads under a limit on processes), each until its next
        worker loads them.  Said whole meanwhile, ``spoolq stats`` showed the jobs waiting
        for a worker as running on busy workers, and ``spoolq_compute_room`` alerted on
        nothing, while each failed ``worker_crashed`` at its time limit (h394)."""
        return sum(not slot.cannot_start for slot in self._slots)

    def free_slots(self) -> int:
        """Free workers, once the tasks waiting for one have them (the daemon asks at
        each dispatch and heartbeat: workers that could not start are started here)."""
        if self._respawn_at and time.monotonic() >= self._respawn_at and not self._stopping:
            self._respawn_at = 0.0
            for slot in self._slots:
                if slot.process is None:
                    self._respawn(slot)
        for slot in self._slots:
            if slot.output is not None and slot.output.draining:
                slot.output.settled()  # its last task's output read since?
        with self._lock:
            free = sum(1 for s in self._slots if _free(s))
        while self._waiting and free:
            self.submit(self._waiting.popleft())
            free -= 1
        if self._waiting:
            self._expire_waiting()
        return max(0, free - len(self._waiting))

    def _expire_waiting(self) -> None:
        """Fail the waiting tasks that waited their timeout: no worker could start for so
        long (a tool module that imports only in the processor, say) is no pause."""
        now = time.monotonic()
        for task in list(self._waiting):
            since = self._waited[task.job_id]
            if now - since >= task.timeout_s:
                self._waiting.remove(task)
                del self._waited[task.job_id]
                self._report(Outcome(task.job_id, ErrorType.WORKER_CRASHED,
                                     f"no worker could start in {task.timeout_s:g} s: "
                                     f"{self._start_failing}", retryable=True, pid=0,
                                     duration_s=now - since))

    def busy(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots if s.task is not None) + len(self._waiting)

    def linger_until(self, job_id: str) -> float | None:
        return None  # a kill here is a SIGKILL of the worker's session, waited for

    def unstarted(self) -> frozenset[str]:
        return frozenset(task.job_id for task in self._waiting)

    def submit(self, task: Task) -> None:
        with self._lock:
            # A ready worker first: the first free one was, after a crash, its replacement,
            # and the job waited out that worker's import while another sat ready.
            free = [s for s in self._slots if _free(s)]
            slot = next((s for s in free if s.ready), free[0] if free else None)
            if slot is not None:
                slot.task, slot.killed_at = task, math.inf  # no kill of this task yet
                # A worker that has not loaded its tools yet reads the task once it has:
                # the time limit starts then ("ready"), the import bounded meanwhile.  A
                # tool module slow to import (a model file, torch) counted against the
                # first job, and failed every COMPUTE job timeout, for ever, each timeout
                # taking the worker and its import with it.
                early = self._time_from_now(slot, task, 0.0 if slot.ready else READY_WAIT_S)
                slot.kill_reason, slot.loading = None, False
        if slot is None:
            self._report(Outcome(task.job_id, ErrorType.WORKER_CRASHED,
                                 "its worker died before the job reached it", retryable=True))
            return
        assert slot.channel is not None and slot.output is not None  # only this thread closes them
        slot.output.begin(task.job_id, task.tool)
        # Plain pickle: a task is plain data, and multiprocessing's pickler (reducers for
        # sockets and descriptors) is a Python-level class, twice the cost.
        data = pickle.dumps(task.fields())
        if early:
            self._poke()
        if not slot.ready:
            # Sent once the worker loaded its tools (_ready): written now, a task larger
            # than the pipe held the loop, FAST jobs, heartbeats and stops with it, until
            # a slow import was over (a review: 600 KB of params, an 8 s import, a FAST
            # echo 7 s late).
            slot.held = frame_header(len(data)) + data
            return
        self._send(slot, task, frame_header(len(data)) + data)

    def _send(self, slot: _Slot, task: Task, framed: bytes) -> None:
        """Write ``task`` (``framed``) to the slot's worker, on the loop thread."""
        assert slot.channel is not None

        def unsent() -> None:
            # The worker died before it read the task (killed idle: the OOM killer): its
            # sentinel tells, and the task goes to the next worker, where it was failed
            # worker_crashed, never run (a review).
            with self._lock:
                if slot.task is task:
                    slot.unsent = True

        slot.writer = slot.channel.send_aside(framed, unsent)

    def kill(self, job_id: str, reason: str) -> bool:
        with self._lock:
            for slot in self._slots:
                if slot.task is not None and slot.task.job_id == job_id:
                    slot.kill_reason = reason
                    self._kill(slot)
                    return True
            waiting = next((t for t in self._waiting if t.job_id == job_id), None)
            if waiting is None:
                return False
            self._waiting.remove(waiting)
            self._waited.pop(job_id, None)
        self._report(death_outcome(waiting, reason, None, 0.0, None))  # it never started
        return True

    # -- reading the workers (loop thread) --------------------------------------------

    def _readable(self, slot: _Slot, link: ParentEnd) -> bool:
        """Read what the worker sent, without blocking; handle each complete message.

        False when nothing more was there to read.
        """
        if slot.channel is not link:
            return False  # an earlier worker's channel, closed since the poll
        try:
            # Into a buffer kept for it: recv(n) allocates n bytes first, and at 1 MiB
            # that is an mmap and munmap per message.
            size = link.recv_into(self._buffer)
        except BlockingIOError:
            return False
        except OSError:
            size = 0
        if not size:
            self._close_channel(slot)  # the worker is gone: its sentinel tells the rest
            return False
        with memoryview(self._buffer) as view:
            slot.unread += view[:size]
        try:
            for message in complete_messages(slot.unread):
                self._handle(slot, message)
        except Exception:  # e.g. a tool wrote into its worker's channel: the stream is lost
            log.exception("unreadable message from worker %d: killing it", slot.index)
            self._close_channel(slot)
            with self._lock:
                self._kill(slot)  # its sentinel reports its job as worker_crashed
            return False
        return True

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
            outcome = Outcome(*message[1])
            outcome.ended = message[3]
            self._done(slot, outcome, retiring=message[2])
        elif kind == "ready":
            self._ready(slot)
        elif kind == "loading":
            self._loading(slot)
        elif kind == "fatal":
            self._cannot_start(slot, str(message[1]))

    def _done(self, slot: _Slot, outcome: Outcome, *, retiring: bool) -> None:
        """The worker's result for its task (``retiring``: the worker exits after it)."""
        if retiring:
            # Retiring (SPOOL_WORKER_MAX_JOBS, or out of memory): never offered again,
            # replaced on exit.
            self._close_channel(slot)
            if slot.process is not None:
                with self._lock:
                    slot.retiring = slot.process, time.monotonic() + RETIRE_WAIT_S
        with self._lock:
            if slot.task is None or slot.task.job_id != outcome.job_id:
                return
            if slot.kill_reason not in (None, ErrorType.TIMEOUT.value):
                return  # cancelled meanwhile: the cancel wins
            killed = slot.kill_reason is not None
            if killed and outcome.ended is not None and outcome.ended >= slot.killed_at:
                # Made once its kill at the deadline had begun: the kill takes the tool's
                # processes first, and a tool that waited on one (subprocess.run) went on
                # to return, done with its killed child's -9 (QA h395).  The worker's
                # death reports the timeout.
                return
            # A result that arrived wins over a deadline that passed before the loop
            # read it (the worker's death that follows reports nothing).
            slot.task, slot.kill_reason = None, None
        if killed:
            self._close_channel(slot)  # dying: not offered again before its successor
        if slot.output is not None:
            slot.output.end()  # the slot takes no other task until this is read
        self._result_came(outcome.job_id)
        self._report(outcome)

    def _loading(self, slot: _Slot) -> None:
        """The worker imports what its task's tool needs before it runs it (the quant
        modules, with ``SPOOL_PRELOAD_QUANT`` off: :func:`~processor.worker
        .load_quant`): the task has :data:`READY_WAIT_S` more meanwhile, as with a
        worker not ready yet (see submit), and its time starts at the ``ready`` that
        follows (:meth:`_ready`).  The worker stays ready: a death now is its task's."""
        with self._lock:
            if slot.task is not None and not slot.kill_reason:
                self._time_from_now(slot, slot.task, READY_WAIT_S)  # later: no wake-up
                slot.loading = True

    def _ready(self, slot: _Slot) -> None:
        """The worker loaded its tools, or what its task's tool needs (:meth:`_loading`):
        a task given it before is sent, and starts its time now (see submit)."""
        slot.cannot_start = False
        with self._lock:
            slot.ready, slot.loading = True, False
            task = slot.task if not slot.kill_reason else None
            early = task is not None and self._time_from_now(slot, task)
        if early:
            self._poke()
        held, slot.held = slot.held, b""
        if held and task is not None and slot.channel is not None:
            self._send(slot, task, held)

    def _time_from_now(self, slot: _Slot, task: Task, extra_s: float = 0.0) -> bool:
        """Start ``task``'s time on ``slot`` now (under the lock); True when its deadline
        comes before the timer's next wake-up, which then needs waking."""
        slot.started = time.monotonic()
        slot.deadline = slot.started + task.timeout_s + extra_s
        return slot.deadline < self._wake_at

    def _result_came(self, job_id: str) -> None:
        """A worker started and ran its task: a task that waited for one is done waiting."""
        if self._start_failing is not None:
            self._start_failing = None
            log.info("workers start again")
        if self._waited:
            self._waited.pop(job_id, None)

    def _cannot_start(self, slot: _Slot, why: str) -> None:
        """The worker says it cannot start, before it read a task (see :meth:`_exited`)."""
        slot.fatal = why
        slot.cannot_start = True
        if self._start_failing is None:  # one line, not one per try
            log.error("worker cannot start, trying again every %g s: %s", _RESPAWN_RETRY_S, why)
        self._start_failing = why

    def _exited(self, slot: _Slot, process: BaseProcess) -> None:
        """The worker's sentinel is readable: it died.  Report its task, start another."""
        if slot.process is not process or process.is_alive():
            return
        while slot.channel is not None and self._readable(slot, slot.channel):
            pass  # a result sent just before exiting still counts
        process.join(timeout=0)
        writer, slot.writer = slot.writer, None
        if writer is not None:  # its write ends at once (EPIPE) with the worker gone:
            writer.join(timeout=1.0)  # whether the task was read is known only then
        with self._lock:
            task, reason = slot.task, slot.kill_reason
            slot.task, slot.kill_reason = None, None
            # Its task's time had not started: a deadline then was the load's.
            loading = ("the tools" if not slot.ready else
                       "the modules its tool needs" if slot.loading else None)
            slot.loading = False
            fatal, slot.fatal = slot.fatal, None
            # Died loading its tools, unasked and unsaid (a segfault or os._exit in a
            # module's import, an overflow in its setrlimit): started again after a pause,
            # as one that says it cannot start, not at once (hundreds a second, for good).
            unready = fatal is None and reason is None and not slot.ready
            # Written to a worker that died idle, or held for one that died loading its
            # tools: the next worker takes it, within the job's time limit from when it
            # first waited (_expire_waiting; held again for ever while workers crashed,
            # before that: a review).  Reported as the job's death, it failed at once,
            # never run (QA: every COMPUTE job while an upgrade's files were half there).
            unsent, slot.unsent = slot.unsent, False
            if task is not None and (fatal is not None or unsent or unready) and reason is None:
                # It never read the task: not the job's crash.  The next worker takes it.
                # (since it first waited: each worker that fails it again adds no time)
                self._waited.setdefault(task.job_id, time.monotonic())
                self._waiting.appendleft(task)
                task = None
        self._bury(slot, keep_output=True)
        if task is not None:
            if self._waited:
                self._waited.pop(task.job_id, None)
            self._report(death_outcome(task, reason, process.exitcode,
                                        time.monotonic() - slot.started, process.pid,
                                        ended=_ended_with_forkserver(process,
                                                                     slot.forkserver),
                                        loading=loading))
        self._sweep()
        self._close_output(slot)  # after the sweep: what its orphans wrote is in the pipes
        if self._stopping:
            return
        if unready:
            self._cannot_start(slot, _unready_death(process, slot.forkserver))
            slot.fatal = None
        if fatal is not None or unready:
            # Started again after a pause, not at once: one that cannot start its threads
            # (or its tools) would otherwise be forked again and again, as fast as it dies.
            self._respawn_at = time.monotonic() + _RESPAWN_RETRY_S
        else:
            self._respawn(slot)

    def _sweep(self) -> None:
        """Kill what a dead worker's tool left running: adopted by the forkserver, while
        it is this process's child (gone, its pid may be another's by now, whose children
        are none of ours: the review; its orphans came to this process, the subreaper)."""
        if self._forkserver_is_ours():
            kill_orphans(self._forkserver, _WORKERS)

    def _forkserver_is_ours(self) -> bool:
        """The forkserver's pid is still this process's child (not a pid reused since)."""
        return bool(self._forkserver) and parent_of(self._forkserver) == os.getpid()

    def _respawn(self, slot: _Slot) -> None:
        """A fresh worker for the slot; on failure the slot stays empty and is retried."""
        try:
            self._spawn(slot)
        except Exception as exc:  # EAGAIN, EMFILE, a forkserver that cannot start...
            gone = forkserver_socket_gone()
            if gone is not None:
                # Said "[Errno 2] No such file or directory" each second, naming no file,
                # while every COMPUTE job waited in pending/ for good (h408).
                log.error("cannot start worker %d, trying again in %g s: the workers' "
                          "forkserver's socket %s is gone (removed by a cleaner of "
                          "temporary files, or by hand): no worker can start until the "
                          "processor restarts; point TMPDIR at a folder nothing cleans",
                          slot.index, _RESPAWN_RETRY_S, gone)
            else:
                log.error("cannot start worker %d, trying again in %g s: %s", slot.index,
                          _RESPAWN_RETRY_S, exc)
            self._bury(slot)
            self._respawn_at = time.monotonic() + _RESPAWN_RETRY_S

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
            try:
                self._enforce_deadlines()
            except Exception:  # never let one bad pass end deadline enforcement
                log.exception("deadline check failed")

    def _next_timeout(self) -> float:
        deadlines = [s.deadline for s in self._slots
                     if s.task is not None and not s.kill_reason and math.isfinite(s.deadline)]
        if not deadlines:
            return _IDLE_WAIT_S
        return min(_IDLE_WAIT_S, max(0.0, min(deadlines) - time.monotonic()))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                if slot.retiring is not None and now >= slot.retiring[1]:
                    self._retire_now(slot.retiring[0])
                    slot.retiring = None
                if slot.task is None or slot.kill_reason or now < slot.deadline:
                    continue
                assert slot.process is not None  # buried only once its task is cleared
                if _readable_now(slot.process.sentinel):
                    # Dead already, and perhaps reaped: its pid may be someone else's by
                    # now.  The loop reports the death (and a result, if one came).
                    slot.deadline = math.inf
                    continue
                slot.kill_reason = ErrorType.TIMEOUT.value
                self._kill(slot)
            self._killed = [(process, at) for process, at in self._killed
                            if not _readable_now(process.sentinel)]
            if any(now - at > DEATH_UNTOLD_S for _, at in self._killed):
                self._resume_forkserver()
                self._killed = [(process, now) for process, _ in self._killed]

    def _resume_forkserver(self) -> None:
        """Resume the workers' forkserver if a signal stopped it (SIGSTOP; not one a
        debugger holds): a stopped forkserver tells no worker's death and forks none, so
        a killed job ran on for good, the COMPUTE lane froze with no word, and the
        processor hung at exit (QA).  Looked at when a killed worker's death is overdue,
        and at shutdown."""
        if resume_stopped_child(self._forkserver):
            log.error("the workers' forkserver (pid %d) is stopped, so no worker's end is "
                      "told and none is started: resuming it (SIGCONT)", self._forkserver)

    def _retire_now(self, process: BaseProcess) -> None:
        """Kill a retiring worker that has not exited in time: its sentinel then tells
        the loop, which starts another.  Alive, its pid is still its own."""
        if process.pid is None or _readable_now(process.sentinel):
            return
        log.warning("a retiring worker (pid %d) has not exited %g s after its last job: "
                    "killing it", process.pid, RETIRE_WAIT_S)
        kill_tree(process.pid)
        self._killed.append((process, time.monotonic()))

    # -- processes --------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        # Two pipes in Connection's framing: this end reads without blocking and writes
        # blocking (see processor.channel for why not a socket pair).
        opened: list[ParentEnd | WorkerEnd | Connection | StdioPipes] = []
        try:
            output = StdioPipes()
            opened.append(output)
            output_ends = output.hand_over()  # for the worker, which dups them to 1 and 2
            opened += output_ends
            parent, child = open_channel()
            opened += [parent, child]
            # Only this process holds the lifeline's write end: when it dies, however it
            # dies, the worker reads EOF and kills itself with everything its tool
            # started.  (PR_SET_PDEATHSIG alone names the forkserver, which outlives
            # the processor.)
            life_r, life_w = self._ctx.Pipe(duplex=False)
            opened += [life_r, life_w]
            process = self._ctx.Process(
                target=worker_main, name=f"spoolq-worker-{slot.index}", daemon=True,
                args=(child, self.config, life_r, output_ends))
            # A tracker that died is started again by the start below, and took this
            # process's handlers, which its exec made the defaults: the next USR1 to the
            # process group ended it too.  Nothing when it runs.
            start_resource_tracker()
            process.start()
        except BaseException:
            for end in opened:
                end.close()
            raise
        child.close()  # the worker has its own copies
        life_r.close()
        for end in output_ends:
            end.close()
        slot.process, slot.channel, slot.lifeline = process, parent, life_w
        slot.output = output
        slot.ready = False
        if process.pid:
            _WORKERS.add(process.pid)
            forkserver = parent_of(process.pid)
            if forkserver and self._forkserver and forkserver != self._forkserver:
                # Its workers' jobs failed worker_crashed with exit 255 and nothing said
                # why (QA, memory pressure: the OOM killer's, or a kill from outside).
                log.warning("the workers' forkserver (pid %d) is gone: a new one (pid %d) "
                            "forks them now", self._forkserver, forkserver)
            if forkserver and forkserver != self._forkserver:
                _say_unloaded(forkserver)
            self._forkserver = forkserver or self._forkserver
            slot.forkserver = self._forkserver
        slot.unread.clear()
        assert self._sink is not None
        # Bound to this channel and process: stale readiness never reaches a successor.
        self._sink.watch(parent.fileno(), lambda: self._readable(slot, parent))
        self._sink.watch(process.sentinel, lambda: self._exited(slot, process))
        for stream in output.streams:
            self._sink.watch(stream.fd, functools.partial(self._output_readable, slot,
                                                          output, stream), bulk=True)

    def _output_readable(self, slot: _Slot, output: StdioPipes, stream: Stream) -> None:
        """Log what the worker's tool wrote to one of its pipes (one read)."""
        if slot.output is not output:
            return  # an earlier worker's pipe, closed since the poll
        output.read(stream)
        if stream.ended:  # no writer left: a pipe at end of file would wake every poll
            assert self._sink is not None
            self._sink.unwatch(stream.fd)

    def _close_output(self, slot: _Slot) -> None:
        """Read what is left in the slot's pipes, log it as its job's, close them."""
        output, slot.output = slot.output, None
        if output is not None:
            assert self._sink is not None
            for stream in output.streams:
                self._sink.unwatch(stream.fd)
            output.close()

    def _close_channel(self, slot: _Slot) -> None:
        link, slot.channel = slot.channel, None
        if link is not None:
            assert self._sink is not None
            self._sink.unwatch(link.fileno())
            link.close()

    def _bury(self, slot: _Slot, *, keep_output: bool = False) -> None:
        """Forget a dead worker: stop reading it and close what led to it (its pipes
        too, unless ``keep_output``: then the caller closes them)."""
        self._close_channel(slot)
        if slot.process is not None:
            assert self._sink is not None
            self._sink.unwatch(slot.process.sentinel)
            _WORKERS.discard(slot.process.pid or 0)
        if slot.lifeline is not None:
            slot.lifeline.close()
        slot.process, slot.lifeline, slot.held = None, None, b""
        if not keep_output:
            self._close_output(slot)

    def _kill(self, slot: _Slot) -> None:
        pid = slot.process.pid if slot.process is not None else None
        if pid is None:
            return
        slot.killed_at = time.monotonic()  # before its processes die (see _done)
        kill_tree(pid)
        assert slot.process is not None
        self._killed.append((slot.process, time.monotonic()))

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"!")


def _say_unloaded(forkserver: int) -> None:
    """An error line when a new forkserver did not run its preload's first module
    (:mod:`processor.forkserver_init`, whose SIGTERM it ignores): multiprocessing lets a
    preload's ImportError pass, so one started while spoolq's files were gone (an
    upgrade half installed) ran on without it, unsaid: no subreaper for its workers'
    leftovers, and a SIGTERM to the process group ended it with every running job
    (QA)."""
    if ignores(forkserver, signal.SIGTERM) is False:
        log.error("the workers' forkserver (pid %d) started without spoolq's preload "
                  "(its files changed or removed since the processor started?): a SIGTERM "
                  "to the process group ends it with every running job, and what a dead "
                  "worker's tool left runs on; restart the processor", forkserver)


def _unready_death(process: BaseProcess, forkserver: int) -> str:
    """Why a worker died before it loaded its tools, as far as its end tells."""
    ended = _ended_with_forkserver(process, forkserver)
    if ended:
        return f"a worker {ended}, before it loaded its tools"
    code = process.exitcode
    if code == -signal.SIGKILL:
        # Not the code's fault as far as anyone can tell: a SIGKILLed loading worker was
        # said to mean "spoolq or the tools changed" (the fifty-fourth session's list).
        return f"a worker was killed by signal SIGKILL before it loaded its tools ({SIGKILLED_BY})"
    if code is not None and code < 0:
        return (f"a worker was {how_it_ended(code)} before it loaded its tools (a crash "
                "in a tool module's import, or a kill from outside)")
    return (f"a worker exited with status {code} before it loaded its tools (spoolq or the "
            "tools changed or removed since the processor started? its traceback, if any, "
            "is on the processor's stderr)")


def _ended_with_forkserver(process: BaseProcess, forkserver: int) -> str | None:
    """How a worker ended, when its forkserver died and took it along
    (:func:`~processor.proctree.ended_with_forkserver`)."""
    if not ended_with_forkserver(process.exitcode, forkserver):
        return None
    return f"ended with the workers' forkserver (pid {forkserver}), which died"


def _free(slot: _Slot) -> bool:
    """The slot's worker may take a task: it runs none, is not dying or retiring, and
    what its last task wrote is read (see :meth:`StdioPipes.end`)."""
    return (slot.task is None and slot.channel is not None
            and not (slot.output is not None and slot.output.draining))


def _readable_now(fd: int) -> bool:
    poller = select.poll()  # (select.select fails on fds past 1023)
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def forkserver_socket_gone() -> str | None:
    """The path of the workers' forkserver's socket when it is no longer there (in
    multiprocessing's folder under TMPDIR or /tmp, where a cleaner of old files or an
    ``rm -rf /tmp/*`` may take it: the forkserver lives on, but no worker can be forked
    again), else None."""
    forkserver = getattr(multiprocessing.forkserver, "_forkserver", None)
    address = getattr(forkserver, "_forkserver_address", None)
    if not isinstance(address, str) or not address or address.startswith("\0"):
        return None  # none started, or an abstract socket (no file to lose)
    return None if os.path.lexists(address) else address

