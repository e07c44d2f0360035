"""The processor's link to a Dask scheduler, for :mod:`processor.dask_executor`.

Owns the one ``distributed.Client`` at a time (made by
:class:`~processor.dask_connect.ClientMaker`) and every call that goes to
the cluster.  A call that waits on the network either has a timeout (the
health probe, fetching a result) or runs on a small thread pool of its own
(kills, cancels, warm-up, closing a client), so the executor's monitor thread
never hangs on a network that went quiet.  Foreign failures are translated
here: a scheduler that is gone, replaced or silent is
:class:`~processor.dask_connect.LinkLost`.  What is done on a scheduler just
connected to is :mod:`processor.dask_prepare`'s; kills that go around the
scheduler are :mod:`processor.dask_direct`'s.

Reads nothing from the environment; the executor passes the address (from
``SPOOL_EXECUTOR``) and the children's settings down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from processor.dask_connect import (
    CONNECT_WAIT_S,
    RPC_TIMEOUT_S,
    ClientMaker,
    LinkLost,
    close_client,
)
from processor.dask_direct import DirectKills
from processor.dask_prepare import prepare
from processor.dask_task import kill_on_worker, prestart, retire, run_task
from processor.executor import Task, WorkerConfig
from processor.runner import Outcome
from spool.version import version

log = logging.getLogger("spoolq.dask")

_T = TypeVar("_T")

PROBE_TIMEOUT_S = 10.0
STOP_WAIT_S = 0.5
"""Once :meth:`SchedulerLink.stop` came, how much longer a probe waits for an answer."""
FETCH_TIMEOUT_S = 600.0
"""How long a finished task's result may take to arrive (1.2 GB took more than 5 s)."""
FETCH_THREADS = 2
WARN_EVERY_S = 60.0
CALL_THREADS = 4


@dataclass(frozen=True, slots=True)
class Probe:
    """What the scheduler says about the cluster."""

    scheduler_id: str
    threads: int
    workers: frozenset[str]


