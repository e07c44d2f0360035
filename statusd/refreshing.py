"""Keeps the index matching the disk for the ids it is asked about, and for the whole
spool at a rescan: each read in one worker thread, each result applied on the loop
(:class:`statusd.applying.Applier`) under one lock.

Owns: the index's worker thread and lock (:meth:`Refresher.busy`), re-reading ids
(:meth:`Refresher.refresh`: a hint's, an HTTP write's), bringing one item up to the
disk before a GET answers (:meth:`Refresher.catch_up`), the rescan that finds what
hints missed (:meth:`Refresher.rescan`), the second look at ids whose vanish grace
passed, and counting runs that ended behind a new drop (:mod:`statusd.behind`).
:class:`statusd.tracker.Tracker` adds the feed, the start's load and the loop that
calls these.

Guarantees: the index is mutated only on the event loop, and every load-and-apply
runs under one lock, so a slow read can never overwrite a newer one.  While the
spool's folders are gone (:mod:`statusd.health`) nothing is applied: the index is
kept as it was.  An id whose files the disk fails to read is kept as it was, and the
others of its batch are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from spool.errors import SpoolIOError
from spool.layout import Layout
from statusd.applying import Applier
from statusd.behind import RecordsBehind
from statusd.health import SpoolHealth
from statusd.hub import Hub
from statusd.index import Index
from statusd.items import Item, Stamp
from statusd.loader import Absent, Loader, failed_file
from statusd.metrics import Metrics

R = TypeVar("R")

APPLY_CHUNK = 32
"""Changes applied between two chances for WebSocket clients to read (see Hub.settle),
and for the loop to answer requests: 170 at once (3 messages each to 200 clients' queues)
held ``/healthz`` 0.6 s in a burst of 3,000 records, 32 at once 0.14 to 0.22 s, for the
same events a second (``python -m bench.ws_fanout``)."""
LOOK_FIRST_MAX = 8
"""At most this many dirty ids are looked at on the loop before a re-read (see
Refresher._unchanged_left_out); more go to the worker thread as they are."""


class Refresher:
    """Re-reads and applies on request; :meth:`close` when done."""

    def __init__(self, layout: Layout, index: Index, hub: Hub, metrics: Metrics, *,
                 wake: Callable[[], None]) -> None:
        """``wake``: wakes the loop that waits for the first vanish grace to pass."""
        self.layout = layout
        self.index = index
        self.hub = hub
        self.metrics = metrics
        self.loader = Loader(layout)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="statusd-index")
        self._lock = asyncio.Lock()
        self._lock_users = 0
        """Tasks holding or waiting for ``_lock`` (see :meth:`_applying`)."""
        self.health = SpoolHealth(layout)
        self._behind = RecordsBehind(index, metrics)
        self.applier = Applier(index, hub, metrics, self._behind, wake)
        self.last_scan_s = 0.0

    def close(self) -> None:
        """Close the worker thread (once nothing reads any more) and the loader."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.loader.close()

    async def refresh(self, job_ids: Iterable[str], unreadable: set[str] | None = None,
                      *, by_change: bool = False) -> None:
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
            if by_change:  # in the order the files it read last changed (stable: a tie
                # keeps the hints' order), not as the listing saw them
                changes.sort(key=lambda c: c[1].stamp.ctime_ns if isinstance(c[1], Item)
                             else 0)
            # A change may be told in up to three messages (two inferred transitions
            # before it: statusd.announce), so a chunk is a sixth of a queue, not half.
            chunk = max(1, min(APPLY_CHUNK, self.hub.queue_max // 6))
            for n, (job_id, item) in enumerate(changes, 1):
                self.applier.apply(job_id, item)
                if n % chunk == 0:
                    await self.hub.settle()  # a burst never fills a live client's queue
        if unreadable is not None:
            said = {job_id for job_id, exc in failed.items() if failed_file(exc)}
            unreadable.update(said)
            failed = {job_id: exc for job_id, exc in failed.items() if job_id not in said}
        if failed:
            raise next(iter(failed.values()))

    def _unchanged_left_out(self, dirty: list[str]) -> list[str]:
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
        left = []
        for job_id in dirty:
            item = self.index.get(job_id)
            if item is None or self.applier.moving(job_id) \
                    or not self.loader.unchanged(job_id, item.stamp):
                left.append(job_id)
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
        move through ``tmp/`` (:meth:`statusd.applying.Applier.moving`)."""
        return self.applier.moving(job_id)

    def spool_health(self) -> str:
        """What /healthz says of the spool (:meth:`statusd.health.SpoolHealth.status`)."""
        return self.health.status()

    @property
    def removed(self) -> int:
        """Ids that left the spool (a purge, an ``rm``) since start: no event tells of them."""
        return self.applier.removed

    async def rescan(self) -> None:
        started = time.monotonic()
        behind: dict[str, Stamp] = {}
        unreadable: set[str] = set()
        try:
            stamps = await self._run(self._scan_if_here, behind, unreadable)
        except OSError as exc:
            self.health.listing_failed(exc)
            raise
        if stamps is None:  # gone (or not to be looked at): /healthz says that first
            return
        self.health.listed()
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
                # In the order the files last changed (gone ids first: when is not
                # known), not the folders' listing order: after events were lost, what
                # they would have told goes out as it happened.
                await self.refresh(changed, unreadable, by_change=True)  # + those it cannot read
        except BaseException:
            # Another id's error (ESTALE, ENOMEM) ends the pass: those the disk failed in
            # it are said all the same (they went unsaid while it lasted), and those said
            # before are kept, as this pass did not look at them all.
            if unreadable:
                self.health.say_unreadable_too(unreadable)
            raise
        self.health.say_unreadable(unreadable)
        if recorded := self._behind.rescanned(behind):  # a run ended behind a re-drop
            await self._count_behind(set(recorded))
        self.last_scan_s = time.monotonic() - started

    async def _recheck_missing(self) -> None:
        """Look once more at the missing ids whose grace has passed: removed if still gone.

        Each gets one look: should it fail (a read error), the ids stay as they were
        until a rescan finds them missing again, so a failing disk cannot spin the loop.
        """
        due = self.applier.due()
        if due:
            with self.applier.expiring(due):
                await self.refresh(due)

    def _refresh_if_here(self, ids: list[str], known: dict[str, Stamp],
                         failed: dict[str, SpoolIOError]
                         ) -> list[tuple[str, Item | Absent]] | None:
        """The loader's refresh, on the worker thread, None when the spool is gone: the
        look for it rides the same hop to the thread, not one of its own."""
        return self.loader.refresh(ids, known, failed) if self.health.here() else None

    def _scan_if_here(self, behind: dict[str, Stamp], unreadable: set[str]
                      ) -> dict[str, Stamp] | None:
        return self.loader.scan(behind, unreadable) if self.health.here() else None

    async def _count_behind(self, job_ids: set[str]) -> None:
        """Count the runs that ended behind a new drop of their id (:mod:`statusd.behind`)."""
        ids = self._behind.active(job_ids)
        if ids:
            async with self._applying():
                self._behind.found(await self._run(self._records_behind, ids))

    def _records_behind(self, ids: list[str]) -> list[Item]:
        return [item for job_id in ids
                if (item := self.loader.record_behind(job_id)) is not None]

    # -- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _diff(current: dict[str, Stamp], known: dict[str, Stamp]) -> list[str]:
    """Ids whose stamp differs between a scan and the index (new, changed or gone)."""
    changed = [job_id for job_id, stamp in current.items() if known.get(job_id) != stamp]
    changed.extend(job_id for job_id in known if job_id not in current)
    return changed
