"""Read endpoints: health, task list, one task, stats, tools, metrics, OpenAPI, the
dashboard.

Every answer comes from the in-memory index (bytes encoded when the record
was indexed), so a page or the stats of a 100,000-record spool costs a bisect
and a join.  While the index loads at start, :mod:`statusd.indexing` says what is
answered instead (the routes that need the index are wrapped in
:func:`statusd.indexing.after_index` by :mod:`statusd.app`).  One task is checked
against its file first (a few lstat calls) and read again when it moved, so it
never answers a state older than the disk's; a miss is checked on disk before
answering 404, so a job dropped a moment ago by the CLI is found before the feed
reports it.  A record too large to keep in the index is streamed from the very file
the index read (:mod:`statusd.sending`): not parsed again, never whole in memory.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mimetypes
import os
from importlib import resources
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.helpers import ETAG_ANY

from spool.catalogue import merged_catalogue
from spool.errors import SpoolIOError
from spool.fsops import NOT_NOW
from spool.layout import Layout
from spool.reader import MAX_PAGE, decode_cursor, encode_cursor
from spool.states import TERMINAL, JobState
from statusd import bodies, sending
from statusd.errors import ApiError, brief_view, flag_value, not_found, query_value, task_id
from statusd.indexing import health_while_loading, require_figures
from statusd.items import DUMP_OPTS, INLINE_MAX_BYTES
from statusd.metrics import CONTENT_TYPE
from statusd.services import SERVICES, Services

DEFAULT_LIMIT = 50
MAX_TOOL_CHARS = 128
log = logging.getLogger("spoolq.statusd")

STATIC_DIR = Path(str(resources.files("statusd") / "static"))
STATIC_PREFIX = "/static/"
STATIC_NAMES = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())
"""The files ``/static/`` serves: the page's, as installed."""


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def _reply(request: web.Request, *parts: bytes) -> web.StreamResponse:
    """A 200 with the JSON ``parts`` make: whole when it is small, else a chunk at a time
    under the stall rule (:func:`statusd.sending.send_parts`), so a client that reads
    none of it does not pin it for as long as it keeps the connection."""
    if sum(len(part) for part in parts) <= INLINE_MAX_BYTES:
        return _json(b"".join(parts))
    return await sending.send_parts(request, parts)


async def health(request: web.Request) -> web.Response:
    """200 ``{"status": "ok", "indexed": n}``; 503 while the spool cannot be seen, and
    while the index loads at start (:func:`statusd.indexing.health_while_loading`)."""
    services = request.app[SERVICES]
    if not services.tracker.loading.ready:
        return health_while_loading(services.tracker.loading)
    status = services.tracker.spool_health()  # not ok: the index shows the spool as it was
    return _json(orjson.dumps({"status": status, "indexed": len(services.index)}),
                 status=200 if status == "ok" else 503)


async def list_tasks(request: web.Request) -> web.StreamResponse:
    """A page of the list.  One larger than a record kept whole (1,000 rows of up to 32 KiB
    each are allowed) is sent a chunk at a time from the rows the index holds
    (:func:`statusd.sending.send_parts`): handed to aiohttp whole, a page pinned about
    twice its size for as long as a client that read none of it kept the connection, and
    joined first, a copy of it each (QA: 40 such clients, 1.4 GB)."""
    services = request.app[SERVICES]
    state = _state(query_value(request, "state"))
    tool = query_value(request, "tool") or None
    if tool is not None and len(tool) > MAX_TOOL_CHARS:
        raise ApiError(400, "bad_request", f"tool is at most {MAX_TOOL_CHARS} characters")
    limit = _limit(query_value(request, "limit"))
    cursor = query_value(request, "cursor") or None
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise ApiError(400, "bad_request", "invalid cursor") from exc
    brief = brief_view(query_value(request, "view"))
    rows, next_key = services.index.page(state, tool, limit, after)
    next_cursor = orjson.dumps(encode_cursor(next_key) if next_key else None)
    parts = [b'{"tasks":[']
    for n, row in enumerate(r.brief_row if brief else r.summary for r in rows):
        parts += (b",", row.strip()) if n else (row.strip(),)
    parts += (b'],"next_cursor":', next_cursor, b"}")
    return await _reply(request, *parts)


def _state(value: str | None) -> JobState | None:
    if not value:
        return None
    try:
        return JobState(value)
    except ValueError as exc:
        names = ", ".join(s.value for s in JobState)
        raise ApiError(400, "bad_request", f"state must be one of {names}") from exc


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    digits = value.removeprefix("-")  # a negative integer is out of range, not "no integer"
    if not (digits.isascii() and digits.isdigit()):  # int() would take "1_0", " 5", "+5"
        raise ApiError(400, "bad_request", f"limit must be an integer 1..{MAX_PAGE}")
    # Leading zeros are no magnitude ("0000000001" is 1), and int() refuses 4,301 digits,
    # zeros too: the digits without them are read.
    significant = digits.lstrip("0") or "0"
    limit = (-1 if value.startswith("-") else 1) * int(significant) \
        if len(significant) <= 9 else MAX_PAGE + 1
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "bad_request", f"limit must be 1..{MAX_PAGE}")
    return limit


