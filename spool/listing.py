"""A page of records, newest first: ``spoolq ls``, :meth:`spool.client.Client.list`.

Listing is newest ``submitted_at`` first (ties by id, descending); a cursor is the sort
key of the last row (:mod:`spool.cursor`), so pages stay stable while jobs move.  A
file's time cannot stand in for ``submitted_at`` (a record's is when the job finished, a
job file may carry any ``submitted_at``, and hosts sharing a spool have their own
clocks), so a page reads every file it may hold, but validates as a record only the few
that can be on the page (:func:`page`).  The files are found, and the records built, by
a :class:`spool.reader.SpoolReader`.
"""

from __future__ import annotations

import heapq
import math
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import TypeAdapter

from spool.clock import utc_from_ns
from spool.cursor import MAX_PAGE, Page, decode_cursor, encode_cursor, micros, sort_key
from spool.entries import Entry, Stamp, read_opened, read_regular
from spool.errors import NotFoundError, SpoolIOError
from spool.models import Record, aware_utc
from spool.states import TERMINAL, JobState
from spool.terminal_records import unreadable_record
from spool.text import without_bom
from spool.view import shown

if TYPE_CHECKING:
    from spool.reader import SpoolReader

PEEK_MAX_BYTES = 1024 * 1024
"""A page reads files up to this size for what their sort key can be; a larger one is
read as a record (:meth:`SpoolReader.load`) whatever its key."""
KEEP_MAX_BYTES = 64 * 1024
"""A page keeps the bytes it read of a file up to this size, to build its record from."""
_SUBMITTED_AT: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)
"""``Record.submitted_at``'s type (its validator, :func:`aware_utc`, is applied after)."""

Candidate = tuple["KeyBounds", str, Stamp]
"""A file that may be on the page: its key bounds, its id and its stamp."""


class KeyBounds(NamedTuple):
    """The least and greatest sort key a file's record can have, and the file's bytes
    when they were kept (see :func:`page`)."""

    least: tuple[float, str]
    greatest: tuple[float, str]
    data: bytes | None


