"""The Dask executor's jobs in flight, for :mod:`processor.dask_executor`.

One :class:`Flight` a submitted job, from its submission to its one outcome;
:class:`Flights` holds them by job id and by Dask key (a job submitted again
gets a new key) and reports each one's outcome to the sink exactly once
(:meth:`Flights.resolve`): later reports for it do nothing.  Also how a job
ends when it was killed (:func:`kill_outcome`) and the retryable
``worker_crashed`` outcome of everything else that goes wrong on Dask
(:func:`crashed`).  Thread-safe: the monitor thread and the daemon's thread
both use it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from processor.executor import Sink, Task
from processor.runner import Outcome
from spool.errors import ErrorType
from spool.text import seconds_text


@dataclass(slots=True)
class Flight:
    """One submitted job until its outcome is reported."""

    task: Task
    key: str
    deadline: float = math.inf  # set when it starts on a worker: waiting is not running
    future: Any = None
    worker: str | None = None
    worker_id: str | None = None  # the Dask worker's own id: a restart at its address differs
    kill_reason: str | None = None
    kill_deadline: float = 0.0
    fetching: bool = False  # finished; its result is on its way (no timeout applies)
    resubmits: int = 0  # submitted again: its worker died before it started
    submitted: float = field(default_factory=time.monotonic)


class Flights:
    """The jobs in flight, by job id and by Dask key; each one's outcome reported once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, Flight] = {}
        self._keys: dict[str, str] = {}  # Dask key -> job id
        self.sink: Sink | None = None  # set when the executor starts

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_job)

    def add(self, flight: Flight) -> None:
        with self._lock:
            self._by_job[flight.task.job_id] = flight
            self._keys[flight.key] = flight.task.job_id

    def all(self) -> list[Flight]:
        with self._lock:
            return list(self._by_job.values())

    def clear(self) -> list[Flight]:
        """Forget every flight (no outcome follows for any); the ones there were."""
        with self._lock:
            flights = list(self._by_job.values())
            self._by_job.clear()
            self._keys.clear()
        return flights

    def by_key(self, key: str) -> Flight | None:
        with self._lock:
            job_id = self._keys.get(key)
            return self._by_job.get(job_id) if job_id is not None else None

    def mark_kill(self, job_id: str, reason: str, deadline: float) -> Flight | None:
        """The flight of ``job_id``, to be killed by ``deadline`` (a first reason stays);
        None when it has none."""
        with self._lock:
            flight = self._by_job.get(job_id)
            if flight is not None and flight.kill_reason is None:
                flight.kill_reason = reason
                flight.kill_deadline = deadline
            return flight

    def rekey(self, flight: Flight, key: str) -> bool:
        """Give a flight still in flight a new key for its next submission (no future yet);
        False when it is no longer in flight."""
        with self._lock:
            if self._by_job.get(flight.task.job_id) is not flight:
                return False
            self._keys.pop(flight.key, None)
            flight.key, flight.future = key, None
            flight.resubmits += 1
            self._keys[key] = flight.task.job_id
        return True

    def resolve(self, flight: Flight, outcome: Outcome | None) -> None:
        """Report ``outcome`` once per flight; later calls for it do nothing."""
        with self._lock:
            if self._by_job.get(flight.task.job_id) is not flight:
                return
            del self._by_job[flight.task.job_id]
            self._keys.pop(flight.key, None)
        flight.future = None  # lets Dask forget the task
        sink = self.sink
        assert sink is not None
        sink.finished(outcome or crashed(flight.task, "the job's Dask task was stopped"))


def kill_outcome(flight: Flight) -> Outcome | None:
    """How a killed flight ends, by its kill reason; None when it was not killed."""
    reason, task = flight.kill_reason, flight.task
    if reason == ErrorType.TIMEOUT.value:
        # Only the processor's backstop kills for a timeout (the worker's own kill says so
        # itself): "killed after 1 s" was said of a job its worker never confirmed it ran
        # or stopped, and of one killed 11 s after its start.  Nor "killed": the kill asked
        # of a frozen worker is not confirmed (h374).  Nor "its task cancelled": a worker
        # that answers another failure after the kill was asked has this outcome too, and
        # nothing is cancelled then (h375).  The processor gave the job up: true of both.
        return Outcome(task.job_id, ErrorType.TIMEOUT,
                       f"no word from its Dask worker past its {seconds_text(task.timeout_s)} "
                       "limit; the processor gave the job up (timeout)", retryable=True, pid=0)
    if reason == ErrorType.CANCELLED.value:
        return Outcome(task.job_id, ErrorType.CANCELLED, "cancelled while running", pid=0)
    if reason is not None:
        return crashed(task, f"killed ({reason})")
    return None


def crashed(task: Task, message: str) -> Outcome:
    """A retryable ``worker_crashed`` outcome for ``task``."""
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, message, retryable=True, pid=0)


def keys_by_worker(flights: list[Flight]) -> dict[str | None, list[str]]:
    """The flights' task keys by the worker each started on (None: not started yet)."""
    by_worker: dict[str | None, list[str]] = {}
    for flight in flights:
        by_worker.setdefault(flight.worker, []).append(flight.key)
    return by_worker
