"""HTTP errors: one JSON shape, ``{"error": {"type", "message"}}``, never a traceback.

Owns the error middleware, which is the one boundary where anything raised
below a handler becomes a response:

* :class:`ApiError` (raised by handlers) keeps its status and type;
* aiohttp's own ``HTTPException`` s (routing 404/405, 413 from the body
  limit) become the same JSON shape, with their headers (``Allow``);
* a 404 under an id-bearing prefix is a malformed id (``..%2f..``, an empty
  or multi-segment id that did not route): 400 ``invalid_id``;
* a body aiohttp cannot decode as the handler reads it (``Content-Encoding:
  gzip`` on bytes that are not) is the client's 400, not a 500, and an
  :class:`ApiError` with ``hang_up`` (a body that never completes: 408) is
  answered at once and the connection closed, since the rest of that body will
  never be read;
* a client that hangs up while its body is read is answered 499 (nginx's
  "client closed request"), which only the access log sees: never a 5xx;
* the spool in trouble that passes (:class:`~spool.errors.SpoolIOError`: statusd
  out of descriptors, say) is one WARNING line and 503 ``unavailable``: the
  answer a monitor needs, where a reply made of what could still be read (no
  processor's owner lock testable: "no processor running") would be wrong;
* anything else is logged with its traceback and answered 500 ``internal``.

Client faults are the client's doing and any client can repeat them, so each is
one line without a traceback (WARNING for a bad body, INFO for a hang-up), at
most :data:`CLIENT_FAULT_LINES` a minute through :class:`ClientFaults`; the next
line logged counts what was held back.  aiohttp meets some of them outside any
handler (it reads, after the answer, the body a handler left unread, and logs
what that raises at ERROR with a traceback): :class:`ServerLog`, the logger
``__main__`` gives aiohttp's server, sends those to :class:`ClientFaults` too and
everything else on to ``aiohttp.server`` as it was.

What aiohttp answers outside any handler (parse errors, the ``Expect`` check)
is put in the same shape by :mod:`statusd.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from spool.entries import denied_file
from spool.errors import SpoolIOError
from spool.ids import is_valid_id
from spool.layout import Layout
from spool.reader import no_job_file

log = logging.getLogger("spoolq.statusd")

ID_PREFIXES = ("/api/v1/tasks/", "/api/v1/backtest/tasks/", "/api/v1/ws/tasks/",
               "/api/v1/ws/backtest/")
_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "request_timeout", 409: "conflict",
          413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
          417: "expectation_failed", 426: "upgrade_required",
          431: "request_header_fields_too_large", 499: "client_closed_request",
          500: "internal", 503: "unavailable", 504: "timeout"}
_KEEP_HEADERS = ("Allow", "WWW-Authenticate")
CLIENT_FAULT_LINES = 10
"""Log lines a minute for client faults; more are counted, not logged."""
UNKNOWN_CLIENT = "unknown client"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error a handler answers with; ``kind`` is the body's ``error.type``."""

    def __init__(self, status: int, kind: str, message: str,
                 headers: Mapping[str, str] | None = None, *, hang_up: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})
        # A client fault that leaves the body unread: log it, answer, close the connection.
        self.hang_up = hang_up


def not_found(layout: Layout, job_id: str, message: str) -> ApiError:
    """404 ``not_found`` (``message``) for an id a look-up found nothing of, unless a file
    of it is there that statusd may not read (EACCES, read as no file): then 503
    ``unavailable`` naming it.  A cancel or retry answered 404 "no job" for a job that was
    there, and an operator took it for gone."""
    denied = denied_file(layout, job_id)
    if denied is None:
        said = no_job_file(layout, job_id)  # (a client's "no job" may say it already)
        return ApiError(404, "not_found", message if said in message else message + said)
    return ApiError(503, "unavailable", f"job {job_id} is there ({denied}), but statusd may "
                    "not read it: Permission denied (its owner or mode; see Permissions in "
                    "docs/operations.md)")


