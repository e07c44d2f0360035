"""A change feed over spool folders, for both daemons.

Events are hints, never the truth: they can be lost (queue overflow, network
filesystems), so every user also rescans periodically and re-reads a folder
before acting on an event.  A lost-events signal (inotify queue overflow) is
reported as ``on_change("", "")``: rescan now.

On Linux the feed reads raw inotify events itself (:class:`PolledFeed`, which
:class:`ChangeFeed`'s thread waits on).  watchdog's Observer would pair each
``IN_MOVED_FROM`` with its ``IN_MOVED_TO`` by holding it for 0.5 s, and every
event behind it waits in the same queue; since every claim moves a file *out
of* ``pending/``, a drop right after a claim would be seen half a second late.
Unpaired events are all a spool needs, so the raw reader is used where it
exists and the Observer elsewhere.

A watch goes with its folder: after ``mv pending pending.old && mkdir
pending`` (or ``rm -r`` and ``mkdir``) it would report the old folder, or
nothing.  Both feeds drop a lost watch, report a rescan, and watch the path
again as soon as a folder is back there: at once, or on the owner's next
``rewatch()``, which it calls periodically while ``unwatched`` is not empty.

:class:`PolledFeed` reads the same inotify events without a thread: its
owner waits on :meth:`PolledFeed.fileno` in its own loop and calls
:meth:`PolledFeed.drain`.  The processor does, so an arrival costs no thread
hand-off (docs/benchmarks.md), and so does statusd's tracker (its event loop
reads the descriptor).

inotify has per-user kernel limits (``fs.inotify.max_user_instances``, whose
exhaustion fails ``inotify_init`` with EMFILE; ``fs.inotify.max_user_watches``,
which fails a watch with ENOSPC), shared with every other program of the same
user.  A watch refused for want of them (:data:`SHORT_OF_INOTIFY`) leaves its
folder unwatched, tried again at each ``rewatch()``, and :attr:`PolledFeed.shortage`
says why; an ``inotify_init`` so refused raises, and the owner goes on without a
feed.  Either way the owner's periodic rescan finds what arrives.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

try:
    from watchdog.observers import inotify_c
except ImportError:  # pragma: no cover - not Linux
    inotify_c = None  # type: ignore[assignment]

# inotify_c is exported for spool.presence, which reads the same events.
__all__ = ["SHORT_OF_INOTIFY", "ChangeFeed", "OnChange", "PolledFeed", "inotify_c",
           "open_inotify", "read_inotify"]

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len
_INOTIFY_BUFFER = 1 << 16

SHORT_OF_INOTIFY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM})
"""What ``inotify_init`` or a watch fails with when a kernel limit is reached (instances:
EMFILE; watches: ENOSPC) or descriptors or memory run short: not a broken spool, a
feed that cannot follow for now."""

OnChange = Callable[[str, str], None]
"""Called from a feed thread with (folder name, file name); ("", "") means rescan."""

_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})
# Only what changes a folder's listing or ends a write.  Opens, reads and
# attribute changes would each wake a Python thread that then competes for
# the GIL with the daemon's own file operations.
_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: OnChange) -> None:
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _EVENTS:
            return
        self._report(event.src_path)
        if event.event_type == "moved" and event.dest_path:
            self._report(event.dest_path)

    def _report(self, raw: bytes | str) -> None:
        path = os.fsdecode(raw)
        folder, name = os.path.split(path)
        if name:
            self.on_change(os.path.basename(folder), name)


class ChangeFeed:
    """Watch ``folders`` (not recursively) and report each change to ``on_change``.

    ``on_change`` is called from the feed's thread.  A folder that is removed or
    moved away loses its watch: the feed reports a rescan and watches the path
    again as soon as a folder is back there (at once, or on a later
    :meth:`rewatch`).  :meth:`stop` ends the thread and re-adds nothing.

    On Linux the thread waits on a :class:`PolledFeed`'s descriptor and a wake pipe,
    both its own: watchdog's ``InotifyFD`` thread, used before, kept its inotify
    descriptor and pipe open when stopped before it first read (71 stops in 100 right
    after a start), each an inotify instance of the user's 128 gone.
    """

    def __init__(self, folders: Iterable[Path], on_change: OnChange, *,
                 arrivals_only: bool = False) -> None:
        """``arrivals_only``: report names that appear or finish being written, not
        names that leave (the processor's own claims would otherwise echo back)."""
        self.folders = list(folders)
        self.on_change = on_change
        self.arrivals_only = arrivals_only
        self._polled: PolledFeed | None = None
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        # Guards the watches against the feed thread (a lost watch) racing the
        # owner (rewatch, stop).  Never held while calling on_change.
        self._lock = threading.Lock()
        self._heard: list[tuple[str, str]] = []  # the polled feed's reports, under the lock
        self._stopping = False

    def start(self) -> None:
        """Watch the folders; OSError as :meth:`PolledFeed.start` raises it."""
        self._stopping = False
        if PolledFeed.available():
            self._start_polled()
        else:  # pragma: no cover - not Linux
            self._start_observer()

    def _start_polled(self) -> None:
        polled = PolledFeed(self.folders, lambda folder, name: self._heard.append(
            (folder, name)), arrivals_only=self.arrivals_only)
        polled.start()
        wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._polled = polled
        self._thread = threading.Thread(target=self._run, args=(polled, wake_r),
                                        name="spoolq-feed", daemon=True)
        self._thread.start()

    def _run(self, polled: PolledFeed, wake_r: int) -> None:
        poller = select.poll()
        poller.register(polled.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        try:
            while not any(fd == wake_r for fd, _ in poller.poll()):
                with self._lock:
                    if self._stopping:
                        return
                    polled.drain()  # a lost watch is watched again here, if it can be
                    heard, self._heard = self._heard, []
                for folder, name in heard:
                    self.on_change(folder, name)
        finally:
            os.close(wake_r)

    @property
    def unwatched(self) -> frozenset[Path]:
        """The folders whose watch was lost and that are not back yet."""
        with self._lock:
            return frozenset() if self._polled is None else self._polled.unwatched

    def rewatch(self) -> bool:
        """Watch again each folder that lost its watch and exists again; True if one
        did (what arrived there unwatched is for a rescan to find).  False once stopping."""
        with self._lock:
            if self._stopping or self._polled is None:
                return False
            return self._polled.rewatch()

    def _start_observer(self) -> None:  # pragma: no cover - not Linux
        self._observer = Observer()
        handler = _Handler(self.on_change)
        for folder in self.folders:
            self._observer.schedule(handler, str(folder), recursive=False, event_filter=_FILTER)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        """End the feed's thread (within 5 s) and close its descriptors; no watch is
        added from here on, nothing reported."""
        with self._lock:
            woken, self._stopping = self._stopping, True
            if self._thread is not None and not woken:
                # Under the lock: a thread woken by an event in between would see
                # "stopping", return and close the read end (EPIPE here, this end left
                # open).  One byte into a new pipe never blocks.  Once only: the thread
                # ends on it, and a stop after one whose join timed out wrote into the
                # pipe the thread had closed since (EPIPE, both descriptors left: h354).
                os.write(self._wake_w, b"!")
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # inside on_change still: its descriptors stay
                return
            os.close(self._wake_w)
            self._wake_w, self._thread = -1, None
        with self._lock:
            polled, self._polled = self._polled, None
        if polled is not None:
            polled.stop()
        if self._observer is not None:  # pragma: no cover - not Linux
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def __enter__(self) -> ChangeFeed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PolledFeed:
    """Raw inotify events on ``folders``, read by the owner's loop (Linux only).

    Reports what :class:`ChangeFeed` reports, from the thread that calls
    :meth:`drain`.  :meth:`available` says whether this platform has it.  A folder
    that is removed or moved away loses its watch; the feed watches the path again
    as soon as a folder is back there (at once, or on a later :meth:`rewatch`).
    """

    def __init__(self, folders: Iterable[Path], on_change: OnChange, *,
                 arrivals_only: bool = False, follow_writes: Path | None = None) -> None:
        """``follow_writes``: one of ``folders``, whose files being written are kept
        (:meth:`being_written`)."""
        self.folders = list(folders)
        self.on_change = on_change
        self.arrivals_only = arrivals_only
        self._followed = follow_writes.name if follow_writes is not None else None
        self._writes: set[str] = set()  # the followed folder's names being written
        self._closed_at: dict[str, float] = {}  # of those written in place: when closed
        # The followed folder's names renamed in (ordered: a dict's first key, deleted
        # from, costs a scan of the slots freed before it, 2 us a drop at 4,096 kept).
        self._moved_in: OrderedDict[str, None] = OrderedDict()
        self._closed: dict[int, None] = {}  # inodes of unnamed files (O_TMPFILE) closed
        self._fd = -1
        self._folder_of: dict[int, Path] = {}
        self._unwatched: set[Path] = set()
        self._mask = _watch_mask(arrivals_only) if self.available() else 0
        self.shortage: OSError | None = None
        """Why a folder is unwatched for want of inotify (:data:`SHORT_OF_INOTIFY`): a
        refusal at the last start or rewatch; None when none was refused so."""

    @staticmethod
    def available() -> bool:
        return getattr(inotify_c, "inotify_init", None) is not None

    def start(self) -> None:
        """Watch the folders; OSError if inotify cannot be had, or a folder watched for
        another reason than a limit (a watch refused at a limit leaves it unwatched)."""
        fd = open_inotify()
        if fd < 0:
            raise _errno_error("inotify_init")
        self._fd = fd
        try:
            for folder in self.folders:
                if not self._watch(folder):
                    error = _errno_error(f"cannot watch {folder}")
                    if error.errno not in SHORT_OF_INOTIFY:
                        raise error
                    self.shortage = error
                    self._unwatched.add(folder)
        except BaseException:
            self.stop()
            raise

    def try_start(self) -> bool:
        """:meth:`start`; False when inotify's limits keep any feed out (``shortage`` says
        why), and its owner goes on by its rescans."""
        try:
            self.start()
        except OSError as exc:
            if exc.errno not in SHORT_OF_INOTIFY:
                raise
            self.shortage = exc
            return False
        return True

    def _watch(self, folder: Path) -> bool:
        wd = inotify_c.inotify_add_watch(self._fd, os.fsencode(folder), self._mask)
        if wd < 0:
            return False
        self._folder_of[wd] = folder
        return True

    def fileno(self) -> int:
        return self._fd

    @property
    def unwatched(self) -> frozenset[Path]:
        """The folders whose watch was lost and that are not back yet."""
        return frozenset(self._unwatched)

    def drain(self) -> None:
        """Report every event waiting now; never blocks."""
        const = inotify_c.InotifyConstants
        gone = const.IN_IGNORED | const.IN_DELETE_SELF | const.IN_MOVE_SELF
        for wd, mask, name in read_inotify(self._fd):
            if mask & gone:
                self._lost_watch(wd)
                self._forget_writes()
                self.on_change("", "")  # a folder went away: rescan
            elif mask & const.IN_Q_OVERFLOW:
                self._forget_writes()
                self.on_change("", "")
            elif name and (folder := self._folder_of.get(wd)) is not None:
                text = os.fsdecode(name)
                if folder.name == self._followed:
                    self._follow(text, mask)
                self.on_change(folder.name, text)

    def _follow(self, name: str, mask: int) -> None:
        if mask & _CREATE_OR_DIR == _CREATE:
            self._writes.add(name)
            self._closed_at.pop(name, None)
            self._moved_in.pop(name, None)
            return
        self._writes.discard(name)  # closed after writing, or another file moved in or out
        if name.startswith("#") and name[1:].isdigit() and mask & _CLOSE_WRITE:
            # An unnamed file (O_TMPFILE) linked in is closed under its inode's name.
            self._closed[int(name[1:])] = None
            if len(self._closed) > _CLOSED_KEPT:
                del self._closed[next(iter(self._closed))]
            return  # (no name of pending/: see settling_s)
        if not mask & _CLOSE_WRITE:
            self._closed_at.pop(name, None)  # another file moved in under the name
            self._moved_in[name] = None
            if len(self._moved_in) > _CLOSED_KEPT:
                self._moved_in.popitem(last=False)
        elif name in self._moved_in:
            # Its renamer's own close (a ``with`` around the rename): it wrote the file
            # elsewhere, whole before it came (h391: such a drop waited the 0.2 s).
            del self._moved_in[name]
        else:
            self._closed_at.pop(name, None)  # (to the end: the oldest go first)
            self._closed_at[name] = time.monotonic()
            if len(self._closed_at) > _CLOSED_KEPT:
                del self._closed_at[next(iter(self._closed_at))]

    def being_written(self, name: str, inode: int) -> bool:
        """The feed saw ``name`` (of inode ``inode``) created in the followed folder
        (``IN_CREATE``), not yet closed after writing (``IN_CLOSE_WRITE``) nor replaced
        by a rename: its creator may be writing it still.  The kernel tells this of any
        user's file, where a read lease (:func:`spool.lease.open_for_writing`) is only
        the file owner's or root's to ask.  False when the feed did not see it come:
        present at the start, or events lost (a queue overflow, a watch lost).  A name
        made by ``link`` looks created too; a file created with no write open
        (``O_RDONLY|O_CREAT``) is never closed after writing."""
        return name in self._writes and inode not in self._closed

    def settling_s(self, name: str, inode: int) -> float:
        """How much longer ``name``, written in place in the followed folder (closed after
        writing: ``IN_CLOSE_WRITE``, not renamed in), is to be left alone: what is left
        of :data:`IN_PLACE_QUIET_S` since its close; 0 for a file renamed in (closed by
        its renamer after the rename too), an unnamed file (``O_TMPFILE``, of ``inode``)
        linked in and closed, or one seen come by no event.

        A writer may change a whole file by path after closing it: ``shutil.copy`` and
        ``copy2`` set its mode and times, ``install`` its mode, ``rsync --inplace`` its
        times.  A claim in between failed that call (the file gone from ``pending/``),
        and the writer took the job, which ran, for not delivered (QA h388: 20 of 40
        ``shutil.copy`` drops to an idle processor; a script that drops again on the
        error runs the job twice)."""
        if name in self._writes:  # created here and not closed yet: its writer is at it
            # (its close is an event: judged again then); an unnamed file closed was
            # whole before its name came, as a file renamed in.
            return 0.0 if inode in self._closed else IN_PLACE_QUIET_S
        closed = self._closed_at.get(name)
        if closed is None:
            return 0.0
        left = closed + IN_PLACE_QUIET_S - time.monotonic()
        if left <= 0:
            del self._closed_at[name]
            return 0.0
        return left

    def forget_writes(self, present: set[str]) -> None:
        """Forget the files being written in the followed folder that are no longer in it
        (``present``: its names; a feed of arrivals only hears no removal)."""
        if self._writes:
            self._writes.intersection_update(present)
        for gone in (self._moved_in, self._closed_at):  # (claimed: no event says so)
            for name in gone.keys() - present:
                del gone[name]

    def _forget_writes(self) -> None:
        self._writes.clear()  # what came meanwhile is unknown: see being_written
        self._closed_at.clear()
        self._moved_in.clear()

    def _lost_watch(self, wd: int) -> None:
        folder = self._folder_of.pop(wd, None)
        if folder is None:
            return  # an earlier watch's last word
        with contextlib.suppress(OSError):  # a moved folder's watch is still there
            inotify_c.inotify_rm_watch(self._fd, inotify_c.WatchDescriptor(wd))
        self._unwatched.add(folder)
        self.rewatch()

    def rewatch(self) -> bool:
        """Watch again each folder that lost its watch and exists again; True if one
        did (what arrived there unwatched is for a rescan to find)."""
        found = False
        shortage = None
        for folder in list(self._unwatched):
            if self._watch(folder):
                self._unwatched.discard(folder)
                found = True
            elif (error := _errno_error(f"cannot watch {folder}")).errno in SHORT_OF_INOTIFY:
                shortage = error
        self.shortage = shortage
        return found

    def stop(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


_CREATE = int(inotify_c.InotifyConstants.IN_CREATE) if inotify_c is not None else 0
_CREATE_OR_DIR = _CREATE | (int(inotify_c.InotifyConstants.IN_ISDIR) if inotify_c else 0)
"""A file created has ``_CREATE`` of these mask bits (a folder both)."""
_CLOSE_WRITE = int(inotify_c.InotifyConstants.IN_CLOSE_WRITE) if inotify_c is not None else 0
_CLOSED_KEPT = 4096
"""How many closed unnamed files' inodes a feed remembers (see PolledFeed._follow), and
how many names of files written in place and closed, or renamed in (see
PolledFeed.settling_s)."""
IN_PLACE_QUIET_S = 0.2
"""How long a file written in place in the followed folder is left alone after its
close (:meth:`PolledFeed.settling_s`): its writer's next calls by path come within
microseconds of it, milliseconds on a loaded host.  A file renamed in waits nothing."""


def _watch_mask(arrivals_only: bool) -> int:
    """The inotify events a feed asks for (see ``ChangeFeed``'s ``arrivals_only``)."""
    const = inotify_c.InotifyConstants
    mask = (const.IN_CREATE | const.IN_MOVED_TO | const.IN_CLOSE_WRITE | const.IN_DELETE_SELF
            | const.IN_MOVE_SELF)
    if not arrivals_only:
        mask |= const.IN_MOVED_FROM | const.IN_DELETE
    return int(mask)


def read_inotify(fd: int) -> Iterator[tuple[int, int, bytes]]:
    """(watch descriptor, mask, name) of every event queued now on the non-blocking ``fd``."""
    while fd >= 0:
        try:
            buf = os.read(fd, _INOTIFY_BUFFER)
        except (BlockingIOError, InterruptedError):
            return
        offset = 0
        while offset + _EVENT.size <= len(buf):  # struct inotify_event, then its name
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            start = offset + _EVENT.size
            yield wd, mask, buf[start:start + length].rstrip(b"\0")
            offset = start + length
        if len(buf) < _INOTIFY_BUFFER - 4096:
            return  # room was left: that was everything queued


def open_inotify() -> int:
    """A non-blocking, close-on-exec inotify descriptor (watchdog's binding); -1 on failure."""
    fd = inotify_c.inotify_init()
    if fd >= 0:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    return fd


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")
