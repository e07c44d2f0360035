"""What runs on a Dask worker for one COMPUTE job: the tool in a killable child.

Dask cannot stop a running task, so :func:`run_task` never runs the tool in
the worker's thread.  It hands the job to a child process running the same
:func:`~processor.worker.worker_main` as the local pool (its own session, a
parent-death signal, a subreaper, the optional memory cap), started from a
forkserver inside the Dask worker with numpy, pandas and the tools preloaded
and kept for the next job.  The task thread then waits on the child's pipe
and exit sentinel, at most :data:`POLL_S` at a time, and:

* forwards progress to the processor as Dask events (``Worker.log_event`` on
  the processor's topic), at most every :data:`PROGRESS_EVERY_S`;
* kills the child with every process below it at the job's deadline and returns
  ``timeout``;
* kills it when the processor asks (:func:`kill_on_worker`, sent with
  ``Client.run``), when Dask cancels the task (the processor cancelled it or
  lost its connection), and when the worker closes or loses its scheduler,
  so no run outlives the processor's knowledge of it;
* returns ``worker_crashed`` when the child dies by itself;
* reads the child's fds 1 and 2, pipes as in the local pool
  (:mod:`processor.stdio_pipes`), and logs each line as a ``spoolq.output``
  JSON line of the job on this worker's stderr: ``print``, C code and child
  processes alike, and text left without a newline when the job ends, however
  it ends (read once the child and its orphans are gone).

It always returns one :class:`~processor.runner.Outcome` and never raises
for anything the tool does.  Per worker process, the idle children and the
runs in progress live in one :class:`_Host`, made on first use: Dask tasks
are plain functions, so that state cannot be passed down from a ``main()``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize
from typing import Any

from processor import capture
from processor.executor import Task, WorkerConfig
from processor.logs import JsonFormatter
from processor.proctree import kill_orphans, kill_tree, parent_of
from processor.runner import Outcome, how_it_ended, timed_out_itself
from processor.startup import PRELOAD
from processor.stdio_pipes import DRAIN_BYTES, StdioPipes
from spool.errors import ErrorType

POLL_S = 0.1
RESTART_CLOCK_S = 1.0
"""Finding a child took longer than this (a forkserver starting): announce the start
again, so the processor's backstop does not count that time as the job's."""
PROGRESS_EVERY_S = 0.1
_LIVE_WORKER_STATES = frozenset({"running", "paused", "closing_gracefully"})
_LIVE_TASK_STATES = frozenset({"executing", "long-running", "resumed"})
LOST = "lost"  # kill reason: the Dask side gave the task up


@dataclass(slots=True)
class _Child:
    process: BaseProcess
    conn: Connection
    lifeline: Connection  # the child dies when this end closes, with this process
    output: StdioPipes  # the read ends of its fds 1 and 2
    jobs: int = 0
    retiring: bool = False  # said so with its last result (SPOOL_WORKER_MAX_JOBS)

    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed


@dataclass(slots=True)
class _Run:
    key: str
    child: _Child | None = None  # None until it has one (a new one may take a second)
    reason: str | None = None
    fatal: str | None = None
    started: float = field(default_factory=time.monotonic)


class _Host:
    """This worker process's idle children, children being started, and running jobs."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.idle: dict[WorkerConfig, list[_Child]] = {}
        self.starting: dict[WorkerConfig, int] = {}
        self.runs: dict[str, _Run] = {}
        self._ctx: ForkServerContext | None = None
        self._children: set[int] = set()  # every live child's pid (under _SPAWN_LOCK)
        self._forkserver = 0  # their parent's pid, once one was started
        _log_output_as_json()
        # Run by multiprocessing's exit handler before it SIGTERMs the children and waits
        # for them: for good (or until a nanny kills this worker) for one whose tool
        # ignored SIGTERM.  (A Dask worker is a multiprocessing child: atexit is later.)
        Finalize(None, self.end, exitpriority=10)

    def take(self, config: WorkerConfig) -> _Child:
        """An idle child (waiting for one being prestarted), else a new one."""
        dead: list[_Child] = []
        try:
            with self.lock:
                while True:
                    pool = self.idle.setdefault(config, [])
                    while pool:
                        child = pool.pop()
                        if child.alive():
                            return child
                        dead.append(child)
                    if not self.starting.get(config):
                        break
                    self.lock.wait(timeout=1.0)
        finally:
            for child in dead:
                self.discard(child)
        return self.spawn(config)

    def give_back(self, config: WorkerConfig, child: _Child) -> None:
        reusable = child.alive() and not child.retiring and not (
            config.max_jobs and child.jobs >= config.max_jobs)
        if not reusable:
            self.discard(child)
            return
        with self.lock:
            self.idle.setdefault(config, []).append(child)
            self.lock.notify_all()

    def prestart(self, config: WorkerConfig, wanted: int) -> None:
        with self.lock:
            have = sum(c.alive() for c in self.idle.get(config, []))
            count = max(0, wanted - have - self.starting.get(config, 0))
            self.starting[config] = self.starting.get(config, 0) + count
        for _ in range(count):
            try:
                child = self.spawn(config)
            finally:
                with self.lock:
                    self.starting[config] -= 1
                    self.lock.notify_all()
            self.give_back(config, child)

    def spawn(self, config: WorkerConfig) -> _Child:
        ctx = self._context()
        parent, child_end = ctx.Pipe(duplex=True)
        life_r, life_w = ctx.Pipe(duplex=False)
        output = StdioPipes()
        output_ends = output.hand_over()  # the child dups them to its fds 1 and 2
        process = ctx.Process(target=child_main, name="spoolq-dask-child", daemon=True,
                              args=(child_end, life_r, config, output_ends))
        try:
            with _SPAWN_LOCK:
                # Dask worker processes are daemonic by default and multiprocessing
                # refuses children of a daemonic process, to spare them orphans.
                # This child cannot be orphaned: it dies when its lifeline closes
                # (see child_main), at the latest when this process ends.
                me = mp.current_process()
                daemonic = me.daemon
                me.daemon = False
                try:
                    process.start()
                finally:
                    me.daemon = daemonic
                if process.pid:
                    self._children.add(process.pid)
                    self._forkserver = parent_of(process.pid) or self._forkserver
        except BaseException:
            for end in (parent, life_w):
                end.close()
            output.close()
            raise
        finally:  # the child has its copies (or never started)
            for end in (child_end, life_r, *output_ends):
                end.close()
        return _Child(process, parent, life_w, output)

    def _context(self) -> ForkServerContext:
        if self._ctx is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            self._ctx = ctx
        return self._ctx

    def discard(self, child: _Child) -> None:
        """Kill and forget a child, and whatever a dead child's tool left running (the
        forkserver adopts it: see :mod:`processor.forkserver_init`)."""
        _discard(child)
        with _SPAWN_LOCK:  # no child is being started meanwhile, unknown to the sweep
            self._children.discard(child.process.pid or 0)
            if self._forkserver:
                kill_orphans(self._forkserver, self._children)
        child.output.close()  # after the sweep: what its orphans wrote is in the pipes

    def end(self) -> None:
        """This Dask worker process exits: kill every child now, idle or running."""
        with self.lock:
            children = [c for pool in self.idle.values() for c in pool]
            children += [r.child for r in self.runs.values() if r.child is not None]
            self.idle.clear()
        for child in children:
            _kill(child)
        for child in children:
            child.process.join(timeout=2)

    def kill(self, key: str, reason: str) -> bool:
        with self.lock:
            run = self.runs.get(key)
            if run is None:
                return False
            run.reason = run.reason or reason
            child = run.child  # None: it never gets the job (see run_task)
        if child is not None:
            _kill(child)
        return True