class ClientFaults:
    """One line per client fault, at most ``per_minute`` a minute (see the module docstring).

    It also remembers the address behind each connection's task, so that a fault
    aiohttp meets after the handler (in that task, through :class:`ServerLog`) is
    logged with the client's address too."""

    def __init__(self, per_minute: int = CLIENT_FAULT_LINES,
                 clock: Callable[[], float] = time.monotonic, *,
                 held_back: str = "more client faults") -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.held_back_text = held_back  # "(N <this> since the last such line ...)"
        self.window_start: float | None = None
        self.logged = 0
        self.held_back = 0
        self._requests: weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[str, str]] = \
            weakref.WeakKeyDictionary()

    def seen(self, request: web.Request) -> None:
        """Remember who is behind the connection ``request`` came on, and what it asked."""
        self._requests[request.task] = (_peer(request), f"{request.method} {request.path}")

    def current(self) -> tuple[str, str]:
        """The address behind the connection the running task serves, and its last request."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop running
            task = None
        found = self._requests.get(task) if task is not None else None
        return found or (UNKNOWN_CLIENT, "a request")

    def note(self, level: int, message: str, *args: object) -> None:
        now = self.clock()
        if self.window_start is None or now - self.window_start >= 60.0:
            self.window_start, self.logged = now, 0
        if self.logged >= self.per_minute:
            self.held_back += 1
            return
        self.logged += 1
        if self.held_back:
            message += f" (%d {self.held_back_text} since the last such line were not logged)"
            args = (*args, self.held_back)
        self.held_back = 0
        log.log(level, message, *args)


CLIENT_FAULTS = web.AppKey("client_faults", ClientFaults)
DROPPED_CLIENTS = web.AppKey("dropped_clients", ClientFaults)
"""The lines of clients cut off for not reading (a budget of their own): one a client, each
a client chooses the cause of, as often as it likes (QA h396: 400 WebSockets that read
nothing made 400 lines, and more such clients, more lines, until journald's rate limit
dropped everything else of statusd's)."""


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger (``logger=`` of the runner), but for client faults: what
    a client's body raised after the handler (a ``Content-Encoding`` it is not, a hang-up
    while aiohttp read it) becomes one throttled line in :class:`ClientFaults`, not an
    ERROR with a traceback.  Anything else goes on to the logger unchanged."""

    def __init__(self, logger: logging.Logger, faults: ClientFaults) -> None:
        super().__init__(logger, {})
        self.faults = faults

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            peer, asked = self.faults.current()
            self.faults.note(logging.WARNING, "bad request from %s: %s (%s)", peer,
                             _payload_reason(exc), asked)
        elif isinstance(exc, ConnectionResetError):
            self.faults.note(logging.INFO, "hang-up from %s during %s", *self.faults.current())
        else:
            super().log(level, msg, *args, **kwargs)


def error_type(status: int) -> str:
    """The ``error.type`` of an HTTP status aiohttp chose (``http_error`` when unnamed)."""
    return _TYPES.get(status, "http_error")


def json_error(status: int, kind: str, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"error": {"type": kind, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)


def task_id(request: web.Request) -> str:
    """The ``{id}`` of the route, validated before any path is built from it."""
    value = request.match_info.get("id", "")
    if not is_valid_id(value):
        raise ApiError(400, "invalid_id", f"invalid task id {_shown(value)}: use letters, "
                       "digits and ._- (at most 128, starting with a letter or digit)")
    return value


def query_value(request: web.Request, name: str) -> str | None:
    """The query parameter ``name`` (None when absent), given once at most: 400
    ``bad_request`` when repeated, since which value was meant cannot be told (the
    first one won, silently: ``state=done&state=failed`` listed the done tasks only)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, "bad_request", f"{name} given {len(values)} times: give it once")
    return values[0] if values else None


def flag_value(request: web.Request, name: str) -> bool:
    """A 0/1 query parameter given once at most: ``1`` is True; ``0``, empty or absent is
    False; anything else is a 400 (``partial``: the stats' figures while the processors'
    state is unread; ``progress``: the events stream's progress events, where
    ``progress=true`` was silently taken for 0)."""
    value = query_value(request, name)
    if value is None or value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ApiError(400, "bad_request", f"{name} must be 0 or 1")


