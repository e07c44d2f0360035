"""Keeps the index current; each change is told as WebSocket events and metrics
(:mod:`statusd.announce`).

How: the change feed (:mod:`statusd.hints`) only marks ids dirty and wakes the loop;
the loop re-reads those ids in a worker thread (:class:`statusd.loader.Loader`) and
applies the result (:mod:`statusd.applying`).  Events are hints, so a full rescan
also runs every ``SPOOL_SCAN_S`` (stretched to ten times its own duration on huge
spools, so it never takes more than a tenth of a core), and at once when the feed
asks it (events lost, a folder watched again).  Each read first looks for the
spool's folders (:mod:`statusd.health`): while they are gone the index is kept.

Guarantees:

* The index is mutated only on the event loop, and every load-and-apply runs
  under one lock, so a slow read can never overwrite a newer one.  The start's
  index is built whole on the worker thread, seen by nobody, and swapped in on the
  loop (:meth:`load`); :attr:`Tracker.loading` tells how far it is meanwhile.
* The feed starts before the first scan: nothing that happens during
  start-up is missed (its hints wait, and are applied once the index is in).
* A read error (a file vanishing, EACCES), or any other failure, is logged and
  retried on the next wake or rescan; it never ends the loop.
* A cancel always ends :meth:`run`, even one that comes with a wake, so shutdown
  closes the worker thread only once the loop is gone: no read is scheduled on a
  closed thread.
* An id found in no state folder while its file moves through ``tmp/`` is shown as
  it was for a grace (:mod:`statusd.applying`), then removed if still gone.

What it cannot promise: a state shorter than one feed round trip (a FAST job
claimed and completed within a millisecond) may be folded into the next one,
so a stream can show ``pending -> done``.  The folder is the truth and only
its current state is observable; the terminal transition is always sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from spool.errors import SpoolIOError
from spool.layout import Layout
from statusd.hints import Hints
from statusd.hub import Hub
from statusd.index import Index
from statusd.items import Item, Stamp
from statusd.loading import Loading, LoadStopped, ScanFigures, scan_figures
from statusd.metrics import Metrics
from statusd.refreshing import Refresher

log = logging.getLogger("spoolq.statusd")

RESCAN_DUTY = 10.0
"""The rescan interval is at least this many times the last rescan's duration."""
RESCANS_FIRST_MAX = 3
"""Rescans for lost events in a row before the hints are applied (an overflow storm)."""


