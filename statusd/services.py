"""The objects one statusd app shares, built once from the settings and passed down.

Owns: which spool, the index and its tracker, the WebSocket hub, the metrics
registry, the write client (the same :class:`spool.client.Client` the CLI
uses, run in a thread because it blocks), and the stats document: the index's, or
while it loads at start the start scan's (:class:`statusd.loading.ScanFigures`, said
in ``statusd.indexing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from spool.client import Client
from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import MAX_TOOL_NAME, OwnerStatus
from spool.reader import RECENT_S, SpoolReader, stats_document
from spool.settings import Settings
from spool.stats import known_processors, left_why, without_processors
from statusd.hub import Hub
from statusd.index import Index
from statusd.loading import Figures
from statusd.metrics import Metrics
from statusd.tracker import Tracker

log = logging.getLogger("spoolq.statusd")

WRITE_THREADS = 4
"""Concurrent writes (a cancel of a running job may wait up to 5 s in one)."""
PROCESSORS_WAIT_S = 2.0
"""How long a request waits for the processors' state to be read (``owners/``, off the
loop): a spool on a filesystem that does not answer (a hung NFS server, a stopped FUSE
daemon) held the loop, and every request with it, ``/healthz`` too (QA)."""
MAX_SEEN_TOOLS = 256
"""Tool names the stats list beside those the processors offer (those that ran, then the
most used): the rest are counted in ``tools_omitted``."""


class Services:
    """Everything a handler needs, reachable as ``request.app[SERVICES]``."""

    def __init__(self, settings: Settings, *, heartbeat_s: float = 20.0,
                 queue_max: int | None = None) -> None:
        self.settings = settings
        self.layout = Layout(settings.spool_dir)
        self.layout.require()
        self.reader = SpoolReader(self.layout)
        self.index = Index()
        self.hub = Hub() if queue_max is None else Hub(queue_max)
        self.metrics = Metrics(self.scrape)
        self.tracker = Tracker(self.layout, self.index, self.hub, self.metrics,
                               settings.scan_s)
        self.heartbeat_s = heartbeat_s
        self.client = Client(self.layout, Mover(self.layout, settings.fsync),
                             max_job_bytes=settings.max_job_bytes)
        self._writes = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="statusd-write")
        self._processors_unread = False
        """Whether the processors' state could not be read at the last ask."""
        self._read_for_scrape: list[OwnerStatus] | SpoolIOError | None = None
        """The processors' state a /metrics request read off the loop (:meth:`scrape`)."""

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """Run a blocking spool call (client writes, disk reads) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._writes, fn, *args)

    def close(self) -> None:
        self._writes.shutdown(wait=True, cancel_futures=True)

    def processors(self) -> list[OwnerStatus]:
        """The live processors, read from ``owners/`` at each ask.  A SpoolIOError naming
        the cause whenever whether one is alive cannot be told (``owners/`` not listed, a
        lock not tested, a status file not read: EACCES, EIO, out of descriptors); the
        first of such a run is logged once, and its end.  Before, an ``owners/`` statusd
        may not list answered 500 with a traceback, a status file it may not read made
        its live processor a dead one (``alive: false``), and while the disk failed every
        folder the processors of the last look that went through were served (none, for
        a statusd started during the outage): each a made-up answer monitoring acts on."""
        try:
            found = known_processors(self.layout)
        except SpoolIOError as exc:
            if not self._processors_unread:
                log.warning("%s; /api/v1/stats answers 503 and /metrics leaves out the "
                            "processors' gauges until it can", exc)
            self._processors_unread = True
            raise
        if self._processors_unread:
            log.info("the processors' state can be read again")
            self._processors_unread = False
        return found

    async def read_processors(self) -> list[OwnerStatus] | SpoolIOError:
        """:meth:`processors`, read off the loop and waited for :data:`PROCESSORS_WAIT_S`
        at most; its SpoolIOError (or one saying the filesystem did not answer) returned,
        not raised."""
        try:
            found: list[OwnerStatus] = await asyncio.wait_for(
                self.in_thread(self.processors), PROCESSORS_WAIT_S)
        except SpoolIOError as exc:
            return exc
        except TimeoutError:
            unread = SpoolIOError(f"the spool's filesystem has not answered in "
                                  f"{PROCESSORS_WAIT_S:g} s (reading owners/)")
            if not self._processors_unread:
                log.warning("%s; /api/v1/stats answers 503 and /metrics leaves out the "
                            "processors' gauges until it does", unread)
            self._processors_unread = True
            return unread
        return found

    def stats_of(self, processors: list[OwnerStatus], reasons: dict[str, str],
                 now: float | None = None) -> dict[str, Any]:
        """:meth:`stats` of the processors' state read already (:meth:`read_processors`),
        and why jobs are left (:meth:`read_left_why`)."""
        return self._document(processors, now, reasons)

    async def read_left_why(self, processors: list[OwnerStatus] | SpoolIOError
                            ) -> dict[str, str]:
        """The stats' ``left_why`` (:func:`spool.stats.left_why`) for every tool a live
        processor leaves, read off the loop and waited for :data:`PROCESSORS_WAIT_S` at
        most (a processor starting is looked for in ``owners/``, a tool's mark in
        ``offers/``: on the loop, a hung filesystem held every request); {} when no tool
        is left, nothing is known of the processors, or the filesystem does not answer
        (the dashboard then says what it says without one)."""
        if isinstance(processors, SpoolIOError) or not any(
                status.left_to_others for status in processors):
            return {}
        try:
            reasons: dict[str, str] = await asyncio.wait_for(
                self.in_thread(self._left_why, processors), PROCESSORS_WAIT_S)
        except (TimeoutError, OSError, SpoolIOError):
            return {}
        return reasons

    def _left_why(self, processors: list[OwnerStatus]) -> dict[str, str]:
        """:func:`spool.stats.left_why` of every tool one of ``processors`` leaves."""
        tools = {tool for status in processors for tool in status.left_to_others}
        return left_why(self.layout, processors, tools, time.time(), self.settings.grace_s)

    @contextlib.contextmanager
    def scraping(self, processors: list[OwnerStatus] | SpoolIOError) -> Iterator[None]:
        """For the block, :meth:`scrape` (the /metrics collector's) takes the processors'
        state read already, not read on the loop."""
        self._read_for_scrape = processors
        try:
            yield
        finally:
            self._read_for_scrape = None

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """DESIGN section 9's stats document, from the index (no folder scan), or while
        it loads from the start's scan; a SpoolIOError when the processors' state cannot
        be read (:meth:`processors`).  Read on the caller's thread, ``left_why`` too."""
        processors = self.processors()
        return self._document(processors, now, self._left_why(processors))

    def scrape(self) -> dict[str, Any]:
        """The stats document for /metrics and ``GET /api/v1/stats?partial=1``: when the
        processors' state cannot be read, without what they tell (``processor``,
        ``job_num``, ``busy_workers``, ...) and with ``processors_unknown``, the cause; the
        counts are known all the same.  While the start's scan runs, nothing of the spool is
        known yet: only ``statusd`` (its own figures, ``indexing`` among them)."""
        processors = self._read_for_scrape
        if processors is None and self.tracker.loading.knows_spool:
            try:
                processors = self.processors()
            except SpoolIOError as exc:
                processors = exc
        return self.scrape_of([] if processors is None else processors)  # None: loading

    def scrape_of(self, processors: list[OwnerStatus] | SpoolIOError,
                  reasons: dict[str, str] | None = None) -> dict[str, Any]:
        """:meth:`scrape` of the processors' state read already (:meth:`read_processors`),
        and why jobs are left (:meth:`read_left_why`; none for /metrics, which shows no
        reason)."""
        if not self.tracker.loading.knows_spool:
            return {"statusd": self._own_figures()}
        if isinstance(processors, SpoolIOError):
            return without_processors(self._document([], None, {}), str(processors))
        return self._document(processors, None, reasons or {})

    def _document(self, processors: list[OwnerStatus], now: float | None,
                  reasons: dict[str, str]) -> dict[str, Any]:
        """The stats document; ``reasons``: why each tool's jobs are left, read already
        (:func:`spool.stats.left_why`), of which those in ``left_to_others`` are said."""
        now = now if now is not None else time.time()
        figures = self._figures()
        oldest_ns = figures.oldest_pending_mtime_ns()
        age = None if oldest_ns is None else max(0.0, now - oldest_ns / 1e9)
        written = figures.written_since(int((now - RECENT_S) * 1e9), int(now * 1e9))
        due_ns = figures.first_due_ns()
        due_age = None if due_ns is None or due_ns > now * 1e9 else max(0.0, now - due_ns / 1e9)
        doc = stats_document(figures.counts(), age, processors, now,
                             finished_recently=written, oldest_due_pending_age_s=due_age,
                             in_progress=self.tracker.loader.in_progress)
        # A status file's tool list is not checked (a name may be any JSON value).
        offered = {name for p in processors for t in p.tools
                   if isinstance(name := t.get("name"), str)}
        # Nor a name no tool can have (a record an older version quarantined kept one).
        seen = [name for name in figures.tools()
                if name not in offered and len(name) <= MAX_TOOL_NAME]
        # Bounded: 3,000 made-up names (jobs failed unknown_tool) made the document
        # 361 KB, read every 5 s by each open dashboard, and a select of 3,009 (QA).
        doc["tools"] = sorted([*offered, *seen[:MAX_SEEN_TOOLS]])
        doc["tools_omitted"] = max(0, len(seen) - MAX_SEEN_TOOLS)
        doc["left_why"] = {tool: reasons[tool] for tool in doc["left_to_others"]
                           if tool in reasons}
        by_tool = figures.counts_by_tool(doc["tools"])
        if by_tool is not None:
            doc["counts_by_tool"] = by_tool
        doc["statusd"] = self._own_figures()
        return doc

    def _own_figures(self) -> dict[str, Any]:
        """The stats' ``statusd``: statusd's own figures (``indexing`` while it loads)."""
        own = {"indexed": len(self.index), "ws_clients": self.hub.clients,
               "ws_dropped": self.hub.dropped_total,
               "startup_s": round(self.tracker.startup_s, 4),
               "last_scan_s": round(self.tracker.last_scan_s, 4),
               "spool": self.tracker.spool_health(), "removed": self.tracker.removed}
        if (indexing := self.tracker.loading.stats_info()) is not None:
            own["indexing"] = indexing
        return own

    def _figures(self) -> Figures:
        """The index once it is loaded; until then the start scan's figures (the routes
        answer 503 while that scan runs: :func:`statusd.indexing.require_figures`)."""
        loading = self.tracker.loading
        if loading.ready:
            return self.index
        if loading.figures is None:
            raise RuntimeError("no figures of the spool before the start's scan ends")
        return loading.figures


SERVICES = web.AppKey("services", Services)