STREAM_TRIES = 3
RETRY_AFTER_S = 1
"""The Retry-After of a 503 for a large record replaced faster than it can be sent."""


async def get_task(request: web.Request) -> web.StreamResponse:
    """One record: from the index, or (large) streamed from the file the index read.

    A large record that changed since it was indexed is indexed again (its head only,
    :mod:`statusd.large`) and streamed: it is never read whole into memory.
    """
    job_id = task_id(request)
    services = request.app[SERVICES]
    if not await services.tracker.catch_up(job_id, wait=False):
        # The index is applying a batch: this one record is read from disk, not queued
        # behind it (a large one, or one gone or moving meanwhile, waits as before).
        body = await services.in_thread(services.tracker.loader.full_body, job_id)
        if body is not None:
            return await _reply(request, body)
        await services.tracker.refresh([job_id])
    elif services.index.get(job_id) is None and await services.in_thread(
            _recorded, services.layout, job_id):
        # Not indexed yet (its event not read): a large record is indexed (its head) to
        # be streamed.  One over 8 MiB answered 404 until the next rescan, up to
        # SPOOL_SCAN_S (QA).  An unknown id costs two lstats, not the index's lock.
        await services.tracker.refresh([job_id])
    for _ in range(STREAM_TRIES):
        item = services.index.get(job_id)
        if item is not None and item.body is not None:
            return _json(item.body)
        if item is None or item.stamp.state not in TERMINAL:
            break
        opened = await services.in_thread(bodies.open_indexed, services.layout, job_id,
                                          item.stamp)
        if opened is not None:
            return await sending.stream_file(request, services, *opened)
        await services.tracker.refresh([job_id])
    body = await record_body(services, job_id)
    return await _reply(request, body)


def _recorded(layout: Layout, job_id: str) -> bool:
    """A record of ``job_id`` is in ``done/`` or ``failed/``."""
    return any(os.path.lexists(layout.job_str(state, job_id)) for state in TERMINAL)


async def record_body(services: Services, job_id: str) -> bytes:
    """The full record JSON of ``job_id`` (index first, disk for large or unseen ones).

    A large record is read as the version the index checked when it still is (no
    second parse: a 55 MiB record took 2.7 s of the loop's GIL each time), and is
    read and checked again only when it has changed since.
    """
    item = services.index.get(job_id)
    if item is not None and item.body is not None:
        return item.body
    body: bytes | None = None
    if item is not None:
        body = await services.in_thread(bodies.indexed_body, services.layout, job_id,
                                        item.stamp)
    if body is None:
        body = await services.in_thread(services.tracker.loader.full_body, job_id)
    if body is not None:
        return body
    if item is not None:
        # Indexed, and its file gone since it was checked: the tracker is told first, so
        # a move (a retry or a cancel holding it in tmp/, a record replaced each time it
        # was about to be streamed) is not taken for a removal.  The job is listed
        # meanwhile: 503, try again.  One purged (removed now) is a 404.
        if not services.tracker.moving(job_id):
            await services.tracker.refresh([job_id])
        now = services.index.get(job_id)
        if now is not None and now.body is not None and not services.tracker.moving(job_id):
            return now.body
        if now is not None:
            raise ApiError(503, "unavailable", f"the record of {job_id} is being replaced or "
                           "moved; try again", {"Retry-After": str(RETRY_AFTER_S)})
    raise not_found(services.layout, job_id, f"no task {job_id}")


async def stats(request: web.Request) -> web.Response:
    """The stats document; 503 ``processors_unknown`` naming the cause while whether a
    processor is alive cannot be told (``processor.alive`` is a bool: no ``false`` is made
    up), or with ``partial=1`` the spool's figures without the processors' (a dashboard's
    counts).  A type of its own: a client tells it from statusd's spool trouble
    (``unavailable``) without reading the message.  While the index loads at start, the
    spool's figures are the start scan's (``statusd.indexing`` says so), and 503
    ``indexing`` while that scan runs (:mod:`statusd.indexing`)."""
    services = request.app[SERVICES]
    require_figures(services)
    # partial=1: while the processors' state cannot be read, 200 with the spool's figures
    # and processors_unknown instead of the 503 (the dashboard's counts went on showing the
    # spool of the last answer, for as long as a status file stayed unread).
    live = await services.read_processors()  # off the loop: a hung filesystem held it
    reasons = await services.read_left_why(live)  # off it too (owners/, offers/)
    if flag_value(request, "partial"):
        return _json(orjson.dumps(services.scrape_of(live, reasons), option=DUMP_OPTS))
    if isinstance(live, SpoolIOError):  # logged once a run by Services.processors
        raise ApiError(503, "processors_unknown", str(live),
                       {"Retry-After": str(RETRY_AFTER_S)}) from live
    return _json(orjson.dumps(services.stats_of(live, reasons), option=DUMP_OPTS))


