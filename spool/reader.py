"""The read side: one record, a filtered page of records, stats, processors.

Needs no daemon: everything is read from the folders (DESIGN section 2).  When
an id is seen in more than one folder, a file in ``pending/`` wins: it is a drop
still to run, and a drop of a running id waits there while the run before it
ends, records (newer than the drop) and is superseded.  Otherwise the newest
file wins: a terminal record written after the claim beats the ``running/``
leftover of a completion cut short.  A running file and a record of the same
tick of the filesystem's clock are told apart by their content: the record wins
only if it is of the running file's run (its submission and attempt), else it is
an earlier run's, whose waiting re-drop was claimed the moment it was written.

A record in ``done/`` or ``failed/`` that cannot be read (not JSON, truncated,
not UTF-8, not a record, or the record of another id or state) is reported in
the state of its folder with ``unreadable`` saying why, and nothing else
claimed about it: never as a clean done with a null result.

Listing is newest ``submitted_at`` first (ties by id, descending); a cursor is
the sort key of the last row, so pages stay stable while jobs move.  A file's time
cannot stand in for ``submitted_at`` (a record's is when the job finished, a job file
may carry any ``submitted_at``, and hosts sharing a spool have their own clocks), so
a page reads every file it may hold, but validates as a record only the few that can
be on the page (:meth:`SpoolReader.page`).
"""

from __future__ import annotations

import base64
import heapq
import math
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic import TypeAdapter, ValidationError

from spool.clock import utc_from_ns
from spool.errors import NotFoundError
from spool.ids import JOB_SUFFIX, id_from_name, is_valid_id
from spool.layout import Layout
from spool.lease import is_locked, open_nofollow
from spool.models import (
    MAX_NESTING,
    Job,
    OwnerStatus,
    Progress,
    Record,
    aware_utc,
    nested_too_deep,
)
from spool.states import ACTIVE, TERMINAL, JobState
from spool.transitions import MAX_ACTIVE_BYTES, read_fd

MAX_PAGE = 1000
HEARTBEAT_STALE_S = 60.0
"""A processor whose heartbeat is older than this is not live, though it holds its lock
(stopped by SIGSTOP, or its loop hung): its workers and counts are no longer shown."""
RECENT_S = 60.0
"""The window of ``throughput``: records written in ``done/`` and ``failed/`` this recently."""
PEEK_MAX_BYTES = 1024 * 1024
"""A page reads files up to this size for what their sort key can be; a larger one is
read as a record (:meth:`SpoolReader.load`) whatever its key."""
KEEP_MAX_BYTES = 64 * 1024
"""A page keeps the bytes it read of a file up to this size, to build its record from."""
_SUBMITTED_AT: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)
"""``Record.submitted_at``'s type (its validator, :func:`aware_utc`, is applied after)."""


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Record]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One job file as found in a state folder."""

    job_id: str
    state: JobState
    path: Path
    mtime_ns: int
    ctime_ns: int
    ino: int = 0
    """The file's inode where its finder kept it (:meth:`SpoolReader.entries_of`), else 0."""


class Stamp(NamedTuple):
    """What a folder scan knows of an id's file, without building its path."""

    state: JobState
    mtime_ns: int
    ctime_ns: int


class KeyBounds(NamedTuple):
    """The least and greatest sort key a file's record can have, and the file's bytes
    when they were kept (see :meth:`SpoolReader.page`)."""

    least: tuple[float, str]
    greatest: tuple[float, str]
    data: bytes | None


def sort_key(record: Record) -> tuple[int, str]:
    return _micros(record.submitted_at), record.id


def _micros(ts: datetime | None) -> int:
    return int(ts.timestamp() * 1_000_000) if ts else 0


def encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The sort key a cursor stands for; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, job_id = orjson.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(micros, int) or not isinstance(job_id, str):
        raise ValueError("invalid cursor")
    return micros, job_id


def scan_folder(layout: Layout, state: JobState, *, files_only: bool = True
                ) -> Iterator[Entry]:
    """The ``<id>.json`` entries of one state folder, other names skipped.

    ``files_only``: regular files only; a symlink, directory or FIFO dropped under such a
    name is no job or record (intake quarantines those in ``pending/``).
    """
    for job_id, path, mtime_ns, ctime_ns in _scan(layout.folder(state), files_only):
        yield Entry(job_id, state, Path(path), mtime_ns, ctime_ns)


