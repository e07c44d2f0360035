"""What a read of the spool found, applied to the index on the event loop and told.

Owns: putting an id's new item in the index and announcing it
(:func:`statusd.announce.announce`), removing an id that left the spool (its task
streams ended, counted in ``removed``), and the grace of an id found in no state
folder while its file moves (:data:`VANISH_GRACE_S`).

Guarantees: an id found in no state folder whose file is staged in ``tmp/`` is shown
as it was for ``vanish_grace_s``: a cancel of a pending job, a retry and a quarantine
move the file through ``tmp/`` (for a write and its fsync), and the job must not drop
out of lists and counts meanwhile, nor its next state be reported as coming from
nowhere.  An id still gone after that is removed, and its task streams are ended.
An id in neither place (a purge, an ``rm``) is removed at once
(:meth:`statusd.loader.Loader.refresh` tells the two apart).  An id the start's scan
left out, found later, is what the spool held at start, not a move then; and so is an id
removed since that comes back with the very file it had (a folder or the spool moved
away and put back, a restore that keeps mtimes): the last GONE_KEPT ids removed are
remembered with their state and mtime.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from spool.states import JobState
from statusd.announce import announce
from statusd.behind import RecordsBehind
from statusd.hub import Hub
from statusd.index import Index
from statusd.items import Item, Stamp
from statusd.loader import Absent
from statusd.metrics import Metrics

VANISH_GRACE_S = 2.0
"""How long an id in no state folder is still shown as it was (a move through tmp/)."""
GONE_KEPT = 50_000
"""Ids removed that are remembered (about 260 bytes each for ids of some 24 characters,
13 MB in all; 364 bytes, 18 MB, for ids of 128 characters, the longest), to tell one put
back (a folder moved away and back) from a new one: counted again, a restored done/ of
3,016 records was 3,016 finishes in the metrics and three made-up transitions each on the
streams (QA).  Past it, the oldest removals are forgotten (and counted again if back)."""


class Applier:
    """Applies the tracker's reads to the index (on the loop only)."""

    def __init__(self, index: Index, hub: Hub, metrics: Metrics, behind: RecordsBehind,
                 wake: Callable[[], None]) -> None:
        self.index = index
        self.hub = hub
        self.metrics = metrics
        self._behind = behind
        self._wake = wake
        """Wakes the tracker's loop, so it recomputes its timeout with a new deadline."""
        self.vanish_grace_s = VANISH_GRACE_S
        self.removed = 0
        """Ids that left the spool (a purge, an ``rm``) since start: no event tells of them."""
        self.unseen: set[str] = set()
        """Ids the start's scan left out (the disk could not stat a file of theirs): found
        later, each is what the spool held at start, not a move then (see :meth:`apply`)."""
        self._missing: dict[str, float] = {}
        """Ids found in no state folder, and when (monotonic) they are removed if still gone."""
        self._expired: set[str] = set()
        """Missing ids being looked at once more (their grace has passed)."""
        self._gone: OrderedDict[str, tuple[JobState, int]] = OrderedDict()
        """The last GONE_KEPT ids removed: the state and mtime of the file each had."""

    def apply(self, job_id: str, item: Item | Absent) -> None:
        """Put ``job_id``'s new item in the index and announce it, or act on how it is
        absent (see the module's guarantees)."""
        if item is Absent.DENIED:  # there: GET says so, naming its file
            self._missing.pop(job_id, None)
            return
        if item is Absent.MOVING:
            self._vanish(job_id)
            return
        if item is Absent.GONE:
            self._missing.pop(job_id, None)
            self.unseen.discard(job_id)
            self._remove(job_id)
            return
        self._missing.pop(job_id, None)
        old = self.index.put(item)
        self._behind.applied(old, item)
        # One the start's scan left out ended before statusd started, as those it loaded:
        # counted, the disk's recovery was a burst of finishes in the metrics.  One put
        # back as it was when removed is no new transition either.
        known = old is None and (job_id in self.unseen or self._gone.pop(job_id, None) == (
            item.stamp.state, item.stamp.mtime_ns))
        self.unseen.discard(job_id)
        announce(self.hub, self.metrics, old, item, counted=not known)

    def moving(self, job_id: str) -> bool:
        """Whether ``job_id`` is in no state folder and shown as it was, its file on a
        move through ``tmp/`` (see :class:`statusd.loader.Absent`)."""
        return job_id in self._missing

    def first_deadline(self) -> float | None:
        """When (monotonic) the first missing id's grace passes; None when none is missing."""
        # The first deadline is the earliest: see _vanish.
        return next(iter(self._missing.values())) if self._missing else None

    def due(self) -> list[str]:
        """The missing ids whose grace has passed, no longer missing: each is to be looked
        at once more (:meth:`expiring`), and removed if still gone."""
        now = time.monotonic()
        due = []
        for job_id, until in self._missing.items():  # in deadline order (insertion)
            if until > now:
                break
            due.append(job_id)
        for job_id in due:
            del self._missing[job_id]
        return due

    @contextlib.contextmanager
    def expiring(self, job_ids: list[str]) -> Iterator[None]:
        """For the block, ``job_ids`` (of :meth:`due`) are removed if found moving again."""
        self._expired.update(job_ids)
        try:
            yield
        finally:
            self._expired.difference_update(job_ids)

    def _vanish(self, job_id: str) -> None:
        """An id in no state folder: kept as it was until its grace passes, then removed.

        Deadlines are now plus one grace, so ``_missing`` (a dict, in insertion order)
        stays in deadline order.
        """
        if job_id not in self._expired:
            if job_id not in self._missing:
                self._missing[job_id] = time.monotonic() + self.vanish_grace_s
                self._wake()  # so the loop recomputes its timeout with this deadline
            return
        self._remove(job_id)

    def _remove(self, job_id: str) -> None:
        self._behind.removed(job_id)
        if (gone := self.index.remove(job_id)) is not None:
            self.removed += 1
            self.hub.end(job_id)
            self.remember_gone([(job_id, gone.stamp)])

    def remember_gone(self, gone: Iterable[tuple[str, Stamp]]) -> None:
        """Ids that left the spool, each with the stamp of the file it had: one that comes
        back with that file is no new transition (see :meth:`apply`)."""
        for job_id, stamp in gone:
            self._gone[job_id] = (stamp.state, stamp.mtime_ns)
            self._gone.move_to_end(job_id)
        while len(self._gone) > GONE_KEPT:
            self._gone.popitem(last=False)