_HOST: list[_Host] = []
_HOST_LOCK = threading.Lock()
_SPAWN_LOCK = threading.Lock()


def _host() -> _Host:
    with _HOST_LOCK:
        if not _HOST:
            _HOST.append(_Host())
        return _HOST[0]


# -- entry points (called by the processor through Dask) ---------------------------------


def run_task(task: Task, topic: str, key: str, config: WorkerConfig) -> Outcome:
    """Run one job in a child of this Dask worker; always returns its outcome."""
    from distributed import get_worker  # noqa: PLC0415 - only ever runs on a Dask worker

    worker = get_worker()
    host = _host()
    run = _Run(key)
    with host.lock:
        host.runs[key] = run
    # Announced before a child is found: the processor's clock for the job starts
    # here, and a kill that comes while a new child starts is kept in ``run``.
    started = {"event": "started", "key": key, "job_id": task.job_id,
               "worker": worker.address}
    _emit(worker, topic, started)
    child: _Child | None = None
    try:
        child = host.take(config)
        if time.monotonic() - run.started > RESTART_CLOCK_S:  # a new child took its time:
            _emit(worker, topic, started)  # the processor's backstop counts from now
        wanted = _still_wanted(worker, key)
        with host.lock:
            run.child = child
            if run.reason is None and not wanted:
                run.reason = LOST
            killed = run.reason is not None
        if killed:  # before the child got the job: it never runs
            return _death_outcome(task, run, None, worker)
        return _supervise(worker, topic, task, run, child)
    finally:
        with host.lock:
            host.runs.pop(key, None)
        if child is not None:
            host.give_back(config, child)


