"""Discovery: which names in ``pending/`` and ``cancel/`` the processor must look at.

Watch events only wake the loop: the change feed (inotify, read on the loop thread
where it can be) marks a name that moved into ``pending/`` dirty, or a name in
``cancel/`` asked; the directory scan is the truth.  :class:`Discovery` owns the
feed, the names seen in ``pending/`` (inode, size, mtime when intake last judged
them), the dirty and cancel sets and when the next scan is due: a rescan marks
every pending name whose inode, size or mtime changed since last seen, so an event
the feed lost (inotify overflow, a folder replaced) costs a scan interval at most.
Intake takes dirty names in the order they came (a burst is judged, and so claimed,
in the order it was dropped), then the names a scan found without an event (half the
budget each while both wait), at most INTAKE_BATCH of each and INTAKE_BUDGET_S of
work per pass, so FAST runs, cancels and claims go on between batches of large
drops; a drop over LARGE_DROP_BYTES is put off, unread, behind the names that came
after it, and one such drop at least is judged each pass.  A ready job goes to the
processor's ``enqueue``, a name still being written waits for the settle time.  The
start-up's scan holds claims back until every name it found has been judged
(:meth:`Discovery.catching_up`, CATCH_UP_S at most): a backlog runs in priority and
submission order, not in the order of its first batch.  A drop
whose quarantine the spool refuses (``failed/`` not writable, a full disk) is held back
until ``held_until``, the processor's I/O backoff, neither its give-back's event nor a
rescan trying it sooner, while the other names of its batch are judged as ever; another
file put under that name meanwhile (a client's fixed re-drop) is judged at once.  Until
then quarantines pause: a drop judged no job meanwhile is held with it, untried.

Where the kernel's inotify limits are reached (another program of the same user
holds the instances or watches), there is no feed, or a folder is unwatched: the
rescan every ``SPOOL_SCAN_S`` finds what arrives, a warning says so once, and the
feed is tried again at each heartbeat (an info line once it is whole again).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from processor import logs
from processor.inbox import Inbox
from spool.errors import QuarantineRefused, SpoolIOError, UnreadableDrop
from spool.feed import ChangeFeed, PolledFeed
from spool.fsops import failing_file
from spool.ids import JOB_SUFFIX
from spool.in_progress import is_in_progress_name
from spool.intake import Candidate, Intake, Verdict, not_seen_written
from spool.layout import Layout
from spool.lease import open_for_writing
from spool.settings import Settings
from spool.states import JobState

log = logging.getLogger("spoolq.processor")

INTAKE_BATCH = 256
LARGE_DROP_BYTES = 64 * 1024
"""A dirty drop larger than this is judged after the dirty names that came after it."""
INTAKE_BUDGET_S = 0.02
"""Work one pass's intake may take: 256 drops of 1 MB each held the loop for 17 s, a
FAST job and a cancel waiting behind them (QA).  At least one name is judged a pass."""
_PENDING = JobState.PENDING.value
SCAN_SLICE_S = 0.002
"""How long a pass of the loop goes on with a periodic rescan of ``pending/``: a FAST job
dropped meanwhile waits about that long (50,000 drops pending, a FAST job's drop to its
record: p99 4.2 ms, the worst 19.6 ms, against 269 ms in one go; 5 ms slices: p99 10.9)."""
SCAN_CHECK_EVERY = 64
"""Names a rescan looks up between two looks at the clock."""
CATCH_UP_S = 5.0
"""How long claims may wait for the start-up scan's names to be judged; past it, they
start with those judged so far (a backlog of large drops: up to 70 ms each)."""


class _Listing(Iterator[os.DirEntry[str]], Protocol):
    """What ``os.scandir`` gives: its entries, and ``close``."""

    def close(self) -> None: ...


@dataclass(slots=True)
class _Scan:
    """A rescan of ``pending/`` under way: its listing, the names it met, and the names
    told meanwhile (see :meth:`Discovery.scan_more`)."""

    entries: _Listing
    folder: tuple[int, int]  # the listed folder's device and inode
    present: set[str] = field(default_factory=set)
    told: set[str] = field(default_factory=set)
    known: list[str] | None = None
    """Once the listing is over: the names known then (seen, unreadable), then the ids
    ready then, each looked at in turn, a slice at a time (see :meth:`Discovery._sweep`)."""
    swept: int = 0  # how many of ``known`` were looked at
    ready_from: int = 0  # where the ids begin in ``known``
    gone: list[str] = field(default_factory=list)  # ready ids whose file left


class Discovery:
    """The pending and cancel names one processor has yet to look at (``ready``: the
    processor's own dict of judged candidates, ``enqueue``: where a ready job goes,
    ``withdraw``: told the ids of ready jobs whose file left ``pending/`` unclaimed)."""

    def __init__(self, settings: Settings, layout: Layout, inbox: Inbox, intake: Intake, *,
                 ready: dict[str, Candidate], enqueue: Callable[[Candidate], None],
                 withdraw: Callable[[list[str]], None]) -> None:
        self.settings = settings
        self.layout = layout
        self.inbox = inbox
        self.intake = intake
        self.ready = ready
        self.enqueue = enqueue
        self.withdraw = withdraw
        self.feed: ChangeFeed | PolledFeed | None = None
        self.seen: dict[str, tuple[int, int, int]] = {}
        self.dirty: OrderedDict[str, None] = OrderedDict()  # the names, as they came
        self.found: OrderedDict[str, None] = OrderedDict()
        """Names a scan found changed, no event having said so (the start-up's backlog,
        events lost): judged after the events' names, with half the budget while both
        wait.  In one line, a priority job dropped after a start on a million-drop backlog
        waited 63 s for the scan's names before it to be judged (QA)."""
        self.large: OrderedDict[str, None] = OrderedDict()  # dirty drops put off for size
        self.told_waiting: set[str] = set()
        """An event's names put off until their file settles: found again by a scan, they
        go back to the first line, not behind the start-up's backlog (a review)."""
        self.catch_up_until = 0.0  # see catching_up (0: claims are not held)
        self.scanned = False  # the first scan (the start-up's) has been made
        self.cancels: set[str] = set()
        self.unscanned: dict[str, str] = {}  # folder -> the error said of it, while it lasts
        self.unreadable: dict[str, str] = {}  # pending name -> the error said of it
        self.unread_file: dict[str, tuple[int, int] | None] = {}
        """Of each unreadable name, the file that failed (inode, mtime; None when its lstat
        failed too): an event of another file under that name is no give-back."""
        self.unstatable: set[str] = set()  # those of them whose lstat failed
        self.held: dict[str, tuple[int, int] | None] = {}
        """Pending names whose quarantine was refused, each with its file (inode, mtime;
        None when its lstat failed): another file under that name is not held."""
        self.held_until = 0.0  # when they are judged again (monotonic)
        self.next_scan = 0.0
        self.scan_floor = 0.0  # no periodic pass before (see PeriodicScan.run)
        self.scan: _Scan | None = None  # the rescan under way (see scan_more)
        self.short_of_inotify: OSError | None = None
        """Why the feed is missing or partial for want of inotify, once said in the log."""
        self.feed_failed: OSError | None = None
        """Why the feed's last read failed, while it is not started again."""

    def rewatch(self) -> None:
        """Watch a replaced folder again, or start the feed that inotify's limits kept
        out; what came meanwhile is found by a rescan."""
        if self.feed is None:
            if self.short_of_inotify is not None or self.feed_failed is not None:
                self._retry_feed()
            return
        if self.feed.rewatch():
            self.next_scan = 0.0
        self._say_shortage()

    def _retry_feed(self) -> None:
        try:
            self.start_feed()
        except OSError as exc:  # what is not a limit: the rescans go on as they are
            log.debug("change feed not started again", extra={"fields": {"error": str(exc)}})
            return
        if self.feed is not None:
            self.next_scan = 0.0

    def _drain_feed(self, feed: PolledFeed) -> None:
        """The loop's reader of the feed.  A read the kernel fails (EIO, ENOMEM) left the
        loop and ended the processor (QA); its descriptor would stay readable, a failing
        reader called again at once.  The feed is dropped, the spool rescanned now and
        the feed started again at each heartbeat (:meth:`rewatch`); one warning."""
        try:
            feed.drain()
        except OSError as exc:
            if self.feed_failed is None:
                log.warning("the change feed cannot be read: finding drops and cancels by "
                            "scanning every %g s (SPOOL_SCAN_S) until it starts again",
                            self.settings.scan_s, extra={"fields": {"error": str(exc)}})
            self.feed_failed = exc
            self.stop_feed()
            self.feed = None
            self.intake.being_written = not_seen_written
            self.next_scan = 0.0
            return
        if self.feed_failed is not None:  # a read went through: said once it does
            log.info("change feed read again")
            self.feed_failed = None

    def _say_shortage(self, refused: OSError | None = None) -> None:
        """A warning when inotify's limits first keep a folder unwatched, an info line
        once every folder is watched again (``refused``: inotify_init's own refusal)."""
        shortage = refused or (self.feed.shortage if isinstance(self.feed, PolledFeed)
                               else None)
        if shortage is not None and self.short_of_inotify is None:
            log.warning("inotify limit reached: finding drops and cancels by scanning "
                        "every %g s (SPOOL_SCAN_S)", self.settings.scan_s, extra={"fields": {
                            "error": str(shortage), "see": "fs.inotify.max_user_instances, "
                            "fs.inotify.max_user_watches"}})
        elif shortage is None and self.short_of_inotify is not None:
            log.info("inotify back: watching pending/ and cancel/ again")
        self.short_of_inotify = shortage

    def stop_feed(self) -> None:
        if self.feed is not None:
            if isinstance(self.feed, PolledFeed):
                self.inbox.remove_reader(self.feed.fileno())
            self.feed.stop()

    def tell(self, name: str) -> None:
        """``name`` is to be judged as an event's: in the first line, out of the scan's
        (the starter's release, a held name's end, an event).  Left in both, a name
        was read twice (a review)."""
        self.dirty[name] = None
        self.found.pop(name, None)
        if self.scan is not None:
            self.scan.told.add(name)

    @property
    def waiting(self) -> bool:
        """Names are left to judge: dirty ones, found ones, or large ones put off."""
        return bool(self.dirty or self.found or self.large)

    def intake_batch(self) -> None:
        """Judge up to INTAKE_BATCH dirty names, then at least one large one put off; on
        disk trouble the name stays first in its line.  A file whose read fails is left
        for the next scan, a drop whose quarantine is refused is held back, and the
        others are judged; then the last refusal is raised (for the processor to set
        ``held_until``).

        A dirty drop over LARGE_DROP_BYTES is put off, unread, behind the dirty names
        that come after it: judged first come first served, 256 drops of 1 MB held a
        FAST drop that came after them about 5 s (QA), where it now waits for one.
        """
        refused: QuarantineRefused | None = None
        # Quarantines paused: each bad drop that came meanwhile was tried, refused and
        # said at once, and grew the backoff (to its cap after seven drops).
        quarantine = time.monotonic() >= self.held_until
        start = time.monotonic()
        named = [line for line in (self.dirty, self.found) if line]
        lines = (*named, self.large)
        for n, line in enumerate(lines):
            defer = line is not self.large
            # The events' names first, the scans' next, each with its share of the budget
            # (all of it alone); one large drop put off at least.
            ends = start + INTAKE_BUDGET_S * ((n + 1) / len(named) if defer else 1.0)
            for _ in range(min(INTAKE_BATCH, len(line))):
                name = line.popitem(last=False)[0]
                if defer:
                    self.large.pop(name, None)  # changed since it was put off: judged anew
                try:
                    if self._inspect(name, quarantine, defer, told=line is self.dirty):
                        continue  # put off: one lstat, not counted against the budget
                except UnreadableDrop as exc:
                    self.unreadable_file(name, exc)
                except QuarantineRefused as exc:
                    self.held[name] = self._identity(name)  # given back: the same inode
                    refused = exc
                except SpoolIOError:
                    line[name] = None
                    line.move_to_end(name, last=False)  # still the first in line
                    raise
                if time.monotonic() >= ends:
                    break  # (a large one is judged a pass even so: none waits for ever)
        if refused is not None:
            raise refused

    def catching_up(self) -> bool:
        """The start-up scan's names are not all judged yet, and CATCH_UP_S has not
        passed: no claim meanwhile.  Claimed from the first batch, a backlog present at the
        start ran in the order of its names' hashes, a priority 100 job 12th (QA)."""
        if not self.catch_up_until:
            return False
        if self.waiting and time.monotonic() < self.catch_up_until:
            return True
        self.catch_up_until = 0.0
        return False

    def release_held(self, now: float) -> None:
        """The held names are judged again once ``held_until`` has passed."""
        if self.held and now >= self.held_until:
            for name in self.held:
                self.tell(name)
            self.held.clear()

    def _still_held(self, name: str) -> bool:
        """``name`` is held, and still the file whose quarantine was refused: another
        file there (a re-drop, the job fixed) is let go, judged as any drop.  It waited
        for the held one's pause (up to 30 s), taken for its give-back."""
        if name not in self.held:
            return False
        if self._identity(name) == self.held[name]:
            return True
        del self.held[name]
        return False

    def start_feed(self) -> None:
        """Watch pending/ and cancel/: on the loop thread itself where inotify allows (no
        feed, or a folder unwatched, where its limits are reached: see the module)."""
        folders = [self.layout.folder(JobState.PENDING), self.layout.cancel]
        if PolledFeed.available():
            feed = PolledFeed(folders, self.on_change, arrivals_only=True,
                              follow_writes=folders[0])
            if not feed.try_start():
                self._say_shortage(feed.shortage)
                return
            self.inbox.add_reader(feed.fileno(), lambda: self._drain_feed(feed))
            self.feed = feed
            self.intake.being_written = feed.being_written
            self._say_shortage()
        else:  # pragma: no cover - not Linux: a feed thread posts its events
            self.feed = ChangeFeed(folders, lambda folder, name: self.inbox.post(
                ("fs", folder, name)), arrivals_only=True)
            self.feed.start()

    def on_change(self, folder: str, name: str) -> None:
        if not folder:
            self.next_scan = 0.0  # events were lost: rescan now
        elif folder == _PENDING:
            if self.scan is not None:
                self.scan.told.add(name)
            if self._still_held(name):
                return  # its quarantine's give-back: judged at held_until
            if not self.unreadable or name not in self.unreadable or self._replaced(name):
                self.tell(name)
        elif folder == self.layout.cancel.name:
            self.cancels.add(name)

    def rescan(self) -> None:
        """Mark every pending name whose inode, size or mtime changed since last seen, in
        one go (the start-up's scan: its names are judged before the first claim)."""
        self.begin_rescan()
        self.scan_more(None)

    @property
    def scanning(self) -> bool:
        """A rescan begun is not over yet (see :meth:`scan_more`)."""
        return self.scan is not None

    def begin_rescan(self) -> None:
        """Start a rescan, which :meth:`scan_more` goes through.  The next one is due
        ``SPOOL_SCAN_S`` after it ends, or sooner when asked meanwhile (events lost, a
        drop waiting to settle)."""
        self.end_rescan()
        if not self.scanned:  # the start-up's: see catching_up
            self.scanned = True
            self.catch_up_until = time.monotonic() + CATCH_UP_S
        if self.feed is not None:
            self.feed.rewatch()  # a folder replaced since: watched again once it is back
        self.next_scan = math.inf  # (lowered by whatever asks for the next one meanwhile)
        folder = self.layout.folder(JobState.PENDING)
        try:
            st = os.stat(folder)
            entries = os.scandir(folder)
        except OSError as exc:
            self._scan_over()
            self._cannot_scan("pending/", exc)
            return
        self.scan = _Scan(entries, (st.st_dev, st.st_ino))

    def scan_more(self, budget_s: float | None = SCAN_SLICE_S) -> None:
        """Go on with the rescan for about ``budget_s`` (None: to its end), then, at its
        end, forget what is known of the names gone and list ``cancel/``.

        A pass of the loop scans a slice: one rescan of 50,000 drops held the loop 0.2 to
        0.8 s, every ``SPOOL_SCAN_S``, FAST jobs waiting behind it (QA h333).  Names the
        feed or a release told of meanwhile count as present at its end, whether or not
        the listing met them (the listing is no snapshot once the loop goes on between
        slices): the state of a name gone is forgotten a scan later at worst, never that
        of a name there."""
        scan = self.scan
        if scan is None:
            return
        ends = None if budget_s is None else time.monotonic() + budget_s
        present = scan.present
        try:
            for n, entry in enumerate(scan.entries, 1):
                present.add(entry.name)
                if not (is_in_progress_name(entry.name) or self._still_held(entry.name)):
                    st = self._lstat(entry)
                    if st is not None and self.seen.get(entry.name) != (
                            st.st_ino, st.st_size, st.st_mtime_ns):
                        self._mark(entry.name)
                if ends is not None and n % SCAN_CHECK_EVERY == 0 \
                        and time.monotonic() >= ends:
                    return  # the rest at the next pass
        except OSError as exc:
            self.end_rescan()
            self._cannot_scan("pending/", exc)
            return
        scan.entries.close()  # the listing is over: its descriptor is not kept for the sweep
        if scan.known is None and self._folder_replaced(scan):
            # What the listing met is not what stands there (pending/ moved away and made
            # again meanwhile): taken for gone, ready jobs still pending were withdrawn,
            # to be found a rescan later (QA h336).  Nothing is forgotten; the new folder
            # is scanned at once.
            self.end_rescan()
            self.next_scan = 0.0
            return
        if not self._sweep(scan, ends):
            return  # the rest at the next pass
        self.end_rescan()
        present |= scan.told
        self._scanned("pending/")
        self._forget_gone(present)
        # Ready jobs whose file left pending/ unclaimed (a client's cancel, another
        # processor's claim) are forgotten: kept, each stayed until its lane came to it,
        # a delayed one until its not_before (a day, a year), whatever purge removed.
        gone = [job_id for job_id in scan.gone if job_id + JOB_SUFFIX not in present]
        if gone:
            self.withdraw(gone)
        self.intake.forget(present)
        try:
            self.cancels.update(os.listdir(self.layout.cancel))
        except FileNotFoundError:
            pass
        except OSError as exc:  # as pending/'s: an EIO here ended the processor (QA)
            self._cannot_scan("cancel/", exc)
            return
        self._scanned("cancel/")

    def _sweep(self, scan: _Scan, ends: float | None) -> bool:
        """Forget what is known of the names the listing did not meet, and note the ready
        ids whose file it did not meet, until ``ends``; True once all are looked at.  In
        one go at the listing's end, this held the loop as long as a tenth of the listing
        did: 16 ms at 30,000 drops, 100 ms at 100,000, the FAST jobs waiting (QA h336)."""
        if scan.known is None:
            scan.known = [*self.seen, *(n for n in self.unreadable if n not in self.seen)]
            scan.ready_from = len(scan.known)
            scan.known.extend(self.ready)
        known, present, told = scan.known, scan.present, scan.told
        while scan.swept < len(known):
            start = scan.swept
            stop = min(len(known), start + SCAN_CHECK_EVERY)
            for i in range(start, stop):
                if i >= scan.ready_from:
                    if known[i] + JOB_SUFFIX not in present:  # (told: at the end)
                        scan.gone.append(known[i])
                elif (name := known[i]) not in present and name not in told:
                    self.seen.pop(name, None)
                    self.unreadable.pop(name, None)
                    self.unread_file.pop(name, None)
                    self.unstatable.discard(name)
            scan.swept = stop
            if ends is not None and time.monotonic() >= ends:
                return scan.swept >= len(known)
        return True

    def _folder_replaced(self, scan: _Scan) -> bool:
        """Whether ``pending/`` is another folder than the one the rescan listed."""
        try:
            st = os.stat(self.layout.folder(JobState.PENDING))
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != scan.folder

    def end_rescan(self) -> None:
        """Drop the rescan under way, if any (at its end, a stop, a new one)."""
        if self.scan is not None:
            self.scan.entries.close()
            self.scan = None
            self._scan_over()

    def _scan_over(self) -> None:
        """The next rescan is due ``SPOOL_SCAN_S`` from now, or when asked sooner."""
        self.next_scan = min(self.next_scan, time.monotonic() + self.settings.scan_s)

    def _mark(self, name: str) -> None:
        """A name the scan found changed: an event's put off goes back to the first line,
        any other to the scan's (one in the first line already stays there)."""
        if name in self.dirty:
            return
        if name in self.told_waiting:
            self.tell(name)
        else:
            self.found[name] = None

    def _forget_gone(self, present: set[str]) -> None:
        """What is known of the names no longer in ``pending/`` (``present``)."""
        self.told_waiting.intersection_update(present)
        if isinstance(self.feed, PolledFeed):
            self.feed.forget_writes(present)
        for name in self.held.keys() - present:
            del self.held[name]
        # (seen and unreadable: see _sweep)

    def _lstat(self, entry: os.DirEntry[str]) -> os.stat_result | None:
        """A pending entry's own stat; None when it is gone, or when the disk fails to
        tell (EIO: a bad sector under its inode): that file's trouble, said once and
        looked at again at each scan, as a file whose read fails.  Raised, it ended the
        scan at that entry at each scan ("cannot scan pending/"), the names after it
        and ``cancel/`` never scanned while it lasted."""
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if (trouble := failing_file(exc, f"cannot look up {entry.name}")) is None:
                raise
            self.unreadable_file(entry.name, trouble)
            self.unstatable.add(entry.name)
            return None
        if entry.name in self.unstatable:  # looked up again: a next failure is said again
            self.unstatable.discard(entry.name)
            self.unreadable.pop(entry.name, None)
            self.unread_file.pop(entry.name, None)
        return st

    def _cannot_scan(self, folder: str, exc: OSError) -> None:
        """One ERROR line when a folder cannot be listed, and again only should the error
        change: it was one a scan (every ``SPOOL_SCAN_S``, 17,000 lines a day) for as
        long as it lasted.  :meth:`_scanned` says when it is over."""
        said = str(exc)
        if self.unscanned.get(folder) != said:
            log.error("cannot scan %s; said again only if the error changes", folder,
                      extra={"fields": {"error": said}})
        self.unscanned[folder] = said

    def _scanned(self, folder: str) -> None:
        if self.unscanned.pop(folder, None) is not None:
            log.info("scanning %s again", folder)

    def unreadable_file(self, name: str, exc: UnreadableDrop) -> None:
        """Unseen, the file is judged again at the next scan, not at its events (a claim's
        give-back is one: tried again at once, a file whose claim fails looped); said once
        while it stays in ``pending/``.  Another file put under that name since (a
        re-drop, a retry: another inode or mtime) is judged on its own event.  Said once
        whichever call failed: a claim's ("cannot claim") and a read's ("cannot read") of
        one bad file were each said, in the order a cancel and a scan met it."""
        self.seen.pop(name, None)
        self.unread_file[name] = self._identity(name)
        if name not in self.unreadable:
            self.unreadable[name] = str(exc)
            log.warning("cannot read a pending file; trying it again at each scan",
                        extra={"fields": {"name": name, "error": str(exc)}})

    def _replaced(self, name: str) -> bool:
        """The event of an unreadable name is another file's: it waited up to
        ``SPOOL_SCAN_S`` for the scan.  The failed file's own give-back (moved back,
        inode and mtime kept) still waits for the scan."""
        return self._identity(name) != self.unread_file.get(name)

    def _identity(self, name: str) -> tuple[int, int] | None:
        try:
            st = os.lstat(os.path.join(self.layout.folder(JobState.PENDING), name))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _inspect(self, name: str, quarantine: bool, defer: bool = False,
                 told: bool = False) -> bool:
        """Judge ``name`` (``told``: an event's); True when, ``defer`` and over
        LARGE_DROP_BYTES, it was put off instead."""
        self.told_waiting.discard(name)
        result = self.intake.inspect(name, quarantine=quarantine,
                                     defer_over=LARGE_DROP_BYTES if defer else None)
        if result.verdict is Verdict.LARGE:
            self.large[name] = None
            return True
        if result.verdict is Verdict.HELD:
            self.held[name] = self._identity(name)
        elif result.verdict is Verdict.QUARANTINED and result.record is not None:
            logs.transition("quarantined", id=result.record.id, reason=result.record.error
                            and result.record.error.message, source=name)
        elif result.verdict is Verdict.WAITING:
            self.next_scan = min(self.next_scan, time.monotonic() + self.settings.settle_s / 2
                                 + 0.05)
            if told:
                self.told_waiting.add(name)
        elif result.verdict is not Verdict.READY or result.candidate is None:
            self.seen.pop(name, None)
        else:
            self._ready(name, result.candidate)
        return False

    def _ready(self, name: str, cand: Candidate) -> None:
        self.seen[name] = (cand.inode[0], cand.size, cand.mtime_ns)
        if isinstance(self.feed, PolledFeed) and (left := self._settling(name, cand)) > 0:
            cand.settles_at = time.time() + left  # written in place: see settling_s
        old = self.ready.get(cand.job_id)
        if (old is not None and old.inode == cand.inode and old.mtime_ns == cand.mtime_ns
                and cand.settles_at <= old.settles_at):  # (its close: left longer)
            return
        self.enqueue(cand)

    def _settling(self, name: str, cand: Candidate) -> float:
        """What is left of the wait of a ready file written in place (``settling_s``).

        One the feed saw created and not closed, nobody has open for writing now (a read
        lease granted), was never written through its name: the kernel queues a
        writer's close on the feed before it lets go of the file, and none is there once
        the feed is read.  A hard link (``ln``, a maildir-style writer, spoolq's own
        submit without RENAME_NOREPLACE), an ``O_TMPFILE`` file made elsewhere and linked
        in: each waited the 0.2 s of a file being written (h391)."""
        feed = self.feed
        assert isinstance(feed, PolledFeed)
        inode = cand.inode[0]
        left = feed.settling_s(name, inode)
        if not left or not feed.being_written(name, inode) or open_for_writing(
                os.path.join(self.layout.folder(JobState.PENDING), name), inode) is not False:
            return left  # (None: no lease to ask, the file another user's)
        self._drain_feed(feed)
        if self.feed is not feed:
            return 0.0  # its read failed: no feed, no wait
        return 0.0 if feed.being_written(name, inode) else feed.settling_s(name, inode)
