"""Index items: what statusd keeps per id, and how a record's bytes become one.

An :class:`Item` holds the record JSON exactly as statusd answers with it,
encoded once when the record is indexed, plus the few fields the index sorts
and filters by.  :class:`Stamp` says which version of an id's file an item
was built from, so a rescan can tell what changed without reading anything.

Terminal records are written by :mod:`spool.transitions` from validated
models, so :func:`terminal_item` serves their bytes after an orjson parse and
a structural check of the fields the index and the dashboard rely on;
anything that fails it is validated by pydantic instead (:func:`item_of_record`).
An item of a record over :data:`BRIEF_MAX_BYTES` also keeps its brief list row
(``?view=brief``), built once when it is indexed, so a brief page is a join too.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from spool.clock import utc_from_ns
from spool.errors import ErrorType
from spool.large import LIST_WHOLE_MAX_BYTES
from spool.models import Record, record_bytes
from spool.states import JobState

INLINE_MAX_BYTES = LIST_WHOLE_MAX_BYTES
"""Records larger than this (a backtest's equity curves) stay on disk; lists carry
them without ``result`` and with ``"result_omitted": true`` (as ``spoolq ls`` does)."""

BRIEF_MAX_BYTES = 4 * 1024
"""Rows of the brief list (``GET /api/v1/tasks?view=brief``) of records larger than
this leave out what the list does not show (:func:`_brief`)."""
BRIEF_LEFT_OUT = ("params", "meta", "result", "earlier_errors")
"""What a large record's brief row leaves out, each with ``<name>_omitted``: a retried
job's ``earlier_errors`` alone may be 19 KB (ten messages of 300 escaped characters);
the row keeps ``earlier_errors_dropped`` and ``attempts``, which say how many there were."""
BRIEF_MESSAGE_CHARS = 1000
"""Of an error message, what a brief row keeps (the dashboard shows this much on hover)."""

DUMP_OPTS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_ERROR_TYPES = frozenset(e.value for e in ErrorType)


class Stamp(NamedTuple):
    """What identifies one version of an id on disk: a change of any part means reload."""

    state: JobState
    mtime_ns: int
    ctime_ns: int
    progress_ns: int = 0
    """A running job's progress file as :func:`progress_stamp` gives it; 0: none."""
    ino: int = 0
    """The file's inode: a record replaced within one clock tick of the kernel's coarse
    file times (a few ms) has the same mtime and ctime as the one it replaced."""


def progress_stamp(mtime_ns: int, ino: int) -> int:
    """A progress file's mtime and inode as one number, which changes when either does.
    The mtime alone moves by the kernel's tick (4 ms here): a report published within
    the tick of the one before it looked the same, and was never read; each report is
    a new file (published by rename), so its inode tells it apart."""
    return (ino << 64) | (mtime_ns & 0xFFFF_FFFF_FFFF_FFFF) or 1


class Rare(NamedTuple):
    """What few items have (see :attr:`Item.rare`)."""

    fraction: float | None = None
    message: str = ""
    due_ns: int | None = None
    brief: bytes | None = None


_NONE_RARE = Rare()


class Item(NamedTuple):
    """One id as the index holds it: sort key, filters, and the JSON it answers with.

    A NamedTuple rather than a dataclass: start-up builds 100,000 of them.
    """

    job_id: str
    state: JobState
    tool: str | None
    key: tuple[int, str]
    """(submitted_us, id): the order of :func:`spool.reader.sort_key`."""
    stamp: Stamp
    summary: bytes
    """Record JSON for lists and broadcasts (without ``result`` when large)."""
    body: bytes | None
    """Full record JSON, or None when larger than INLINE_MAX_BYTES (read on demand)."""
    duration_s: float | None = None
    error_type: str | None = None
    rare: Rare | None = None
    """A running job's progress, a pending job's due time, a large record's brief row,
    when there is one; None (nearly every record of a spool, done or failed): none.
    One field for four, each read through its property: 24 bytes an item fewer."""

    @property
    def fraction(self) -> float | None:
        return (self.rare or _NONE_RARE).fraction

    @property
    def message(self) -> str:
        return (self.rare or _NONE_RARE).message

    @property
    def due_ns(self) -> int | None:
        """When a pending job may run: its ``not_before``, or its retry's backoff if later
        (the oldest due pending age needs it)."""
        return (self.rare or _NONE_RARE).due_ns

    @property
    def brief(self) -> bytes | None:
        """The row of the brief list when it differs from ``summary`` (a record over
        BRIEF_MAX_BYTES); None: the summary is the brief row too."""
        return (self.rare or _NONE_RARE).brief

    @property
    def brief_row(self) -> bytes:
        return self.summary if self.brief is None else self.brief

    @property
    def progress(self) -> dict[str, Any] | None:
        if self.state is not JobState.RUNNING:
            return None
        return {"fraction": self.fraction, "message": self.message}


def item_of_record(record: Record, stamp: Stamp) -> Item:
    """An item from a validated record (pending, running, or an odd terminal file)."""
    body = exact(record_bytes(record))
    progress = record.progress
    submitted = record.submitted_at
    return _make_item(
        record.id, stamp, record.tool, body,
        submitted_us=_micros(submitted) if submitted else 0,
        duration_s=record.duration_s,
        error_type=record.error.type.value if record.error else None,
        fraction=progress.fraction if progress else None,
        message=progress.message if progress else "",
        fields=None,
        due_ns=_nanos(due) if (due := record.due_at()) else None,
    )


def terminal_item(job_id: str, stamp: Stamp, raw: bytes) -> Item | None:
    """An item straight from a terminal record's bytes; None when it fails the check."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return checked_item(job_id, stamp, obj, raw)


def checked_item(job_id: str, stamp: Stamp, obj: Any, raw: bytes | None) -> Item | None:
    """An item from a terminal record's parsed fields, if they pass the structural check.

    ``raw`` None: the fields are those before ``result`` of a record too large to
    parse (:mod:`statusd.large`); the item then has a summary and no body.
    """
    if not isinstance(obj, dict) or obj.get("id") != job_id or obj.get("state") != stamp.state:
        return None
    tool = obj.get("tool")
    submitted = parse_ts(obj.get("submitted_at"))
    duration = obj.get("duration_s")
    error = obj.get("error")
    if (
        (tool is not None and not isinstance(tool, str))
        or submitted is None
        or (duration is not None and not isinstance(duration, int | float))
        or not _error_ok(error, stamp.state)
        or not _optional_ts_ok(obj)
    ):
        return None
    return _make_item(job_id, stamp, tool, raw, submitted_us=submitted, duration_s=duration,
                      error_type=error["type"] if error else None, fraction=None, message="",
                      fields=obj)


def partial_item(job_id: str, stamp: Stamp, fields: dict[str, Any]) -> Item:
    """An item from the leading fields of a large record that were complete in its head
    (:mod:`statusd.large`): what is well-formed is kept, ``fields_omitted`` says the rest
    was not read, and ``submitted_at`` falls back to the file's mtime."""
    known = {k: v for k, v in fields.items() if k not in ("id", "state", "result")}
    known.update(id=job_id, state=stamp.state.value, fields_omitted=True)
    submitted = parse_ts(known.get("submitted_at"))
    if submitted is None:
        submitted = stamp.mtime_ns // 1000
        known["submitted_at"] = utc_from_ns(stamp.mtime_ns)
    tool = known.get("tool") if isinstance(known.get("tool"), str) else None
    duration = known.get("duration_s")
    error = known.get("error")
    return _make_item(job_id, stamp, tool, None, submitted_us=submitted,
                      duration_s=duration if isinstance(duration, int | float) else None,
                      error_type=error["type"] if isinstance(error, dict)
                      and _error_ok(error, JobState.FAILED) else None,
                      fraction=None, message="", fields=known)


def _make_item(job_id: str, stamp: Stamp, tool: str | None, body: bytes | None, *,
               submitted_us: int, duration_s: float | None, error_type: str | None,
               fraction: float | None, message: str, fields: dict[str, Any] | None,
               due_ns: int | None = None) -> Item:
    full: bytes | None = body
    data = fields
    if body is None or len(body) > INLINE_MAX_BYTES:
        data = data if data is not None else orjson.loads(body or b"{}")
        short = {k: v for k, v in data.items() if k != "result"}
        short["result_omitted"] = True
        summary = exact(orjson.dumps(short, option=DUMP_OPTS))
        full = None
        data = short
    else:
        summary = body
    brief = None
    if len(summary) > BRIEF_MAX_BYTES:  # the few large ones only: start-up parses no more
        brief = _brief(data if data is not None else orjson.loads(summary))
    return Item(job_id, stamp.state, _name(tool), (submitted_us, job_id), stamp, summary, full,
                float(duration_s) if duration_s is not None else None, _name(error_type),
                None if fraction is None and not message and due_ns is None and brief is None
                else Rare(fraction, message, due_ns, brief))


def _brief(data: dict[str, Any]) -> bytes:
    """A large record's brief row: without ``params``, ``meta``, ``result`` and
    ``earlier_errors`` (each one left out says so: ``"params_omitted": true``), and with
    the error's type and the
    start of its message only (``"error_cut": true``)."""
    row = {k: v for k, v in data.items() if k not in BRIEF_LEFT_OUT}
    for name in BRIEF_LEFT_OUT:
        if name in data or data.get(f"{name}_omitted"):
            row[f"{name}_omitted"] = True
    error = data.get("error")
    if isinstance(error, dict):
        text = error.get("message")
        text = text if isinstance(text, str) else ""
        if len(text) > BRIEF_MESSAGE_CHARS or set(error) - {"type", "message"}:
            row["error"] = {"type": error.get("type"), "message": text[:BRIEF_MESSAGE_CHARS]}
            row["error_cut"] = True
    return exact(orjson.dumps(row, option=DUMP_OPTS))


def exact(data: bytes) -> bytes:
    """``data`` in a bytes object of its own size, for what the index keeps.

    ``orjson.dumps`` (3.13 here) answers in the buffer it wrote into, 4 KB at least and
    never shrunk: kept as it came, a pending job's 300 bytes held 4 KB (tracemalloc), and
    a spool of 50,000 pending jobs took statusd 292 MiB of RSS, 100 MiB with the copy
    (about 5 KB a pending job, then 0.9 KB; QA).  A copy costs 0.1 us."""
    return memoryview(data).tobytes()


def _name(value: str | None) -> str | None:
    """One shared string per tool or error type name (sys.intern): parsed from each
    record, each item held a copy of its own (53 bytes for ``"echo"``), and the spool
    names a few tools a hundred thousand times."""
    return value if value is None else sys.intern(value)


def _error_ok(error: object, state: JobState) -> bool:
    if error is None:
        return state is JobState.DONE
    return (isinstance(error, dict) and error.get("type") in _ERROR_TYPES
            and isinstance(error.get("message"), str))


def _optional_ts_ok(obj: dict[str, Any]) -> bool:
    # Type checks only: parsing two more timestamps per record would cost a third
    # of start-up, and the spool writes them from validated datetimes.
    started, finished = obj.get("started_at"), obj.get("finished_at")
    if not isinstance(started, str | None) or not isinstance(finished, str | None):
        return False
    attempts = obj.get("attempts", 0)
    return isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 0


def parse_ts(value: object) -> int | None:
    """Microseconds since the epoch of an aware ISO 8601 string; None otherwise."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _micros(ts) if ts.tzinfo is not None else None


def _nanos(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000  # exact, before 1970 too


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(ts: datetime) -> int:
    # Same arithmetic as spool.reader.sort_key, so cursors mean the same thing.
    return int(ts.timestamp() * 1_000_000)