def kill_on_worker(keys: list[str], reason: str) -> int:
    """Kill the children running ``keys`` here (sent with ``Client.run``); how many."""
    host = _host()
    return sum(host.kill(key, reason) for key in keys)


def prestart(config: WorkerConfig, dask_worker: Any = None) -> None:
    """Start one idle child per worker thread in the background (sent with ``Client.run``).

    ``Client.run`` calls this in the worker's event loop, which must not wait
    for a forkserver to start, so the children are made by a thread.
    """
    wanted = int(getattr(dask_worker, "nthreads", 1) or 1)
    threading.Thread(target=_prestart, args=(config, wanted), name="spoolq-prestart",
                     daemon=True).start()


def _prestart(config: WorkerConfig, wanted: int) -> None:
    with contextlib.suppress(Exception):  # a job that finds no idle child starts its own
        _host().prestart(config, wanted)


# -- the supervision loop -----------------------------------------------------------------


def _supervise(worker: Any, topic: str, task: Task, run: _Run, child: _Child) -> Outcome:
    return _Supervisor(worker, topic, task, run, child).run()


class _Supervisor:
    """Waits on one child: its messages, its death, the deadline, and the Dask side."""

    def __init__(self, worker: Any, topic: str, task: Task, run: _Run, child: _Child
                 ) -> None:
        self.worker, self.topic, self.task, self.run_ = worker, topic, task, run
        self.child = child
        self.deadline = time.monotonic() + task.timeout_s
        self.last_progress = 0.0
        self.held: tuple[float, str] | None = None  # a report that came too soon

    def run(self) -> Outcome:
        output = self.child.output
        output.begin(self.task.job_id, self.task.tool)  # its output is the job's from now
        try:
            self.child.conn.send(self.task)
            self.child.jobs += 1
        except OSError:
            pass  # the child is dying: its sentinel tells
        sentinel = self.child.process.sentinel
        while True:
            timeout = self._check()
            if self.held is not None:  # wake to send it once its interval is up
                timeout = min(timeout, max(0.0, self.last_progress + PROGRESS_EVERY_S
                                           - time.monotonic()))
            streams = [s for s in output.streams if s.fd >= 0 and not s.ended]
            ready = wait([self.child.conn, sentinel, *(s.fd for s in streams)], timeout)
            for stream in streams:
                if stream.fd in ready:
                    output.read(stream, DRAIN_BYTES)
            if self.held is not None and self.run_.reason is None:
                self._progress(*self.held)
            if self.child.conn in ready:
                outcome = self._read()
                if outcome is not None:
                    _end_output(output)
                    return outcome
            if sentinel in ready or not self.child.process.is_alive():
                # What it wrote last is read when it is discarded, after the orphan sweep.
                self.child.process.join(timeout=1)
                return _death_outcome(self.task, self.run_, self.child.process.exitcode,
                                      self.worker)

    def _check(self) -> float:
        """Kill the child when its time is up or Dask gave it up; how long to wait next."""
        run = self.run_
        if run.reason is None:
            if time.monotonic() >= self.deadline:
                run.reason = ErrorType.TIMEOUT.value
            elif not _still_wanted(self.worker, run.key):
                run.reason = LOST
            if run.reason is not None:
                _kill(self.child)
        if run.reason is not None:
            return POLL_S
        return max(0.0, min(POLL_S, self.deadline - time.monotonic()))

    def _read(self) -> Outcome | None:
        run = self.run_
        for message in _drain(self.child):
            kind = message[0]
            if kind == "done":
                self.child.retiring = len(message) > 2 and bool(message[2])
                if run.reason is None:
                    outcome: Outcome = message[1]
                    return outcome
            elif kind == "progress" and run.reason is None:
                self._progress(message[2], message[3])
            elif kind == "fatal":
                run.fatal = str(message[1])
        return None

    def _progress(self, fraction: float, message: str) -> None:
        """Emit now, or hold the latest report until its interval is up (never dropped)."""
        now = time.monotonic()
        self.held = (fraction, message)
        if now - self.last_progress >= PROGRESS_EVERY_S or fraction >= 1.0:
            self.last_progress, self.held = now, None
            _emit(self.worker, self.topic, {"event": "progress", "key": self.run_.key,
                                            "job_id": self.task.job_id, "fraction": fraction,
                                            "message": message})


