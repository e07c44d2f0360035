"""The Dask COMPUTE executor: ``SPOOL_EXECUTOR=dask://host:port``.

Same contract as the local pool (:mod:`processor.executor`), on a Dask
distributed cluster.  The spool stays the one source of truth: a job is
claimed before it is submitted and its outcome becomes a record in the
daemon; Dask only runs it.  Each job is one Dask task (``retries=0``, a key
of its own) that runs the tool in a killable child on a worker
(:mod:`processor.dask_task`); :mod:`processor.dask_link` owns the connection.

Guarantees:

* At most ``min(JOB_NUM, threads in the cluster)`` jobs in flight, and none
  while there is no scheduler connection (:meth:`DaskExecutor.free_slots`
  is 0), so jobs wait in ``pending/`` where other processors can take them.
* Exactly one outcome per submitted job.  ``timeout``: the task kills its
  child at the deadline; a backstop here fires :data:`BACKSTOP_S` later in
  case the worker cannot answer.  Both clocks start when the task starts on a
  worker: a task waiting in Dask for a thread (a cluster shared with other
  processors) has not used any of its time.  ``cancelled``: :meth:`DaskExecutor.kill`.
  ``worker_crashed``: the child died, the Dask worker died or left
  (``KilledWorker``, or its address gone from the cluster), the task failed
  or was cancelled on the Dask side, or the scheduler connection was lost.
  Those are retryable; the daemon applies ``max_attempts``.
* No silent Dask-side retry: the task of a lost worker is cancelled at once
  and a re-run that starts anyway is killed when it announces itself.
  ``distributed.scheduler.allowed-failures: 0`` on the scheduler closes even
  that window (a warning says so when it is not).
* A lost scheduler never stops the processor: the monitor thread reconnects
  with backoff and offers slots again once connected.

One monitor thread owns the waiting: task ends, task events (started,
progress) and kill requests arrive in its queue; it also probes the
scheduler every :data:`REFRESH_S` and enforces the backstops.  Reads
``SPOOL_EXECUTOR``, ``JOB_NUM``, ``SPOOL_TOOLS``, ``SPOOL_WORKER_MEMORY_MB``
and ``SPOOL_WORKER_MAX_JOBS`` through :class:`~spool.settings.Settings`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from processor.dask_connect import LinkLost, scheduler_address
from processor.dask_link import Probe, SchedulerLink
from processor.dask_prepare import TOPIC_PREFIX
from processor.executor import Sink, Task, WorkerConfig
from processor.runner import Outcome
from spool.errors import ErrorType
from spool.settings import Settings

__all__ = ["DaskExecutor", "scheduler_address"]

log = logging.getLogger("spoolq.dask")

RECONNECT_S = (0.5, 2.0)
REFRESH_S = 1.0
HEALTH_S = 0.2
BACKSTOP_S = 10.0
KILL_GRACE_S = 5.0
RESUBMITS = 3
"""How many times a job whose Dask worker died before it started is submitted again."""


@dataclass(slots=True)
class _Flight:
    """One submitted job until its outcome is reported."""

    task: Task
    key: str
    deadline: float = math.inf  # set when it starts on a worker: waiting is not running
    future: Any = None
    worker: str | None = None
    kill_reason: str | None = None
    kill_deadline: float = 0.0
    fetching: bool = False  # finished; its result is on its way (no timeout applies)
    resubmits: int = 0  # submitted again: its worker died before it started


class DaskExecutor:
    """COMPUTE jobs on a Dask distributed cluster, with the local pool's meaning."""

    name = "dask"

    def __init__(self, settings: Settings) -> None:
        self.size = settings.job_num
        self._token = uuid.uuid4().hex[:12]
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.link = SchedulerLink(
            scheduler_address(settings.executor), f"{TOPIC_PREFIX}{self._token}",
            WorkerConfig(tuple(settings.tool_modules), settings.worker_memory_mb,
                        settings.worker_max_jobs, settings.log_level),
            lambda message: self._events.put(("task", message)))
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}  # by job id
        self._keys: dict[str, str] = {}  # Dask key -> job id
        self._connected = False
        self._threads = 0
        self._warmed: set[str] = set()  # workers given idle children
        self._next_refresh = 0.0
        self._next_health = 0.0
        self._stopping = threading.Event()
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._monitor, name="dask-executor", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop every job's child on the cluster (no outcomes follow) and disconnect."""
        self._stopping.set()
        self.link.stop()  # the monitor waits on the scheduler no longer
        self._events.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            flights = list(self._flights.values())
            self._flights.clear()
            self._keys.clear()
            self._connected = False
        self.link.close([f.future for f in flights if f.future is not None],
                        _keys_by_worker(flights))

    # -- dispatch ---------------------------------------------------------------------

    def capacity(self) -> int:
        return self.size

    def free_slots(self) -> int:
        with self._lock:
            if not self._connected:
                return 0
            return max(0, min(self.size, self._threads) - len(self._flights))

    def busy(self) -> int:
        with self._lock:
            return len(self._flights)

    def submit(self, task: Task) -> None:
        flight = _Flight(task, self._new_key(task))
        with self._lock:
            self._flights[task.job_id] = flight
            self._keys[flight.key] = task.job_id
        self._send(flight)

    def _new_key(self, task: Task) -> str:
        return f"spoolq-{task.job_id}-{task.attempt}-{self._token}-{uuid.uuid4().hex[:6]}"

    def _send(self, flight: _Flight) -> None:
        key, task = flight.key, flight.task
        with self._lock:
            connected = self._connected
        try:
            if not connected:
                raise LinkLost("no connection to the Dask scheduler")
            # The future rides in the event: the task may end before submit returns.
            flight.future = self.link.submit(
                task, key, lambda future: self._events.put(("future", key, future)))
        except Exception as exc:  # lost meanwhile, or the client refused it
            self._resolve(flight, _crashed(task, f"cannot submit to Dask: {exc}"))

    def kill(self, job_id: str, reason: str) -> bool:
        with self._lock:
            flight = self._flights.get(job_id)
            if flight is None:
                return False
            if flight.kill_reason is None:
                flight.kill_reason = reason
                flight.kill_deadline = time.monotonic() + KILL_GRACE_S
        self._events.put(("kill", flight.key))
        return True

    # -- monitor thread ---------------------------------------------------------------

    def _monitor(self) -> None:
        delay = RECONNECT_S[0]
        while not self._stopping.is_set():
            if not self._connected:
                probe = self.link.connect()
                if probe is not None and not self._stopping.is_set():
                    self._warmed.clear()
                    self._on_probe(probe)
                    with self._lock:
                        self._connected = True
                    delay = RECONNECT_S[0]
                else:
                    self._stopping.wait(delay)
                    delay = min(RECONNECT_S[1], delay * 2)
                continue
            self._drain(self._next_timeout())
            now = time.monotonic()
            if now >= self._next_health:
                self._check_health(now)
            self._enforce(now)
        if self._connected:
            self._last_probe()

    def _last_probe(self) -> None:
        """At a stop, ask the scheduler once more (cut short by the stop): one that does
        not answer is lost now, so the stop does not wait on it to kill the jobs."""
        self._next_refresh = 0.0
        self._check_health(time.monotonic())

    def _next_timeout(self) -> float:
        now = time.monotonic()
        wakes = [self._next_health]
        with self._lock:
            for f in self._flights.values():
                wakes.append(f.kill_deadline if f.kill_reason else f.deadline)
        return max(0.0, min(wakes) - now)

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            try:
                self._handle(event)
            except Exception:  # one bad event must not stop the monitor
                log.exception("dask executor: cannot handle an event",
                              extra={"fields": {"kind": event[0]}})
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "future":
            self._on_future(event[1], event[2])
        elif kind == "task":
            self._on_task_event(event[1])
        elif kind == "kill":
            self._on_kill(event[1])
        elif kind == "fetched":
            self._on_fetched(event[1], event[2])

    # -- the scheduler ----------------------------------------------------------------

    def _check_health(self, now: float) -> None:
        self._next_health = now + HEALTH_S
        try:
            if not self.link.alive():
                raise LinkLost(f"lost the connection to the Dask scheduler at "
                               f"{self.link.address}")
            if now < self._next_refresh:
                return
            probe = self.link.probe()
        except LinkLost as lost:
            self._lost(str(lost))
            return
        self._on_probe(probe)

    def _on_probe(self, probe: Probe) -> None:
        self._next_refresh = time.monotonic() + REFRESH_S
        new = sorted(probe.workers - self._warmed)
        self._warmed &= probe.workers
        if new:
            self._warmed.update(new)
            self.link.warm(new)
        with self._lock:
            self._threads = probe.threads
            gone = [f for f in self._flights.values()
                    if f.worker is not None and f.worker not in probe.workers]
        for flight in gone:  # its worker left: lost, and Dask must not re-run it
            self.link.cancel(flight.future)
            self._resolve(flight, self._kill_outcome(flight) or _crashed(
                flight.task, f"the Dask worker {flight.worker} died or left while running "
                "the job"))

    def _lost(self, why: str) -> None:
        """Fail every job in flight (retryable) and start over with a new client."""
        with self._lock:
            self._connected = False
            flights = list(self._flights.values())
        log.error("Dask scheduler lost; jobs in flight fail worker_crashed; reconnecting",
                  extra={"fields": {"why": why, "in_flight": len(flights)}})
        # Their runs stop when their workers lose the scheduler too, or when it drops this
        # client's tasks. A scheduler that is frozen or cut off from this host only does
        # neither for a while: the workers are told directly.
        self.link.kill_direct(_keys_by_worker(flights), "lost")
        for flight in flights:
            self._resolve(flight, self._kill_outcome(flight) or _crashed(flight.task, why))
        self.link.drop()

    # -- events -----------------------------------------------------------------------

    def _on_future(self, key: str, future: Any) -> None:
        flight = self._flight_by_key(key)
        if flight is None:
            return
        status = future.status
        if status == "pending":
            return
        if status == "finished":
            if not flight.fetching:
                flight.fetching = True
                self.link.fetch(future, lambda got: self._events.put(("fetched", key, got)))
            return
        if status == "error":
            if self._never_started(flight, future):
                self._resubmit(flight)
                return
            outcome = _crashed(flight.task, self.link.failure(future))
        elif not self.link.alive():
            outcome = _crashed(flight.task, "lost the connection to the Dask scheduler")
        else:
            outcome = _crashed(flight.task, f"the Dask task was {status} on the cluster")
        self._finish(flight, outcome)

    def _never_started(self, flight: _Flight, future: Any) -> bool:
        """Its Dask worker died while the task waited there for a thread (a cluster
        shared with other processors): the job never ran, so no attempt is spent.

        Its start is announced before the job gets a process, and that event reaches
        the processor before the task's failure, so no ``started`` means the job did
        not run (but for the few ms before the worker's batched send, if it died then).
        """
        return (flight.worker is None and flight.kill_reason is None
                and flight.resubmits < RESUBMITS and self.link.killed_worker(future))

    def _resubmit(self, flight: _Flight) -> None:
        job_id = flight.task.job_id
        with self._lock:
            if self._flights.get(job_id) is not flight:
                return
            self._keys.pop(flight.key, None)
            flight.key, flight.future = self._new_key(flight.task), None
            flight.resubmits += 1
            self._keys[flight.key] = job_id
        log.info("the Dask worker holding a job died before the job started; submitted "
                 "again", extra={"fields": {"id": job_id, "resubmits": flight.resubmits}})
        self._send(flight)

    def _on_fetched(self, key: str, got: Outcome | Exception) -> None:
        flight = self._flight_by_key(key)
        if flight is None:
            return
        if isinstance(got, Exception):
            got = _crashed(flight.task, f"cannot fetch the result from Dask: {got}")
        self._finish(flight, got)

    def _finish(self, flight: _Flight, outcome: Outcome) -> None:
        kill = self._kill_outcome(flight)
        if kill is not None and not outcome.ok and outcome.error_type != kill.error_type:
            outcome = kill  # the kill reason wins over how the task happened to end
        self._resolve(flight, outcome)

    def _on_task_event(self, message: dict[str, Any]) -> None:
        key = str(message.get("key"))
        flight = self._flight_by_key(key)
        if message.get("event") == "started":
            self._on_started(key, str(message.get("worker")), flight)
        elif message.get("event") == "progress" and flight is not None:
            sink = self._sink
            assert sink is not None
            sink.progress(flight.task.job_id, float(message.get("fraction", 0.0)),
                          str(message.get("message", "")))

    def _on_started(self, key: str, worker: str, flight: _Flight | None) -> None:
        if flight is None or (flight.worker is not None and flight.worker != worker):
            # Not ours any more (resolved, or a re-run of a lost worker's task): stop it.
            self.link.kill(worker, [key], "stale")
            if flight is not None:
                self._resolve(flight, self._kill_outcome(flight) or _crashed(
                    flight.task, f"Dask re-ran the job on {worker} after losing a worker; "
                    "the re-run was killed"))
            return
        flight.worker = worker
        if flight.kill_reason is not None:
            self.link.kill(worker, [key], flight.kill_reason)
        else:
            flight.deadline = time.monotonic() + flight.task.timeout_s + BACKSTOP_S

    def _on_kill(self, key: str) -> None:
        flight = self._flight_by_key(key)
        if flight is None:
            return
        if flight.worker is not None:
            self.link.kill(flight.worker, [key], flight.kill_reason or "killed")
        elif flight.future is not None:
            # Not started yet: it never will.  A start racing this cancel is
            # announced, finds no flight, and is killed then.
            self.link.cancel(flight.future)
            self._resolve(flight, self._kill_outcome(flight))

    def _enforce(self, now: float) -> None:
        with self._lock:
            flights = list(self._flights.values())
        for flight in flights:
            if flight.fetching:
                continue  # it finished in time: only its result is still on the way
            if flight.kill_reason is None and now >= flight.deadline:
                log.warning("no answer from Dask past the job's timeout; killing it",
                            extra={"fields": {"id": flight.task.job_id,
                                              "late_s": BACKSTOP_S}})
                self.kill(flight.task.job_id, ErrorType.TIMEOUT.value)
            elif flight.kill_reason is not None and now >= flight.kill_deadline:
                self.link.cancel(flight.future)
                self._resolve(flight, self._kill_outcome(flight))

    # -- helpers ----------------------------------------------------------------------

    def _flight_by_key(self, key: str) -> _Flight | None:
        with self._lock:
            job_id = self._keys.get(key)
            return self._flights.get(job_id) if job_id is not None else None

    def _resolve(self, flight: _Flight, outcome: Outcome | None) -> None:
        """Report ``outcome`` once per flight; later calls for it do nothing."""
        with self._lock:
            if self._flights.get(flight.task.job_id) is not flight:
                return
            del self._flights[flight.task.job_id]
            self._keys.pop(flight.key, None)
        flight.future = None  # lets Dask forget the task
        sink = self._sink
        assert sink is not None
        sink.finished(outcome or _crashed(flight.task, "the job's Dask task was stopped"))

    @staticmethod
    def _kill_outcome(flight: _Flight) -> Outcome | None:
        reason, task = flight.kill_reason, flight.task
        if reason == ErrorType.TIMEOUT.value:
            return Outcome(task.job_id, ErrorType.TIMEOUT,
                           f"killed after {task.timeout_s:g} s (timeout)", retryable=True, pid=0)
        if reason == ErrorType.CANCELLED.value:
            return Outcome(task.job_id, ErrorType.CANCELLED, "cancelled while running", pid=0)
        if reason is not None:
            return _crashed(task, f"killed ({reason})")
        return None


def _crashed(task: Task, message: str) -> Outcome:
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, message, retryable=True, pid=0)


def _keys_by_worker(flights: list[_Flight]) -> dict[str | None, list[str]]:
    """The flights' task keys by the worker each started on (None: not started yet)."""
    by_worker: dict[str | None, list[str]] = {}
    for flight in flights:
        by_worker.setdefault(flight.worker, []).append(flight.key)
    return by_worker