def brief_view(value: str | None) -> bool:
    """``view=brief`` (the list, the events stream): rows of large records without what a
    list does not show (:func:`statusd.items._brief`); ``view=full`` (the default): the
    records."""
    if value is None or value in ("", "full"):
        return False
    if value == "brief":
        return True
    raise ApiError(400, "bad_request", "view must be full or brief")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def _payload_reason(exc: web.RequestPayloadError) -> str:
    cause = exc.__cause__
    reason = cause.message if isinstance(cause, HttpProcessingError) else ""
    return reason.strip().split("\n", 1)[0][:200] or "the body could not be read"


def _peer(request: web.Request) -> str:
    return request.remote or UNKNOWN_CLIENT


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _answer_and_hang_up(request: web.Request,
                              response: web.Response) -> web.StreamResponse:
    """Send ``response`` now, then close the connection.  The rest of the request's body is
    never read: left to aiohttp, it would go on reading it after the answer, raising the
    body's error again (logged with a traceback) or waiting on a stalled client."""
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()  # asyncio still sends what is buffered, then closes
    return response


async def answer_and_stop_sending(request: web.Request,
                                  response: web.Response) -> web.StreamResponse:
    """Send ``response`` now with ``Connection: close``, then end this side of the
    connection (its FIN), the rest of the request's body read and thrown away meanwhile
    as aiohttp does after any answer (its lingering: until the client closes, at most
    10 s).  For a refusal before ``100 Continue`` (:func:`statusd.writes._expect`): a
    client that waits sees the answer and the FIN, and closes; closed at once instead, a
    client that sent its body unasked (Python's http.client, urllib3; curl once its 1 s
    wait is up) had it refused by the kernel with a reset, and read ConnectionResetError,
    never the answer (QA h399)."""
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()  # once what is buffered is sent
    return response


def _internal(request: web.Request) -> web.Response:
    """A server bug: its traceback in the log (call it from the ``except``), 500 to the client."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_error(500, "internal", "internal error (see the statusd log)")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[CLIENT_FAULTS].seen(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except (ApiError, web.RequestPayloadError) as exc:
        return await _client_error(request, exc)
    except (ConnectionResetError, asyncio.IncompleteReadError):
        return _went_away(request) if _client_gone(request) else _internal(request)
    except SpoolIOError as exc:
        log.warning("spool trouble on %s %s: %s", request.method, request.path, exc)
        return json_error(503, "unavailable", f"spool trouble: {exc}")
    except Exception:
        return _internal(request)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx and 5xx (routing, the body limit) in the JSON shape."""
    if exc.status == 404 and request.raw_path.startswith(ID_PREFIXES):
        return json_error(400, "invalid_id", "invalid task id in the path")
    headers = {k: v for k, v in exc.headers.items() if k in _KEEP_HEADERS}
    return json_error(exc.status, error_type(exc.status), exc.reason, headers)


async def _client_error(request: web.Request,
                        exc: ApiError | web.RequestPayloadError) -> web.StreamResponse:
    if isinstance(exc, ApiError):
        response = json_error(exc.status, exc.kind, exc.message, exc.headers)
        if not exc.hang_up:
            return response
        reason = exc.message
    else:
        # A body aiohttp could not decode while the handler read it (a Content-Encoding
        # it is not): the client's 400.  The rest of that body cannot be read either.
        reason = _payload_reason(exc)
        response = json_error(400, "bad_request", reason)
    request.app[CLIENT_FAULTS].note(logging.WARNING, "bad request from %s: %s (%s %s)",
                                    _peer(request), reason, request.method, request.path)
    return await _answer_and_hang_up(request, response)


def _went_away(request: web.Request) -> web.Response:
    """The client hung up (mid-body, say): nobody to answer, nothing wrong here.  Only the
    access log sees the answer's status: 499, never a 5xx."""
    request.app[CLIENT_FAULTS].note(logging.INFO, "hang-up from %s during %s %s",
                                    _peer(request), request.method, request.path)
    return json_error(499, "client_closed_request",
                      "the client closed the connection before its request was read")
