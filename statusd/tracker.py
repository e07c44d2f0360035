"""Keeps the index current; each change is told as WebSocket events and metrics
(:mod:`statusd.announce`).

How (Postfix's pickup, in asyncio): a :class:`spool.feed.PolledFeed` on the
state folders and ``progress/``, read by the event loop itself (its inotify
descriptor is one of the loop's readers), only marks ids dirty and wakes the
loop; the loop re-reads those ids in a worker thread and applies the result.
Where inotify cannot be polled, a :class:`spool.feed.ChangeFeed` thread hands
the same hints to the loop.  (A feed thread cost each hint a thread wake, a
GIL hand-off and a self-pipe write: about a sixth of statusd's CPU per event
when events came one by one.)  Events
are hints, so a full rescan also runs every ``SPOOL_SCAN_S`` (stretched to
ten times its own duration on huge spools, so it never takes more than a
tenth of a core).  A watched folder that is replaced (``mv pending
pending.old && mkdir pending``) rescans at once, and is watched again as
soon as it is back: at once, or within ``REWATCH_S``, and a rescan follows.
Where inotify's kernel limits are reached (another program of the same user
holds every instance or watch), there is no feed or a folder is unwatched: the
rescans keep the index current, a warning says so once, and the feed is tried
again every ``REWATCH_S`` (an info line once it is whole).

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
* An id found in no state folder whose file is staged in ``tmp/`` is shown as it
  was for ``vanish_grace_s``: a cancel of a pending job, a retry and a quarantine
  move the file through ``tmp/`` (for a write and its fsync), and the job must
  not drop out of lists and counts meanwhile, nor its next state be reported as
  coming from nowhere.  An id still gone after that is removed, and its task
  streams are ended.  An id in neither place (a purge, an ``rm``) is removed at
  once (:meth:`statusd.loader.Loader.refresh` tells the two apart).

What it cannot promise: a state shorter than one feed round trip (a FAST job
claimed and completed within a millisecond) may be folded into the next one,
so a stream can show ``pending -> done``.  The folder is the truth and only
its current state is observable; the terminal transition is always sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from spool.errors import SpoolIOError
from spool.feed import ChangeFeed, PolledFeed
from spool.fsops import FAILING_IO, NO_DESCRIPTOR
from spool.ids import id_from_name
from spool.layout import Layout
from spool.states import TERMINAL, JobState
from statusd.announce import announce
from statusd.behind import RecordsBehind
from statusd.hub import Hub
from statusd.index import Index
from statusd.items import Item, Stamp
from statusd.loader import Absent, Loader, failed_file
from statusd.loading import Loading, LoadStopped, ScanFigures, scan_figures
from statusd.metrics import Metrics

log = logging.getLogger("spoolq.statusd")
R = TypeVar("R")

RESCAN_DUTY = 10.0
"""The rescan interval is at least this many times the last rescan's duration."""
_WATCHED = frozenset({*(s.value for s in JobState), "progress"})
_RECORDS = frozenset(s.value for s in TERMINAL)
REWATCH_S = 1.0
"""While a watched folder is gone, how often to look for it again (the processor's
heartbeat does the same for its feed)."""
APPLY_CHUNK = 256
"""Changes applied between two chances for WebSocket clients to read (see Hub.settle)."""
LOOK_FIRST_MAX = 8
"""At most this many dirty ids are looked at on the loop before a re-read (see
Tracker._unchanged_left_out); more go to the worker thread as they are."""
VANISH_GRACE_S = 2.0
"""How long an id in no state folder is still shown as it was (a move through tmp/)."""


