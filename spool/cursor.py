"""The order of a listing and its cursors: newest ``submitted_at`` first, ties by id
descending; a cursor is the sort key of a page's last row, so pages stay stable while
jobs move (DESIGN section 9, "HTTP shapes")."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # only named: the constants and cursors serve what builds no model
    from spool.models import Record

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Record]
    next_cursor: str | None
    trouble: tuple[str, ...] = ()
    """The read errors (EIO) of records listed as ``unreadable`` rows: the page is not
    whole, which ``spoolq ls`` says (exit 1) after the rows it could read."""


def sort_key(record: Record) -> tuple[int, str]:
    return micros(record.submitted_at), record.id


def micros(ts: datetime | None) -> int:
    """``ts`` in whole microseconds since the epoch (0 for none): a sort key's first part."""
    return int(ts.timestamp() * 1_000_000) if ts else 0


def encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The sort key a cursor stands for; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        submitted_us, job_id = orjson.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc
    # JSON's true is an int to isinstance: ``[true, "x"]`` was taken, for an empty page.
    if type(submitted_us) is not int or not isinstance(job_id, str):
        raise ValueError("invalid cursor")
    return submitted_us, job_id
