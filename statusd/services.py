"""The objects one statusd app shares, built once from the settings and passed down.

Owns: which spool, the index and its tracker, the WebSocket hub, the metrics
registry, the write client (the same :class:`spool.client.Client` the CLI
uses, run in a thread because it blocks), and the stats document.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from spool.client import Client
from spool.errors import SpoolIOError
from spool.fsops import FAILING_IO, Mover
from spool.layout import Layout
from spool.models import OwnerStatus
from spool.reader import RECENT_S, SpoolReader, stats_document
from spool.settings import Settings
from statusd.hub import Hub
from statusd.index import Index
from statusd.metrics import Metrics
from statusd.tracker import Tracker

WRITE_THREADS = 4
"""Concurrent writes (a cancel of a running job may wait up to 5 s in one)."""


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
        self.metrics = Metrics(self.stats)
        self.tracker = Tracker(self.layout, self.index, self.hub, self.metrics,
                               settings.scan_s)
        self.heartbeat_s = heartbeat_s
        self.client = Client(self.layout, Mover(self.layout, settings.fsync),
                             max_job_bytes=settings.max_job_bytes)
        self._writes = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="statusd-write")
        self._processors: list[OwnerStatus] = []
        """The live processors at the last look that went through (see :meth:`processors`)."""

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """Run a blocking spool call (client writes, disk reads) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._writes, fn, *args)

    def close(self) -> None:
        self._writes.shutdown(wait=True, cancel_futures=True)

    def processors(self) -> list[OwnerStatus]:
        """The live processors; those of the last look that went through while ``owners/``
        cannot be listed (the disk failing, EIO; statusd not let, EACCES) and the spool
        is said unreadable, as the counts are the index as it was.  Raised, /api/v1/stats
        and /metrics answered 503 (a 500 for EACCES) for as long as it lasted, and no
        scrape told ``spoolq_statusd_spool_ok`` 0.  Out of descriptors is raised: a live
        processor is never told dead for it."""
        try:
            self._processors = self.reader.processors()
        except (SpoolIOError, PermissionError) as exc:
            cause = exc.__cause__ if isinstance(exc, SpoolIOError) else exc
            listing_fails = isinstance(cause, PermissionError) or (
                isinstance(cause, OSError) and cause.errno in FAILING_IO)
            if not listing_fails or self.tracker.spool_health() == "ok":
                raise
        return self._processors

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """DESIGN section 9's stats document, from the index (no folder scan)."""
        now = now if now is not None else time.time()
        oldest_ns = self.index.oldest_pending_mtime_ns()
        age = None if oldest_ns is None else max(0.0, now - oldest_ns / 1e9)
        processors = self.processors()
        written = self.index.written_since(int((now - RECENT_S) * 1e9), int(now * 1e9))
        due_ns = self.index.first_due_ns()
        due_age = None if due_ns is None or due_ns > now * 1e9 else max(0.0, now - due_ns / 1e9)
        doc = stats_document(self.index.counts(), age, processors, now,
                             finished_recently=written, oldest_due_pending_age_s=due_age)
        # A status file's tool list is not checked (a name may be any JSON value).
        offered = [t.get("name") for p in processors for t in p.tools]
        doc["tools"] = sorted({*self.index.tools(), *(t for t in offered if isinstance(t, str))})
        doc["statusd"] = {"indexed": len(self.index), "ws_clients": self.hub.clients,
                          "ws_dropped": self.hub.dropped_total,
                          "startup_s": round(self.tracker.startup_s, 4),
                          "last_scan_s": round(self.tracker.last_scan_s, 4),
                          "spool": self.tracker.spool_health(),
                          "removed": self.tracker.removed}
        return doc


SERVICES = web.AppKey("services", Services)