async def tools(request: web.Request) -> web.Response:
    """The tools the live processors offer (their status files' catalogues, merged by
    name) and their owners: an empty list while none runs; 503 ``processors_unknown``,
    as the stats, while their status files cannot be read.  Needs no index."""
    live = await request.app[SERVICES].read_processors()
    if isinstance(live, SpoolIOError):  # logged once a run by Services.processors
        raise ApiError(503, "processors_unknown", str(live),
                       {"Retry-After": str(RETRY_AFTER_S)}) from live
    doc = {"tools": merged_catalogue(live), "processors": [status.owner for status in live]}
    return _json(orjson.dumps(doc, option=DUMP_OPTS))


async def metrics(request: web.Request) -> web.Response:
    """The registry's text: while the start's scan runs, statusd's own gauges only
    (:mod:`statusd.metrics`), never a 503, which Prometheus reads as statusd down."""
    services = request.app[SERVICES]
    live = await services.read_processors()  # off the loop: a hung filesystem held it
    with services.scraping(live):
        body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(request.app[OPENAPI])


async def dashboard(request: web.Request) -> web.Response:
    return await _package_file(request, STATIC_DIR / "index.html", {"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.Response:
    """One of the page's files, by its name in the folder (nothing else is served)."""
    name = request.match_info["name"]
    if name not in STATIC_NAMES:
        raise web.HTTPNotFound()
    return await _package_file(request, STATIC_DIR / name)


async def _package_file(request: web.Request, path: Path,
                        headers: dict[str, str] | None = None) -> web.Response:
    """A file of the page, from the one read of it that went through (they are small,
    tens of KiB), with the validators aiohttp's file server gave it (ETag,
    Last-Modified, a 304 to a conditional GET).  That server stats and opens the file
    itself, answering any OSError with an empty 404 or 403 (or a 500 with a traceback,
    its folder check's): a failing disk or a statusd out of descriptors said the page was
    not there, even after a check of ours had opened it, as the disk failed between the
    two (QA, h319).  Such a failure is a 503 that says why."""
    try:
        body, st = await asyncio.to_thread(_read_page_file, path)
    except OSError as exc:
        raise _unreadable_page_file(path, exc) from exc
    etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
    modified_s = int(st.st_mtime)  # an HTTP date has whole seconds
    if _not_modified(request, etag, modified_s):
        response = web.Response(status=304, headers=headers)
    else:
        content_type = _TYPES.guess_type(path.name)[0] or "application/octet-stream"
        response = web.Response(body=body, content_type=content_type, headers=headers)
    response.etag = etag
    response.last_modified = modified_s
    return response


def _not_modified(request: web.Request, etag: str, modified_s: int) -> bool:
    """Whether a conditional GET's copy is current (RFC 9110 13.2.2: If-None-Match
    decides when it is sent, and If-Modified-Since is then ignored)."""
    if (tags := request.if_none_match) is not None:
        return any(tag.value in (etag, ETAG_ANY) for tag in tags)
    since = request.if_modified_since
    return since is not None and modified_s <= since.timestamp()


def _unreadable_page_file(path: Path, exc: OSError) -> ApiError:
    """The 503 of a page file that could not be read, saying why."""
    if exc.errno in _GONE:
        # One of the files there at the start (the only names served), gone or no
        # file now: spoolq reinstalled or removed under this statusd.  An empty 404,
        # unsaid, sent the operator looking for a wrong address (QA).
        if path not in _SAID_GONE:
            _SAID_GONE.add(path)
            log.warning("the dashboard's %s is gone from %s (spoolq upgraded or removed "
                        "since statusd started? restart it)", path.name, path.parent)
        return ApiError(503, "unavailable", f"the dashboard's {path.name} is gone from "
                        f"{path.parent}: spoolq upgraded or removed since statusd "
                        "started? restart statusd")
    if exc.errno not in NOT_NOW:  # EACCES (a reinstall under a tight umask): its word
        return ApiError(503, "unavailable", f"cannot read the dashboard's {path.name} "
                        f"in {path.parent}: {exc.strerror}")
    return ApiError(503, "unavailable", f"cannot read the dashboard's {path.name}: "
                    f"{exc.strerror}; try again", {"Retry-After": str(RETRY_AFTER_S)})


_TYPES = mimetypes.MimeTypes()
"""Python's own table of types by file name, as aiohttp's file server used: the host's
(``/etc/mime.types``, read by :func:`mimetypes.guess_type`) may differ (``text/javascript``)."""


_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})
"""What opening a page file says when it is no longer there as a file."""


_SAID_GONE: set[Path] = set()
"""The page's files said gone in the log (once each)."""


def _read_page_file(path: Path) -> tuple[bytes, os.stat_result]:
    """``path``'s bytes and the stat of the very file read (OSError when it cannot be
    read: a directory there is EISDIR, as Python's open says)."""
    with open(path, "rb") as file:
        return file.read(), os.fstat(file.fileno())


async def revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the page's scripts and style are checked on every load (a 304
    when unchanged), as the page is; without a Cache-Control the browser kept them by
    heuristic, and after an upgrade ran the old app.js under the new page."""
    if request.path.startswith(STATIC_PREFIX) and response.status < 400:
        response.headers.setdefault("Cache-Control", "no-cache")


OPENAPI = web.AppKey("openapi", bytes)