class Tracker:
    """The live side of statusd: feed, rescans, index updates, events."""

    def __init__(self, layout: Layout, index: Index, hub: Hub, metrics: Metrics,
                 scan_s: float) -> None:
        self.layout = layout
        self.index = index
        self.hub = hub
        self.metrics = metrics
        self.scan_s = scan_s
        self.loader = Loader(layout)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="statusd-index")
        self._lock = asyncio.Lock()
        self._lock_users = 0
        """Tasks holding or waiting for ``_lock`` (see :meth:`_applying`)."""
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._rescan_now = False
        self._feed: ChangeFeed | PolledFeed | None = None
        self._feed_fd = -1
        """The polled feed's descriptor, while the loop reads it."""
        self._short_of_inotify: OSError | None = None
        """Why the feed is missing or partial for want of inotify, once said in the log."""
        self._feed_failed: OSError | None = None
        """Why the feed's last read failed, once said in the log; None once one succeeds."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._missing: dict[str, float] = {}
        """Ids found in no state folder, and when (monotonic) they are removed if still gone."""
        self._expired: set[str] = set()
        """Missing ids being looked at once more (their grace has passed)."""
        self._recorded: set[str] = set()
        """Dirty ids a hint from ``done/`` or ``failed/`` named (see :mod:`statusd.behind`)."""
        self._behind = RecordsBehind(index, metrics)
        self._unseen: set[str] = set()
        """Ids the start's scan left out (the disk could not stat a file of theirs): found
        later, each is what the spool held at start, not a move then (see :meth:`_apply`)."""
        self._unreadable_said: set[str] = set()
        """The ids the last scan left out (see :meth:`_say_unreadable`)."""
        self._quiet_until = 0.0
        """Until when (monotonic) a failed read logs no line: one per rescan interval."""
        self.loading = Loading()
        """How far the index's load is (statusd serves meanwhile: :mod:`statusd.indexing`)."""
        self.vanish_grace_s = VANISH_GRACE_S
        self.last_scan_s = 0.0
        self.startup_s = 0.0
        self.removed = 0
        """Ids that left the spool (a purge, an ``rm``) since start: no event tells of them."""
        self.spool_missing = False
        """The spool's folders were not all there at the last look (see :meth:`_spool_here`)."""
        self.spool_trouble: OSError | None = None
        """Why the spool's folders could not be looked at (EIO), while that lasts: they
        were said to be gone ("unmounted, moved?"), where the disk failed to tell."""
        self._spool_said: str | None = None  # what the log last said of the folders
        self.scan_trouble: OSError | None = None
        """The error (EIO, EACCES) that failed the last rescan's listing of a state folder,
        until a rescan goes through.  The folders' stat can go through (the inodes
        cached) while their listing fails: every rescan failed, the index stood still,
        and /healthz said ok."""

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the feed, then load the whole spool into the index."""
        self.start_feed()
        await self.load()

    def start_feed(self) -> None:
        """Start the change feed, before the load's scan (see the guarantees above)."""
        self._loop = asyncio.get_running_loop()
        self._start_feed()

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
        loading.done()

    async def _load(self, loading: Loading) -> None:
        behind: dict[str, Stamp] = {}
        unreadable: set[str] = set()
        async with self._applying():
            stamps, figures = await self._run(self._scan_at_start, behind, unreadable)
            self._behind.rescanned(behind)  # the runs that ended before: not counted
            loading.scanned(figures)
            scanned = time.monotonic()
            items = await self._run(self.loader.load_all, stamps, unreadable, loading)
            del stamps
            loading.sorting()
            loaded = time.monotonic()
            built = await self._run(_built_index, items)
            del items
            self._say_unreadable(unreadable)
            self._unseen = unreadable  # those it could not stat, or read
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
            if self._to_rewatch():
                timeout = min(timeout, REWATCH_S)
            if self._missing:  # the first deadline is the earliest: see _vanish
                first = next(iter(self._missing.values()))
                timeout = min(timeout, max(0.0, first - time.monotonic()))
            # Not asyncio.wait_for: on Python 3.11 it drops a cancel that comes in the
            # steps after a wake, and the loop outlived shutdown's cancel (shutdown hung,
            # then every rescan hit the closed worker thread).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if self._rewatch():
                    self._rescan_now = True  # watched again: a rescan finds what came meanwhile
                if self._dirty:
                    recorded, self._recorded = self._recorded, set()
                    dirty, self._dirty = self._unchanged_left_out(self._dirty), set()
                    if dirty:  # one the disk cannot read: left, said at the next rescan
                        await self.refresh(dirty, set())
                    if recorded:
                        await self._count_behind(recorded)
                await self._recheck_missing()
                if self._rescan_now or time.monotonic() >= next_scan:
                    self._rescan_now = False
                    await self.rescan()
                    next_scan = time.monotonic() + max(self.scan_s,
                                                       RESCAN_DUTY * self.last_scan_s)
            except (OSError, SpoolIOError) as exc:  # out of descriptors, say: it passes
                now = time.monotonic()
                # A listing the disk fails was said once by rescan: an hour of it was 720
                # lines at the default SPOOL_SCAN_S.
                if exc is not self.scan_trouble and now >= self._quiet_until:
                    log.warning("reading the spool failed (%s); retrying on the next rescan",
                                exc)
                    self._quiet_until = now + self.scan_s
                next_scan = now + self.scan_s  # not at once: no busy retry loop
            except Exception:  # a bug must not freeze the index: log it, rescan later
                log.exception("updating the index failed; retrying on the next rescan")
                next_scan = time.monotonic() + self.scan_s

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
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.loader.close()

    def _start_feed(self) -> None:
        folders = [self.layout.folder(s) for s in JobState] + [self.layout.progress]
        if PolledFeed.available() and self._loop is not None:
            feed = PolledFeed(folders, self._on_event)
            if not feed.try_start():
                self._say_shortage(feed.shortage)
                return
            self._loop.add_reader(feed.fileno(), self._drain)
            self._feed, self._feed_fd = feed, feed.fileno()
            self._say_shortage(feed.shortage)
        else:  # pragma: no cover - not Linux: a feed thread hands its hints over
            self._feed = ChangeFeed(folders, self._on_change)
            self._feed.start()

    def _to_rewatch(self) -> bool:
        """Whether :meth:`_rewatch` has something to do (each ``REWATCH_S``): no feed, for
        inotify's limits or a read that failed, or a folder unwatched.  A feed started
        again after its read failed woke the loop each second until an event came."""
        if self._feed is None:
            return self._short_of_inotify is not None or self._feed_failed is not None
        return bool(self._feed.unwatched) or self._short_of_inotify is not None

    def _rewatch(self) -> bool:
        """Watch again what lost its watch, or start the feed inotify's limits kept out;
        True when a folder is watched again (a rescan finds what came meanwhile)."""
        if self._feed is None:
            if self._short_of_inotify is None and self._feed_failed is None:
                return False
            try:
                self._start_feed()
            except OSError as exc:  # not a limit: the rescans go on as they are
                log.debug("change feed not started again: %s", exc)
                return False
            return self._feed is not None
        found = self._feed.rewatch()
        if isinstance(self._feed, PolledFeed):
            self._say_shortage(self._feed.shortage)
        return found

    def _drain(self) -> None:
        """The loop's reader of the polled feed.  A read that fails (EIO, ENOMEM) drops the
        feed: its descriptor stays readable, and the loop called a failing reader again at
        once, logging a traceback each time at full CPU.  The spool is rescanned now and
        the feed started again within :data:`REWATCH_S` (rescanning), as when inotify's
        limits kept it out; one warning until a read succeeds again."""
        feed = self._feed
        if not isinstance(feed, PolledFeed):
            return
        try:
            feed.drain()
        except OSError as exc:
            if self._feed_failed is None:
                log.warning("the change feed cannot be read (%s): rescanning the spool, "
                            "and starting the feed again every %g s", exc, REWATCH_S)
            self._feed_failed = exc
            self.stop_feed()
            self._rescan_now = True
            self._wake.set()
            return
        if self._feed_failed is not None:
            log.info("change feed read again")
            self._feed_failed = None

    def _say_shortage(self, shortage: OSError | None) -> None:
        """A warning when inotify's limits first keep a folder unwatched, an info line
        once every folder is watched again."""
        if shortage is not None and self._short_of_inotify is None:
            log.warning("inotify limit reached (%s; see fs.inotify.max_user_instances and "
                        "max_user_watches): following the spool by rescans every %g s",
                        shortage, self.scan_s)
        elif shortage is None and self._short_of_inotify is not None:
            log.info("inotify back: following the spool by its change feed again")
        self._short_of_inotify = shortage

    def stop_feed(self) -> None:
        """Stop the feed (on the loop); nothing is reported after."""
        feed, self._feed = self._feed, None
        if self._feed_fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._feed_fd)  # before the descriptor is closed
        self._feed_fd = -1
        if feed is not None:
            feed.stop()

    # -- updates ----------------------------------------------------------------------

    async def refresh(self, job_ids: Iterable[str], unreadable: set[str] | None = None
                      ) -> None:
        """Re-read the given ids now and apply what changed (also used after HTTP writes).
        An id whose files the disk fails to look up or read is kept as it was: with
        ``unreadable``, one the disk fails (EIO) is added to it, for the caller to say
        once; else its error is raised once the others are applied (it failed them all,
        until a rescan)."""
        ids = list(job_ids)
        failed: dict[str, SpoolIOError] = {}
        async with self._applying():
            known = self.index.stamps_of(ids)
            changes = await self._run(self._refresh_if_here, ids, known, failed)
            if changes is None:
                return
            chunk = max(1, min(APPLY_CHUNK, self.hub.queue_max // 2))
            for n, (job_id, item) in enumerate(changes, 1):
                self._apply(job_id, item)
                if n % chunk == 0:
                    await self.hub.settle()  # a burst never fills a live client's queue
        if unreadable is not None:
            said = {job_id for job_id, exc in failed.items() if failed_file(exc)}
            unreadable.update(said)
            failed = {job_id: exc for job_id, exc in failed.items() if job_id not in said}
        if failed:
            raise next(iter(failed.values()))

    def _unchanged_left_out(self, dirty: set[str]) -> set[str]:
        """The dirty ids less those whose indexed file surely still tells their state.

        A finished job is several hints a folder fsync apart (its record, its running
        file, its progress file), and only the first changes anything: the others each
        cost a hop to the worker thread, a re-read of nothing new and a hop back, more
        CPU than the four or five lstat calls (:meth:`Loader.unchanged`, on the loop as
        :meth:`catch_up` does) that tell so.  Only for a few ids: a burst goes to the
        worker whole, so the loop never does a burst's lstat calls itself.
        """
        if len(dirty) > LOOK_FIRST_MAX:
            return dirty
        left = set()
        for job_id in dirty:
            item = self.index.get(job_id)
            if item is None or job_id in self._missing \
                    or not self.loader.unchanged(job_id, item.stamp):
                left.add(job_id)
        return left

    async def catch_up(self, job_id: str, *, wait: bool = True) -> bool:
        """Bring the item of ``job_id`` up to what is on disk now (a GET, a task stream's
        snapshot); False when it is older than the disk and was left so (``wait=False``).

        The index learns of a move a feed round trip after it (inotify, the loop, a read
        in the worker thread): a client that saw ``failed/<id>.json`` land, or ``spoolq
        wait`` return, and asked at once was told ``running`` (20 of 100 tries).  So the
        item's file is looked at first (a few lstat calls, :meth:`Loader.unchanged`, on
        the loop: a thread hop would cost more than they do), and an item that no longer
        matches is refreshed as a hint would refresh it: the list, the counts and the
        streams move with it, and the feed's own hint then finds nothing new.

        ``wait=False``: while a batch is being applied (30,000 jobs finishing at once, a
        rescan's many changes), the refresh would queue behind all of it (a GET waited
        3.3 s), so False comes at once: a GET then reads the record from disk itself, a
        task stream starts from the index and gets the move as a transition once the
        hint that reported it is applied.
        """
        item = self.index.get(job_id)
        if item is None or self.loader.unchanged(job_id, item.stamp):
            return True
        if not wait and self.busy():
            return False
        await self.refresh([job_id])
        return True

    def busy(self) -> bool:
        """Whether a load-and-apply holds the index's lock or waits for it.  Not
        ``_lock.locked()`` alone: it reads False between one holder's release and the
        wake of the next in line, and a handshake that looked then refreshed its task
        behind that next batch, waiting as long as it (a task stream's handshake went
        unanswered for 5 s)."""
        return self._lock.locked() or self._lock_users > 0

    @contextlib.asynccontextmanager
    async def _applying(self) -> AsyncIterator[None]:
        """``_lock`` for the block, counted from the wait on (see :meth:`busy`)."""
        self._lock_users += 1
        try:
            async with self._lock:
                yield
        finally:
            self._lock_users -= 1

    def moving(self, job_id: str) -> bool:
        """Whether ``job_id`` is in no state folder and shown as it was, its file on a
        move through ``tmp/`` (see :class:`statusd.loader.Absent`)."""
        return job_id in self._missing

    def spool_health(self) -> str:
        """What /healthz (and the metrics' ``spoolq_statusd_spool_ok``) say of the spool:
        ``ok``, ``spool_missing`` (no state folder there) or ``spool_unreadable`` (the
        disk fails to show or list them); the index is kept as it was meanwhile."""
        if self.spool_missing:
            # The disk failing to tell (EIO) is not a spool gone: an operator looked for an
            # unmount where a disk was failing.
            return "spool_unreadable" if self.spool_trouble is not None else "spool_missing"
        return "ok" if self.scan_trouble is None else "spool_unreadable"

    async def rescan(self) -> None:
        started = time.monotonic()
        behind: dict[str, Stamp] = {}
        unreadable: set[str] = set()
        try:
            stamps = await self._run(self._scan_if_here, behind, unreadable)
        except OSError as exc:
            # Not out of descriptors (that passes): the disk failing (EIO), or a folder
            # statusd may no longer list (EACCES: a restore that left it root's), which
            # /healthz said ok while the index stood still, a warning at each rescan.
            if exc.errno not in NO_DESCRIPTOR:
                if self.scan_trouble is None:  # said once an outage, not at each rescan
                    log.error("cannot list the spool's folders in %s (%s): the index is "
                              "kept as it was until they can be", self.layout.root, exc)
                self.scan_trouble = exc
            raise
        if stamps is None:  # gone (or not to be looked at): /healthz says that first
            return
        if self.scan_trouble is not None:
            log.warning("the spool's folders in %s can be listed again", self.layout.root)
            self.scan_trouble = None
        # An id left out is kept as it was, not re-read: its look-up fails again, and
        # that failed the refresh of every id this rescan found changed.
        changed = [job_id for job_id in await self._run(_diff, stamps, self.index.stamps())
                   if job_id not in unreadable]
        # An id with a record new behind its drop is re-read too, so that the index says
        # whether it is still active before that record is counted as a run behind it:
        # the folders are listed one after another, and a job listed in pending/ that
        # ran and finished before done/ was listed looked like one (its drop and its
        # record both seen, the index still saying pending), counted so and again as
        # the transition it was once the index caught up.
        listed = set(changed)
        changed += [job_id for job_id in self._behind.changed(behind)
                    if job_id not in unreadable and job_id not in listed]
        try:
            if changed:
                await self.refresh(changed, unreadable)  # and those it cannot read
        except BaseException:
            # Another id's error (ESTALE, ENOMEM) ends the pass: those the disk failed in
            # it are said all the same (they went unsaid while it lasted), and those said
            # before are kept, as this pass did not look at them all.
            if unreadable:
                self._say_unreadable(unreadable | self._unreadable_said)
            raise
        self._say_unreadable(unreadable)
        if recorded := self._behind.rescanned(behind):  # a run ended behind a re-drop
            await self._count_behind(set(recorded))
        self.last_scan_s = time.monotonic() - started

    async def _recheck_missing(self) -> None:
        """Look once more at the missing ids whose grace has passed: removed if still gone.

        Each gets one look: should it fail (a read error), the ids stay as they were
        until a rescan finds them missing again, so a failing disk cannot spin the loop.
        """
        now = time.monotonic()
        due = []
        for job_id, until in self._missing.items():  # in deadline order (insertion)
            if until > now:
                break
            due.append(job_id)
        if not due:
            return
        for job_id in due:
            del self._missing[job_id]
        self._expired.update(due)
        try:
            await self.refresh(due)
        finally:
            self._expired.difference_update(due)

    def _refresh_if_here(self, ids: list[str], known: dict[str, Stamp],
                         failed: dict[str, SpoolIOError]
                         ) -> list[tuple[str, Item | Absent]] | None:
        """The loader's refresh, on the worker thread, None when the spool is gone: the
        look for it rides the same hop to the thread, not one of its own."""
        return self.loader.refresh(ids, known, failed) if self._spool_here() else None

    def _scan_if_here(self, behind: dict[str, Stamp], unreadable: set[str]
                      ) -> dict[str, Stamp] | None:
        return self.loader.scan(behind, unreadable) if self._spool_here() else None

    def _say_unreadable(self, ids: set[str]) -> None:
        """A warning naming the ids a scan left out because the disk could not stat one
        of their files, when one is new to it; an info line once a scan leaves none out.
        Said at each rescan (every ``SPOOL_SCAN_S``: 17,000 lines a day for one bad
        sector), and on the quiet time of the read failures' warning, which it hid."""
        if not ids:
            if self._unreadable_said:
                log.info("the job files that could not be looked at can all be looked "
                         "at again")
                self._unreadable_said = set()
            return
        if not ids <= self._unreadable_said:
            shown = ", ".join(sorted(ids)[:5]) + (" ..." if len(ids) > 5 else "")
            log.warning("%d job files could not be looked at (I/O error), left as they "
                        "were: %s", len(ids), shown)
        self._unreadable_said = set(ids)

    def _spool_here(self) -> bool:
        """Whether the spool is there: any of its state folders.  When none is (the
        spool unmounted, moved away, a restore under way) the index stays as it was and
        /healthz says so: emptied, it showed a healthy empty spool, and when the folders
        came back every record was counted again in the metrics as a new transition.
        One folder removed (``rm -r pending``) takes its jobs with it, as before."""
        here, trouble = _folders_here(self.layout)
        said = None if here else (str(trouble) if trouble is not None else "missing")
        if said != self._spool_said:
            if here:
                log.warning("the spool's folders are back in %s: following it again",
                            self.layout.root)
            elif trouble is not None:
                log.error("cannot look at the spool's folders in %s (%s): the index is "
                          "kept as it was until they can be", self.layout.root, trouble)
            else:
                log.error("no state folder in %s: the spool is gone (unmounted, moved?); "
                          "the index is kept as it was until it is back", self.layout.root)
        self._spool_said = said
        self.spool_missing = not here
        self.spool_trouble = None if here else trouble
        return here

    def _apply(self, job_id: str, item: Item | Absent) -> None:
        if item is Absent.DENIED:  # there: GET says so, naming its file
            self._missing.pop(job_id, None)
            return
        if item is Absent.MOVING:
            self._vanish(job_id)
            return
        if item is Absent.GONE:
            self._missing.pop(job_id, None)
            self._unseen.discard(job_id)
            self._remove(job_id)
            return
        self._missing.pop(job_id, None)
        old = self.index.put(item)
        self._behind.applied(old, item)
        # One the start's scan left out ended before statusd started, as those it loaded:
        # counted, the disk's recovery was a burst of finishes in the metrics.
        seen_at_start = old is None and job_id in self._unseen
        self._unseen.discard(job_id)
        announce(self.hub, self.metrics, old, item, counted=not seen_at_start)

    async def _count_behind(self, job_ids: set[str]) -> None:
        """Count the runs that ended behind a new drop of their id (:mod:`statusd.behind`)."""
        ids = self._behind.active(job_ids)
        if ids:
            async with self._applying():
                self._behind.found(await self._run(self._records_behind, ids))

    def _records_behind(self, ids: list[str]) -> list[Item]:
        return [item for job_id in ids
                if (item := self.loader.record_behind(job_id)) is not None]

    def _vanish(self, job_id: str) -> None:
        """An id in no state folder: kept as it was until its grace passes, then removed.

        Deadlines are now plus one grace, so ``_missing`` (a dict, in insertion order)
        stays in deadline order.
        """
        if job_id not in self._expired:
            if job_id not in self._missing:
                self._missing[job_id] = time.monotonic() + self.vanish_grace_s
                self._wake.set()  # so run() recomputes its timeout with this deadline
            return
        self._remove(job_id)

    def _remove(self, job_id: str) -> None:
        self._behind.removed(job_id)
        if self.index.remove(job_id) is not None:
            self.removed += 1
            self.hub.end(job_id)

    # -- plumbing ---------------------------------------------------------------------

    def _on_event(self, folder: str, name: str) -> None:
        """A feed hint, on the loop: only mark the id dirty and wake :meth:`run`."""
        if not folder:  # events were lost (overflow, a folder replaced): rescan now
            self._rescan_now = True
            self._wake.set()
            return
        if folder not in _WATCHED:
            return
        job_id = id_from_name(name)
        if job_id is not None:
            if folder in _RECORDS:
                self._recorded.add(job_id)
            self._mark(job_id)

    def _mark(self, job_id: str) -> None:
        self._dirty.add(job_id)
        self._wake.set()

    def _on_change(self, folder: str, name: str) -> None:
        """A hint from another thread (a :class:`ChangeFeed`'s): handed to the loop."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to wake
            self._loop.call_soon_threadsafe(self._on_event, folder, name)

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _built_index(items: list[Item]) -> Index:
    """An index of ``items``, built on the worker thread (its sort took 0.8 s of the loop
    at 124,000 records), seen by nobody until it is swapped in (:meth:`Index.take`)."""
    index = Index()
    index.load(items)
    return index


def _folders_here(layout: Layout) -> tuple[bool, OSError | None]:
    """Whether any state folder is there; when none is known to be, the error that kept
    one from being looked at (a failing disk: ``os.path.isdir`` took EIO for "none")."""
    trouble = None
    for state in JobState:
        try:
            if stat.S_ISDIR(os.stat(layout.folder(state)).st_mode):
                return True, None
        except OSError as exc:  # not there, or not for this user: "none", as before
            if exc.errno in FAILING_IO:
                trouble = exc
    return False, trouble


def _diff(current: dict[str, Stamp], known: dict[str, Stamp]) -> list[str]:
    """Ids whose stamp differs between a scan and the index (new, changed or gone)."""
    changed = [job_id for job_id, stamp in current.items() if known.get(job_id) != stamp]
    changed.extend(job_id for job_id in known if job_id not in current)
    return changed
