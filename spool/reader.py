"""The read side: one record, a filtered page of records, stats, processors.

Needs no daemon: everything is read from the folders (DESIGN section 2).  Which of an
id's files tells its state is :func:`spool.entries.newest`'s rule; what a ``done/`` or
``failed/`` file that cannot be read is reported as, :mod:`spool.terminal_records`'s;
a page of records is made by :mod:`spool.listing`, in the order and with the cursors of
:mod:`spool.cursor`; the stats document is built by :mod:`spool.stats`.  This module
re-exports the names its users import from it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from spool import listing, stats
from spool.clock import utc_from_ns
from spool.cursor import MAX_PAGE, Page, decode_cursor, encode_cursor, sort_key
from spool.entries import (
    Entry,
    Stamp,
    newest,
    read_regular,
    scan_folder,
    scan_ids,
)
from spool.errors import InvalidId, NotFoundError
from spool.fsops import unreadable_as_trouble
from spool.history import active_fields
from spool.ids import is_valid_id
from spool.jobfile import MAX_ACTIVE_BYTES
from spool.layout import Layout
from spool.lease import HEARTBEAT_STALE_S
from spool.listing import KEEP_MAX_BYTES, PEEK_MAX_BYTES, KeyBounds
from spool.models import MAX_PROGRESS_BYTES, OwnerStatus, Progress, Record, kind_of, too_deep
from spool.states import ACTIVE, JobState
from spool.stats import RECENT_S, stats_document
from spool.terminal_records import terminal_record, unreadable_record
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


def no_job_file(layout: Layout, job_id: str, states: Iterable[JobState] = JobState) -> str:
    """Why what stands under the id's name in one of ``states``' folders is no job or
    record to read, if something is there: in ``pending/``, no regular file or one too
    large (until a processor judges it, none running, it is nothing else either, and "no
    job" alone sent its dropper looking elsewhere: h381); elsewhere, no regular file,
    which spoolq never makes there (a bare "no task" of a symlink in ``done/``: h396).
    To follow "no job ID"; empty when there is nothing to say."""
    for state in states:
        path = layout.job(state, job_id)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (kind := kind_of(st.st_mode)) != "file":
            what = f"a {kind}"
        elif state is JobState.PENDING and st.st_size > MAX_ACTIVE_BYTES:
            what = f"a file of {st.st_size} bytes, too large for a job"
        else:
            continue
        if state is JobState.PENDING:
            return (f": {state.value}/{path.name} is {what}, not a job file; a processor "
                    "quarantines it in failed/ when it looks at it")
        return (f": {state.value}/{path.name} is {what}, not a job's file; spoolq never "
                "makes one there: someone put it there, and may remove it")
    return ""


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
        said = no_job_file(self.layout, job_id, self.states)
        raise NotFoundError(f"no job {job_id}{said}")

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
            record = Record.model_validate({**fields, **active_fields(fields),
                                            "id": entry.job_id, "state": entry.state})
        except (ValueError, ValidationError):
            record = Record(id=entry.job_id, state=entry.state)
        if record.submitted_at is None:
            record.submitted_at = utc_from_ns(entry.mtime_ns)
        if entry.state is JobState.RUNNING:
            record.attempts += 1
            record.error = None
            record.started_at = utc_from_ns(entry.ctime_ns)
            if record.not_before is not None and record.started_at < record.not_before:
                # The file's ctime is the kernel's coarse clock, a few ms behind: a run
                # claimed at its not_before read as started before it (QA h380).
                record.started_at = record.not_before
            progress = self.progress(entry.job_id)
            if progress is not None:
                record.progress = progress
                record.started_at = progress.started_at or record.started_at
                record.host, record.pid = progress.host, progress.pid
        return record

    def progress(self, job_id: str) -> Progress | None:
        try:
            data = read_regular(self.layout.progress_file(job_id), MAX_PROGRESS_BYTES)
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
        """A page of records, newest first (:func:`spool.listing.page`); ValueError on a
        bad cursor or limit."""
        return listing.page(self, state=state, tool=tool, limit=limit, cursor=cursor)

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
