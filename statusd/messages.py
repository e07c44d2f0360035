"""The JSON shapes of WebSocket messages (DESIGN section 9), encoded once as bytes.

Every message is an object with ``event`` (``snapshot``, ``transition``,
``progress``), ``id`` and ``state``; ``progress`` (``fraction``, ``message``)
while the job runs; ``record`` on snapshots and transitions; ``previous`` (the
state the index knew before, or null) on transitions.  The record is spliced
in as the bytes the index already holds, so a broadcast costs one small
``orjson.dumps`` however large the record.  A record too large to keep whole
in the index (over ``INLINE_MAX_BYTES``) is sent as its list summary, without
``result`` and with ``"result_omitted": true``, and the message carries
``record_url``, the REST path of the full record; so no message, the snapshot
included, is ever larger than a list row.  An events stream opened with
``view=brief`` gets the brief list row instead (:func:`brief_transition`), also
with ``record_url`` when the row is not the whole record.  A transition statusd
did not see happen (a state held for less than its look at the folders) but that
must have, for the state it then saw, is sent before it with ``"inferred": true``
and no record (:func:`inferred_transition`).
"""

from __future__ import annotations

from typing import Any

import orjson

from spool.states import JobState
from statusd.items import Item

RECORD_PATH = "/api/v1/tasks/"


def snapshot(item: Item, record: bytes) -> bytes:
    return _envelope({"event": "snapshot"}, item, record)


def transition(item: Item, previous: JobState | None, record: bytes) -> bytes:
    head = {"event": "transition", "previous": previous.value if previous else None}
    return _envelope(head, item, record)


def brief_transition(item: Item, previous: JobState | None) -> bytes | None:
    """The transition with the item's brief list row, or None when that row is its
    summary (a record of at most ``BRIEF_MAX_BYTES``: :func:`transition` says it all)."""
    if item.brief is None:
        return None
    head = {"event": "transition", "previous": previous.value if previous else None}
    return _envelope(head, item, item.brief, cut=True)


def inferred_transition(job_id: str, previous: JobState | None, state: JobState) -> bytes:
    """A transition the job must have made, too fast for statusd to see it."""
    return orjson.dumps({"event": "transition", "previous": previous.value if previous else None,
                         "id": job_id, "state": state.value, "inferred": True})


def progress(item: Item) -> bytes:
    return _envelope({"event": "progress"}, item, None)


def _envelope(head: dict[str, Any], item: Item, record: bytes | None,
              cut: bool = False) -> bytes:
    head.update(id=item.job_id, state=item.state.value)
    if item.progress is not None:
        head["progress"] = item.progress
    if record is not None and (cut or item.body is None):  # not the whole record
        head["record_url"] = f"{RECORD_PATH}{item.job_id}"
    out = orjson.dumps(head)
    if record is None:
        return out
    return b"".join((out[:-1], b',"record":', record.strip(), b"}"))