def _exit_noise(record: logging.LogRecord) -> bool:
    """False (dropped; logged at DEBUG instead) for a callback distributed could not run
    because the process is exiting, or this link's pools were shut down at its close
    (a finished task's fetch, handed to them: "cannot schedule new futures after
    shutdown", twice in two stops with the scheduler frozen, 80 ms after "stopped"):
    what it was for was given up at the stop.  Installed only once the link closes."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, RuntimeError) and "cannot schedule new futures after" in str(exc):
        log.debug("after the stop, a Dask callback could not run: %s", exc)
        return False
    return True


def _probe(info: dict[str, Any]) -> Probe:
    """The scheduler's identity as room: the threads of its running workers.  A paused
    worker (past its memory's pause threshold) or one closing starts no task: counted,
    its threads took jobs that waited inside Dask, untimed and shown running (QA).  Each
    worker's address is kept all the same: a job running on a paused one is not gone."""
    workers = info.get("workers") or {}
    threads = sum(int(worker.get("nthreads", 0)) for worker in workers.values()
                  if worker.get("status", "running") == "running")
    return Probe(str(info.get("id")), threads, frozenset(workers))


class SchedulerLink:
    """One client at a time to the scheduler at ``address``."""

    def __init__(self, address: str, topic: str, config: WorkerConfig,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self._maker = ClientMaker(address)
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
        self._direct = DirectKills(self._maker.asyncio_loop)
        self._stopped: Future[None] = Future()  # done once stop() came
        # Cancels still on their way to the scheduler: a kill waits for them (see kill()).
        self._cancels: list[Future[None]] = []
        self._cancels_lock = threading.Lock()

    # -- connection -------------------------------------------------------------------

    def connect(self) -> Probe | None:
        """A new client, subscribed to the task events; None when no scheduler answers
        (within about :data:`CONNECT_WAIT_S`)."""
        attempt = self._maker.attempt()
        wait([attempt, self._stopped], CONNECT_WAIT_S, FIRST_COMPLETED)
        if not attempt.done():  # kept: the next call waits on the same attempt
            if not self._stopped.done():
                self._no_scheduler(f"no answer in {CONNECT_WAIT_S:g} s")
            return None
        self._maker.taken()
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
            self._calls.submit(close_client, client)
            return None
        self.client, self.scheduler_id = client, probe.scheduler_id
        self._next_warning = 0.0
        log.info("connected to the Dask scheduler", extra={"fields": {
            "address": self.address, "threads": probe.threads, "topic": self.topic}})
        self._calls.submit(prepare, client, self.topic)
        return probe

    def _no_scheduler(self, error: str) -> None:
        if time.monotonic() >= self._next_warning:  # once a minute while it is down
            self._next_warning = time.monotonic() + WARN_EVERY_S
            log.warning("no Dask scheduler; COMPUTE jobs wait in pending/, retrying",
                        extra={"fields": {"address": self.address, "error": error}})

    def warm(self, workers: list[str]) -> None:
        """Start idle children on these workers, in the background."""
        client = self.client
        if client is not None and workers:
            self._calls.submit(_warm, functools.partial(
                client.run, prestart, self.config, self.topic, workers=workers,
                on_error="return"))

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
                                                self._maker.asyncio_loop)
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
            self._calls.submit(close_client, client)

    def close(self, futures: list[Any], keys_by_worker: dict[str | None, list[str]]
              ) -> set[str]:
        """Kill these jobs' children and this start's idle ones, cancel the tasks, close the
        client and the pool; the keys whose kill a worker confirmed (under ``None``: every
        worker did)."""
        self._maker.stop()
        # A client given up on a frozen scheduler is still closing in the background
        # when the process exits; distributed's callbacks for its futures then fail on
        # an executor the exit shut down, which tornado logged as an ERROR with a traceback.
        logging.getLogger("tornado.application").addFilter(_exit_noise)
        client, self.client = self.client, None
        confirmed: set[str] = set()
        direct = None
        if client is not None:
            kills = [(keys, self.kill(worker, keys, "shutdown", client=client))
                     for worker, keys in keys_by_worker.items()]
            # This start is over: the job processes it left idle go (a next start
            # gets its own, with the SPOOL_TOOLS modules as they are then).
            waits: list[Future[Any]] = [call for _, call in kills]
            waits.append(self._calls.submit(_quiet, functools.partial(
                client.run, retire, over=self.topic, callback_timeout=RPC_TIMEOUT_S)))
            direct = self._direct.send(keys_by_worker, "shutdown")
            for call in waits:
                with contextlib.suppress(Exception):
                    call.result(timeout=RPC_TIMEOUT_S)
            confirmed = {key for keys, call in kills if call.done() and call.result()
                         for key in keys}
            if futures:
                with contextlib.suppress(Exception):
                    client.cancel(futures, force=True)
            close_client(client)
        self._direct.wait(RPC_TIMEOUT_S + 1)
        if direct is not None and direct.done() and direct.exception() is None:
            confirmed.update(key for worker in direct.result()
                             for key in keys_by_worker.get(worker, []))
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._fetches.shutdown(wait=False, cancel_futures=True)
        self._maker.stop_loop()
        return confirmed

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
            # Its own text is 400 characters of advice, cut mid-word in the log line.
            worker = getattr(getattr(exc, "last_worker", None), "address", None)
            return (f"the Dask worker {worker} running the job died (KilledWorker)"
                    if isinstance(worker, str) else
                    f"the Dask worker running the job died ({exc})")
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
             client: Any = None) -> Future[bool]:
        """Kill the children running ``keys`` on ``worker`` (all workers when None), once
        the scheduler took the cancels asked before it (see :func:`_cancel`), or
        :data:`RPC_TIMEOUT_S` passed; whether the worker (every one) ran the kill, once
        known.

        In that order: a kill frees a worker thread, which takes the next task queued
        there, and a queued job's cancel overtaken by a later kill let that job start,
        its tool running until its start was announced and it was killed (QA h387: 1 in
        2,990 runs; every time with the cancel held back 0.3 s)."""
        client = client or self.client
        workers = [worker] if worker is not None else None
        with self._cancels_lock:
            before = list(self._cancels)
        # Bounded (client.run hands callback_timeout to its sync call): a worker that
        # hangs must not hold the call threads, so kills and cancels behind it still run.
        # The cancels ahead were handed to the threads first, so they are under way.
        return self._calls.submit(_after, before, functools.partial(_ran, functools.partial(
            _kill_on, client, keys, reason, workers) if client else None))

    def kill_direct(self, keys_by_worker: dict[str | None, list[str]], reason: str) -> None:
        """Kill the children running these keys, sent straight to their workers, not
        through the scheduler, in the background (:class:`~processor.dask_direct.DirectKills`):
        for a scheduler that does not answer."""
        self._direct.send(keys_by_worker, reason)

    def cancel(self, future: Any, unstarted: str | None = None) -> None:
        """Cancel a task (a running one notices and kills its child); ``unstarted``: the
        kill's reason of a task not started, told to every worker too (see
        :func:`_cancel`)."""
        client = self.client
        if client is not None and future is not None:
            call = self._calls.submit(_quiet, functools.partial(_cancel, client, future,
                                                                unstarted))
            with self._cancels_lock:
                self._cancels = [c for c in self._cancels if not c.done()]
                self._cancels.append(call)


