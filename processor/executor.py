"""The interface between the daemon and whatever runs COMPUTE jobs.

An executor runs :class:`Task` objects and reports back through a
:class:`Sink`, from its own thread or from the loop thread through
descriptors it has the loop watch: progress as it comes, and exactly one
:class:`~processor.runner.Outcome` per task (success, tool error, ``timeout``,
``worker_crashed``, ``cancelled``).  It enforces each task's timeout itself,
so a stuck task is killed even when the daemon is busy.  The daemon only
dispatches when :meth:`ComputeExecutor.free_slots` says a worker is free, so
no backlog hides inside the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from processor.runner import Outcome

READY_WAIT_S = 600.0
"""How long a new worker (the local pool's, or a Dask worker's job process) may take to
load its tools (import the tool modules) before its first task's time limit starts
anyway: the import is not the job's time (a module slow to import failed every job
``timeout``, each kill taking the import along)."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a COMPUTE worker process runs tools: the processor's settings that matter
    there (the same for the local pool and a Dask worker's children)."""

    tool_modules: tuple[str, ...] = ()
    memory_mb: int = 0
    max_jobs: int = 0
    log_level: str = "INFO"
    params: tuple[tuple[str, str], ...] = ()
    """Each tool's params schema digest as the processor loaded it
    (:meth:`Registry.params_digests <processor.registry.Registry.params_digests>`): a
    worker whose own differs says so in its job's ``invalid_params``."""


@dataclass(frozen=True, slots=True)
class Task:
    job_id: str
    tool: str
    params: dict[str, Any]
    timeout_s: float
    data_dir: str
    attempt: int

    def __reduce__(self) -> tuple[type[Task], tuple[Any, ...]]:
        # A plain tuple of fields: a slots dataclass's default pickling looks its fields
        # up on every load (6.2 us to load against 4.1 us this way).
        return Task, self.fields()

    def fields(self) -> tuple[Any, ...]:
        """The fields in order (``Task(*task.fields())`` is a copy): what a worker is sent,
        plain data that pickles and loads in a third of the object's time, as a worker
        whose caches its tool just filled does it (40 us against 15)."""
        return (self.job_id, self.tool, self.params, self.timeout_s, self.data_dir,
                self.attempt)


class Sink(Protocol):
    def progress(self, job_id: str, fraction: float, message: str) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...

    def slots_freed(self) -> None:
        """:meth:`ComputeExecutor.free_slots` rose without a task ending (from any thread).

        For an executor whose room comes and goes on its own: the Dask one when it
        connects or reconnects, or workers join.  The daemon dispatches at once, as
        after an outcome, instead of at its next timer (up to a heartbeat later).  The
        local pool never calls it: its workers come free only as its tasks end.
        """
        ...

    def watch(self, fd: int, callback: Callable[[], object], *, bulk: bool = False
              ) -> None:
        """Have the daemon's loop thread call ``callback`` whenever ``fd`` is readable.

        For an executor whose workers the loop can read directly; call it (and
        :meth:`unwatch`) at start or on the loop thread, from a callback.  ``bulk``:
        what ``fd`` brings may come faster than the loop can take it (a tool's
        output); such callbacks share a time budget per pass of the loop
        (:data:`processor.inbox.BULK_BUDGET_S`) and should read little at a time.
        """
        ...

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd``, before closing it.

        A callback already due in the loop's current round may still run once.
        """
        ...


class ComputeExecutor(Protocol):
    name: str

    def start(self, sink: Sink) -> None: ...

    def capacity(self) -> int: ...

    def room(self) -> int:
        """COMPUTE jobs it can run at once now: ``capacity()``, or fewer while what runs
        them is short (a Dask cluster with fewer threads, or none connected: 0)."""
        ...

    def free_slots(self) -> int: ...

    def busy(self) -> int: ...

    def unstarted(self) -> Collection[str]:
        """The job ids of submitted tasks that no worker took yet and none runs: the
        local pool's, waiting for a worker that could start (a stop requeues these at
        once: the grace period lets running jobs finish, and these do not run)."""
        ...

    def submit(self, task: Task) -> None: ...

    def linger_until(self, job_id: str) -> float | None:
        """Asked once of a run's outcome (and forgotten): until when (``time.monotonic``)
        its process may still run, though the outcome came, because a kill could not be
        confirmed (a Dask worker that does not answer, frozen by SIGSTOP: its job's
        process runs on until its own Deadman ends it); None when it surely ended."""
        ...

    def kill(self, job_id: str, reason: str) -> bool:
        """Stop a task now; its outcome (``reason`` as error type) follows via the sink."""
        ...

    def shutdown(self) -> dict[str, float]:
        """Kill every task (no outcomes follow) and release the workers; the jobs whose
        kill could not be confirmed (a Dask worker that does not answer), each with
        until when (``time.monotonic``) its process may still run (see
        :meth:`linger_until`)."""
        ...
