"""aiohttp's own error answers, in the API's JSON error shape (DESIGN section 6).

The error middleware (:mod:`statusd.errors`) sees only what happens inside a
handler.  aiohttp answers some requests before or around it, in text/plain:

* a request it cannot parse (a bad request line or method, a header or request
  line over 8190 bytes, too many headers, a bad ``Content-Length``,
  ``Transfer-Encoding`` or chunk): :class:`AppRunner` serves connections whose
  :meth:`~aiohttp.web_protocol.RequestHandler.handle_error` answers JSON (the
  path is not known yet, so every such answer is JSON), and so are a handler
  timeout (504) and a crash below the middleware (500);
* an ``Expect`` other than ``100-continue`` (417), checked before any
  middleware runs, on a route or not: :func:`json_error_bodies`, an
  ``on_response_prepare`` hook, rewrites any error answer that is not JSON yet
  into the JSON shape, keeping status and headers; and an ``Expect`` that is
  not UTF-8, which aiohttp's own 417 crashes on quoting, is a 417 too (not a
  500 with a traceback in the log).

A request asking to upgrade to anything but WebSocket (``Upgrade: h2c``, as
``curl --http2`` sends) is answered over HTTP/1.1 as usual, but aiohttp's parser
drops whatever the client pipelined behind it, which would then wait for
answers that never come until the idle timeout; :func:`close_declined_upgrades`
closes such a connection after its answer, so the client sends the rest anew.

aiohttp logs each request it cannot parse at ERROR with a traceback (seven lines
that a client chooses the cause of, as often as it likes).  Such a request is the
client's error, not the server's: :class:`_JsonErrorHandler` logs it as one WARNING
line without the client's bytes, at most :data:`BAD_REQUEST_LINES` lines a minute;
what is held back then is counted in the next line that is logged.

Connections are capped (:data:`AppRunner`'s ``max_connections``; ``__main__`` sets it
from the open files limit, :func:`connection_cap`): a connection over the cap is answered
503 ``unavailable`` with ``Retry-After`` to its first request and closed, and closed
within :data:`OVER_CAP_WAIT_S` if it sends none.  Without the cap, clients that held
connections open (WebSockets answer their pings and stay) used up every descriptor:
statusd then accepted nobody, and could not open the spool's files either, so the
clients it had got no updates (QA h396: 590 WebSockets at a limit of 600).

The dashboard page and ``/static/`` files answer a conditional GET (``If-None-Match``,
``If-Modified-Since``) with 304 (:func:`statusd.routes._package_file`); nothing
serves 412 or 416: the API ignores ``If-Match`` and ``Range``, and the page's files,
sent whole from one read, do too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from statusd.errors import UNKNOWN_CLIENT, ClientFaults, Handler, error_type, json_error

log = logging.getLogger("spoolq.statusd")

MAX_MESSAGE_CHARS = 200
BAD_REQUEST_LINES = 10
"""Log lines a minute for requests that cannot be parsed; more are counted, not logged."""
_FILE_PATHS = ("/static/",)
FD_RESERVE = 64
"""Descriptors kept for statusd's own use whatever its clients hold: the change feed,
the worker threads' reads of the spool, its log."""
PROBES = frozenset({"/healthz", "/metrics"})
"""Answered over the cap too: a 503 there read as statusd down, to Prometheus (every
alert on its gauges went quiet, SpoolqStatusdDown fired) and to a liveness probe that
restarts it, while it served its clients (QA h399).  Its connection is closed after."""
OVER_CAP_WAIT_S = 1.0
"""How long a connection over the cap may take to send the request its 503 answers."""