_UNTAKEN = frozenset({"waiting", "queued", "no-worker", "processing"})
"""The scheduler's states of a task whose cancel it has not taken yet."""
CANCEL_POLL_S = 0.01


def _cancel(client: Any, future: Any, unstarted: str | None = None) -> None:
    """Cancel ``future``'s task, then wait (at most :data:`RPC_TIMEOUT_S`) until the
    scheduler has taken the cancel, for the kills that wait on it (see
    :meth:`SchedulerLink.kill`).  ``Client.cancel`` only hands the cancel to the
    client's batched stream (sent every 10 ms, behind whatever it holds), and a kill is
    a call on a connection of its own: sent next, it overtook the cancel, and the
    queued job started on the thread the kill freed (QA h390: the stream held 1 s, the
    job started each time).  Asked until its task is none the scheduler would run.

    ``unstarted`` (a kill's reason): the task has not started, and every worker is told
    first (:func:`~processor.dask_task.kill_on_worker`), so none starts it later.  The
    scheduler hands its cancel on to the worker holding the task on a stream of its
    own, and the kill sent next could still free the job's thread there first: the
    job's start was announced (QA h393, 1 of 7 rounds under load)."""
    key = future.key
    if unstarted is not None:
        with contextlib.suppress(Exception):  # (a worker gone: it holds nothing)
            _kill_on(client, [key], unstarted)
    client.cancel([future], force=True)
    deadline = time.monotonic() + RPC_TIMEOUT_S
    while client.status == "running":
        left = deadline - time.monotonic()
        if left <= 0:
            return
        states = client.sync(client.scheduler.get_task_status, keys=[key],
                             callback_timeout=left)
        if (states or {}).get(key) not in _UNTAKEN:
            return
        time.sleep(CANCEL_POLL_S)


def _kill_on(client: Any, keys: list[str], reason: str, workers: list[str] | None = None
             ) -> Any:
    """Run :func:`~processor.dask_task.kill_on_worker` on ``workers`` (every one when
    None), bounded (``client.run`` hands ``callback_timeout`` to its sync call)."""
    return client.run(kill_on_worker, keys, reason, workers=workers,
                      callback_timeout=RPC_TIMEOUT_S)


def _after(before: list[Future[None]], call: Callable[[], _T]) -> _T:
    """``call()`` once the calls ``before`` are over, or :data:`RPC_TIMEOUT_S` passed
    (a scheduler that does not answer them holds later calls no longer than that)."""
    wait(before, RPC_TIMEOUT_S)
    return call()


def _ran(call: Callable[[], Any] | None) -> bool:
    """Whether ``call`` returned (it raised: said nothing)."""
    try:
        return call is not None and (call() or True)
    except Exception:
        return False


_CANNOT_LOAD = ("No module named", "cannot import name", "Can't get attribute")
"""How a worker's unpickling of the warm-up fails when its spoolq cannot load this
processor's code: no spoolq at all, or a version whose modules lack a name the call
refers to (``ImportError``, or pickle's ``AttributeError``; Dask hands both over as a
plain ``Exception`` holding that text).  A worker that left meanwhile fails otherwise
("Timed out trying to connect"), and is not named."""


def _warm(call: Callable[[], dict[str, Any]]) -> None:
    """Run a warm-up; name each worker that cannot load spoolq's code, or runs another
    version of it than this processor (scaling.md asks for the same one everywhere;
    a job ran there with no word, its tools' code perhaps not this one's: QA h383).

    A worker host without spoolq (or with a version that lacks a module the task
    names) fails the warm-up's unpickling, which the worker returns as an error, and
    then dies on each job it is given: the job is submitted again and at last fails
    ``worker_crashed`` "... running the job died (KilledWorker)", with nothing in the
    processor's log saying why (QA: the cause was only in the worker's own log)."""
    try:
        answers = call()
    except Exception:
        return  # a scheduler gone meanwhile: the next connect warms again
    ours = version()
    for worker, answer in (answers or {}).items():
        if isinstance(answer, BaseException):
            if any(said in str(answer) for said in _CANNOT_LOAD):
                log.warning("a Dask worker cannot load spoolq: each job it is given ends "
                            "it (KilledWorker); install spoolq there, at the processor's "
                            "version, and restart it", extra={"fields": {
                                "worker": worker, "error": str(answer)}})
        elif answer != ours:  # (None: a spoolq older than this check)
            theirs = answer if isinstance(answer, str) else "older"
            log.warning("a Dask worker runs another spoolq version than this processor: "
                        "its jobs run that version's tools; install the processor's "
                        "version there and restart it", extra={"fields": {
                            "worker": worker, "worker_version": theirs, "version": ours}})


def _quiet(call: Callable[[], Any] | None) -> None:
    if call is not None:
        with contextlib.suppress(Exception):
            call()
