"""The job files of the state folders: scanning a folder, reading a file safely, and
which of an id's files tells its state.

When an id is seen in more than one folder, a file in ``pending/`` wins: it is a drop
still to run, and a drop of a running id waits there while the run before it ends,
records (newer than the drop) and is superseded.  Otherwise the newest file wins, but
a record wins over a running file only if it is of the running file's run (its
submission and attempt, read from both): a terminal record written after the claim
beats the ``running/`` leftover of a completion cut short, where the record of a
waiting re-drop cancelled while the run before it went on (newer, of another
submission) never hid that run, nor one of the same tick of the filesystem's clock,
an earlier run's whose waiting re-drop was claimed the moment it was written
(:func:`newest`).

Only regular files are read, never through a symlink nor blocking on a FIFO
(:func:`read_regular`): anything can be dropped into ``pending/``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

from spool.fsops import NOT_NOW
from spool.ids import id_from_name
from spool.jobfile import MAX_ACTIVE_BYTES, parse_job, read_fd
from spool.layout import Layout
from spool.lease import open_nofollow
from spool.states import ACTIVE, JobState

T = TypeVar("T")


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


def scan_folder(layout: Layout, state: JobState, *, files_only: bool = True
                ) -> Iterator[Entry]:
    """The ``<id>.json`` entries of one state folder, other names skipped.

    ``files_only``: regular files only; a symlink, directory or FIFO dropped under such a
    name is no job or record (intake quarantines those in ``pending/``).
    """
    for job_id, path, mtime_ns, ctime_ns in scan_ids(layout.folder(state), files_only):
        yield Entry(job_id, state, Path(path), mtime_ns, ctime_ns)


def scan_ids(folder: Path, files_only: bool = True) -> Iterator[tuple[str, str, int, int]]:
    """``(id, path, mtime_ns, ctime_ns)`` of :func:`scan_folder`'s entries: plain values,
    as a scan of 100,000 records spent half its time building a ``Path`` per entry."""
    for job_id, path, st in scan_stats(folder, files_only):
        yield job_id, path, st.st_mtime_ns, st.st_ctime_ns


def scan_stats(folder: str | os.PathLike[str], files_only: bool = True
               ) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(id, path, stat)`` of the ``<id>.json`` entries of ``folder`` (never followed)."""
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
                yield job_id, item.path, st
    except FileNotFoundError:
        return


def read_regular(path: str | os.PathLike[str], limit: int | None = None, *,
                 strict: bool = False, absent: frozenset[int] | None = None
                 ) -> bytes | None:
    """A regular file's bytes, never following a symlink nor blocking on a FIFO.

    None when it is gone, not a regular file, unreadable, or over ``limit``:
    anything can be dropped into ``pending/``, and a reader serves what it reads.
    ``strict``: out of descriptors or the disk failing (:data:`~spool.fsops.NOT_NOW`)
    raises the OSError instead, for a caller that decides a job's fate by what it reads
    (recovery), which must not take a file it could not open for one that tells nothing.
    ``absent``: the only errnos read as no file, any other raised (EACCES too), for a
    caller that must not take a file it may not read for none (a processor's status).
    """
    def whole(fd: int, st: os.stat_result) -> bytes | None:
        if limit is not None and st.st_size > limit:
            return None
        # With the size, one read of size + 1 bytes: without it, two reads of 64 KiB,
        # the first cut down to the file, which fragmented the heap when many were kept.
        data = read_fd(fd, limit, st.st_size)
        return None if limit is not None and len(data) > limit else data

    return read_opened(path, whole, strict=strict, absent=absent)


def read_opened(path: str | os.PathLike[str],
                read: Callable[[int, os.stat_result], T], *,
                strict: bool = False, absent: frozenset[int] | None = None) -> T | None:
    """What ``read`` makes of a regular file open at a descriptor, with its stat; None
    when the file is gone, not a regular file or unreadable, as :func:`read_regular`
    says (``strict`` and ``absent`` too)."""
    def raised(exc: OSError) -> bool:
        return (strict and exc.errno in NOT_NOW) or (
            absent is not None and exc.errno not in absent)

    try:
        fd = open_nofollow(path)
    except OSError as exc:
        if raised(exc):
            raise
        return None
    try:
        st = os.fstat(fd)
        return read(fd, st) if stat.S_ISREG(st.st_mode) else None
    except OSError as exc:
        if raised(exc):  # a read the disk failed: no file gone
            raise
        return None
    finally:
        os.close(fd)


def denied_file(layout: Layout, job_id: str) -> str | None:
    """The ``<state>/<id>.json`` of ``job_id`` this process may not open (EACCES), which
    :func:`read_regular` reads as no file: a job that is there all the same, never to be
    answered "no job".  None when it has none such.  For a look-up that found nothing."""
    for state in JobState:
        try:
            fd = open_nofollow(layout.job_str(state, job_id))
        except PermissionError:
            return f"{state.value}/{job_id}.json"
        except OSError:
            continue
        os.close(fd)
    return None


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
        if new[1] != old[1]:  # a running file and a record
            running, record = (best, entry) if new[1] else (entry, best)
            if _age_key(record)[0] < _age_key(running)[0]:
                best = running  # an earlier run's record, kept until this run's replaces it
            else:  # newer or of one tick: the record wins if it is of this run
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
    from spool.large import found_fields, read_record  # noqa: PLC0415 (it imports us)

    job_data = read_regular(running.path, MAX_ACTIVE_BYTES)
    found = read_record(record.path)
    try:
        # Read as the job model reads it (recovery's test of the same question does):
        # a drop may give its submission as epoch seconds or with any UTC offset.
        job = parse_job(job_data) if job_data is not None else None
        if found is None or job is None:
            return True
        fields = found_fields(found)
        if not isinstance(fields, dict):
            return True
        record_submitted = datetime.fromisoformat(fields["submitted_at"])
    except (ValueError, TypeError, KeyError):  # pydantic's ValidationError is a ValueError
        return True
    return job.recorded_by(record_submitted, fields.get("attempts"), running.mtime_ns)
