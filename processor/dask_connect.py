"""Makes the processor's clients to a Dask scheduler, for :mod:`processor.dask_link`.

Owns the IO loop every client runs on and the thread that makes them: one
``distributed.Client`` per attempt (:class:`ClientMaker`), so that a
scheduler that accepted the connection and then went silent holds that
thread only, never the executor's monitor or a stop.  Also reads the
``SPOOL_EXECUTOR`` address (:func:`scheduler_address`), says how to install
Dask when it is missing, and keeps distributed's ERROR line for a cancelled
reconnect out of the log.  :class:`LinkLost` is what every failure to reach
the scheduler becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import queue
import re
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

from spool.errors import ConfigError

DEFAULT_PORT = 8786
CONNECT_TIMEOUT_S = 2.0
HTTP_PROBE_S = 1.0
"""How long :func:`http_server_at` waits for an HTTP answer (a server gives it in ms):
it runs after a failed attempt, so a frozen scheduler's retries wait that much more."""
CONNECT_WAIT_S = CONNECT_TIMEOUT_S + 2.0
"""How long connect() waits for a new client (distributed's own timeout may not apply)."""
RPC_TIMEOUT_S = 5.0


class LinkLost(Exception):
    """The scheduler is gone, was replaced, or does not answer."""


def scheduler_address(executor: str, named: str = "SPOOL_EXECUTOR") -> str:
    """``dask://host:port`` (or ``tcp://host:port``) as the address Dask dials; the port
    defaults to 8786, an IPv6 address is in brackets (``dask://[::1]:8786``).

    Anything else is a :class:`ConfigError` now, at start-up: Dask refuses such an
    address only when it dials it ("invalid address"), and the processor, which takes
    that for a scheduler not up yet, ran on for good without one (a port pasted twice,
    ``dask://10.0.0.5:8786:8786``; an IPv6 address without its brackets).  ``named``
    is how the error names the setting.
    """
    scheme, sep, rest = executor.partition("://")
    hint = " (an IPv6 address in brackets: dask://[::1]:8786)" if _ipv6(rest) else ""
    bad = ConfigError(f"{named}={executor!r}: use dask://host:port{hint}")
    if not sep or scheme not in ("dask", "tcp"):
        raise bad
    host, port = _host_port(rest)
    if host is None or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise bad
    return f"tcp://{host}:{port}"


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _host_port(rest: str) -> tuple[str | None, str]:
    """The host (None when it is not a host name, an IPv4 address or a bracketed IPv6
    one) and the port (the default when none is given) of ``host:port``."""
    port = str(DEFAULT_PORT)
    if rest.startswith("["):
        inside, bracket, after = rest[1:].partition("]")
        if after:
            if not after.startswith(":"):
                return None, port
            port = after[1:]
        return (f"[{inside}]" if bracket and _ipv6(inside) else None), port
    host, colon, given = rest.partition(":")
    if colon:
        port = given
    return (host if _HOST_NAME.fullmatch(host) else None), port


def require_distributed(named: str = "SPOOL_EXECUTOR") -> Any:
    """The ``distributed`` module, or a ConfigError saying how to install it (``named``:
    the setting that asked for Dask, ``--executor`` when the option gave it)."""
    try:
        import distributed  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError(f"{named}=dask://... needs Dask distributed, which is not "
                          "installed: pip install 'spoolq[dask]'") from exc
    return distributed


