"""The Dask COMPUTE executor: ``SPOOL_EXECUTOR=dask://host:port``.

Same contract as the local pool (:mod:`processor.executor`), on a Dask
distributed cluster.  The spool stays the one source of truth: a job is
claimed before it is submitted and its outcome becomes a record in the
daemon; Dask only runs it.  Each job is one Dask task (``retries=0``, a key
of its own) that runs the tool in a killable child on a worker
(:mod:`processor.dask_task`).

Guarantees:

* At most ``min(JOB_NUM, threads in the cluster)`` jobs in flight, and none
  while there is no scheduler connection (:meth:`DaskExecutor.free_slots`
  is 0), so jobs wait in ``pending/`` where other processors can take them.
* Exactly one outcome per submitted job.  ``timeout``: the task kills its
  child at the deadline; a backstop here fires :data:`BACKSTOP_S` later in
  case the worker cannot answer.  ``cancelled``: :meth:`DaskExecutor.kill`.
  ``worker_crashed``: the child died, the Dask worker died or left
  (``KilledWorker``, or the scheduler's ``remove-worker`` event naming the
  task), the task failed or was cancelled on the Dask side, or the scheduler
  connection was lost.  Those are retryable; the daemon applies
  ``max_attempts``.
* No silent Dask-side retry: the task of a lost worker is cancelled at once
  and a re-run that starts anyway is killed when it announces itself.
  Setting ``distributed.scheduler.allowed-failures: 0`` on the scheduler
  closes even that window (a warning says so when it is not).
* A lost scheduler never stops the processor: a monitor thread reconnects
  with backoff and offers slots again once connected.

Progress and "started" announcements come back as Dask events on a topic of
this executor's own.  Reads ``SPOOL_EXECUTOR``, ``JOB_NUM``, ``SPOOL_TOOLS``,
``SPOOL_WORKER_MEMORY_MB`` and ``SPOOL_WORKER_MAX_JOBS`` (through
:class:`~spool.settings.Settings`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from processor.dask_task import ChildConfig, kill_on_worker, prestart, run_task
from processor.executor import Sink, Task
from processor.runner import Outcome
from spool.errors import ConfigError, ErrorType
from spool.settings import Settings

log = logging.getLogger("spoolq.dask")

DEFAULT_PORT = 8786
CONNECT_TIMEOUT_S = 2.0
RECONNECT_S = (0.5, 2.0)
WARN_EVERY_S = 60.0
REFRESH_S = 1.0
HEALTH_S = 0.2
BACKSTOP_S = 10.0
KILL_GRACE_S = 5.0
RPC_TIMEOUT_S = 5.0


def scheduler_address(executor: str) -> str:
    """``dask://host:port`` (or ``tcp://host:port``) as the address Dask dials."""
    scheme, sep, rest = executor.partition("://")
    if not sep or scheme not in ("dask", "tcp") or not rest or "/" in rest:
        raise ConfigError(f"SPOOL_EXECUTOR={executor!r}: use dask://host:port")
    host, colon, port = rest.rpartition(":")
    if not colon:
        host, port = rest, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"SPOOL_EXECUTOR={executor!r}: use dask://host:port")
    return f"tcp://{host}:{port}"


def _require_distributed() -> Any:
    try:
        import distributed  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError("SPOOL_EXECUTOR=dask://... needs Dask distributed, which is not "
                          "installed: pip install 'spoolq[dask]'") from exc
    return distributed


@dataclass(slots=True)
class _Flight:
    """One submitted job until its outcome is reported."""

    task: Task
    key: str
    deadline: float
    future: Any = None
    worker: str | None = None
    kill_reason: str | None = None
    kill_deadline: float = 0.0


