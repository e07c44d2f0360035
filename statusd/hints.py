"""The change feed statusd's tracker follows the spool by, and what its hints ask.

How (Postfix's pickup, in asyncio): a :class:`spool.feed.PolledFeed` on the
state folders and ``progress/``, read by the event loop itself (its inotify
descriptor is one of the loop's readers), only marks ids dirty and wakes the
loop; the loop re-reads those ids in a worker thread and applies the result
(:class:`statusd.tracker.Tracker`).  Where inotify cannot be polled, a
:class:`spool.feed.ChangeFeed` thread hands the same hints to the loop.  (A feed
thread cost each hint a thread wake, a GIL hand-off and a self-pipe write: about a
sixth of statusd's CPU per event when events came one by one.)  A watched folder
that is replaced (``mv pending pending.old && mkdir pending``) asks a rescan at
once, and is watched again as soon as it is back: at once, or within
``REWATCH_S``, and a rescan follows.  Where inotify's kernel limits are reached
(another program of the same user holds every instance or watch), there is no feed
or a folder is unwatched: the rescans keep the index current, a warning says so
once, and the feed is tried again every ``REWATCH_S`` (an info line once it is
whole).  A feed whose read fails is dropped and started again the same way.

Guarantees: hints are only marks and a wake, on the loop; nothing is read here.  A
stopped feed reports nothing after :meth:`Hints.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from spool.feed import ChangeFeed, PolledFeed
from spool.ids import id_from_name
from spool.layout import Layout
from spool.states import TERMINAL, JobState

log = logging.getLogger("spoolq.statusd")

_WATCHED = frozenset({*(s.value for s in JobState), "progress"})
_RECORDS = frozenset(s.value for s in TERMINAL)
REWATCH_S = 1.0
"""While a watched folder is gone, how often to look for it again (the processor's
heartbeat does the same for its feed)."""


class Hints:
    """The feed of one spool's folders, the ids its hints marked dirty, and the wake of
    the loop that applies them."""

    def __init__(self, layout: Layout, scan_s: float) -> None:
        self.layout = layout
        self.scan_s = scan_s
        self.wake = asyncio.Event()
        """Set by a hint (or anything else the tracker's loop must look at now)."""
        self._dirty: dict[str, None] = {}
        """Ids marked dirty, in the order of their latest hint (see :meth:`take`)."""
        self._recorded: set[str] = set()
        """Dirty ids a hint from ``done/`` or ``failed/`` named (see :mod:`statusd.behind`)."""
        self._rescan_now = False
        self._feed: ChangeFeed | PolledFeed | None = None
        self._feed_fd = -1
        """The polled feed's descriptor, while the loop reads it."""
        self._short_of_inotify: OSError | None = None
        """Why the feed is missing or partial for want of inotify, once said in the log."""
        self._feed_failed: OSError | None = None
        """Why the feed's last read failed, once said in the log; None once one succeeds."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the loop takes ----------------------------------------------------------

    def take(self) -> tuple[list[str], set[str]]:
        """The ids marked dirty since the last take, in the order of their latest hints
        (so a burst's transitions go out in the order they happened, not a set's), and
        those of them a record's hint named; both emptied."""
        if not self._dirty:
            return [], set()
        dirty, recorded = list(self._dirty), self._recorded
        self._dirty, self._recorded = {}, set()
        return dirty, recorded

    def take_rescan(self) -> bool:
        """Whether a rescan was asked (events lost, a folder watched again) since the
        last take; the ask is taken."""
        asked, self._rescan_now = self._rescan_now, False
        return asked

    @property
    def rescan_asked(self) -> bool:
        """Whether a rescan was asked and not yet taken (:meth:`take_rescan`)."""
        return self._rescan_now

    def ask_rescan(self) -> None:
        """Have the loop rescan now."""
        self._rescan_now = True
        self.wake.set()

    def wait_s(self, timeout: float) -> float:
        """``timeout``, cut to ``REWATCH_S`` while :meth:`rewatch` has something to do."""
        return min(timeout, REWATCH_S) if self._to_rewatch() else timeout

    # -- the feed ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the feed, its hints handed to ``loop``."""
        self._loop = loop
        self._start_feed()

    def _start_feed(self) -> None:
        folders = [self.layout.folder(s) for s in JobState] + [self.layout.progress]
        if PolledFeed.available() and self._loop is not None:
            feed = PolledFeed(folders, self.on_event)
            if not feed.try_start():
                self._say_shortage(feed.shortage)
                return
            self._loop.add_reader(feed.fileno(), self._drain)
            self._feed, self._feed_fd = feed, feed.fileno()
            self._say_shortage(feed.shortage)
        else:  # pragma: no cover - not Linux: a feed thread hands its hints over
            self._feed = ChangeFeed(folders, self.on_change)
            self._feed.start()

    def _to_rewatch(self) -> bool:
        """Whether :meth:`rewatch` has something to do (each ``REWATCH_S``): no feed, for
        inotify's limits or a read that failed, or a folder unwatched.  A feed started
        again after its read failed woke the loop each second until an event came."""
        if self._feed is None:
            return self._short_of_inotify is not None or self._feed_failed is not None
        return bool(self._feed.unwatched) or self._short_of_inotify is not None

    def restart(self) -> None:
        """Start the feed afresh and ask a rescan: the spool's folders came back (a
        filesystem mounted again, a FUSE daemon started again), and watches of the mount
        that went see nothing of the new one (QA: statusd followed a remounted spool by
        rescans alone, 867 jobs said pending 16 s after they were done)."""
        self.stop()
        try:
            self._start_feed()
        except OSError as exc:  # tried again each REWATCH_S (see _to_rewatch), not never
            log.warning("the change feed cannot be started (%s): rescanning the spool, "
                        "and starting the feed again every %g s", exc, REWATCH_S)
            self._feed_failed = exc
        self.ask_rescan()

    def rewatch(self) -> None:
        """Watch again what lost its watch, or start the feed inotify's limits kept out;
        a folder watched again asks a rescan (it finds what came meanwhile)."""
        if self._watched_again():
            self._rescan_now = True

    def _watched_again(self) -> bool:
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
            self.stop()
            self.ask_rescan()
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

    def stop(self) -> None:
        """Stop the feed (on the loop); nothing is reported after."""
        feed, self._feed = self._feed, None
        if self._feed_fd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._feed_fd)  # before the descriptor is closed
        self._feed_fd = -1
        if feed is not None:
            feed.stop()

    # -- hints ------------------------------------------------------------------------

    def on_event(self, folder: str, name: str) -> None:
        """A feed hint, on the loop: only mark the id dirty and wake the loop."""
        if not folder:  # events were lost (overflow, a folder replaced): rescan now
            self.ask_rescan()
            return
        if folder not in _WATCHED:
            return
        job_id = id_from_name(name)
        if job_id is not None:
            if folder in _RECORDS:
                self._recorded.add(job_id)
            self._mark(job_id)

    def _mark(self, job_id: str) -> None:
        self._dirty.pop(job_id, None)  # to the end: its latest change came last
        self._dirty[job_id] = None
        self.wake.set()

    def on_change(self, folder: str, name: str) -> None:
        """A hint from another thread (a :class:`ChangeFeed`'s): handed to the loop."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to wake
            self._loop.call_soon_threadsafe(self.on_event, folder, name)
