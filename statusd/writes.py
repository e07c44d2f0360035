"""Write endpoints: submit, cancel, retry, through the same client API as the CLI.

Guarantees:

* Writes are off unless ``STATUSD_TOKEN`` is set (403), and need
  ``Authorization: Bearer <token>`` compared in constant time (401 otherwise).
  Authorization is checked before the body is read.
* A write that asks ``Expect: 100-continue`` is refused before its body is sent when it
  would be refused for its headers anyway (:func:`expect_submit`, :func:`expect_act`).
* Bodies above ``STATUSD_MAX_BODY_BYTES`` answer 413 (aiohttp's
  ``client_max_size`` enforces it while reading; a declared Content-Length
  over it is refused before reading).
* A body must arrive within :data:`BODY_TIMEOUT` seconds of the handler
  starting to read it (``IDLE_S``, 15 s, as served by ``__main__``): a client
  that stalls mid-body (fewer bytes than its Content-Length, an unfinished
  chunked body) is answered 408 and its connection closed, so it cannot hold
  the connection, and what it sent, forever.
* A job is refused (400 ``invalid_job``) for what intake would quarantine it
  for, so a 202 means the processor will claim it: nesting deeper than
  :data:`spool.models.MAX_NESTING` (deeper still, it could not even be
  written), an integer past 64 bits (orjson would write it as a float), or a
  file over ``SPOOL_MAX_JOB_BYTES`` (413).  A tool the live processors do not offer
  (their status files' catalogues, as ``spoolq submit`` checks) is refused with 400
  ``unknown_tool`` naming what they offer, unless the query says ``any_tool=1``; with
  no processor running nothing is checked (the job waits for one, which may know it).
  Taken before, such a job failed ``unknown_tool`` once claimed: a 202 for a job that
  could never run.  Likewise params the catalogue says the tool lacks or does not take
  (400 ``invalid_params``: :func:`spool.stats.unfit_params`).
* A spool that cannot be used (its folders gone: unmounted, moved away) answers
  503 ``unavailable``, never a 500 or a 404 "no job" for a job that may well be
  there: a write that fails or finds nothing looks at the folders before it
  answers (:func:`_unusable`), and at the id's files (one statusd may not read is
  a 503 naming it: :func:`statusd.errors.not_found`).
* The spool client blocks (fsync, a cancel waits up to 5 s for the
  processor), so it runs in a thread; the written id is re-read into the index
  before answering, so a GET right after a 202 finds the job.  A write that is
  made keeps its success answer whatever that look-up raises, and so does a cancel
  or a retry whose clean-up after its commit point failed (:mod:`spool.committed`):
  a client told it failed acted on the job again.  Spool trouble before the commit
  point is a 503 with the reason, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, Literal

import orjson
from aiohttp import HttpVersion11, hdrs, web
from pydantic import ValidationError

from spool.errors import ConflictError, InvalidJob, NotFoundError, SpoolIOError
from spool.exact import big_integer_reason, inexact_integer
from spool.intake import malformed_reason, validation_reason
from spool.models import MAX_NESTING, Job, Record, record_bytes, too_deep
from spool.stats import (
    catalogue_refusal,
    readable_processors,
    spent_attempts,
    waiting_for,
)
from spool.text import without_bom
from statusd.errors import (
    ApiError,
    answer_and_stop_sending,
    flag_value,
    json_error,
    not_found,
    task_id,
)
from statusd.origins import REACH
from statusd.protocol import over_cap_refusal
from statusd.services import SERVICES, Services

log = logging.getLogger("spoolq.statusd")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="spoolq"'}
BODY_TIMEOUT = web.AppKey("body_timeout_s", float)
"""Seconds a write's body may take to arrive once its handler reads it."""


def authorize(request: web.Request, services: Services) -> None:
    token = services.settings.statusd_token
    if token is None:
        raise ApiError(403, "forbidden", "writes are off: set STATUSD_TOKEN to enable them")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # A header's bytes that are not UTF-8 arrive as surrogate escapes: they are
    # compared as the bytes they were, never allowed to raise.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", _CHALLENGE)