class DaskExecutor:
    """COMPUTE jobs on a Dask distributed cluster, with the local pool's meaning."""

    name = "dask"

    def __init__(self, settings: Settings) -> None:
        self._dd = _require_distributed()
        self.address = scheduler_address(settings.executor)
        self.size = settings.job_num
        self.config = ChildConfig(tuple(settings.tool_modules), settings.worker_memory_mb,
                                  settings.worker_max_jobs)
        self._token = uuid.uuid4().hex[:12]
        self._topic = f"spoolq-{self._token}"
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}  # by job id
        self._keys: dict[str, str] = {}  # Dask key -> job id
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._client: Any = None
        self._connected = False
        self._scheduler_id: str | None = None
        self._threads = 0
        self._next_refresh = 0.0
        self._next_health = 0.0
        self._stopping = threading.Event()
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._rpc = ThreadPoolExecutor(1, thread_name_prefix="dask-rpc")
        self._next_warning = 0.0

    # -- life cycle -------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._monitor, name="dask-executor", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop every job's child on the cluster (no outcomes follow) and disconnect."""
        self._stopping.set()
        self._events.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 5)
        with self._lock:
            flights = list(self._flights.values())
            self._flights.clear()
            self._keys.clear()
            client, self._client, self._connected = self._client, None, False
        if client is not None:
            if flights:
                self._kill_remote(client, flights, "shutdown", wait=True)
                with contextlib.suppress(Exception):
                    client.cancel([f.future for f in flights if f.future is not None],
                                  force=True)
            _close_client(client)
        self._rpc.shutdown(wait=True, cancel_futures=False)

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
        key = f"spoolq-{task.job_id}-{task.attempt}-{self._token}-{uuid.uuid4().hex[:6]}"
        flight = _Flight(task, key, time.monotonic() + task.timeout_s + BACKSTOP_S)
        with self._lock:
            client = self._client if self._connected else None
            self._flights[task.job_id] = flight
            self._keys[key] = task.job_id
        if client is None:
            self._resolve(flight, _crashed(task, "no connection to the Dask scheduler"))
            return
        try:
            future = client.submit(run_task, task, self._topic, key, self.config, key=key,
                                   pure=False, retries=0)
        except Exception as exc:
            self._resolve(flight, _crashed(task, f"cannot submit to Dask: {exc}"))
            return
        flight.future = future
        future.add_done_callback(lambda _f: self._events.put(("future", key)))

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
            if self._client is None:
                if self._connect():
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
            self._on_future(event[1])
        elif kind == "topic":
            self._on_task_event(event[1])
        elif kind == "kill":
            self._on_kill(event[1])

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            client = self._dd.Client(self.address, timeout=CONNECT_TIMEOUT_S,
                                     set_as_default=False)
        except Exception as exc:
            if time.monotonic() >= self._next_warning:  # once a minute while it is down
                self._next_warning = time.monotonic() + WARN_EVERY_S
                log.warning("no Dask scheduler; COMPUTE jobs wait in pending/, retrying",
                            extra={"fields": {"address": self.address, "error": str(exc)}})
            return False
        if self._stopping.is_set():
            _close_client(client)
            return False
        try:
            client.subscribe_topic(self._topic, lambda ev: self._events.put(("topic", ev[1])))
            info = client.scheduler_info(n_workers=0)
        except Exception as exc:
            log.warning("the Dask scheduler went away while connecting",
                        extra={"fields": {"address": self.address, "error": str(exc)}})
            _close_client(client)
            return False
        with self._lock:
            self._client = client
            self._scheduler_id = str(info.get("id"))
            self._threads = int(info.get("total_threads", 0))
            self._connected = True
        self._next_refresh = time.monotonic() + REFRESH_S
        self._next_warning = 0.0
        log.info("connected to the Dask scheduler", extra={"fields": {
            "address": self.address, "threads": self._threads, "topic": self._topic}})
        self._rpc.submit(self._prepare_cluster, client)
        return True

    def _prepare_cluster(self, client: Any) -> None:
        """Warn when the scheduler may re-run a lost worker's task; warm the workers up."""
        with contextlib.suppress(Exception):
            allowed = client.run_on_scheduler(lambda dask_scheduler:
                                              dask_scheduler.allowed_failures)
            if allowed:
                log.warning("the Dask scheduler may re-run a lost worker's task "
                            "(distributed.scheduler.allowed-failures is not 0); spoolq "
                            "cancels and kills such re-runs, 0 rules them out",
                            extra={"fields": {"allowed_failures": allowed}})
        with contextlib.suppress(Exception):
            client.run(prestart, self.config)

    def _check_health(self, now: float) -> None:
        self._next_health = now + HEALTH_S
        client = self._client
        if client.status != "running":
            self._lost(f"lost the connection to the Dask scheduler at {self.address}")
            return
        if now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        with_workers = self.busy() > 0
        try:
            info = client.scheduler_info(n_workers=-1 if with_workers else 0)
        except Exception as exc:
            self._lost(f"the Dask scheduler at {self.address} does not answer: {exc}")
            return
        if str(info.get("id")) != self._scheduler_id:
            self._lost(f"the Dask scheduler at {self.address} was replaced")
            return
        with self._lock:
            self._threads = int(info.get("total_threads", 0))
        if with_workers:
            self._check_workers(set(info.get("workers") or ()))

    def _lost(self, why: str) -> None:
        """Fail every job in flight (retryable) and start over with a new client."""
        with self._lock:
            client, self._client, self._connected = self._client, None, False
            flights = list(self._flights.values())
        log.error("Dask scheduler lost; jobs in flight fail worker_crashed; reconnecting",
                  extra={"fields": {"why": why, "in_flight": len(flights)}})
        for flight in flights:
            self._resolve(flight, self._kill_outcome(flight) or _crashed(flight.task, why))
        if client is not None:
            self._rpc.submit(_close_client, client)

    # -- events -----------------------------------------------------------------------

    def _on_future(self, key: str) -> None:
        flight = self._flight_by_key(key)
        if flight is None or flight.future is None:
            return
        future = flight.future
        status = future.status
        if status == "pending":
            return
        if status == "finished":
            try:
                outcome: Outcome = future.result(timeout=RPC_TIMEOUT_S)
            except Exception as exc:
                outcome = _crashed(flight.task, f"cannot fetch the result from Dask: {exc}")
            else:
                outcome = replace(outcome, pid=0)  # the record names this processor's host
        elif status == "error":
            outcome = _crashed(flight.task, _task_error(future))
        elif self._client is None or self._client.status != "running":
            outcome = _crashed(flight.task, "lost the connection to the Dask scheduler")
        else:
            outcome = _crashed(flight.task, f"the Dask task was {status} on the cluster")
        kill = self._kill_outcome(flight)
        if kill is not None and not outcome.ok and outcome.error_type != kill.error_type:
            outcome = kill  # the kill reason wins over how the task happened to end
        self._resolve(flight, outcome)

    def _on_task_event(self, message: dict[str, Any]) -> None:
        key = str(message.get("key"))
        flight = self._flight_by_key(key)
        if message.get("event") == "started":
            worker = str(message.get("worker"))
            if flight is None or (flight.worker is not None and flight.worker != worker):
                # Not ours any more (resolved, or a re-run of a lost worker's task): stop it.
                self._rpc.submit(self._kill_keys, worker, [key], "stale")
                if flight is not None:
                    self._resolve(flight, self._kill_outcome(flight) or _crashed(
                        flight.task, f"Dask re-ran the job on {worker} after losing a "
                        "worker; the re-run was killed"))
                return
            flight.worker = worker
            if flight.kill_reason is not None:
                self._rpc.submit(self._kill_keys, worker, [key], flight.kill_reason)
            else:
                flight.deadline = time.monotonic() + flight.task.timeout_s + BACKSTOP_S
        elif message.get("event") == "progress" and flight is not None:
            sink = self._sink
            assert sink is not None
            sink.progress(flight.task.job_id, float(message.get("fraction", 0.0)),
                          str(message.get("message", "")))

    def _check_workers(self, workers: set[str]) -> None:
        """A job whose worker left the cluster is lost: fail it; Dask must not re-run it."""
        with self._lock:
            gone = [f for f in self._flights.values()
                    if f.worker is not None and f.worker not in workers]
        for flight in gone:
            if flight.future is not None:
                self._rpc.submit(_cancel, self._client, flight.future)
            self._resolve(flight, self._kill_outcome(flight) or _crashed(
                flight.task, f"the Dask worker {flight.worker} died or left while running "
                "the job"))

    def _on_kill(self, key: str) -> None:
        flight = self._flight_by_key(key)
        if flight is None:
            return
        if flight.worker is not None:
            self._rpc.submit(self._kill_keys, flight.worker, [key], flight.kill_reason)
        elif flight.future is not None:
            # Not started yet: it never will.  A start racing this cancel is
            # announced, finds no flight, and is killed then.
            self._rpc.submit(_cancel, self._client, flight.future)
            self._resolve(flight, self._kill_outcome(flight))

    def _enforce(self, now: float) -> None:
        with self._lock:
            flights = list(self._flights.values())
        for flight in flights:
            if flight.kill_reason is None and now >= flight.deadline:
                log.warning("no answer from Dask past the job's timeout; killing it",
                            extra={"fields": {"id": flight.task.job_id,
                                              "late_s": BACKSTOP_S}})
                self.kill(flight.task.job_id, ErrorType.TIMEOUT.value)
            elif flight.kill_reason is not None and now >= flight.kill_deadline:
                if flight.future is not None:
                    self._rpc.submit(_cancel, self._client, flight.future)
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

    def _kill_keys(self, worker: str, keys: list[str], reason: str | None) -> None:
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.run(kill_on_worker, keys, reason or "killed", workers=[worker])

    def _kill_remote(self, client: Any, flights: list[_Flight], reason: str, *,
                     wait: bool) -> None:
        by_worker: dict[str | None, list[str]] = {}
        for f in flights:
            by_worker.setdefault(f.worker, []).append(f.key)
        for worker, keys in by_worker.items():
            workers = [worker] if worker is not None else None
            job = self._rpc.submit(functools.partial(client.run, kill_on_worker, keys, reason,
                                                     workers=workers))
            if wait:
                with contextlib.suppress(Exception):
                    job.result(timeout=RPC_TIMEOUT_S)


def _crashed(task: Task, message: str) -> Outcome:
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, message, retryable=True, pid=0)


def _task_error(future: Any) -> str:
    try:
        exc = future.exception(timeout=RPC_TIMEOUT_S)
    except Exception as err:
        return f"the Dask task failed ({type(err).__name__}: {err})"
    if type(exc).__name__ == "KilledWorker":
        return f"the Dask worker running the job died ({exc})"
    return f"the Dask task failed: {type(exc).__name__}: {exc}"


def _cancel(client: Any, future: Any) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.cancel([future], force=True)


def _close_client(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=RPC_TIMEOUT_S)
