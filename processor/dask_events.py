"""What each event from Dask means for its job, for :mod:`processor.dask_executor`.

The executor's monitor thread hands every event from its queue to
:meth:`TaskEvents.handle`: a task's future changed (``future``), a task
announced its start or progress (``task``, a Dask event on the processor's
topic), a kill was asked (``kill``), a finished task's result arrived
(``fetched``).  Each one ends its flight with the outcome it means, at most
once (:meth:`~processor.dask_flight.Flights.resolve`): a kill's reason wins
over how the task happened to end, a task whose worker died before it
started is submitted again (at most :data:`RESUBMITS` times), and a task
Dask re-ran on another worker is killed.  A flight's deadline is set here,
when its task starts: :data:`BACKSTOP_S` after its timeout.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from processor.dask_flight import Flight, Flights, crashed, kill_outcome
from processor.dask_link import SchedulerLink
from processor.runner import Outcome

log = logging.getLogger("spoolq.dask")

BACKSTOP_S = 10.0
"""How long past a job's timeout the executor waits for its task before killing it."""
RESUBMITS = 3
"""How many times a job whose Dask worker died before it started is submitted again."""


class TaskEvents:
    """Ends flights as their tasks' events say (on the executor's monitor thread)."""

    def __init__(self, flights: Flights, link: SchedulerLink,
                 events: queue.SimpleQueue[tuple[Any, ...]],
                 resubmit: Callable[[Flight], None], lost: Callable[[str], None]) -> None:
        self._flights = flights
        self._link = link
        self._events = events  # where a fetched result comes back
        self._resubmit = resubmit
        self._lost = lost  # the connection is gone: every flight ends, with one log line

    def handle(self, event: tuple[Any, ...]) -> None:
        """Act on one event of the monitor's queue (others, such as ``wake``, do nothing)."""
        kind = event[0]
        if kind == "future":
            self._on_future(event[1], event[2])
        elif kind == "task":
            self._on_task_event(event[1])
        elif kind == "kill":
            self._on_kill(event[1])
        elif kind == "fetched":
            self._on_fetched(event[1], event[2])

    def _on_future(self, key: str, future: Any) -> None:
        flight = self._flights.by_key(key)
        if flight is None:
            return
        status = future.status
        if status == "pending":
            return
        if status == "finished":
            if not flight.fetching:
                flight.fetching = True
                self._link.fetch(future, lambda got: self._events.put(("fetched", key, got)))
            return
        if status == "error":
            if self._never_started(flight, future):
                self._resubmit(flight)
                return
            outcome = crashed(flight.task, self._link.failure(future))
        elif not self._link.alive():
            # The first task to end on a lost connection: all of them end at once, after
            # the one ERROR line that counts them (taken alone, each ended before it).
            self._lost(f"lost the connection to the Dask scheduler at {self._link.address}")
            return
        else:
            outcome = crashed(flight.task, f"the Dask task was {status} on the cluster")
        self._finish(flight, outcome)

    def _never_started(self, flight: Flight, future: Any) -> bool:
        """Its Dask worker died while the task waited there for a thread (a cluster
        shared with other processors): the job never ran, so no attempt is spent.

        Its start is announced before the job gets a process, and that event reaches
        the processor before the task's failure, so no ``started`` means the job did
        not run (but for the few ms before the worker's batched send, if it died then).
        """
        return (flight.worker is None and flight.kill_reason is None
                and flight.resubmits < RESUBMITS and self._link.killed_worker(future))

    def _on_fetched(self, key: str, got: Outcome | Exception) -> None:
        flight = self._flights.by_key(key)
        if flight is None:
            return
        if isinstance(got, Exception):
            got = crashed(flight.task, f"cannot fetch the result from Dask: {got}")
        self._finish(flight, got)

    def _finish(self, flight: Flight, outcome: Outcome) -> None:
        kill = kill_outcome(flight)
        if kill is not None and not outcome.ok and outcome.error_type != kill.error_type:
            outcome = kill  # the kill reason wins over how the task happened to end
        self._flights.resolve(flight, outcome)

    def _on_task_event(self, message: dict[str, Any]) -> None:
        key = str(message.get("key"))
        flight = self._flights.by_key(key)
        if message.get("event") == "started":
            worker_id = message.get("worker_id")
            self._on_started(key, str(message.get("worker")), flight,
                             str(worker_id) if worker_id is not None else None)
        elif message.get("event") == "progress" and flight is not None:
            sink = self._flights.sink
            assert sink is not None
            sink.progress(flight.task.job_id, float(message.get("fraction", 0.0)),
                          str(message.get("message", "")))

    def _on_started(self, key: str, worker: str, flight: Flight | None,
                    worker_id: str | None = None) -> None:
        if flight is None or (flight.worker is not None and (
                flight.worker != worker or (None not in (flight.worker_id, worker_id)
                                            and flight.worker_id != worker_id))):
            # Not ours any more (resolved, or a re-run of a lost worker's task): stop it.
            self._link.kill(worker, [key], "stale")
            if flight is not None:
                # Worded as the health probe's finding of the same loss (which of the
                # two comes first is a race, QA h383), with what Dask did of it.
                self._flights.resolve(flight, kill_outcome(flight) or crashed(
                    flight.task, f"the Dask worker {flight.worker} died or left while "
                    f"running the job; Dask re-ran it on {worker}, and the re-run was "
                    "killed"))
            return
        flight.worker, flight.worker_id = worker, worker_id
        if flight.kill_reason is not None:
            self._link.kill(worker, [key], flight.kill_reason)
        else:
            flight.deadline = time.monotonic() + flight.task.timeout_s + BACKSTOP_S

    def _on_kill(self, key: str) -> None:
        flight = self._flights.by_key(key)
        if flight is None:
            return
        if flight.worker is not None:
            self._link.kill(flight.worker, [key], flight.kill_reason or "killed")
        elif flight.future is not None:
            # Not started yet: it never will.  A start racing this cancel is
            # announced, finds no flight, and is killed then.
            self._link.cancel(flight.future, flight.kill_reason or "killed")
            self._flights.resolve(flight, kill_outcome(flight))
