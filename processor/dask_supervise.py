"""Waits on one job's child on a Dask worker, for :mod:`processor.dask_task`.

:func:`supervise` hands the job to its child and waits on the child's pipe,
its fds 1 and 2 and its exit sentinel, at most :data:`POLL_S` at a time.  It
forwards progress to the processor as Dask events (:func:`emit`), at most
every :data:`PROGRESS_EVERY_S` and never dropping the latest; kills the child
with every process below it at the job's deadline or once the Dask side gave
the task up (:func:`still_wanted`); and logs what the child wrote, to the last
line, as the job's.  It always returns one :class:`~processor.runner.Outcome`
(:func:`death_outcome` when the child died or was killed) and never raises
for anything the tool does.
"""

from __future__ import annotations

import contextlib
import time
from multiprocessing.connection import wait
from typing import Any

from processor.dask_host import LOST, Child, Run, kill_child, this_host
from processor.executor import READY_WAIT_S, Task
from processor.proctree import DEATH_UNTOLD_S, ended_with_forkserver
from processor.runner import Outcome, how_it_ended, timed_out_itself
from processor.stdio_pipes import DRAIN_BYTES, StdioPipes
from spool.errors import ErrorType
from spool.text import seconds_text

POLL_S = 0.1
PROGRESS_EVERY_S = 0.1
LOADING_BEAT_S = 2.0
"""How often the job is said started again while its child loads its tools: the
processor's backstop (the timeout and :data:`~processor.dask_events.BACKSTOP_S` from the
last word) then waits for the import too."""
_LIVE_WORKER_STATES = frozenset({"running", "paused", "closing_gracefully"})
_LIVE_TASK_STATES = frozenset({"executing", "long-running", "resumed"})


def supervise(worker: Any, topic: str, task: Task, run: Run, child: Child) -> Outcome:
    """Give ``task`` to ``child`` and wait for its outcome (see the module's docstring)."""
    return _Supervisor(worker, topic, task, run, child).run()