def page(reader: SpoolReader, *, state: JobState | None = None, tool: str | None = None,
         limit: int = 50, cursor: str | None = None) -> Page:
    """A page of records, newest first; ValueError on a bad cursor or limit.

    Every file that may be listed is read for the least and greatest sort key its
    record can have (:func:`key_bounds`); then, greatest first, files are read as
    records until the page is full and no file left can sort before its last row.
    A file whose greatest key is below the least keys of ``limit + 1`` others is
    dropped as soon as it is read (:func:`_candidates`): held whole, 120,000 records
    took 190 MB.  Should those others not give a full page after all (moved, gone,
    changed since), the page is made again from every file.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    after = decode_cursor(cursor) if cursor else None
    candidates, dropped = _candidates(reader, state, tool, after, limit)
    top, trouble = _rows(reader, candidates, state=state, tool=tool, after=after,
                         limit=limit)
    if dropped is not None and (len(top) <= limit or dropped >= top[0][0]):
        candidates, _ = _candidates(reader, state, tool, after, None)
        top, trouble = _rows(reader, candidates, state=state, tool=tool, after=after,
                             limit=limit)
    rows = [record for _, _, record in sorted(top, reverse=True)]
    shown = rows[:limit]
    if len(rows) <= limit:
        return Page(shown, None, tuple(error for _, error in trouble))
    # Only the errors of this page's range: one of a record a later page lists had
    # ``ls`` exit 1 and name it under a page whose every row was read.
    last = sort_key(shown[-1])
    return Page(shown, encode_cursor(last),
                tuple(error for key, error in trouble if key >= last))


def _candidates(reader: SpoolReader, state: JobState | None, tool: str | None,
                after: tuple[int, str] | None, limit: int | None
                ) -> tuple[list[Candidate], tuple[float, str] | None]:
    """The files that may be on the page, greatest key first, and the greatest key of
    those dropped (None if none was).  ``limit``: drop a file whose greatest key is
    below the least keys of ``limit + 1`` files kept; None keeps every file."""
    candidates = []
    floor: list[tuple[float, str]] = []  # a heap: the limit + 1 greatest least keys
    dropped: tuple[float, str] | None = None
    for job_id, stamp in reader.current_stamps(state).items():
        bounds = key_bounds(reader, job_id, stamp, tool)
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


def _rows(reader: SpoolReader, candidates: list[Candidate], *, state: JobState | None,
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
        entry = reader.entry(job_id, stamp)
        try:
            record = _listed(reader, entry, bounds.data, state=state, tool=tool,
                             after=after)
        except SpoolIOError as exc:
            # One file the disk cannot read (EIO) is a row that says so, not a listing
            # refused whole: the other jobs were hidden by one bad sector.  (Of a tool
            # unknown: said, not listed, under ``tool``.)
            record = unreadable_record(entry, shown(str(exc)))  # its real path, as root
            if after is not None and sort_key(record) >= after:
                continue  # on an earlier page
            trouble.append((sort_key(record), str(exc)))
            if tool is not None:
                continue
        if record is not None:
            row = (sort_key(record), n, record)
            (heapq.heappush if len(top) <= limit else heapq.heappushpop)(top, row)
    return top, trouble


def _listed(reader: SpoolReader, entry: Entry, data: bytes | None, *,
            state: JobState | None, tool: str | None, after: tuple[int, str] | None
            ) -> Record | None:
    """The record of ``entry`` (from ``data`` when its bytes were kept) if it belongs on
    a page of these filters, else None."""
    record = reader.load(entry) if data is None else reader.record_of(entry, data)
    if record is None:  # moved since the scan (claimed, say): read it where it is
        try:
            record = reader.get(entry.job_id)
        except NotFoundError:
            return None
        if state is not None and record.state is not state:
            return None
    if tool is not None and record.tool != tool:
        return None
    return record if after is None or sort_key(record) < after else None


def key_bounds(reader: SpoolReader, job_id: str, stamp: Stamp, tool: str | None
               ) -> KeyBounds | None:
    """The least and greatest sort key the file's record can have, read from its bytes
    without validating them; None when its record cannot be of ``tool``.

    The key is the ``submitted_at`` the file gives, or its time when the file turns
    out not to be a valid record (or, in ``pending/`` and ``running/``, gives none):
    it is one of the two, whatever the rest of the file holds.  A file gone, moved or
    over :data:`PEEK_MAX_BYTES` may be anything.
    """
    path = reader.layout.job_str(stamp.state, job_id)
    data = read_regular(path, PEEK_MAX_BYTES)
    kept = data if data is not None and len(data) <= KEEP_MAX_BYTES else None
    keys = [micros(utc_from_ns(stamp.mtime_ns))]
    fields: Any
    if data is not None:
        try:
            fields = orjson.loads(without_bom(data))
        except ValueError:
            fields = None
    elif stamp.state not in TERMINAL or (fields := _leading_fields(path)) is None:
        return KeyBounds((-math.inf, job_id), (math.inf, job_id), None)
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


HEAD_PEEK_BYTES = 64 * 1024
"""How much of a record over :data:`PEEK_MAX_BYTES` a page reads for its sort key."""


def _leading_fields(path: str) -> dict[str, Any] | None:
    """The fields before ``result`` of the terminal file at ``path``, from its first
    :data:`HEAD_PEEK_BYTES`, when they are all there and hold its state and
    ``submitted_at``; else None (gone, another kind of file, fields too long to read
    so, or not in the spool's order).  Every record between 1 and
    8 MiB (backtests) was read and parsed whole on every page: 2.9 s and 786 MB for
    one of 50 rows (QA)."""
    from spool.large import in_spool_order  # noqa: PLC0415 - spool.large imports this

    head = read_opened(path, lambda fd, st: os.pread(fd, HEAD_PEEK_BYTES, 0))
    # The fields the row is made of, as spool.large.BoundedReader reads it.
    return None if head is None else in_spool_order(head)
