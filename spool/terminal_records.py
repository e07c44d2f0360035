"""The record a ``done/`` or ``failed/`` file holds, read from its bytes.

A file that cannot be read as one (not JSON, truncated, not UTF-8, nested deeper than
the spool writes, not a record, or the record of another id or state) is reported in
the state of its folder with ``unreadable`` saying why, and nothing else claimed about
it: never as a clean done with a null result.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from spool.clock import utc_from_ns
from spool.entries import Entry
from spool.ids import JOB_SUFFIX
from spool.models import MAX_NESTING, Record, error_text, too_deep


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
                                 f"{error_text(first)})")
    except ValueError as exc:  # orjson: not JSON, truncated, not UTF-8, empty
        return unreadable_record(entry, f"{where} is not JSON ({exc})")
    if record.id != entry.job_id or record.state is not entry.state:
        return unreadable_record(entry, f"{where} holds the record of {record.id} "
                                 f"({record.state.value}), not of this job")
    return record



def unreadable_record(entry: Entry, reason: str) -> Record:
    """What is known of a terminal file that cannot be read: its id, its folder, its time."""
    return Record(id=entry.job_id, state=entry.state, submitted_at=utc_from_ns(entry.mtime_ns),
                  unreadable=reason)