def connection_cap(nofile: int) -> int:
    """The most connections statusd serves at once with ``nofile`` descriptors: two for
    each (its socket, and the file of a large record it may be streaming), with
    :data:`FD_RESERVE` kept back, or a quarter of a smaller limit (under 256: at 64 the
    reserve took them all, and one connection was served)."""
    return max(1, (nofile - min(FD_RESERVE, nofile // 4)) // 2)


class _BadRequestLog:
    """One WARNING line per unparsable request, at most ``per_minute`` a minute (the
    throttle of :class:`statusd.errors.ClientFaults`, with a budget of its own)."""

    def __init__(self, per_minute: int) -> None:
        self._lines = ClientFaults(per_minute, time.monotonic, held_back="more")

    def note(self, remote: str | None, exc: HttpProcessingError) -> None:
        self._lines.note(logging.WARNING, "bad request from %s: %s", remote or UNKNOWN_CLIENT,
                         _summary(400, exc, None))


_bad_requests = _BadRequestLog(BAD_REQUEST_LINES)


def _summary(status: int, exc: BaseException | None, message: str | None) -> str:
    """One short line for a connection-level error; never the client's bytes echoed back."""
    if status >= 500:
        return "internal error (see the statusd log)" if status == 500 else "request timed out"
    if isinstance(exc, LineTooLong):
        return "the request line or a header is too long"
    text = message or (exc.message if isinstance(exc, HttpProcessingError) else "") or ""
    # aiohttp's parser messages go on with the offending bytes after a colon.
    first = text.strip().split("\n", 1)[0].split(": b'", 1)[0].split(": bytearray(", 1)[0]
    first = first.rstrip(":").strip()
    return first[:MAX_MESSAGE_CHARS] or "bad request"


class _JsonErrorHandler(RequestHandler):
    """A connection whose own error answers (parse errors, 500, 504) are JSON, and whose
    unparsable requests are logged in one line (see the module docstring); one made
    while the server had its cap of connections open is ``over_cap``."""

    over_cap = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        # Counted before this one is added: a connection over the cap answers 503 to its
        # request (over_cap_middleware), or is closed if it sends none in time.
        self.over_cap = isinstance(server, _JsonErrorServer) and server.full()
        super().connection_made(transport)
        if self.over_cap:
            self._loop.call_later(OVER_CAP_WAIT_S, transport.close)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError) and args[:1] == ("Error handling request "
                                                                 "from %s",):
            _bad_requests.note(args[1] if len(args) > 1 else None, exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500 and _unquotable_expect(request, exc) and \
                not request.writer.output_size:
            # aiohttp's 417 crashed quoting an Expect that is not UTF-8: the client's
            # error, not a crash worth a traceback in the log.
            response = json_error(417, "expectation_failed", "unsupported Expect header")
            response.force_close()
            return response
        super().handle_error(request, status, exc, message)  # logs; raises if output began
        response = json_error(status, error_type(status), _summary(status, exc, message))
        response.force_close()
        return response


def _unquotable_expect(request: BaseRequest, exc: BaseException | None) -> bool:
    expect = request.headers.get(hdrs.EXPECT, "")
    return bool(expect) and isinstance(exc, UnicodeEncodeError) and \
        isinstance(exc.object, str) and expect in exc.object


class _JsonErrorServer(Server):
    max_connections: int | None = None

    def full(self) -> bool:
        """As many connections open as the cap allows."""
        return self.max_connections is not None and \
            len(self._connections) >= self.max_connections

    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parse errors in the JSON error shape;
    ``max_connections``: the cap on connections open at once (None: no cap)."""

    def __init__(self, app: web.Application, *, max_connections: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        kwargs: dict[str, Any] = dict(server._kwargs)
        made = _JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation,
                                loop=server._loop, **kwargs)
        made.max_connections = self.max_connections
        return made

    async def cleanup(self) -> None:
        """aiohttp's cleanup, once the listening sockets have stopped accepting.

        On Python 3.11 to 3.13 a connection accepted in the loop pass that closes its
        listening socket is never made (asyncio's ``Server._attach`` asserts the server open) and
        its socket stays open, the client waiting on it, until the garbage collector
        finds it.  Two passes with the sockets not read let every accepted connection be
        made first: its transport in the first, its handler in the second, so aiohttp's
        shutdown closes it with the others.
        """
        loop = asyncio.get_running_loop()
        for site in self.sites:
            server = site._server
            for sock in server.sockets if isinstance(server, asyncio.Server) else ():
                loop.remove_reader(sock.fileno())
        for _ in range(2):
            await asyncio.sleep(0)
        await super().cleanup()


_over_cap_lines = ClientFaults(1, time.monotonic, held_back="more connections over the cap")


@web.middleware
async def over_cap_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 ``unavailable`` (and a close) for a request on a connection made over the cap
    (:class:`AppRunner`'s ``max_connections``); one line a minute in the log.  A probe
    (:data:`PROBES`) is answered all the same, and its connection closed."""
    if request.path in PROBES and getattr(request.protocol, "over_cap", False):
        response = await handler(request)
        response.force_close()
        return response
    refusal = over_cap_refusal(request)
    return await handler(request) if refusal is None else refusal


def over_cap_refusal(request: web.Request) -> web.Response | None:
    """The 503 for a request on a connection made over the cap (None when it was not):
    :func:`over_cap_middleware`'s, and the write routes' ``Expect`` handler's, which runs
    before any middleware (:func:`statusd.writes._expect`)."""
    protocol = request.protocol
    if not getattr(protocol, "over_cap", False):
        return None
    cap = getattr(protocol._manager, "max_connections", None)
    _over_cap_lines.note(logging.WARNING, "refused a connection from %s: %s connections "
                         "open, the most statusd serves (see its open files limit)",
                         request.remote or UNKNOWN_CLIENT, cap)
    response = json_error(503, "unavailable", f"statusd has {cap} connections open, the "
                          "most it serves at once; try again", {"Retry-After": "1"})
    response.force_close()
    return response


async def json_error_bodies(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an error answer aiohttp made in text becomes the JSON shape."""
    if response.status < 400 or not isinstance(response, web.Response):
        return
    if response.content_type == "application/json" or request.path == "/" or \
            request.path.startswith(_FILE_PATHS):
        return
    text = response.text if isinstance(response.body, bytes) else None
    default = f"{response.status}: {response.reason}"
    message = text.strip() if text and text.strip() != default else response.reason
    body = {"error": {"type": error_type(response.status), "message":
                      message.split("\n", 1)[0][:MAX_MESSAGE_CHARS]}}
    data = orjson.dumps(body)
    response.body = data
    response.content_type = "application/json"
    response.charset = None
    response.headers[hdrs.CONTENT_LENGTH] = str(len(data))  # set for the text already


async def close_declined_upgrades(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: after answering a request that asked for an upgrade other than
    WebSocket, close the connection (see the module docstring)."""
    upgrade = request.headers.get(hdrs.UPGRADE)
    if not upgrade or response.status == 101 or upgrade.strip().lower() == "websocket":
        return
    if "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower():
        response.force_close()
        # The hook runs after aiohttp chose the Connection header: say it here.
        response.headers[hdrs.CONNECTION] = "close"