def _end_output(output: StdioPipes) -> None:
    """The job's result came: its processes are gone (the child reaps them first), so
    what they wrote is in the pipes; read it as the job's, then log what was left
    without a newline.  Bounded: a pipe gives at most its capacity more."""
    output.end()
    while output.draining:
        for stream in output.streams:
            output.read(stream, DRAIN_BYTES)
        output.settled()


def _drain(child: _Child) -> list[tuple[Any, ...]]:
    messages: list[tuple[Any, ...]] = []
    with contextlib.suppress(EOFError, OSError):
        while child.conn.poll():
            messages.append(child.conn.recv())
    return messages


def _still_wanted(worker: Any, key: str) -> bool:
    """False once the worker is closing or lost its scheduler, or Dask dropped the task."""
    status = getattr(getattr(worker, "status", None), "name", "running")
    if status not in _LIVE_WORKER_STATES:
        return False
    try:
        state = worker.state.tasks.get(key)
    except AttributeError:  # a distributed without WorkerState: rely on the rest
        return True
    return state is not None and state.state in _LIVE_TASK_STATES


def _death_outcome(task: Task, run: _Run, exitcode: int | None, worker: Any) -> Outcome:
    ran_s = time.monotonic() - run.started
    if run.reason == ErrorType.TIMEOUT.value or (
            run.reason is None and timed_out_itself(task.timeout_s, exitcode, ran_s)):
        return Outcome(task.job_id, ErrorType.TIMEOUT,
                       f"killed after {task.timeout_s:g} s (timeout)", retryable=True,
                       pid=0, duration_s=ran_s)
    if run.reason == ErrorType.CANCELLED.value:
        return Outcome(task.job_id, ErrorType.CANCELLED, "cancelled while running", pid=0,
                       duration_s=ran_s)
    where = f"on Dask worker {getattr(worker, 'address', '?')}"
    if run.reason == LOST:
        message = f"the Dask task was given up {where} (scheduler lost or task cancelled)"
    elif run.reason is not None:
        message = f"killed {where} ({run.reason})"
    elif run.fatal is not None:
        message = f"the job's process cannot start {where}: {run.fatal}"
    else:
        message = f"the job's process {where} {how_it_ended(exitcode)}"
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, message, retryable=True, pid=0,
                   duration_s=ran_s)



def _kill(child: _Child) -> None:
    if child.process.pid is not None:
        kill_tree(child.process.pid)


def _discard(child: _Child) -> None:
    _kill(child)
    child.process.join(timeout=2)
    child.conn.close()
    child.lifeline.close()


# -- the child process ----------------------------------------------------------------------


def child_main(conn: Connection, lifeline: Connection, config: WorkerConfig,
               output: tuple[Connection, Connection]) -> None:
    """The local pool's worker body, dying with the Dask worker that made it.

    A forkserver child's parent is the forkserver, which outlives the Dask
    worker while any of its children runs, so ``PR_SET_PDEATHSIG`` alone
    would let a job run on after its worker died.  The lifeline's write end
    is held only by the Dask worker: ``worker_main`` kills this child's
    session when it reads end of file.
    """
    # Imported here: the forkserver has it preloaded, the Dask worker needs none of it.
    from processor.worker import worker_main  # noqa: PLC0415

    worker_main(conn, config, lifeline, output)


class _OutputHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The children's output, as JSON lines on this Dask worker's stderr."""


def _log_output_as_json() -> None:
    """Have ``spoolq.output`` lines (what the children write to fds 1 and 2, read by the
    supervisors) written as JSON lines on this process's stderr, the processor's shape;
    distributed configures no handler for them.  Left as it is in a process whose
    logging spoolq set up already (a cluster inside the processor, in tests)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        return
    out = capture.log
    if not any(isinstance(h, _OutputHandler) for h in out.handlers):
        handler = _OutputHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        out.addHandler(handler)
        out.setLevel(logging.INFO)
        out.propagate = False


def _emit(worker: Any, topic: str, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # progress is best effort; the outcome is not
        worker.log_event(topic, message)