class _NoReconnectNoise(logging.Filter):
    """Drops distributed's ERROR lines about the client's own reconnect.

    When the scheduler goes, the client starts reconnecting by itself; the
    link drops that client and makes a new one.  Closing it cancels the
    reconnect, which ``distributed.utils.log_errors`` logs at ERROR with an
    empty message; and when the close comes later than the client's own
    reconnect timeout (seen once, on a loaded host), the client logs "Failed
    to reconnect to scheduler" at ERROR.
    The loss has its own ERROR line (``Dask scheduler lost``), and the link,
    not that client, reconnects: neither line says anything more.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and issubclass(exc, asyncio.CancelledError):
            return False
        return not str(record.msg).startswith("Failed to reconnect to scheduler")


_CLIENT_LOG_FILTER = _NoReconnectNoise()


class ClientMaker:
    """Makes clients to the scheduler at ``address``, one an attempt, all on one IO loop."""

    def __init__(self, address: str) -> None:
        self._dd = require_distributed()
        logging.getLogger("distributed.client").addFilter(_CLIENT_LOG_FILTER)  # added once
        from distributed.utils import LoopRunner  # noqa: PLC0415 - optional extra

        # One IO loop thread for every client this link makes.  A Client that makes its
        # own loop and then fails to connect never stops it: with the scheduler down,
        # each attempt left a thread and three descriptors behind (about one every 4 s).
        self._loop: Any = cast(Any, LoopRunner(asynchronous=False))  # untyped
        self._loop.start()
        self.address = address
        self._attempt: Future[Any] | None = None  # a connection being made
        self._connects: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        # What the HTTP probe said, once asked: its HEAD request lands on a frozen
        # scheduler's port too, where the scheduler, resumed, logs an ERROR traceback
        # ("Unable to allocate 4.51 EiB ...") for each one.  A port that answered as a
        # scheduler is one (None: not asked yet, or the scheduler answered).
        self._http: tuple[str | None] | None = None
        # A daemon thread: one stuck on a silent scheduler must not hold the exit.
        threading.Thread(target=self._make_clients, name="dask-connect", daemon=True).start()

    @property
    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """The loop every client runs on, for calls made without one."""
        return cast(asyncio.AbstractEventLoop, self._loop.loop.asyncio_loop)

    def attempt(self) -> Future[Any]:
        """The connection being made (a new one when none is): its client, or its error."""
        attempt = self._attempt
        if attempt is None:
            attempt = self._attempt = Future()
            self._connects.put(attempt)
        return attempt

    def taken(self) -> None:
        """The attempt ended and its end was seen: the next :meth:`attempt` is a new one."""
        self._attempt = None

    def _make_clients(self) -> None:
        """The connecting thread: one ``distributed.Client`` per attempt.

        ``Client(address, timeout=...)`` waits for as long as a scheduler that
        accepted the connection stays silent (one frozen with SIGSTOP): this thread
        may wait that long, while ``SchedulerLink.connect`` gives up after
        :data:`CONNECT_WAIT_S`, so the monitor and a stop never hang on it.
        """
        while (attempt := self._connects.get()) is not None:
            try:
                self._require_scheduler()
                client = self._dd.Client(self.address, timeout=CONNECT_TIMEOUT_S,
                                         set_as_default=False, loop=self._loop.loop)
            except BaseException as exc:
                attempt.set_exception(exc)
                continue
            if self._closed.is_set():  # it came after close(): nobody takes it
                return
            attempt.set_result(client)

    def _require_scheduler(self) -> None:
        """What answers at the address is a Dask scheduler, else :class:`LinkLost` saying
        what it is.

        ``Client()`` pointed at a worker's or a nanny's port (a wrong port in
        ``SPOOL_EXECUTOR``) failed only after it had connected ("Worker.identity() got an
        unexpected keyword argument"), and left that half-made client open: two
        descriptors an attempt, for good, and at the exit 4 s each in its ``__del__``
        (a stop took 28 s after 40 s up).  Asked here on a connection of its own, closed
        after the answer, at most a second past :data:`CONNECT_TIMEOUT_S` (distributed's
        own "Timed out trying to connect" comes first, naming the address).
        """
        call = asyncio.run_coroutine_threadsafe(_identity(self.address), self.asyncio_loop)
        try:
            info = call.result(timeout=CONNECT_TIMEOUT_S + 2.0)
        except FutureTimeout:
            call.cancel()
            raise TimeoutError(self._http_server()
                               or f"no answer in {CONNECT_TIMEOUT_S + 1.0:g} s") from None
        except OSError as exc:  # Dask's "Timed out trying to connect", whatever the cause
            raise LinkLost(why_unreachable(self.address) or str(exc)) from exc
        except Exception as exc:  # an answer Dask could not read as one of its frames
            raise LinkLost(self._http_server() or str(exc)) from exc
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "Scheduler":
            self._http = (None,)  # a scheduler's port: never asked with HTTP again
        if kind != "Scheduler":
            its = info.get("scheduler") if isinstance(info, dict) else None
            hint = f"; its scheduler is at {its}" if its else ""
            raise LinkLost(f"a Dask {kind or 'server'} listens at {self.address}, "
                           f"not a scheduler{hint}")

    def _http_server(self) -> str | None:
        """:func:`http_server_at` for this address, asked once: the address is fixed,
        and each retry against a frozen scheduler would send it one more request."""
        if self._http is None:
            self._http = (http_server_at(self.address),)
        return self._http[0]

    def stop(self) -> None:
        """Make no more clients (one being made now is left to the process's exit)."""
        self._closed.set()
        self._connects.put(None)

    def stop_loop(self) -> None:
        """Stop the IO loop, once every client on it is closed or given up."""
        self._loop.stop()


def _dialled(address: str) -> tuple[str, str]:
    """The host (an IPv6 one without its brackets) and the port to open a socket to, of
    an address :func:`scheduler_address` gave (``tcp://host:port``)."""
    host, port = _host_port(address.removeprefix("tcp://"))
    return (host or "").removeprefix("[").removesuffix("]"), port


def why_unreachable(address: str) -> str | None:
    """Why no connection can be made to ``address`` (``tcp://host:port``), in the words
    Dask's own error hides: it says "Timed out trying to connect ... after 2 s" for a
    host name that does not resolve (a typo in ``SPOOL_EXECUTOR``) and for a port where
    nothing listens alike, as it retries both until its timeout.  None when a
    connection can be made now (the scheduler came up meanwhile, or it is slow)."""
    host, port = _dialled(address)
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve the host name {host!r}: {getattr(exc, 'strerror', exc)}"
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            probe.settimeout(CONNECT_TIMEOUT_S)
            try:
                probe.connect(where)
            except ConnectionRefusedError:
                continue
            except OSError:
                pass  # no refusal (a timeout, unreachable): nothing to say beyond Dask's
            return None
    return f"nothing listens at {address} (connection refused)"


def http_server_at(address: str) -> str | None:
    """Words for an HTTP server at ``address`` (``tcp://host:port``), else None.

    A dashboard's port (8787) or statusd's in ``SPOOL_EXECUTOR`` is an easy slip, and
    Dask's own error hid it: a server that waits for a whole request head stays silent
    ("no answer in 3 s"), and one that answers at once has its answer read as a
    frame's length ("Unable to allocate 3.01 EiB for an array ...", statusd's).
    Asked on a connection of its own, with a ``HEAD`` request."""
    host, port = _dialled(address)
    head = b""
    try:
        with socket.create_connection((host, int(port)), timeout=HTTP_PROBE_S) as probe:
            probe.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            while len(head) < 5 and (chunk := probe.recv(5 - len(head))):
                head += chunk
    except (OSError, ValueError):
        return None
    if head != b"HTTP/":
        return None
    return f"an HTTP server listens at {address}, not a Dask scheduler (a dashboard's port?)"


async def _identity(address: str) -> Any:
    """The ``identity`` answer of the Dask server at ``address`` (its ``type`` says what
    it is), on a connection closed after it; at most a second past
    :data:`CONNECT_TIMEOUT_S`, the connection's own timeout."""
    from distributed.core import rpc as untyped_rpc  # noqa: PLC0415 - optional extra

    rpc = cast(Any, untyped_rpc)

    async def ask() -> Any:
        async with rpc(address, timeout=CONNECT_TIMEOUT_S) as server:
            return await server.identity()

    return await asyncio.wait_for(ask(), CONNECT_TIMEOUT_S + 1.0)


def close_client(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=RPC_TIMEOUT_S)