class Tracker(Refresher):
    """The live side of statusd: the feed, the start's load, the loop that applies hints
    and rescans on a timer (the reads and updates themselves: :class:`Refresher`)."""

    def __init__(self, layout: Layout, index: Index, hub: Hub, metrics: Metrics,
                 scan_s: float) -> None:
        self.hints = Hints(layout, scan_s)
        super().__init__(layout, index, hub, metrics, wake=self.hints.wake.set)
        self.scan_s = scan_s
        self._quiet_until = 0.0
        """Until when (monotonic) a failed read logs no line: one per rescan interval."""
        self.loading = Loading()
        """How far the index's load is (statusd serves meanwhile: :mod:`statusd.indexing`)."""
        self.startup_s = 0.0

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the feed, then load the whole spool into the index."""
        self.start_feed()
        await self.load()

    def start_feed(self) -> None:
        """Start the change feed, before the load's scan (see the guarantees above)."""
        self.hints.start(asyncio.get_running_loop())

    async def load(self) -> None:
        """Load the whole spool into the index (the feed started already), as
        :attr:`loading` tells: the scan, which gives its figures (the stats meanwhile),
        then every id's file read and parsed, then the index sorted, all on the worker
        thread; the index built is swapped in whole, so nothing ever reads one half
        built.  LoadStopped when statusd stops meanwhile; anything else it raises is
        :attr:`loading`'s error too."""
        loading = self.loading
        loading.begin()
        try:
            await self._load(loading)
        except LoadStopped:
            raise
        except Exception as exc:
            loading.failed(exc)
            raise
        await self._catch_up()
        loading.done()

    async def _catch_up(self) -> None:
        """Apply the hints of the load's time before the index is said ready.  A job the
        start's scan found and that moved before its file was read (a pending job run
        meanwhile) is not in the index built; until the loop applied its hint, the stats
        and ``spoolq_jobs`` counted fewer jobs than the spool held (QA h389: 62 of 10,500
        for a poll, after a restart during a burst).  Lost events leave it all to
        :meth:`run`, whose rescan goes first (so that no hint overtakes what the loss
        hid); a read that fails here asks that rescan at once, as the ids taken with it
        would otherwise wait for the next one."""
        if self.hints.rescan_asked:
            return
        try:
            await self._apply_hints()
        except Exception as exc:  # as run()'s: logged, never the end of the start
            log.warning("applying the changes made while the index loaded failed (%s); "
                        "rescanning", exc)
            self.hints.ask_rescan()

    async def _load(self, loading: Loading) -> None:
        behind: dict[str, Stamp] = {}
        unreadable: set[str] = set()
        async with self._applying():
            stamps, figures = await self._run(self._scan_at_start, behind, unreadable)
            self._behind.rescanned(behind)  # the runs that ended before: not counted
            loading.scanned(figures)
            scanned = time.monotonic()
            items = await self._run(self.loader.load_all, stamps, unreadable, loading)
            # Scanned, and gone when read (a folder moved away as statusd started): what
            # the spool held at start, if it comes back as it was (QA: 13,616 records of
            # a done/ put back counted as new finishes).
            self.applier.remember_gone(await self._run(_vanished, stamps, items, unreadable))
            del stamps
            loading.sorting()
            loaded = time.monotonic()
            built = await self._run(_built_index, items)
            del items
            self.health.say_unreadable(unreadable)
            self.applier.unseen = unreadable  # those it could not stat, or read
            self.index.take(built)
        self.startup_s = time.monotonic() - loading.started
        log.info("indexed %d records in %.2f s (scan %.2f s, read and parse %.2f s, sort %.2f s)",
                 len(self.index), self.startup_s, scanned - loading.started, loaded - scanned,
                 time.monotonic() - loaded)

    def _scan_at_start(self, behind: dict[str, Stamp], unreadable: set[str]
                       ) -> tuple[dict[str, Stamp], ScanFigures]:
        stamps = self.loader.scan(behind, unreadable)
        return stamps, scan_figures(stamps, self.loader.reader, time.time())

    async def run(self) -> None:
        """Apply feed hints as they come and rescan periodically, until cancelled."""
        next_scan = time.monotonic() + self.scan_s
        while True:
            timeout = max(0.0, next_scan - time.monotonic())
            timeout = self.hints.wait_s(timeout)
            if (first := self.applier.first_deadline()) is not None:
                timeout = min(timeout, max(0.0, first - time.monotonic()))
            # Not asyncio.wait_for: on Python 3.11 it drops a cancel that comes in the
            # steps after a wake, and the loop outlived shutdown's cancel (shutdown hung,
            # then every rescan hit the closed worker thread).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.hints.wake.wait()
            self.hints.wake.clear()
            try:
                self.hints.rewatch()  # watched again: a rescan finds what came meanwhile
                scanned = await self._rescans_asked()
                await self._apply_hints()
                await self._recheck_missing()
                if not scanned and time.monotonic() >= next_scan:
                    await self.rescan()
                    scanned = True
                if scanned:
                    next_scan = time.monotonic() + max(self.scan_s,
                                                       RESCAN_DUTY * self.last_scan_s)
                if self.health.came_back:  # the spool mounted again: a feed of the new
                    self.health.came_back = False  # mount, and the rescan it asks at once
                    self.hints.restart()
            except (OSError, SpoolIOError) as exc:  # out of descriptors, say: it passes
                now = time.monotonic()
                # A listing the disk fails was said once by rescan: an hour of it was 720
                # lines at the default SPOOL_SCAN_S.
                if exc is not self.health.scan_trouble and now >= self._quiet_until:
                    log.warning("reading the spool failed (%s); retrying on the next rescan",
                                exc)
                    self._quiet_until = now + self.scan_s
                next_scan = now + self.scan_s  # not at once: no busy retry loop
            except Exception:  # a bug must not freeze the index: log it, rescan later
                log.exception("updating the index failed; retrying on the next rescan")
                next_scan = time.monotonic() + self.scan_s

    async def _apply_hints(self) -> None:
        """Refresh the ids the feed's hints named since the last take, and count the runs
        among their records that ended behind a new drop (:meth:`_count_behind`)."""
        dirty, recorded = self.hints.take()
        if not dirty:
            return
        dirty = self._unchanged_left_out(dirty)
        if dirty:  # one the disk cannot read: left, said at the next rescan
            await self.refresh(dirty, set(), by_change=True)
        if recorded:
            await self._count_behind(recorded)

    async def _rescans_asked(self) -> bool:
        """The rescans asked for lost events, before the hints taken with them, so that
        hints that came after the loss do not overtake what it hid (a client saw a
        burst's last job before the hundred an overflow hid); events lost again while
        one ran ask another, up to :data:`RESCANS_FIRST_MAX` in a row (an overflow storm
        must not starve the hints).  Whether one ran."""
        scanned = False
        for _ in range(RESCANS_FIRST_MAX):
            if not self.hints.take_rescan():
                break
            scanned = True
            try:
                await self.rescan()
            except Exception:
                self.hints.wake.set()  # the hints taken with it: now, not a scan_s later
                raise
        return scanned

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the block, one task on this loop loads the index (unless :meth:`start`
        did) and then runs :meth:`run`; it is stopped, waited for and the tracker stopped
        after the block, whatever the block raised.  A load that fails ends the task
        only: its error is :attr:`loading`'s, for whoever waits for it."""
        loop_task = asyncio.create_task(self._load_and_run(), name="statusd-tracker")
        try:
            yield
        finally:
            self.loading.stop()  # a load in the worker thread gives up at its next file
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
            self.stop()

    async def _load_and_run(self) -> None:
        if not self.loading.ready:
            try:
                await self.load()
            except Exception:  # LoadStopped, or the error loading holds (see load)
                return
        await self.run()

    def stop(self) -> None:
        """Stop the feed and the worker thread (on the loop, once :meth:`run` is over); a
        load still running there gives up at its next file."""
        self.loading.stop()
        self.stop_feed()
        self.close()

    def stop_feed(self) -> None:
        """Stop the feed (on the loop); nothing is reported after."""
        self.hints.stop()


def _vanished(stamps: dict[str, Stamp], items: list[Item], unreadable: set[str]
              ) -> list[tuple[str, Stamp]]:
    """The ids the start's scan found and its read did not (the unreadable aside): on the
    worker thread, as the rest of the load (a set of 100,000 ids is no work for the
    loop)."""
    read = {item.job_id for item in items}
    return [(job_id, stamp) for job_id, stamp in stamps.items()
            if job_id not in read and job_id not in unreadable]


def _built_index(items: list[Item]) -> Index:
    """An index of ``items``, built on the worker thread (its sort took 0.8 s of the loop
    at 124,000 records), seen by nobody until it is swapped in (:meth:`Index.take`)."""
    index = Index()
    index.load(items)
    return index
