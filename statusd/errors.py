"""HTTP errors: one JSON shape, ``{"error": {"type", "message"}}``, never a traceback.

Owns the error middleware, which is the one boundary where anything raised
below a handler becomes a response:

* :class:`ApiError` (raised by handlers) keeps its status and type;
* aiohttp's own ``HTTPException`` s (routing 404/405, 413 from the body
  limit) become the same JSON shape, with their headers (``Allow``);
* a 404 under an id-bearing prefix is a malformed id (``..%2f..``, an empty
  or multi-segment id that did not route): 400 ``invalid_id``;
* a body aiohttp cannot decode as the handler reads it (``Content-Encoding:
  gzip`` on bytes that are not) is the client's 400, not a 500;
* anything else is logged with its traceback and answered 500 ``internal``.

What aiohttp answers outside any handler (parse errors, the ``Expect`` check)
is put in the same shape by :mod:`statusd.protocol`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from spool.ids import is_valid_id

log = logging.getLogger("spoolq.statusd")

ID_PREFIXES = ("/api/v1/tasks/", "/api/v1/backtest/tasks/", "/api/v1/ws/tasks/",
               "/api/v1/ws/backtest/")
_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          414: "uri_too_long", 415: "unsupported_media_type", 417: "expectation_failed",
          426: "upgrade_required", 431: "request_header_fields_too_large", 500: "internal",
          503: "unavailable", 504: "timeout"}
_KEEP_HEADERS = ("Allow", "WWW-Authenticate")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error a handler answers with; ``kind`` is the body's ``error.type``."""

    def __init__(self, status: int, kind: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})


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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.kind, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404 and request.raw_path.startswith(ID_PREFIXES):
            return json_error(400, "invalid_id", "invalid task id in the path")
        headers = {k: v for k, v in exc.headers.items() if k in _KEEP_HEADERS}
        return json_error(exc.status, error_type(exc.status), exc.reason, headers)
    except web.RequestPayloadError as exc:
        # A body aiohttp could not decode while the handler read it (a Content-Encoding
        # it is not): the client's fault.  The rest of that body cannot be read either,
        # so the connection is not kept.
        cause = exc.__cause__
        reason = cause.message if isinstance(cause, HttpProcessingError) else ""
        response = json_error(400, "bad_request", reason.strip() or "the body could not "
                              "be read")
        response.force_close()
        return response
    except (ConnectionResetError, asyncio.IncompleteReadError):
        # The client hung up (mid-body, say): nothing to answer, nothing to alarm anyone.
        log.debug("client went away on %s %s", request.method, request.path)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error (see the statusd log)")