async def expect_submit(request: web.Request) -> web.StreamResponse | None:
    """The submit route's ``Expect`` handler (see :func:`_expect`): a body declared over
    ``STATUSD_MAX_BODY_BYTES`` is refused too."""
    return await _expect(request, body_limited=True)


async def expect_act(request: web.Request) -> web.StreamResponse | None:
    """The cancel and retry routes' ``Expect`` handler (see :func:`_expect`)."""
    return await _expect(request, body_limited=False)


async def _expect(request: web.Request, *, body_limited: bool
                  ) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on a write: refused (403, 401, 413; the connection closed,
    the body never read) when the headers already say the write will be, else ``100
    Continue``.  aiohttp's own handler, run before any middleware, said ``100 Continue``
    to any client, which then sent its body, up to a MiB, to be read and thrown away
    (QA h396).  Another ``Expect`` is a 417, as aiohttp answers it (its bytes not echoed)."""
    if request.version != HttpVersion11:
        return None
    services = request.app[SERVICES]
    if (refusal := over_cap_refusal(request)) is not None:
        # Over the cap: 503, as the middleware answers any request then, not 100 Continue
        # and a body read for a 503 (or a 401 where others are told 503; QA h399).
        return await answer_and_stop_sending(request, refusal)
    try:
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            raise ApiError(417, "expectation_failed", "unsupported Expect header")
        if (why := request.app[REACH].host_refused(request)) is not None:
            raise ApiError(403, "forbidden", why)
        authorize(request, services)
        if body_limited:
            _refuse_declared_oversize(request, services)
    except ApiError as exc:
        # Answered, and this side closed at once (a client that waits closes its own);
        # what a client sent unasked is read meanwhile, not reset (QA h399).
        return await answer_and_stop_sending(
            request, json_error(exc.status, exc.kind, exc.message, exc.headers))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's: the answer's own bytes start here
    return None


async def submit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    authorize(request, services)
    try:
        job = Job.model_validate(await _json_body(request, services))
    except ValidationError as exc:
        raise ApiError(400, "invalid_job", validation_reason(exc)) from exc
    any_tool = flag_value(request, "any_tool")
    try:
        job_id: str = await services.in_thread(_submit, services, job, any_tool)
    except ValueError as exc:
        raise ApiError(400, "invalid_job", str(exc)) from exc
    except InvalidJob as exc:  # over SPOOL_MAX_JOB_BYTES once written
        raise ApiError(413, "payload_too_large", str(exc)) from exc
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except SpoolIOError as exc:
        raise ApiError(503, "unavailable", str(exc)) from exc
    except OSError as exc:
        raise (_unusable(services) or exc) from exc
    await _index_after_write(services, job_id)
    return web.Response(status=202, body=orjson.dumps({"task_id": job_id}),
                        content_type="application/json",
                        headers={"Location": f"/api/v1/tasks/{job_id}"})


def _submit(services: Services, job: Job, any_tool: bool) -> str:
    """Drop ``job`` (in a write thread: the catalogue's read blocks as the drop does)."""
    layout = services.layout
    if not any_tool and (refusal := catalogue_refusal(
            readable_processors(layout), job,
            *waiting_for(layout, services.settings.grace_s))) is not None:
        raise ApiError(400, refusal.type.value, f"{refusal.reason}; any_tool=1 submits it "
                       "anyway")
    if (why := spent_attempts(services.layout, job)) is not None:
        raise ApiError(400, "invalid_job", why)
    return services.client.submit(job)


def _refuse_declared_oversize(request: web.Request, services: Services) -> None:
    """413 for a body whose declared Content-Length is over ``STATUSD_MAX_BODY_BYTES``,
    before any of it is read."""
    limit = services.settings.statusd_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the body is over {limit} bytes")


async def _json_body(request: web.Request, services: Services) -> dict[str, Any]:
    _refuse_declared_oversize(request, services)
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the job as application/json")
    timeout_s = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the body did not arrive within "
                       f"{timeout_s:g} s", hang_up=True) from None
    # A UTF-8 byte order mark first (PowerShell 5, Notepad) is read past, as intake and
    # `spoolq submit --file` read past it: the same job was refused here alone (QA h381).
    sent, raw = raw, without_bom(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # As intake says of a drop: orjson said of a latin-1 body "str is not valid UTF-8:
        # surrogates not allowed: line 1 column 1 (char 0)", neither where nor what (h401).
        # Of the body as sent: past a byte order mark, an offset 3 short (h407).
        reason = malformed_reason(sent, exc).replace("empty file", "empty body")
        if reason.startswith("not UTF-8") and request.charset is not None:
            reason += f" (a job is UTF-8 JSON, whatever the charset={request.charset} " \
                      "its Content-Type names)"
        raise ApiError(400, "invalid_job", f"the body is not a job: {reason}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_job", "the body must be a JSON object (a job)")
    # Asked of orjson's encoder: a walk of a wide 1 MB body held the event loop 20 to 70 ms.
    if too_deep(raw, data):
        raise ApiError(400, "invalid_job",
                       f"invalid job: nested more than {MAX_NESTING} levels deep")
    if (big := inexact_integer(raw)) is not None:
        raise ApiError(400, "invalid_job", f"invalid job: {big_integer_reason(big)}")
    return data


async def cancel(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def retry(request: web.Request) -> web.Response:
    return await _act(request, "retry")


async def _act(request: web.Request, action: Literal["cancel", "retry"]) -> web.Response:
    """A cancel or a retry: 200 with the record as it now stands.  Spool trouble before
    its commit point is a 503 with the reason, a raw OSError too (a directory's
    ``close()`` failing, EIO, answered 500 with a traceback, QA h319); after it, the
    change is made and answered so (the client warns of what failed after it:
    :mod:`spool.committed`)."""
    services = request.app[SERVICES]
    authorize(request, services)
    job_id = task_id(request)
    try:
        record: Record = await services.in_thread(
            services.client.cancel if action == "cancel" else services.client.retry, job_id)
    except NotFoundError as exc:  # a retry of a job in another state is a ConflictError
        raise (_unusable(services) or not_found(services.layout, job_id, str(exc))) from exc
    except ConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except SpoolIOError as exc:
        raise ApiError(503, "unavailable", str(exc)) from exc
    except OSError as exc:
        raise (_unusable(services) or ApiError(
            503, "unavailable", f"cannot {action} {job_id} now: {_reason(exc)}")) from exc
    await _index_after_write(services, job_id)
    return web.Response(body=record_bytes(record), content_type="application/json")


async def _index_after_write(services: Services, job_id: str) -> None:
    """Show the write in the index now.  The write is done: whatever the index's look-up
    of it raises, the rescan shows it later, and the answer stays the write's (a 503 then
    had a client that retried a submit drop the job twice).  Any OSError, not only the
    SpoolIOError of a classified one: an lstat refused (EACCES on ``done/<id>.json``) got
    out raw and answered 500 for a job in ``pending/`` (QA)."""
    try:
        await services.tracker.refresh([job_id])
    except (SpoolIOError, OSError) as exc:
        log.warning("%s is written, but the index could not look at it now (%s); "
                    "the next rescan shows it", job_id, _reason(exc))


def _reason(exc: SpoolIOError | OSError) -> str:
    """What went wrong, in words: an OSError's strerror and file, else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _unusable(services: Services) -> ApiError | None:
    """503 ``unavailable`` when the spool's folders are not all there (unmounted, moved
    away), else None.  Looked at only when a write failed or found nothing: a few stat
    calls on an error path."""
    try:
        services.client.layout.require()
    except SpoolIOError as exc:
        return ApiError(503, "unavailable", f"the spool cannot be used now: {exc}")
    except OSError as exc:  # its folders cannot even be stat'ed (EIO)
        return ApiError(503, "unavailable", f"the spool cannot be used now: {exc.strerror}")
    return None


