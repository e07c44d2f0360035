"""The Dask COMPUTE executor: ``SPOOL_EXECUTOR=dask://host:port``.

Same contract as the local pool (:mod:`processor.executor`), on a Dask
distributed cluster.  The spool stays the one source of truth: a job is
claimed before it is submitted and its outcome becomes a record in the
daemon; Dask only runs it.  Each job is one Dask task (``retries=0``, a key
of its own) that runs the tool in a killable child on a worker
(:mod:`processor.dask_task`); :mod:`processor.dask_link` owns the connection,
:mod:`processor.dask_flight` the jobs in flight, and :mod:`processor.dask_events`
what each event from Dask means for them.

Guarantees:

* At most ``min(JOB_NUM, threads in the cluster)`` jobs in flight, and none
  while there is no scheduler connection (:meth:`DaskExecutor.free_slots`
  is 0), so jobs wait in ``pending/`` where other processors can take them.
* Exactly one outcome per submitted job.  ``timeout``: the task kills its
  child at the deadline; a backstop here fires
  :data:`~processor.dask_events.BACKSTOP_S` later in case the worker cannot
  answer.  Both clocks start when the task starts on a worker: a task
  waiting in Dask for a thread (a cluster shared with other processors) has
  not used any of its time.  ``cancelled``: :meth:`DaskExecutor.kill`.
  ``worker_crashed``: the child died, the Dask worker died or left
  (``KilledWorker``, or its address gone from the cluster), the task failed
  or was cancelled on the Dask side, or the scheduler connection was lost.
  Those are retryable; the daemon applies ``max_attempts``.
* No silent Dask-side retry: the task of a lost worker is cancelled at once
  and a re-run that starts anyway is killed when it announces itself.
  ``distributed.scheduler.allowed-failures: 0`` on the scheduler closes even
  that window (a warning says so when it is not).
* A lost scheduler never stops the processor: the monitor thread reconnects
  with backoff and offers slots again once connected.  Whenever the free slots
  rise without a job ending (a connect, workers joining), the sink hears it
  (:meth:`~processor.executor.Sink.slots_freed`), so jobs already waiting are
  claimed at once rather than at the daemon's next heartbeat.  Nor does it hold a
  stop: :meth:`DaskExecutor.shutdown` gives a scheduler that does not answer
  about half a second (:data:`~processor.dask_link.STOP_WAIT_S`), then kills
  the jobs' children through their workers directly.

One monitor thread owns the waiting: task ends, task events (started,
progress) and kill requests arrive in its queue; it also probes the
scheduler every :data:`REFRESH_S` (every :data:`HEALTH_S` while workers are joining
just after a connect) and enforces the backstops.  Reads
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
from typing import Any

from processor.dask_connect import LinkLost, scheduler_address
from processor.dask_events import BACKSTOP_S, TaskEvents
from processor.dask_flight import Flight, Flights, crashed, keys_by_worker, kill_outcome
from processor.dask_link import Probe, SchedulerLink
from processor.dask_prepare import TOPIC_PREFIX
from processor.executor import Sink, Task, WorkerConfig
from processor.worker import DEADMAN_GRACE_S
from spool.errors import ErrorType
from spool.settings import Settings

__all__ = ["DaskExecutor", "scheduler_address"]

log = logging.getLogger("spoolq.dask")

RECONNECT_S = (0.5, 2.0)
REFRESH_S = 1.0
HEALTH_S = 0.2
JOINING_S = 10.0
"""For this long after a connect, while the cluster has fewer threads than JOB_NUM, it is
probed at each health check (every HEALTH_S), not every REFRESH_S: a scheduler
(re)started answers before its workers register, and each worker joining was
otherwise offered up to 1 s late."""
KILL_GRACE_S = 5.0
LINGER_MARGIN_S = 1.0
"""Beyond a Deadman's time, for the clocks of two hosts and a child's exit."""
WAITING_S = 1.0
"""How long a task may wait inside Dask without starting before it counts as waiting
(:meth:`DaskExecutor.unstarted`), not as starting."""


class DaskExecutor:
    """COMPUTE jobs on a Dask distributed cluster, with the local pool's meaning."""

    name = "dask"

    def __init__(self, settings: Settings, *,
                 params: tuple[tuple[str, str], ...] = ()) -> None:
        self.size = settings.job_num
        self._token = uuid.uuid4().hex[:12]
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.link = SchedulerLink(
            scheduler_address(settings.executor), f"{TOPIC_PREFIX}{self._token}",
            WorkerConfig(tuple(settings.tool_modules), settings.worker_memory_mb,
                        settings.worker_max_jobs, settings.log_level, params=params),
            lambda message: self._events.put(("task", message)))
        self._lock = threading.Lock()  # guards the connection state
        self._flights = Flights()
        # Killed jobs whose kill no worker confirmed: until when their processes may run.
        self._lingering: dict[str, float] = {}
        self._task_events = TaskEvents(self._flights, self.link, self._events, self._resubmit,
                                      self._lost)
        self._connected = False
        self._threads = 0
        self._warmed: set[str] = set()  # workers given idle children
        self._next_refresh = 0.0
        self._next_health = 0.0
        self._joining_until = 0.0  # see JOINING_S
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._flights.sink = sink
        self._thread = threading.Thread(target=self._monitor, name="dask-executor", daemon=True)
        self._thread.start()

    def shutdown(self) -> dict[str, float]:
        """Stop every job's child on the cluster (no outcomes follow) and disconnect; the
        jobs whose kill no worker confirmed, each with when its process is surely over:
        requeued due at once, a job on a frozen worker ran beside its next run (QA)."""
        self._stopping.set()
        self.link.stop()  # the monitor waits on the scheduler no longer
        self._events.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout=30)
        flights = self._flights.clear()
        with self._lock:
            self._connected = False
        asked = time.monotonic() + KILL_GRACE_S
        for flight in flights:  # killed now, the stop's kill (see _surely_over)
            if flight.kill_reason is None:
                flight.kill_deadline = asked
        confirmed = self.link.close([f.future for f in flights if f.future is not None],
                                    keys_by_worker(flights))
        return {f.task.job_id: self._surely_over(f) for f in flights
                if f.key not in confirmed}

    # -- dispatch ---------------------------------------------------------------------

    def capacity(self) -> int:
        return self.size

    def room(self) -> int:
        with self._lock:
            return min(self.size, self._threads) if self._connected else 0

    def free_slots(self) -> int:
        with self._lock:
            if not self._connected:
                return 0
            threads = self._threads
        return max(0, min(self.size, threads) - len(self._flights))

    def busy(self) -> int:
        return len(self._flights)

    def linger_until(self, job_id: str) -> float | None:
        return self._lingering.pop(job_id, None)

    def unstarted(self) -> frozenset[str]:
        """The jobs whose task has waited inside Dask :data:`WAITING_S` or more without
        starting (every thread taken, on a cluster shared with other processors, or no
        worker left): a stop requeues them at once rather than at the end of its grace
        period.  A younger one may be about to start (its start is announced within
        milliseconds)."""
        now = time.monotonic()
        return frozenset(f.task.job_id for f in self._flights.all()
                         if f.worker is None and now - f.submitted >= WAITING_S)

    def submit(self, task: Task) -> None:
        flight = Flight(task, self._new_key(task))
        self._flights.add(flight)
        self._send(flight)

    def _new_key(self, task: Task) -> str:
        return f"spoolq-{task.job_id}-{task.attempt}-{self._token}-{uuid.uuid4().hex[:6]}"

    def _send(self, flight: Flight) -> None:
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
            self._flights.resolve(flight, crashed(task, f"cannot submit to Dask: {exc}"))

    def _resubmit(self, flight: Flight) -> None:
        """Submit again a job whose Dask worker died before it started (a new key)."""
        if not self._flights.rekey(flight, self._new_key(flight.task)):
            return
        log.info("the Dask worker holding a job died before the job started; submitted "
                 "again", extra={"fields": {"id": flight.task.job_id,
                                            "resubmits": flight.resubmits}})
        self._send(flight)

    def kill(self, job_id: str, reason: str) -> bool:
        flight = self._flights.mark_kill(job_id, reason, time.monotonic() + KILL_GRACE_S)
        if flight is None:
            return False
        self._events.put(("kill", flight.key))
        return True

    @staticmethod
    def _surely_over(flight: Flight) -> float:
        """When the process of ``flight``, whose kill no worker confirmed, has surely
        ended: its Deadman kills it :data:`~processor.worker.DEADMAN_GRACE_S` past its
        time limit, counted from its start, which was before this executor heard of it
        (``deadline`` is then plus the timeout and :data:`BACKSTOP_S`).  Never told it
        started: it may have, as late as the kill was asked."""
        if math.isfinite(flight.deadline):
            started = flight.deadline - flight.task.timeout_s - BACKSTOP_S
        else:
            started = flight.kill_deadline - KILL_GRACE_S
        return started + flight.task.timeout_s + DEADMAN_GRACE_S + LINGER_MARGIN_S

    # -- monitor thread ---------------------------------------------------------------

    def _monitor(self) -> None:
        delay = RECONNECT_S[0]
        while not self._stopping.is_set():
            if not self._connected:
                probe = self.link.connect()
                if probe is not None and not self._stopping.is_set():
                    self._warmed.clear()
                    self._joining_until = time.monotonic() + JOINING_S
                    self._on_probe(probe)
                    with self._lock:
                        self._connected = True
                    self._announce_room(0)
                    delay = RECONNECT_S[0]
                else:
                    self._stopping.wait(delay)
                    delay = min(RECONNECT_S[1], delay * 2)
                continue
            self._drain(self._next_timeout())
            now = time.monotonic()
            # Not after a task's end found the scheduler lost (_lost, in the drain): a
            # second look at the dropped link would log the loss again, for 0 jobs.
            if self._connected and now >= self._next_health:
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
        for f in self._flights.all():
            wakes.append(f.kill_deadline if f.kill_reason else f.deadline)
        return max(0.0, min(wakes) - now)

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            try:
                self._task_events.handle(event)
            except Exception:  # one bad event must not stop the monitor
                log.exception("dask executor: cannot handle an event",
                              extra={"fields": {"kind": event[0]}})
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

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
        now = time.monotonic()
        joining = probe.threads < self.size and now < self._joining_until
        self._next_refresh = now if joining else now + REFRESH_S  # now: the next check
        new = sorted(probe.workers - self._warmed)
        self._warmed &= probe.workers
        if new:
            self._warmed.update(new)
            self.link.warm(new)
        free = self.free_slots()
        with self._lock:
            self._threads = probe.threads
        self._announce_room(free)
        gone = [f for f in self._flights.all()
                if f.worker is not None and f.worker not in probe.workers]
        for flight in gone:  # its worker left: lost, and Dask must not re-run it
            self.link.cancel(flight.future)
            self._flights.resolve(flight, kill_outcome(flight) or crashed(
                flight.task, f"the Dask worker {flight.worker} died or left while running "
                "the job"))

    def _announce_room(self, free_before: int) -> None:
        """Tell the sink when free_slots() rose above ``free_before``: the daemon sleeps
        until a timer otherwise, with jobs waiting for just this room."""
        sink = self._flights.sink
        if sink is not None and self.free_slots() > free_before:
            sink.slots_freed()

    def _lost(self, why: str) -> None:
        """Fail every job in flight (retryable) and start over with a new client."""
        with self._lock:
            self._connected = False
        flights = self._flights.all()
        fields = {"why": why, "in_flight": len(flights)}
        if self._stopping.is_set():  # nothing to reconnect for, and no alert: ops asked for it
            log.warning("Dask scheduler did not answer at the stop; its workers are told "
                        "directly", extra={"fields": fields})
        else:
            log.error("Dask scheduler lost; jobs in flight fail worker_crashed; reconnecting",
                      extra={"fields": fields})
        # Their runs stop when their workers lose the scheduler too, or when it drops this
        # client's tasks. A scheduler that is frozen or cut off from this host only does
        # neither for a while: the workers are told directly.
        self.link.kill_direct(keys_by_worker(flights), "lost")
        for flight in flights:
            self._flights.resolve(flight, kill_outcome(flight) or crashed(flight.task, why))
        self.link.drop()

    def _enforce(self, now: float) -> None:
        for flight in self._flights.all():
            if flight.fetching:
                continue  # it finished in time: only its result is still on the way
            if flight.kill_reason is None and now >= flight.deadline:
                log.warning("no answer from Dask past the job's timeout; killing it",
                            extra={"fields": {"id": flight.task.job_id,
                                              "late_s": BACKSTOP_S}})
                self.kill(flight.task.job_id, ErrorType.TIMEOUT.value)
            elif flight.kill_reason is not None and now >= flight.kill_deadline:
                self.link.cancel(flight.future)
                self._lingering[flight.task.job_id] = self._surely_over(flight)
                self._flights.resolve(flight, kill_outcome(flight))
