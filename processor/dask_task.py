"""What runs on a Dask worker for one COMPUTE job: the tool in a killable child.

Dask cannot stop a running task, so :func:`run_task` never runs the tool in
the worker's thread.  It hands the job to a child process running the same
:func:`~processor.worker.worker_main` as the local pool (its own session, a
parent-death signal, a subreaper, the optional memory cap), started from a
forkserver inside the Dask worker with numpy, pandas and the tools preloaded
and kept for its processor's next job.  The task thread then waits on the
child's pipe and exit sentinel, at most :data:`~processor.dask_supervise.POLL_S`
at a time, and:

* forwards progress to the processor as Dask events (``Worker.log_event`` on
  the processor's topic), at most every
  :data:`~processor.dask_supervise.PROGRESS_EVERY_S`;
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
runs in progress live in one :class:`~processor.dask_host.Host`; the waiting
is :mod:`processor.dask_supervise`'s.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from processor.dask_host import LOST, Child, Pool, Run, this_host
from processor.dask_supervise import (
    LOADING_BEAT_S,
    death_outcome,
    emit_started,
    still_wanted,
    supervise,
)
from processor.executor import Task, WorkerConfig
from processor.runner import Outcome
from spool.version import version

RESTART_CLOCK_S = 1.0
"""Finding a child took longer than this (a forkserver starting): announce the start
again, so the processor's backstop does not count that time as the job's.  (Meanwhile
the start is announced every :data:`~processor.dask_supervise.LOADING_BEAT_S`, as
while the child loads its tools: see :meth:`~processor.dask_host.Host.take`.)"""


# -- entry points (called by the processor through Dask) ---------------------------------


def run_task(task: Task, topic: str, key: str, config: WorkerConfig) -> Outcome:
    """Run one job in a child of this Dask worker; always returns its outcome."""
    from distributed import get_worker  # noqa: PLC0415 - only ever runs on a Dask worker

    worker = get_worker()
    host = this_host()
    run = Run(key)
    run.reason = host.begin(key, run)
    if run.reason is not None:  # killed while it was queued: never announced, never run
        return death_outcome(task, run, None, worker, given=False)
    # Announced before a child is found: the processor's clock for the job starts
    # here, and a kill that comes while a new child starts is kept in ``run``.
    emit_started(worker, topic, key, task.job_id)
    child: Child | None = None
    pool = (topic, config)  # this processor start's children: see dask_host.Pool

    def beat() -> None:  # while a child starts: its time is not the job's
        if run.reason is None:  # a killed job is not said started again
            emit_started(worker, topic, key, task.job_id)

    try:
        child = host.take(pool, beat, LOADING_BEAT_S)
        if time.monotonic() - run.started > RESTART_CLOCK_S:  # a new child took its time:
            emit_started(worker, topic, key, task.job_id)  # the backstop counts from now
        wanted = still_wanted(worker, key)
        with host.lock:
            run.child = child
            if run.reason is None and not wanted:
                run.reason = LOST
            killed = run.reason is not None
        if killed:  # before the child got the job: it never runs
            return death_outcome(task, run, None, worker, given=False)
        return supervise(worker, topic, task, run, child)
    finally:
        with host.lock:
            host.runs.pop(key, None)
        if child is not None:
            host.give_back(pool, child)


def kill_on_worker(keys: list[str], reason: str) -> int:
    """Kill the children running ``keys`` here (sent with ``Client.run``); how many."""
    host = this_host()
    return sum(host.kill(key, reason) for key in keys)


def prestart(config: WorkerConfig, topic: str, dask_worker: Any = None) -> str:
    """Start one idle child per worker thread for the processor start whose event topic
    is ``topic``, in the background (sent with ``Client.run``); the spoolq version
    installed here, which the processor compares with its own.

    ``Client.run`` calls this in the worker's event loop, which must not wait
    for a forkserver to start, so the children are made by a thread.
    """
    wanted = int(getattr(dask_worker, "nthreads", 1) or 1)
    threading.Thread(target=_prestart, args=((topic, config), wanted),
                     name="spoolq-prestart", daemon=True).start()
    return version()


def _prestart(pool: Pool, wanted: int) -> None:
    with contextlib.suppress(Exception):  # a job that finds no idle child starts its own
        this_host().prestart(pool, wanted)


def retire(over: str | None = None, live: list[str] | None = None) -> None:
    """Kill the idle children of processor starts that are over (sent with
    ``Client.run``): the one whose topic is ``over`` (its stop), or every one whose
    topic is not in ``live`` (the live processors', asked at a connect).  In the
    background, as :func:`prestart`: each kill waits for its child."""
    kept = None if live is None else frozenset(live)
    threading.Thread(target=_retire, args=(over, kept), name="spoolq-retire",
                     daemon=True).start()


def _retire(over: str | None, live: frozenset[str] | None) -> None:
    with contextlib.suppress(Exception):  # best effort: the worker's exit kills them too
        this_host().retire(over=over, live=live)
