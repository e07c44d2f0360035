"""Reading the spool from disk into index items; runs in a worker thread, never on the
loop (except :meth:`Loader.unchanged`: a few lstat calls, no read).

Owns: reading one id's files (:mod:`statusd.items` turns their bytes into items),
re-reading the ids whose stamp changed (:meth:`Loader.refresh`), and telling an id
that left every state folder on a move through ``tmp/`` from one removed for good
(:class:`Absent`).  Which file tells an id's state, by lstat alone, and the look
again when it moves between the stat and the read are :mod:`statusd.lookup`'s; the
whole-spool scan behind start-up and the periodic rescan is :mod:`statusd.scan`'s
(the loader builds the items it cannot); what ``tmp/`` and ``stage/`` hold is
:mod:`statusd.staging`'s; the record bytes a GET is served from disk are
:mod:`statusd.bodies`'.

Guarantees: a job that never left the spool is never read as absent because it
moved while it was read; an id is :attr:`Absent.GONE` only when neither the state
folders nor two looks at ``tmp/`` and ``stage/`` hold it.  A record over
:data:`spool.large.PARSE_MAX_BYTES` is read only for its head and tail
(:mod:`statusd.large`), never whole.  Pending and running jobs, and terminal files
that fail the structural check, go through :meth:`spool.reader.SpoolReader.load`
(pydantic) like the CLI's view.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Callable, Iterable
from functools import partial

from spool.entries import denied_file
from spool.errors import SpoolIOError
from spool.fsops import NO_DESCRIPTOR, is_there, unreadable_as_trouble
from spool.ids import is_valid_id
from spool.in_progress import InProgress, in_progress_of
from spool.large import Head, read_record
from spool.layout import Layout
from spool.reader import LOOKS, SpoolReader, newest
from spool.states import TERMINAL
from statusd import lookup
from statusd.bodies import body_of
from statusd.items import Item, Stamp, item_of_record, terminal_item
from statusd.large import large_item
from statusd.loading import Loading
from statusd.scan import entry_of, scan_spool, terminal_items
from statusd.staging import StagedMoves


class Absent(enum.Enum):
    """An indexed id found in no state folder."""

    MOVING = "moving"
    """Its file is staged in ``tmp/`` (a cancel, a retry, a quarantine) or is a
    quarantined original waiting for its record: it is coming back."""
    GONE = "gone"
    """Removed (a purge, an ``rm``, a move out of the spool): it is not coming back."""
    DENIED = "denied"
    """Its file is there, but statusd may not read it (EACCES): kept as it was.  Taken
    for one moving, it was removed once the vanish grace passed (the row gone, counted in
    ``removed``) while a GET said it was there."""



class Loader:
    """Builds items from one spool's folders.

    Thread-safe but for :meth:`refresh`, which one thread at a time calls (the
    tracker's worker): it follows ``tmp/`` and ``stage/`` (see :meth:`_staged_ids`).
    :meth:`close` when done.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.reader = SpoolReader(layout)
        self._staged = StagedMoves(layout)
        self.in_progress: InProgress | None = None
        """The in-progress drops in ``pending/`` as the last :meth:`scan` found them (None
        before the first): the stats' ``in_progress_drops``."""

    def close(self) -> None:
        self._staged.close()

    # -- whole spool ----------------------------------------------------------------

    def scan(self, behind: dict[str, Stamp] | None = None,
             unreadable: set[str] | None = None) -> dict[str, Stamp]:
        """The current stamp of every id in the spool, and of the records ``behind``
        active ids; the ids the disk could not stat in ``unreadable``
        (:func:`statusd.scan.scan_spool`); the in-progress drops in :attr:`in_progress`."""
        ctimes: list[int] = []
        stamps = scan_spool(self.layout, behind, unreadable, ctimes)
        self.in_progress = in_progress_of(ctimes)
        return stamps

    def load_all(self, stamps: dict[str, Stamp], unreadable: set[str] | None = None,
                 loading: Loading | None = None) -> list[Item]:
        """Items for every id of a scan (ids that vanished meanwhile are left out).

        Terminal records are read at once (:func:`statusd.scan.terminal_items`), and
        those it cannot build one by one as :meth:`load` does; the rest go one by one.
        One that cannot be opened for lack of descriptors is left out too: the first
        rescan reads it (statusd starts, where its SpoolIOError ended the start-up).
        Those the disk failed to read (EIO) are added to ``unreadable``.  ``loading``
        counts the ids done, and raises LoadStopped once statusd stops.
        """
        advance = loading.advance if loading is not None else None
        items = []
        for job_id, stamp, fast in terminal_items(self.layout, stamps, advance):
            item = fast if fast is not None else self._load_at_start(job_id, stamp, unreadable)
            if item is not None:
                items.append(item)
            if advance is not None:
                advance(1)
        for job_id, stamp in stamps.items():
            if stamp.state not in TERMINAL:
                if (item := self._load_at_start(job_id, stamp, unreadable)) is not None:
                    items.append(item)
                if advance is not None:
                    advance(1)
        return items

    def _load_at_start(self, job_id: str, stamp: Stamp, unreadable: set[str] | None
                       ) -> Item | None:
        try:
            return self.load(job_id, stamp)
        except SpoolIOError as exc:
            if unreadable is not None and failed_file(exc):
                unreadable.add(job_id)
            return None

    # -- one id -----------------------------------------------------------------------

    def current(self, job_id: str) -> Stamp | None:
        """The stamp of the file that tells ``job_id``'s state now; None when there is none
        (:func:`statusd.lookup.current`)."""
        return lookup.current(self.layout, self.reader.states, job_id)

    def record_behind(self, job_id: str) -> Item | None:
        """The item of ``job_id``'s terminal record, whichever file tells its state (a
        drop waiting behind its run does, :func:`spool.reader.newest`); None when it has
        none, or it cannot be read; SpoolIOError as :meth:`load` raises it."""
        try:
            best = newest(e for e in lookup.entries_of(self.layout, self.reader.states, job_id)
                          if e.state in TERMINAL)
            if best is None:
                return None
            return self.load(job_id, Stamp(best.state, best.mtime_ns, best.ctime_ns, 0,
                                           best.ino))
        except OSError:
            return None

    def unchanged(self, job_id: str, stamp: Stamp) -> bool:
        """Whether ``stamp`` surely still tells ``job_id``'s state, by lstat alone (on the
        loop: :func:`statusd.lookup.unchanged`)."""
        return lookup.unchanged(self.layout, job_id, stamp)

    def refresh(self, job_ids: Iterable[str], known: dict[str, Stamp],
                failed: dict[str, SpoolIOError] | None = None
                ) -> list[tuple[str, Item | Absent]]:
        """Re-read each id whose stamp differs from ``known``: (id, item), or (id, how it
        is absent) for a known id found in no state folder.

        ``failed``: where an id whose files the disk fails to look up or read (EIO: a bad
        sector) goes with its error, left out and kept as it was, the others read: raised,
        it failed the refresh of every id of the batch (a hint batch's moves waited for
        the next rescan; a rescan's failed at each rescan, nothing the feed missed ever
        applied).  Without it, or out of descriptors, the error is raised."""
        changes: list[tuple[str, Item | Absent]] = []
        vanished = []
        for job_id in job_ids:
            if not is_valid_id(job_id):
                continue
            try:
                changed, item = self._reread(job_id, known)
            except SpoolIOError as exc:
                if failed is None or _for_want_of_descriptors(exc):
                    raise
                failed[job_id] = exc
                continue
            if not changed:
                continue
            if item is not None:
                changes.append((job_id, item))
            elif job_id in known:
                # stamp None: in no folder; else it vanished between stat and read (a
                # move on): either way, how it is absent is asked below.
                vanished.append(job_id)
        if vanished:
            changes.extend(self._absent(vanished, failed))
        return changes

    def _reread(self, job_id: str, known: dict[str, Stamp]) -> tuple[bool, Item | None]:
        """Whether the stamp of ``job_id`` differs from ``known``, and then its item (None
        when it is in no state folder, or vanished between its stat and its read)."""
        stamp = self.current(job_id)
        if stamp == known.get(job_id):
            return False, None
        item = self.load(job_id, stamp) if stamp is not None else None
        if item is None and stamp is not None and job_id not in known:
            # Moved between its stat and its read (a claim, a completion): a task
            # stream asks for an id the index does not know before it answers 404.
            # A known id is asked how it is absent instead (:meth:`_absent`).
            item = lookup.read_current(job_id, self.current, self.load, LOOKS - 1)
        return True, item

    def _absent(self, job_ids: list[str], failed: dict[str, SpoolIOError] | None = None
                ) -> list[tuple[str, Item | Absent]]:
        """Moving or gone, for ids just found in no state folder.

        One listing of ``tmp/`` for them all, then each is looked for once more: a move
        that ended between the first look and the listing is found in its new folder.
        An id in neither place is looked for in a second listing of ``tmp/`` (a move that
        ended before the first listing and a next one that began before the second look,
        a retry and a cancel back to back, evade the first two looks).  Only then is it
        gone: its file is always in one of these places while it moves (renames), so
        that is a removal, not a move.

        ``failed``: as for :meth:`refresh`; an id whose second look or read, or the lookup
        of its quarantined original, the disk fails goes there and is left out (it failed
        every id of the batch: found in its new folder, a record on a bad sector kept the
        batch's moves unapplied).
        """
        staged = self._staged_ids()
        if staged is None:  # tmp/ cannot be listed: nothing tells a move from a removal
            return [(job_id, Absent.MOVING) for job_id in job_ids]
        out = self._each([(job_id, Absent.GONE) for job_id in job_ids],
                         partial(self._found, staged=staged), failed)
        if any(found is Absent.GONE for _, found in out):
            out = self._each(out, partial(self._gone_still, staged=self._staged_ids()),
                             failed)
        return out

    @staticmethod
    def _each(out: list[tuple[str, Item | Absent]],
              look: Callable[[str, Item | Absent], Item | Absent],
              failed: dict[str, SpoolIOError] | None) -> list[tuple[str, Item | Absent]]:
        """``look`` for each id of ``out``; one whose look the disk fails goes to
        ``failed``, left out (raised without it, or out of descriptors)."""
        looked: list[tuple[str, Item | Absent]] = []
        for job_id, found in out:
            try:
                looked.append((job_id, look(job_id, found)))
            except SpoolIOError as exc:
                if failed is None or _for_want_of_descriptors(exc):
                    raise
                failed[job_id] = exc
        return looked

    def _found(self, job_id: str, _: Item | Absent, staged: set[str]) -> Item | Absent:
        """The first look at an id found in no state folder (see :meth:`_absent`)."""
        if self._moving(job_id, staged):
            return Absent.MOVING
        stamp = self.current(job_id)
        item = self.load(job_id, stamp) if stamp is not None else None
        return (item if item is not None else
                Absent.GONE if stamp is None else
                Absent.DENIED if denied_file(self.layout, job_id) is not None else
                Absent.MOVING)

    def _gone_still(self, job_id: str, found: Item | Absent, staged: set[str] | None
                    ) -> Item | Absent:
        """``found`` after the second listing of ``tmp/`` (``staged``: None when it
        cannot be listed): an id gone at the first look may be moving."""
        if found is Absent.GONE and (staged is None or self._moving(job_id, staged)):
            return Absent.MOVING
        return found

    def _moving(self, job_id: str, staged: set[str]) -> bool:
        """Staged for a move, or quarantined: its original in ``failed/``, its record on
        the way.  Raised when the disk cannot look the original up (EIO, a stale NFS
        handle): ``os.path.lexists`` took that for no original and the id for gone,
        removed from the index (its task streams ended, a GET answered 404) while its
        record was being written.  One ``lstat`` first, as ``lexists`` costs: a purge
        asks this of each id it removes, twice, and :func:`~spool.fsops.is_there`'s
        message, built at every call, made that some 5% slower; it is asked only to say an
        error."""
        if job_id in staged:
            return True
        original = self.layout.original_str(job_id)
        try:
            os.lstat(original)
        except FileNotFoundError:
            return False
        except OSError:
            return is_there(original, f"cannot look up the original of {job_id}")
        return True

    def _staged_ids(self) -> set[str] | None:
        """The ids a cancel, retry or quarantine holds in ``tmp/`` or ``stage/`` now
        (:meth:`statusd.staging.StagedMoves.ids`; None when ``tmp/`` cannot be listed)."""
        return self._staged.ids()

    def load(self, job_id: str, stamp: Stamp) -> Item | None:
        """The item for one version of an id; None when the file vanished meanwhile.
        SpoolIOError when statusd is out of descriptors or the disk fails (EIO): a file it
        could not open is no file gone (as one, a job that moved then was removed from the
        index, its streams ended, a GET answered 404)."""
        with unreadable_as_trouble(f"cannot read {job_id}"):
            path = self.layout.job(stamp.state, job_id)
            if stamp.state in TERMINAL:
                raw = read_record(path, strict=True)
                if raw is None:
                    return None
                if isinstance(raw, Head):  # never parsed whole, nor by the reader below
                    return large_item(job_id, stamp, path, raw)
                item = terminal_item(job_id, stamp, raw)
                if item is not None:
                    return item
            record = self.reader.load(entry_of(self.layout, job_id, stamp), strict=True)
            return None if record is None else item_of_record(record, stamp)

    def full_body(self, job_id: str) -> bytes | None:
        """The full record JSON of an id as it stands on disk (for large records); None
        when the id is in no state folder or its record is large (streamed, never read
        whole: :func:`statusd.bodies.open_indexed`)."""
        body = lookup.read_current(job_id, self.current, partial(body_of, self.layout, self.reader),
                            LOOKS)
        return body if isinstance(body, bytes) else None


def _for_want_of_descriptors(exc: SpoolIOError) -> bool:
    """The trouble is the process's (out of descriptors: every id's read would fail
    alike), not one file's."""
    return isinstance(exc.__cause__, OSError) and exc.__cause__.errno in NO_DESCRIPTOR


def failed_file(exc: SpoolIOError) -> bool:
    """``exc`` (of :func:`~spool.fsops.unreadable_as_trouble`) is the disk failing one
    file (EIO: a bad sector under it), not statusd short of descriptors."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.EIO
