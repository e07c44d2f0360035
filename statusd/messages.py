"""The JSON shapes of WebSocket messages (DESIGN section 9), encoded once as bytes.

Every message is an object with ``event`` (``snapshot``, ``transition``,
``progress``), ``id`` and ``state``; ``progress`` (``fraction``, ``message``)
while the job runs; ``record`` on snapshots and transitions; ``previous`` (the
state the index knew before, or null) on transitions.  The record is spliced
in as the bytes the index already holds, so a broadcast costs one small
``orjson.dumps`` however large the record.
"""

from __future__ import annotations

from typing import Any

import orjson

from spool.states import JobState
from statusd.items import Item


def snapshot(item: Item, record: bytes) -> bytes:
    return _envelope({"event": "snapshot"}, item, record)


def transition(item: Item, previous: JobState | None, record: bytes) -> bytes:
    head = {"event": "transition", "previous": previous.value if previous else None}
    return _envelope(head, item, record)


def progress(item: Item) -> bytes:
    return _envelope({"event": "progress"}, item, None)


def _envelope(head: dict[str, Any], item: Item, record: bytes | None) -> bytes:
    head.update(id=item.job_id, state=item.state.value)
    if item.progress is not None:
        head["progress"] = item.progress
    out = orjson.dumps(head)
    if record is None:
        return out
    return b"".join((out[:-1], b',"record":', record.strip(), b"}"))
