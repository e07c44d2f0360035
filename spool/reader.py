"""The read side: one record, a filtered page of records, stats, processors.

Needs no daemon: everything is read from the folders (DESIGN section 2).  Which of an
id's files tells its state is :func:`spool.entries.newest`'s rule; what a ``done/`` or
``failed/`` file that cannot be read is reported as, :mod:`spool.terminal_records`'s;
the stats document is built by :mod:`spool.stats`, and a listing's order and cursors
are :mod:`spool.cursor`'s.  This module re-exports the names its users import from it.

Listing is newest ``submitted_at`` first (ties by id, descending); a cursor is
the sort key of the last row, so pages stay stable while jobs move.  A file's time
cannot stand in for ``submitted_at`` (a record's is when the job finished, a job file
may carry any ``submitted_at``, and hosts sharing a spool have their own clocks), so
a page reads every file it may hold, but validates as a record only the few that can
be on the page (:meth:`SpoolReader.page`).
"""

from __future__ import annotations

import heapq
import math
import os
import stat
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import TypeAdapter, ValidationError

from spool import stats
from spool.clock import utc_from_ns
from spool.cursor import (
    MAX_PAGE,
    Page,
    decode_cursor,
    encode_cursor,
    micros,
    sort_key,
)
from spool.entries import (
    Entry,
    Stamp,
    newest,
    read_regular,
    scan_folder,
    scan_ids,
)
from spool.errors import InvalidId, NotFoundError, SpoolIOError
from spool.fsops import unreadable_as_trouble
from spool.ids import is_valid_id
from spool.jobfile import MAX_ACTIVE_BYTES
from spool.layout import Layout
from spool.lease import HEARTBEAT_STALE_S
from spool.models import OwnerStatus, Progress, Record, aware_utc
from spool.states import ACTIVE, TERMINAL, JobState
from spool.stats import RECENT_S, stats_document
from spool.terminal_records import terminal_record, too_deep, unreadable_record
from spool.text import without_bom

__all__ = [
    "HEARTBEAT_STALE_S",
    "KEEP_MAX_BYTES",
    "LOOKS",
    "MAX_PAGE",
    "PEEK_MAX_BYTES",
    "RECENT_S",
    "Entry",
    "KeyBounds",
    "Page",
    "SpoolReader",
    "Stamp",
    "decode_cursor",
    "encode_cursor",
    "newest",
    "read_regular",
    "scan_folder",
    "sort_key",
    "stats_document",
    "terminal_record",
    "too_deep",
    "unreadable_record",
]

LOOKS = 3
"""How many times :meth:`SpoolReader.get` looks an id up and reads it, a file that
moved between its stat and its read (a claim, a completion) read where it went."""
PEEK_MAX_BYTES = 1024 * 1024
"""A page reads files up to this size for what their sort key can be; a larger one is
read as a record (:meth:`SpoolReader.load`) whatever its key."""
KEEP_MAX_BYTES = 64 * 1024
"""A page keeps the bytes it read of a file up to this size, to build its record from."""
_SUBMITTED_AT: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)
"""``Record.submitted_at``'s type (its validator, :func:`aware_utc`, is applied after)."""


class KeyBounds(NamedTuple):
    """The least and greatest sort key a file's record can have, and the file's bytes
    when they were kept (see :meth:`SpoolReader.page`)."""

    least: tuple[float, str]
    greatest: tuple[float, str]
    data: bytes | None