def _scan(folder: Path, files_only: bool = True) -> Iterator[tuple[str, str, int, int]]:
    """``(id, path, mtime_ns, ctime_ns)`` of :func:`scan_folder`'s entries: plain values,
    as a scan of 100,000 records spent half its time building a ``Path`` per entry."""
    try:
        with os.scandir(folder) as it:
            for item in it:
                job_id = id_from_name(item.name)
                if job_id is None:
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if files_only and not stat.S_ISREG(st.st_mode):
                    continue
                yield job_id, item.path, st.st_mtime_ns, st.st_ctime_ns
    except FileNotFoundError:
        return


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes | None:
    """A regular file's bytes, never following a symlink nor blocking on a FIFO.

    None when it is gone, not a regular file, unreadable, or over ``limit``:
    anything can be dropped into ``pending/``, and a reader serves what it reads.
    """
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
            return None
        data = read_fd(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if limit is not None and len(data) > limit else data


def newest(entries: Iterable[Entry]) -> Entry | None:
    """Which of an id's files tells its state: a pending drop, else the newest file
    (see the module docstring)."""
    best: Entry | None = None
    for entry in entries:
        if entry.state is JobState.PENDING:
            return entry
        if best is None:
            best = entry
            continue
        new, old = _age_key(entry), _age_key(best)
        if new[0] == old[0] and new[1] != old[1]:  # a running file and a record, one tick
            running, record = (best, entry) if new[1] else (entry, best)
            best = record if _records_run_of(record, running) else running
        elif new > old:
            best = entry
    return best


def _age_key(entry: Entry) -> tuple[int, int]:
    # Claims and drops are renames (ctime moves); records are fresh files (mtime).
    stamp = entry.ctime_ns if entry.state in ACTIVE else entry.mtime_ns
    return stamp, entry.state in (JobState.DONE, JobState.FAILED)


def _records_run_of(record: Entry, running: Entry) -> bool:
    """The terminal ``record`` is of the run ``running`` holds: it records that job's
    submission and this attempt.  When either cannot be read, as before: the record."""
    from spool.large import Head, leading_fields, read_record  # noqa: PLC0415 (it imports us)

    job_data = read_regular(running.path, MAX_ACTIVE_BYTES)
    found = read_record(record.path)
    try:
        # Read as the job model reads it (recovery's test of the same question does):
        # a drop may give its submission as epoch seconds or with any UTC offset.
        job = Job.model_validate_json(job_data) if job_data is not None else None
        if found is None or job is None:
            return True
        fields = leading_fields(found.head)[0] if isinstance(found, Head) else orjson.loads(found)
        if not isinstance(fields, dict):
            return True
        record_submitted = datetime.fromisoformat(fields["submitted_at"])
    except (ValueError, TypeError, KeyError):  # pydantic's ValidationError is a ValueError
        return True
    return job.recorded_by(record_submitted, fields.get("attempts"), running.mtime_ns)


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
        """The record of ``job_id``; NotFoundError when no folder has it."""
        if not is_valid_id(job_id):
            raise ValueError(f"invalid id: {job_id!r}")
        for _ in range(3):  # a file may move between stat and read: look again
            entry = newest(self.entries_of(job_id))
            if entry is None:
                break
            record = self.load(entry)
            if record is not None:
                return record
        raise NotFoundError(f"no job {job_id}")

    def _get_or_none(self, job_id: str) -> Record | None:
        try:
            return self.get(job_id)
        except NotFoundError:
            return None

    def load(self, entry: Entry) -> Record | None:
        """The record a folder entry stands for; None if it vanished meanwhile."""
        data = read_regular(entry.path, MAX_ACTIVE_BYTES if entry.state in ACTIVE else None)
        return None if data is None else self.record_of(entry, data)

    def record_of(self, entry: Entry, data: bytes) -> Record:
        """The record of a folder entry whose bytes were read (:meth:`load`)."""
        if entry.state in ACTIVE:
            return self._active_record(entry, data)
        return terminal_record(entry, data)

    def _active_record(self, entry: Entry, data: bytes) -> Record:
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

    def current_stamps(self) -> dict[str, Stamp]:
        """One stamp per id, of the file that tells its state (as :func:`newest` picks it):
        one pass over each folder, entries built only for an id found in two folders."""
        chosen: dict[str, Stamp] = {}
        clashes: dict[str, list[Entry]] = {}
        for state in self.states:
            for job_id, _, mtime_ns, ctime_ns in _scan(self.layout.folder(state)):
                stamp = Stamp(state, mtime_ns, ctime_ns)
                first = chosen.setdefault(job_id, stamp)
                if first is not stamp:  # rare: a re-drop, a completion cut short
                    group = clashes.setdefault(job_id, [self._entry(job_id, first)])
                    group.append(self._entry(job_id, stamp))
        for job_id, group in clashes.items():
            best = newest(group)
            if best is not None:
                chosen[job_id] = Stamp(best.state, best.mtime_ns, best.ctime_ns)
        return chosen

    def _entry(self, job_id: str, stamp: Stamp) -> Entry:
        return Entry(job_id, stamp.state, self.layout.job(stamp.state, job_id), stamp.mtime_ns,
                     stamp.ctime_ns)

    def page(self, *, state: JobState | None = None, tool: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        """A page of records, newest first; ValueError on a bad cursor or limit.

        Every file that may be listed is read for the least and greatest sort key its
        record can have (:meth:`_key_bounds`); then, greatest first, files are read as
        records until the page is full and no file left can sort before its last row.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        candidates = []
        for job_id, stamp in self.current_stamps().items():
            if state is not None and stamp.state is not state:
                continue
            bounds = self._key_bounds(job_id, stamp, tool)
            if bounds is not None and (after is None or bounds.least < after):
                candidates.append((bounds, job_id, stamp))
        candidates.sort(key=lambda c: c[0].greatest, reverse=True)
        top: list[tuple[tuple[int, str], int, Record]] = []  # a heap, least first
        for n, (bounds, job_id, stamp) in enumerate(candidates):
            if len(top) > limit and bounds.greatest < top[0][0]:
                break  # no file left can be on this page
            record = self._listed(self._entry(job_id, stamp), bounds.data, state, tool, after)
            if record is not None:
                row = (sort_key(record), n, record)
                (heapq.heappush if len(top) <= limit else heapq.heappushpop)(top, row)
        rows = [record for _, _, record in sorted(top, reverse=True)]
        page = rows[:limit]
        return Page(page, encode_cursor(sort_key(page[-1])) if len(rows) > limit else None)

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
        keys = [_micros(utc_from_ns(stamp.mtime_ns))]
        try:
            fields = orjson.loads(data)
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
                keys.append(_micros(submitted))
        return KeyBounds((min(keys), job_id), (max(keys), job_id), kept)

    # -- stats ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobState}
        for stamp in self.current_stamps().values():
            counts[stamp.state.value] += 1
        return counts

    def processors(self) -> list[OwnerStatus]:
        """Status of every live processor (its owner lock held)."""
        live = []
        try:
            names = sorted(os.listdir(self.layout.owners))
        except FileNotFoundError:
            return []
        for name in names:
            owner = name.removesuffix(JOB_SUFFIX)
            if not name.endswith(JOB_SUFFIX) or not is_valid_id(owner):
                continue
            if not is_locked(self.layout.owner_lock(owner)):
                continue
            try:
                data = read_regular(self.layout.owner_status(owner), MAX_ACTIVE_BYTES)
                status = None if data is None else OwnerStatus.model_validate_json(data)
            except (FileNotFoundError, ValueError):
                continue
            if status is not None and _plausible(status):
                live.append(status)
        return live

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """DESIGN section 9's stats shape, from one scan of the folders."""
        now = now if now is not None else time.time()
        counts = {s.value: 0 for s in JobState}
        recent = {s.value: 0 for s in TERMINAL}
        since_ns = int((now - RECENT_S) * 1e9)
        pending: list[tuple[str, Stamp]] = []  # every pending file: a drop tells its id
        for job_id, stamp in self.current_stamps().items():
            counts[stamp.state.value] += 1
            if stamp.state in TERMINAL and stamp.mtime_ns >= since_ns:
                recent[stamp.state.value] += 1  # a record's mtime: when it was written
            elif stamp.state is JobState.PENDING:
                pending.append((job_id, stamp))
        # ctime: the rename into pending/ sets it, where a copy may keep an old mtime.
        oldest_ns = min((stamp.ctime_ns for _, stamp in pending), default=None)
        age = None if oldest_ns is None else max(0.0, now - oldest_ns / 1e9)
        first_due = self._first_due(pending)
        due_age = None if first_due is None or first_due > now else now - first_due
        return stats_document(counts, age, self.processors(), now,
                              finished_recently=recent, oldest_due_pending_age_s=due_age)

    def _first_due(self, pending: list[tuple[str, Stamp]]) -> float | None:
        """The earliest time a pending job may run (see :meth:`_due_at`).

        A job is due no earlier than its arrival, so taken by arrival, oldest first, the
        jobs after one that arrived when the earliest found is due cannot be due sooner:
        only jobs that wait for a ``not_before`` make it read more than the oldest.
        """
        first: float | None = None
        for job_id, stamp in sorted(pending, key=lambda p: p[1].ctime_ns):
            if first is not None and stamp.ctime_ns / 1e9 >= first:
                break
            due = self._due_at(self._entry(job_id, stamp))
            first = due if first is None else min(first, due)
        return first

    def _due_at(self, entry: Entry) -> float:
        """When a pending job may run: its arrival (ctime), or its not_before if later."""
        arrived = entry.ctime_ns / 1e9
        record = self.load(entry)  # a job that cannot be read is due at its arrival
        not_before = record.not_before if record is not None else None
        return max(arrived, not_before.timestamp()) if not_before is not None else arrived


def terminal_record(entry: Entry, data: bytes) -> Record:
    """The record a ``done/`` or ``failed/`` file holds, or one marked ``unreadable``."""
    where = f"{entry.state.value}/{entry.job_id}{JOB_SUFFIX}"
    try:
        obj = orjson.loads(data)
        if too_deep(data, obj):
            return unreadable_record(entry, f"{where} is nested more than {MAX_NESTING} "
                                     "levels deep")
        record = Record.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        return unreadable_record(entry, f"{where} is not a valid record ({field}: "
                                 f"{first['msg']})")
    except ValueError as exc:  # orjson: not JSON, truncated, not UTF-8, empty
        return unreadable_record(entry, f"{where} is not JSON ({exc})")
    if record.id != entry.job_id or record.state is not entry.state:
        return unreadable_record(entry, f"{where} holds the record of {record.id} "
                                 f"({record.state.value}), not of this job")
    return record


def too_deep(data: bytes, obj: Any) -> bool:
    """``obj`` (parsed from ``data`` by orjson) nests deeper than the spool writes: orjson
    reads 1,024 levels but writes 254, so a reader could not encode it.  Counting brackets
    first spares the check for all but files with that many of them."""
    return data.count(b"[") + data.count(b"{") > MAX_NESTING and nested_too_deep(obj)


def unreadable_record(entry: Entry, reason: str) -> Record:
    """What is known of a terminal file that cannot be read: its id, its folder, its time."""
    return Record(id=entry.job_id, state=entry.state, submitted_at=utc_from_ns(entry.mtime_ns),
                  unreadable=reason)


MAX_COUNT = 2**31 - 1


def _plausible(status: OwnerStatus) -> bool:
    """A status as a processor writes it.  Anything else in ``owners/`` is not read as
    one: a timestamp without an offset cannot be compared with the others', and a
    count past 64 bits cannot be encoded."""
    counts = (status.pid, status.job_num, status.busy_workers, status.fast_running,
              status.done_last_60s, status.failed_last_60s)
    return (status.heartbeat_at.tzinfo is not None and status.started_at.tzinfo is not None
            and all(0 <= n <= MAX_COUNT for n in counts))


def stats_document(counts: dict[str, int], oldest_pending_age_s: float | None,
                   processors: list[OwnerStatus], now: float, *,
                   finished_recently: dict[str, int],
                   oldest_due_pending_age_s: float | None) -> dict[str, Any]:
    """The stats document (docs/operations.md, "The stats document", says what each
    figure means).  ``processors`` are the lock holders; only those whose heartbeat is
    fresh are live and count.  ``finished_recently``: records written in the last
    ``RECENT_S`` by state (``done``, ``failed``), from the folders, so a processor's
    restart, death or hang cannot reset, lose or freeze them."""
    live = [p for p in processors if now - p.heartbeat_at.timestamp() < HEARTBEAT_STALE_S]
    live_owners = {p.owner for p in live}
    heartbeat: datetime | None = max((p.heartbeat_at for p in processors), default=None)
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "oldest_pending_age_s": oldest_pending_age_s,
        "oldest_due_pending_age_s": oldest_due_pending_age_s,
        "job_num": sum(p.job_num for p in live),
        "busy_workers": sum(p.busy_workers for p in live),
        "fast_running": sum(p.fast_running for p in live),
        "processor": {"alive": bool(live), "heartbeat_at": heartbeat, "count": len(live)},
        "processors": [{**p.model_dump(exclude={"tools"}), "alive": p.owner in live_owners}
                       for p in processors],
        "throughput": {
            "done_last_60s": finished_recently.get(JobState.DONE.value, 0),
            "failed_last_60s": finished_recently.get(JobState.FAILED.value, 0),
        },
    }