class _Supervisor:
    """Waits on one child: its messages, its death, the deadline, and the Dask side."""

    def __init__(self, worker: Any, topic: str, task: Task, run: Run, child: Child
                 ) -> None:
        self.worker, self.topic, self.task, self.run_ = worker, topic, task, run
        self.child = child
        # The time limit starts once the child loaded its tools (see READY_WAIT_S).
        self.deadline = time.monotonic() + (task.timeout_s if child.ready else READY_WAIT_S)
        self.beat_at = time.monotonic() + LOADING_BEAT_S
        self.last_progress = 0.0
        self.held: tuple[float, str] | None = None  # a report that came too soon
        self.killed_at: float | None = None  # when the child was killed, its end untold

    def run(self) -> Outcome:
        output = self.child.output
        output.begin(self.task.job_id, self.task.tool)  # its output is the job's from now
        try:
            self.child.conn.send(self.task.fields())  # what a worker reads
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
                return death_outcome(self.task, self.run_, self.child.process.exitcode,
                                      self.worker)

    def _check(self) -> float:
        """Kill the child when its time is up or Dask gave it up; how long to wait next."""
        run = self.run_
        now = time.monotonic()
        if not self.child.ready and run.reason is None and now >= self.beat_at:
            self.beat_at = now + LOADING_BEAT_S
            self._started()
        if run.reason is None:
            if now >= self.deadline:
                run.reason = ErrorType.TIMEOUT.value
                run.expired = True
            elif not still_wanted(self.worker, run.key):
                run.reason = LOST
            if run.reason is not None:
                kill_child(self.child)
        if run.reason is not None:
            if self.killed_at is None:
                self.killed_at = now
            elif now - self.killed_at > DEATH_UNTOLD_S:  # a stopped forkserver tells none
                self.killed_at = now
                this_host().resume_forkserver()
            return POLL_S
        return max(0.0, min(POLL_S, self.deadline - time.monotonic()))

    def _started(self) -> None:
        emit_started(self.worker, self.topic, self.run_.key, self.task.job_id)

    def _read(self) -> Outcome | None:
        run = self.run_
        for message in _drain(self.child):
            kind = message[0]
            if kind == "ready":
                if not self.child.ready:
                    self.child.ready = True
                    self.deadline = time.monotonic() + self.task.timeout_s
                    # Its run, as its outcome times it, starts now too: a timeout said
                    # "killed after 5 s" at the import's 600 s (the session's own review).
                    self.run_.started = time.monotonic()
                    self._started()  # the processor's backstop counts from now too
            elif kind == "done":
                self.child.retiring = len(message) > 2 and bool(message[2])
                if run.reason is None:
                    return Outcome(*message[1])
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
            emit(self.worker, self.topic, {"event": "progress", "key": self.run_.key,
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


def _drain(child: Child) -> list[tuple[Any, ...]]:
    messages: list[tuple[Any, ...]] = []
    with contextlib.suppress(EOFError, OSError):
        while child.conn.poll():
            messages.append(child.conn.recv())
    return messages


def still_wanted(worker: Any, key: str) -> bool:
    """False once the worker is closing or lost its scheduler, or Dask dropped the task."""
    status = getattr(getattr(worker, "status", None), "name", "running")
    if status not in _LIVE_WORKER_STATES:
        return False
    try:
        state = worker.state.tasks.get(key)
    except AttributeError:  # a distributed without WorkerState: rely on the rest
        return True
    return state is not None and state.state in _LIVE_TASK_STATES


def death_outcome(task: Task, run: Run, exitcode: int | None, worker: Any, *,
                  given: bool = True) -> Outcome:
    """The outcome of a run whose child died or was killed (``given``: after the child
    was sent the job; not, when a kill came while a child was found)."""
    ran_s = time.monotonic() - run.started
    if run.reason == ErrorType.TIMEOUT.value or (
            run.reason is None and timed_out_itself(task.timeout_s, exitcode, ran_s)):
        return Outcome(task.job_id, ErrorType.TIMEOUT, _timeout_said(task, run, ran_s, given),
                       retryable=True, pid=0, duration_s=ran_s)
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
    elif ended_with_forkserver(exitcode, forkserver := this_host().forkserver):
        # Not "exited with status 255": multiprocessing's word for none told (QA).
        message = (f"the job's process {where} ended with its forkserver (pid "
                   f"{forkserver}), which died")
    else:
        message = f"the job's process {where} {how_it_ended(exitcode)}"
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, message, retryable=True, pid=0,
                   duration_s=ran_s)


def _timeout_said(task: Task, run: Run, ran_s: float, given: bool) -> str:
    """What a timeout's record says: the time limit that passed, or, before the job's
    time started (its child not done loading its tools), the time it was waited for.

    A kill of the processor's backstop (a job it heard nothing of past its timeout)
    while the child loaded said "had not loaded the tools after 600 s" 5 s into the run:
    only the supervisor's own wait for the load (:data:`READY_WAIT_S`) says that."""
    waited = seconds_text(round(ran_s, 1))
    if not given:
        return (f"killed by the processor after {waited}, before the job reached its job "
                "process (timeout)")
    if run.child is not None and not run.child.ready:
        if run.expired:
            return (f"killed: its job process had not loaded the tools after "
                    f"{seconds_text(READY_WAIT_S)} (timeout)")
        return (f"killed by the processor after {waited}, its job process still loading "
                "the tools (timeout)")
    return f"killed after {seconds_text(task.timeout_s)} (timeout)"


def emit_started(worker: Any, topic: str, key: str, job_id: str) -> None:
    """Tell the processor the job runs here: its backstop counts from now."""
    # Its id as well: a worker its nanny restarted at a fixed --worker-port has the old
    # one's address, and a task the scheduler re-ran there must not pass for the first run.
    emit(worker, topic, {"event": "started", "key": key, "job_id": job_id,
                         "worker": worker.address, "worker_id": getattr(worker, "id", None)})


def emit(worker: Any, topic: str, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # progress is best effort; the outcome is not
        worker.log_event(topic, message)