class SpoolReader:
    """Reads records and stats straight from a spool's folders."""

    def __init__(self, layout: Layout, states: Iterable[JobState] = JobState) -> None:
        """``states``: the folders to look into, all but for a user who may not enter some
        (:meth:`unsearchable_states`); its caller says what was left out."""
        self.layout = layout
        self.states = tuple(states)

    # -- one record ----------------------------------------------------------------

    def entries_of(self, job_id: str) -> list[Entry]:
        """The id's files, regular files only, as :func:`scan_folder` lists them: a
        symlink, directory or FIFO under that name is no job or record, so it cannot
        hide the id's record by being newer."""
        found = []
        for state in self.states:
            path = self.layout.job(state, job_id)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(Entry(job_id, state, path, st.st_mtime_ns, st.st_ctime_ns,
                                   st.st_ino))
        return found

    def unsearchable_states(self, *, listing: bool = False) -> list[JobState]:
        """The state folders this process may not look into, so cannot tell a job's state
        from: a member of the submit group only reaches ``pending/`` (docs/operations.md,
        "Permissions"), a member of the spool's group only all but ``pending/``, and
        :meth:`get` would fail with EACCES in the others.  ``listing``: the folders it
        may not list (a submitter may enter ``pending/`` but not list it), where
        :meth:`page` and :meth:`stats` would fail.  Effective ids, as the lookups
        themselves use (``sudo -u spoolq``)."""
        effective = os.access in os.supports_effective_ids
        mode = os.R_OK | os.X_OK if listing else os.X_OK
        return [state for state in JobState
                if os.path.isdir(self.layout.folder(state))
                and not os.access(self.layout.folder(state), mode, effective_ids=effective)]

    def get(self, job_id: str) -> Record:
        """The record of ``job_id``; NotFoundError when no folder has it, SpoolIOError when
        this process is out of descriptors or the disk fails (its file unopened is no job
        gone: "no job" had ``show`` and ``wait`` exit 1, and statusd's cancel and retry
        answer 404)."""
        if not is_valid_id(job_id):
            raise InvalidId(f"invalid id: {job_id!r}")
        for _ in range(LOOKS):  # a file may move between stat and read: look again
            with unreadable_as_trouble(f"cannot look up {job_id}"):  # lstat's EIO too
                entry = newest(self.entries_of(job_id))
            if entry is None:
                break
            with unreadable_as_trouble(f"cannot read {job_id}"):
                record = self.load(entry, strict=True)
            if record is not None:
                return record
        raise NotFoundError(f"no job {job_id}")

    def _get_or_none(self, job_id: str) -> Record | None:
        try:
            return self.get(job_id)
        except NotFoundError:
            return None

    def load(self, entry: Entry, *, strict: bool = False) -> Record | None:
        """The record a folder entry stands for; None if it vanished meanwhile.
        ``strict``: out of descriptors raises the OSError (:func:`read_regular`)."""
        data = read_regular(entry.path, MAX_ACTIVE_BYTES if entry.state in ACTIVE else None,
                            strict=strict)
        return None if data is None else self.record_of(entry, data)

    def record_of(self, entry: Entry, data: bytes) -> Record:
        """The record of a folder entry whose bytes were read (:meth:`load`)."""
        if entry.state in ACTIVE:
            return self._active_record(entry, data)
        return terminal_record(entry, data)

    def _active_record(self, entry: Entry, data: bytes) -> Record:
        data = without_bom(data)
        try:
            obj = orjson.loads(data)
            fields = obj if isinstance(obj, dict) and not too_deep(data, obj) else {}
            record = Record.model_validate({**fields, "id": entry.job_id, "state": entry.state})
        except (ValueError, ValidationError):
            record = Record(id=entry.job_id, state=entry.state)
        if record.submitted_at is None:
            record.submitted_at = utc_from_ns(entry.mtime_ns)
        if entry.state is JobState.RUNNING:
            record.attempts += 1
            record.error = None
            record.started_at = utc_from_ns(entry.ctime_ns)
            progress = self.progress(entry.job_id)
            if progress is not None:
                record.progress = progress
                record.started_at = progress.started_at or record.started_at
                record.host, record.pid = progress.host, progress.pid
        return record

    def progress(self, job_id: str) -> Progress | None:
        try:
            data = read_regular(self.layout.progress_file(job_id), MAX_ACTIVE_BYTES)
            return None if data is None else Progress.model_validate_json(data)
        except (FileNotFoundError, ValueError):
            return None

    # -- many records -------------------------------------------------------------

    def current_stamps(self, state: JobState | None = None) -> dict[str, Stamp]:
        """One stamp per id, of the file that tells its state (as :func:`newest` picks it):
        one pass over each folder, entries built only for an id found in two folders.
        ``state``: only the ids whose file of that state tells theirs (:meth:`_stamps_in`)."""
        if state is not None:
            return self._stamps_in(state)
        chosen: dict[str, Stamp] = {}
        clashes: dict[str, list[Entry]] = {}
        for folder_state in self.states:
            for job_id, _, mtime_ns, ctime_ns in scan_ids(self.layout.folder(folder_state)):
                stamp = Stamp(folder_state, mtime_ns, ctime_ns)
                first = chosen.setdefault(job_id, stamp)
                if first is not stamp:  # rare: a re-drop, a completion cut short
                    group = clashes.setdefault(job_id, [self.entry(job_id, first)])
                    group.append(self.entry(job_id, stamp))
        for job_id, group in clashes.items():
            best = newest(group)
            if best is not None:
                chosen[job_id] = Stamp(best.state, best.mtime_ns, best.ctime_ns)
        return chosen

    def _stamps_in(self, state: JobState) -> dict[str, Stamp]:
        """:meth:`current_stamps` of the ids whose ``state`` file tells their state.

        Only that folder's entries are stat'ed: the others are listed by name, and an id
        found there too is looked up whole (:meth:`entries_of`, :func:`newest`).  A file
        in ``pending/`` always wins, so ``pending/`` alone needs no other folder.  (With
        100,000 records, ``spoolq ls --state failed`` stat'ed every one of them.)
        """
        if state not in self.states:
            return {}
        names: set[str] = set()
        if state is not JobState.PENDING:
            for other in self.states:
                if other is not state:
                    names.update(_names(self.layout.folder(other)))
        chosen: dict[str, Stamp] = {}
        for job_id, path, mtime_ns, ctime_ns in scan_ids(self.layout.folder(state)):
            if os.path.basename(path) not in names:
                chosen[job_id] = Stamp(state, mtime_ns, ctime_ns)
                continue
            best = newest(self.entries_of(job_id))  # rare: a re-drop, a completion cut short
            if best is not None and best.state is state:
                chosen[job_id] = Stamp(best.state, best.mtime_ns, best.ctime_ns)
        return chosen

    def entry(self, job_id: str, stamp: Stamp) -> Entry:
        """The entry of the file ``stamp`` tells of."""
        return Entry(job_id, stamp.state, self.layout.job(stamp.state, job_id), stamp.mtime_ns,
                     stamp.ctime_ns)

    def page(self, *, state: JobState | None = None, tool: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        """A page of records, newest first; ValueError on a bad cursor or limit.

        Every file that may be listed is read for the least and greatest sort key its
        record can have (:meth:`_key_bounds`); then, greatest first, files are read as
        records until the page is full and no file left can sort before its last row.
        A file whose greatest key is below the least keys of ``limit + 1`` others is
        dropped as soon as it is read (:meth:`_candidates`): held whole, 120,000 records
        took 190 MB.  Should those others not give a full page after all (moved, gone,
        changed since), the page is made again from every file.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        candidates, dropped = self._candidates(state, tool, after, limit)
        top, trouble = self._rows(candidates, state, tool, after, limit)
        if dropped is not None and (len(top) <= limit or dropped >= top[0][0]):
            candidates, _ = self._candidates(state, tool, after, None)
            top, trouble = self._rows(candidates, state, tool, after, limit)
        rows = [record for _, _, record in sorted(top, reverse=True)]
        page = rows[:limit]
        if len(rows) <= limit:
            return Page(page, None, tuple(error for _, error in trouble))
        # Only the errors of this page's range: one of a record a later page lists had
        # ``ls`` exit 1 and name it under a page whose every row was read.
        last = sort_key(page[-1])
        return Page(page, encode_cursor(last),
                    tuple(error for key, error in trouble if key >= last))

    def _candidates(self, state: JobState | None, tool: str | None,
                    after: tuple[int, str] | None, limit: int | None
                    ) -> tuple[list[tuple[KeyBounds, str, Stamp]], tuple[float, str] | None]:
        """The files that may be on the page, greatest key first, and the greatest key of
        those dropped (None if none was).  ``limit``: drop a file whose greatest key is
        below the least keys of ``limit + 1`` files kept; None keeps every file."""
        candidates = []
        floor: list[tuple[float, str]] = []  # a heap: the limit + 1 greatest least keys
        dropped: tuple[float, str] | None = None
        for job_id, stamp in self.current_stamps(state).items():
            bounds = self._key_bounds(job_id, stamp, tool)
            if bounds is None or (after is not None and bounds.least >= after):
                continue
            if limit is not None and len(floor) > limit and bounds.greatest < floor[0]:
                dropped = bounds.greatest if dropped is None else max(dropped, bounds.greatest)
                continue
            candidates.append((bounds, job_id, stamp))
            if limit is not None:
                (heapq.heappush if len(floor) <= limit else heapq.heappushpop)(
                    floor, bounds.least)
        candidates.sort(key=lambda c: c[0].greatest, reverse=True)
        return candidates, dropped

    def _rows(self, candidates: list[tuple[KeyBounds, str, Stamp]], state: JobState | None,
              tool: str | None, after: tuple[int, str] | None, limit: int
              ) -> tuple[list[tuple[tuple[int, str], int, Record]],
                         list[tuple[tuple[int, str], str]]]:
        """The ``limit + 1`` greatest rows of ``candidates`` (a heap, least first), and the
        (sort key, error) of each file the disk failed to read."""
        top: list[tuple[tuple[int, str], int, Record]] = []
        trouble: list[tuple[tuple[int, str], str]] = []
        for n, (bounds, job_id, stamp) in enumerate(candidates):
            if len(top) > limit and bounds.greatest < top[0][0]:
                break  # no file left can be on this page
            entry = self.entry(job_id, stamp)
            try:
                record = self._listed(entry, bounds.data, state, tool, after)
            except SpoolIOError as exc:
                # One file the disk cannot read (EIO) is a row that says so, not a listing
                # refused whole: the other jobs were hidden by one bad sector.  (Of a tool
                # unknown: said, not listed, under ``tool``.)
                record = unreadable_record(entry, str(exc))
                if after is not None and sort_key(record) >= after:
                    continue  # on an earlier page
                trouble.append((sort_key(record), str(exc)))
                if tool is not None:
                    continue
            if record is not None:
                row = (sort_key(record), n, record)
                (heapq.heappush if len(top) <= limit else heapq.heappushpop)(top, row)
        return top, trouble

    def _listed(self, entry: Entry, data: bytes | None, state: JobState | None,
                tool: str | None, after: tuple[int, str] | None) -> Record | None:
        """The record of ``entry`` (from ``data`` when its bytes were kept) if it belongs on
        a page of these filters, else None."""
        record = self.load(entry) if data is None else self.record_of(entry, data)
        if record is None:  # moved since the scan (claimed, say): read it where it is
            record = self._get_or_none(entry.job_id)
            if record is None or (state is not None and record.state is not state):
                return None
        if tool is not None and record.tool != tool:
            return None
        return record if after is None or sort_key(record) < after else None

    def _key_bounds(self, job_id: str, stamp: Stamp, tool: str | None) -> KeyBounds | None:
        """The least and greatest sort key the file's record can have, read from its bytes
        without validating them; None when its record cannot be of ``tool``.

        The key is the ``submitted_at`` the file gives, or its time when the file turns
        out not to be a valid record (or, in ``pending/`` and ``running/``, gives none):
        it is one of the two, whatever the rest of the file holds.  A file gone, moved or
        over :data:`PEEK_MAX_BYTES` may be anything.
        """
        data = read_regular(self.layout.job_str(stamp.state, job_id), PEEK_MAX_BYTES)
        if data is None:
            return KeyBounds((-math.inf, job_id), (math.inf, job_id), None)
        kept = data if len(data) <= KEEP_MAX_BYTES else None
        keys = [micros(utc_from_ns(stamp.mtime_ns))]
        try:
            fields = orjson.loads(without_bom(data))
        except ValueError:
            fields = None
        if not isinstance(fields, dict):  # read as unreadable: no tool
            return None if tool is not None else KeyBounds((keys[0], job_id),
                                                           (keys[0], job_id), kept)
        if tool is not None and fields.get("tool") != tool:
            return None  # a record of another tool, or none (invalid: no tool)
        try:
            submitted = aware_utc(_SUBMITTED_AT.validate_python(fields.get("submitted_at")))
        except ValueError:  # pydantic's ValidationError too: the record is invalid
            submitted = None
        else:
            if submitted is not None or stamp.state in TERMINAL:
                keys.append(micros(submitted))
        return KeyBounds((min(keys), job_id), (max(keys), job_id), kept)

    # -- stats (spool.stats) ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return stats.counts(self)

    def processors(self) -> list[OwnerStatus]:
        """Status of every live processor (its owner lock held)."""
        return stats.processors(self.layout)

    def stats(self, now: float | None = None, *, partial: bool = False) -> dict[str, Any]:
        """DESIGN section 9's stats shape, from one scan of the folders
        (:func:`spool.stats.stats`)."""
        return stats.stats(self, now, partial=partial)


def _names(folder: str | os.PathLike[str]) -> list[str]:
    """The names in ``folder``, none when it is missing."""
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
