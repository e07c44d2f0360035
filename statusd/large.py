"""Large terminal records: indexed from their head, never read or parsed whole.

A record over :data:`PARSE_MAX_BYTES` (a backtest's equity curves can make one
of a GiB) would cost its size in memory to read and several times that to
parse, at start-up and on every change, for an index that keeps none of it:
lists, stats and WebSocket messages carry records without ``result``.  So the
index reads the first :data:`HEAD_BYTES` and the last :data:`TAIL_BYTES` only
(:mod:`spool.large` reads them; this module makes the index item):

* the fields before ``result`` (the spool writes every other field first) are
  parsed one by one from the head and checked as a small record's are
  (:func:`statusd.items.checked_item`), and ``result`` is skipped unread;
* a file that does not end in ``}`` is cut short, and one whose leading fields
  are not a record of this id and state is another file: both are indexed as
  ``unreadable`` (:func:`spool.reader.unreadable_record`), like a small record
  that does not parse;
* when a field before ``result`` does not end within the head (a huge
  ``params``), the fields read so far are kept and ``fields_omitted`` is set.

``GET /api/v1/tasks/{id}`` streams such a record from the very file the index
read (:mod:`statusd.sending`); it is never whole in statusd's memory.
"""

from __future__ import annotations

from pathlib import Path

from spool.large import Head, head_fields, not_this_job, of_this_job
from spool.models import Record
from spool.reader import Entry
from statusd.items import Item, Stamp, checked_item, item_of_record, partial_item


def large_item(job_id: str, stamp: Stamp, path: Path, found: Head) -> Item:
    """The index item of a record too large to parse (see the module docstring)."""
    entry = Entry(job_id, stamp.state, path, stamp.mtime_ns, stamp.ctime_ns)
    read = head_fields(entry, found)
    if isinstance(read, Record):
        return item_of_record(read, stamp)
    fields, complete = read
    if complete:
        item = checked_item(job_id, stamp, fields, None)
        if item is not None:
            return item
    elif of_this_job(entry, fields):
        return partial_item(job_id, stamp, fields)
    return item_of_record(not_this_job(entry), stamp)
