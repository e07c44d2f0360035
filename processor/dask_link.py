"""The processor's link to a Dask scheduler, for :mod:`processor.dask_executor`.

Owns the one ``distributed.Client`` at a time and every call that goes to
the cluster.  A call that waits on the network either has a timeout (the
health probe, fetching a result) or runs on a small thread pool of its own
(kills, cancels, warm-up, closing a client), so the executor's monitor thread
never hangs on a network that went quiet.  Foreign failures are translated
here: a scheduler that is gone, replaced or silent is :class:`LinkLost`.

Reads nothing from the environment; the executor passes the address (from
``SPOOL_EXECUTOR``) and the children's settings down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, cast

from processor.dask_task import kill_on_worker, prestart, run_task
from processor.executor import Task, WorkerConfig
from processor.runner import Outcome
from spool.errors import ConfigError

log = logging.getLogger("spoolq.dask")

DEFAULT_PORT = 8786
CONNECT_TIMEOUT_S = 2.0
CONNECT_WAIT_S = CONNECT_TIMEOUT_S + 2.0
"""How long connect() waits for a new client (distributed's own timeout may not apply)."""
PROBE_TIMEOUT_S = 10.0
STOP_WAIT_S = 0.5
"""Once :meth:`SchedulerLink.stop` came, how much longer a probe waits for an answer."""
RPC_TIMEOUT_S = 5.0
FETCH_TIMEOUT_S = 600.0
"""How long a finished task's result may take to arrive (1.2 GB took more than 5 s)."""
FETCH_THREADS = 2
WARN_EVERY_S = 60.0
CALL_THREADS = 4
TOPIC_PREFIX = "spoolq-"
"""Every processor's event topic is named this and a token of its own."""


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


def require_distributed() -> Any:
    """The ``distributed`` module, or a ConfigError saying how to install it."""
    try:
        import distributed  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError("SPOOL_EXECUTOR=dask://... needs Dask distributed, which is not "
                          "installed: pip install 'spoolq[dask]'") from exc
    return distributed


class _NoCancelledReconnect(logging.Filter):
    """Drops distributed's ERROR line for a cancelled coroutine.

    When the scheduler goes, the client starts reconnecting by itself; the
    link drops that client and makes a new one, and closing it cancels the
    reconnect, which ``distributed.utils.log_errors`` logs at ERROR with an
    empty message.  The loss has its own ERROR line (``Dask scheduler lost``);
    a cancellation is not an error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        return not (exc is not None and issubclass(exc, asyncio.CancelledError))


_CLIENT_LOG_FILTER = _NoCancelledReconnect()


class LinkLost(Exception):
    """The scheduler is gone, was replaced, or does not answer."""


@dataclass(frozen=True, slots=True)
class Probe:
    """What the scheduler says about the cluster."""

    scheduler_id: str
    threads: int
    workers: frozenset[str]


def _probe(info: dict[str, Any]) -> Probe:
    return Probe(str(info.get("id")), int(info.get("total_threads", 0)),
                 frozenset(info.get("workers") or ()))


class SchedulerLink:
    """One client at a time to the scheduler at ``address``."""

    def __init__(self, address: str, topic: str, config: WorkerConfig,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self._dd = require_distributed()
        logging.getLogger("distributed.client").addFilter(_CLIENT_LOG_FILTER)  # added once
        from distributed.utils import LoopRunner  # noqa: PLC0415 - optional extra

        # One IO loop thread for every client this link makes.  A Client that makes its
        # own loop and then fails to connect never stops it: with the scheduler down,
        # each attempt left a thread and three descriptors behind (about one every 4 s).
        self._loop: Any = cast(Any, LoopRunner(asynchronous=False))  # untyped
        self._loop.start()
        self.address = address
        self.topic = topic
        self.config = config
        self._on_event = on_event
        self.client: Any = None
        self.scheduler_id: str | None = None
        self._calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="dask-call")
        # Results come off threads of their own: a large one may take minutes to arrive.
        self._fetches = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="dask-fetch")
        self._next_warning = 0.0
        self._direct: list[Future[None]] = []  # kills sent straight to workers
        self._direct_lock = threading.Lock()
        self._attempt: Future[Any] | None = None  # a connection being made
        self._connects: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._stopped: Future[None] = Future()  # done once stop() came
        # A daemon thread: one stuck on a silent scheduler must not hold the exit.
        threading.Thread(target=self._make_clients, name="dask-connect", daemon=True).start()

    # -- connection -------------------------------------------------------------------

    def connect(self) -> Probe | None:
        """A new client, subscribed to the task events; None when no scheduler answers
        (within about :data:`CONNECT_WAIT_S`)."""
        attempt = self._attempt
        if attempt is None:
            attempt = self._attempt = Future()
            self._connects.put(attempt)
        wait([attempt, self._stopped], CONNECT_WAIT_S, FIRST_COMPLETED)
        if not attempt.done():  # kept: the next call waits on the same attempt
            if not self._stopped.done():
                self._no_scheduler(f"no answer in {CONNECT_WAIT_S:g} s")
            return None
        self._attempt = None
        try:
            client = attempt.result()
        except Exception as exc:
            self._no_scheduler(str(exc))
            return None
        try:
            client.subscribe_topic(self.topic, lambda event: self._on_event(event[1]))
            probe = self._identity(client)
        except Exception as exc:
            log.warning("the Dask scheduler went away while connecting",
                        extra={"fields": {"address": self.address, "error": str(exc)}})
            self._calls.submit(_close_client, client)
            return None
        self.client, self.scheduler_id = client, probe.scheduler_id
        self._next_warning = 0.0
        log.info("connected to the Dask scheduler", extra={"fields": {
            "address": self.address, "threads": probe.threads, "topic": self.topic}})
        self._calls.submit(self._prepare, client)
        return probe

    def _no_scheduler(self, error: str) -> None:
        if time.monotonic() >= self._next_warning:  # once a minute while it is down
            self._next_warning = time.monotonic() + WARN_EVERY_S
            log.warning("no Dask scheduler; COMPUTE jobs wait in pending/, retrying",
                        extra={"fields": {"address": self.address, "error": error}})

    def _make_clients(self) -> None:
        """The connecting thread: one ``distributed.Client`` per attempt.

        ``Client(address, timeout=...)`` waits for as long as a scheduler that
        accepted the connection stays silent (one frozen with SIGSTOP): this thread
        may wait that long, while :meth:`connect` gives up after
        :data:`CONNECT_WAIT_S`, so the monitor and a stop never hang on it.
        """
        while (attempt := self._connects.get()) is not None:
            try:
                client = self._dd.Client(self.address, timeout=CONNECT_TIMEOUT_S,
                                         set_as_default=False, loop=self._loop.loop)
            except BaseException as exc:
                attempt.set_exception(exc)
                continue
            if self._closed.is_set():  # it came after close(): nobody takes it
                return
            attempt.set_result(client)

    def _prepare(self, client: Any) -> None:
        """Warn when the scheduler may re-run a lost worker's task, and drop the event
        topics of processors that are gone."""
        with contextlib.suppress(Exception):
            allowed = client.run_on_scheduler(lambda dask_scheduler:
                                              dask_scheduler.allowed_failures)
            if allowed:
                log.warning("the Dask scheduler may re-run a lost worker's task "
                            "(distributed.scheduler.allowed-failures is not 0); spoolq "
                            "cancels and kills such re-runs, 0 rules them out",
                            extra={"fields": {"allowed_failures": allowed}})
        with contextlib.suppress(Exception):
            forgotten = client.run_on_scheduler(_forget_gone_topics(TOPIC_PREFIX, self.topic),
                                                callback_timeout=RPC_TIMEOUT_S)
            if forgotten:
                log.info("dropped the Dask event topics of processors that are gone",
                         extra={"fields": {"topics": forgotten}})

    def warm(self, workers: list[str]) -> None:
        """Start idle children on these workers, in the background."""
        client = self.client
        if client is not None and workers:
            self._calls.submit(_quiet, functools.partial(client.run, prestart, self.config,
                                                         workers=workers))

    def alive(self) -> bool:
        """The client still holds its connection (a local check, no network)."""
        return self.client is not None and self.client.status == "running"

    def probe(self) -> Probe:
        """Ask the scheduler about the cluster; LinkLost when it is not the one we know."""
        client = self.client
        if not self.alive():
            raise LinkLost(f"lost the connection to the Dask scheduler at {self.address}")
        try:
            probe = self._identity(client)
        except Exception as exc:
            raise LinkLost(f"the Dask scheduler at {self.address} does not answer "
                           f"({type(exc).__name__}: {exc})") from exc
        if probe.scheduler_id != self.scheduler_id:
            raise LinkLost(f"the Dask scheduler at {self.address} was replaced")
        return probe

    def _identity(self, client: Any) -> Probe:
        """The scheduler's answer, waited for at most :data:`PROBE_TIMEOUT_S`, and at most
        :data:`STOP_WAIT_S` more once :meth:`stop` came: a stop must not wait on a
        scheduler that does not answer (one frozen with SIGSTOP)."""
        started = time.monotonic()
        deadline = started + PROBE_TIMEOUT_S
        call = asyncio.run_coroutine_threadsafe(client.scheduler.identity(),
                                                self._loop.loop.asyncio_loop)
        try:
            wait([call, self._stopped], PROBE_TIMEOUT_S, FIRST_COMPLETED)
            if self._stopped.done():
                deadline = min(deadline, time.monotonic() + STOP_WAIT_S)
            return _probe(call.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            raise TimeoutError(f"no answer in {time.monotonic() - started:.1f} s") from None
        finally:
            call.cancel()  # a call still waiting stops waiting on the IO loop too

    def stop(self) -> None:
        """Stop waiting on the scheduler: :meth:`connect` returns None at once, and a
        probe gives up :data:`STOP_WAIT_S` after this (LinkLost) if no answer came."""
        with contextlib.suppress(InvalidStateError):
            self._stopped.set_result(None)

    def drop(self) -> None:
        """Forget the client (closed in the background); connect() makes a new one."""
        client, self.client = self.client, None
        if client is not None:
            self._calls.submit(_close_client, client)

    def close(self, futures: list[Any], keys_by_worker: dict[str | None, list[str]]) -> None:
        """Kill these jobs' children, cancel their tasks, close the client and the pool."""
        self._closed.set()
        self._connects.put(None)
        client, self.client = self.client, None
        if client is not None:
            waits = [self.kill(worker, keys, "shutdown", client=client)
                     for worker, keys in keys_by_worker.items()]
            self.kill_direct(keys_by_worker, "shutdown")
            for call in waits:
                with contextlib.suppress(Exception):
                    call.result(timeout=RPC_TIMEOUT_S)
            if futures:
                with contextlib.suppress(Exception):
                    client.cancel(futures, force=True)
            _close_client(client)
        deadline = time.monotonic() + RPC_TIMEOUT_S + 1
        with self._direct_lock:
            directs = list(self._direct)
        for direct in directs:  # each is bounded; the loop must run until they end
            with contextlib.suppress(Exception):
                direct.result(timeout=max(0.0, deadline - time.monotonic()))
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._fetches.shutdown(wait=False, cancel_futures=True)
        self._loop.stop()

    # -- jobs -------------------------------------------------------------------------

    def submit(self, task: Task, key: str, on_done: Callable[[Any], None]) -> Any:
        """One Dask task for one job (no Dask-side retries); ``on_done(future)`` when it
        ends, which may be before this returns."""
        client = self.client
        if client is None:
            raise LinkLost("no connection to the Dask scheduler")
        future = client.submit(run_task, task, self.topic, key, self.config, key=key,
                               pure=False, retries=0)
        future.add_done_callback(on_done)
        return future

    def fetch(self, future: Any, on_fetched: Callable[[Outcome | Exception], None]) -> None:
        """Fetch a finished task's outcome from its worker on a fetch thread, then call
        ``on_fetched`` with it, or with the error that kept it away."""
        self._fetches.submit(self._fetch, future, on_fetched)

    @staticmethod
    def _fetch(future: Any, on_fetched: Callable[[Outcome | Exception], None]) -> None:
        try:
            outcome: Outcome = future.result(timeout=FETCH_TIMEOUT_S)
        except Exception as exc:
            on_fetched(exc)
            return
        outcome.pid = 0  # the record names this processor's host, so not a worker's pid
        on_fetched(outcome)

    @staticmethod
    def failure(future: Any) -> str:
        """Why an erred task failed, in words for a ``worker_crashed`` message."""
        try:
            exc = future.exception(timeout=RPC_TIMEOUT_S)
        except Exception as err:
            return f"the Dask task failed ({type(err).__name__}: {err})"
        if type(exc).__name__ == "KilledWorker":
            return f"the Dask worker running the job died ({exc})"
        return f"the Dask task failed: {type(exc).__name__}: {exc}"

    @staticmethod
    def killed_worker(future: Any) -> bool:
        """The erred task failed because its worker died (``KilledWorker``)."""
        try:
            exc = future.exception(timeout=RPC_TIMEOUT_S)
        except Exception:
            return False
        return type(exc).__name__ == "KilledWorker"

    def kill(self, worker: str | None, keys: list[str], reason: str, *,
             client: Any = None) -> Future[Any]:
        """Kill the children running ``keys`` on ``worker`` (all workers when None)."""
        client = client or self.client
        workers = [worker] if worker is not None else None
        # Bounded (client.run hands callback_timeout to its sync call): a worker that
        # hangs must not hold the call threads, so kills and cancels behind it still run.
        return self._calls.submit(_quiet, functools.partial(
            client.run, kill_on_worker, keys, reason, workers=workers,
            callback_timeout=RPC_TIMEOUT_S) if client else None)

    def kill_direct(self, keys_by_worker: dict[str | None, list[str]], reason: str) -> None:
        """Kill the children running these keys, sent straight to their workers, not
        through the scheduler, in the background.

        For a scheduler that does not answer (frozen, or cut off from this host only):
        the kills that go through it would leave those runs going until it answers
        again or their timeouts, beside the retries of their jobs.  Keys under ``None``
        (not started on any worker yet) have no worker to tell.
        """
        started = {worker: keys for worker, keys in keys_by_worker.items() if worker is not None}
        if not started:
            return
        sent = asyncio.run_coroutine_threadsafe(_kill_direct(started, reason),
                                                self._loop.loop.asyncio_loop)
        with self._direct_lock:
            self._direct = [f for f in self._direct if not f.done()] + [sent]

    def cancel(self, future: Any) -> None:
        """Cancel a task (a running one notices and kills its child)."""
        client = self.client
        if client is not None and future is not None:
            self._calls.submit(_quiet, functools.partial(client.cancel, [future], force=True))


def _forget_gone_topics(prefix: str, own: str) -> Callable[[Any], int]:
    """A function for ``Client.run_on_scheduler`` that deletes the topics named
    ``prefix...`` (but ``own``) none of whose subscribers is still connected; how many.

    The scheduler keeps the last 1,000 events of every topic for good
    (``distributed.admin.low-level-log-length``) and has no public call to drop one,
    so a long-lived scheduler grew by up to 1 MB at every processor start.  Made here
    as a closure so that it travels by value: the scheduler need not import spoolq.
    Only the broker's private table can be cleared; on a distributed without one
    this does nothing.
    """

    def forget(dask_scheduler: Any) -> int:
        topics = getattr(getattr(dask_scheduler, "_broker", None), "_topics", None)
        if not isinstance(topics, dict):
            return 0
        live = set(dask_scheduler.clients)
        gone = [name for name, topic in topics.items()
                if isinstance(name, str) and name.startswith(prefix) and name != own
                and not set(getattr(topic, "subscribers", ())) & live]
        for name in gone:
            del topics[name]
        return len(gone)

    return forget


async def _kill_direct(keys_by_worker: dict[str, list[str]], reason: str) -> None:
    """:func:`kill_on_worker` on each worker through its own ``run`` handler (what
    ``Client.run`` has the scheduler call), not through the scheduler; at most
    :data:`RPC_TIMEOUT_S` in all.  A worker this host cannot reach is left to the
    scheduler's route."""
    from distributed.core import rpc as untyped_rpc  # noqa: PLC0415 - optional extra
    from distributed.protocol.pickle import dumps as untyped_dumps  # noqa: PLC0415

    rpc, dumps = cast(Any, untyped_rpc), cast(Any, untyped_dumps)

    async def one(address: str, keys: list[str]) -> None:
        async with rpc(address, timeout=RPC_TIMEOUT_S) as worker:
            await worker.run(function=dumps(kill_on_worker), args=dumps((keys, reason)),
                             kwargs=dumps({}), wait=True)

    await asyncio.wait_for(asyncio.gather(*(one(address, keys) for address, keys
                                            in keys_by_worker.items()),
                                          return_exceptions=True), RPC_TIMEOUT_S)


def _quiet(call: Callable[[], Any] | None) -> None:
    if call is not None:
        with contextlib.suppress(Exception):
            call()


def _close_client(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=RPC_TIMEOUT_S)
