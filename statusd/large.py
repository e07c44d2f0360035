"""Large terminal records: indexed from their head, never read or parsed whole.

A record over :data:`PARSE_MAX_BYTES` (a backtest's equity curves can make one
of a GiB) would cost its size in memory to read and several times that to
parse, at start-up and on every change, for an index that keeps none of it:
lists, stats and WebSocket messages carry records without ``result``.  So the
index reads the first :data:`HEAD_BYTES` and the last :data:`TAIL_BYTES` only:

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

import codecs
import json
import os
import re
from pathlib import Path
from stat import S_ISREG
from typing import Any, NamedTuple

from spool.lease import open_nofollow
from spool.reader import Entry, unreadable_record
from spool.transitions import read_fd
from statusd.items import Item, Stamp, checked_item, item_of_record, partial_item

PARSE_MAX_BYTES = 8 * 1024 * 1024
"""Terminal records up to this size are read and parsed whole when indexed."""
HEAD_BYTES = 4 * 1024 * 1024
"""How much of a larger record is read for its leading fields (params, meta, error...)."""
TAIL_BYTES = 64

_SPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


class Head(NamedTuple):
    """The first and last bytes of a record too large to read whole."""

    head: bytes
    tail: bytes
    size: int


def read_record(path: str | os.PathLike[str]) -> bytes | Head | None:
    """A terminal file's bytes, or its :class:`Head` when over PARSE_MAX_BYTES; None when
    it is gone or not a regular file (never following a symlink, never blocking)."""
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            return None
        if st.st_size <= PARSE_MAX_BYTES:
            return read_fd(fd)
        head = os.pread(fd, HEAD_BYTES, 0)
        tail = os.pread(fd, TAIL_BYTES, max(0, st.st_size - TAIL_BYTES))
        return Head(head, tail, st.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def leading_fields(head: bytes) -> tuple[dict[str, Any], bool]:
    """The top-level fields of a JSON object that come before ``result`` (or its end),
    parsed from its first bytes; and whether every one of them was complete.

    ValueError when the head is not the start of a JSON object.
    """
    text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    pos = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    fields: dict[str, Any] = {}
    pos += 1
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos:pos + 1] == "}":
            return fields, True
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return fields, False  # the head ends inside a key
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if not isinstance(key, str) or text[pos:pos + 1] != ":":
            raise ValueError("not a JSON object")
        if key == "result":
            return fields, True
        pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        try:
            fields[key], pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return fields, False  # cut by the end of the head (or bad: the rest is unread)
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] != "}":
            raise ValueError("not a JSON object")


def large_item(job_id: str, stamp: Stamp, path: Path, found: Head) -> Item:
    """The index item of a record too large to parse (see the module docstring)."""
    entry = Entry(job_id, stamp.state, path, stamp.mtime_ns, stamp.ctime_ns)
    where = f"{stamp.state.value}/{path.name}"
    if not found.tail.rstrip().endswith(b"}"):
        return item_of_record(unreadable_record(entry, f"{where} is cut short ({found.size} "
                                                "bytes, not ending in '}')"), stamp)
    try:
        fields, complete = leading_fields(found.head)
    except ValueError:
        return item_of_record(unreadable_record(entry, f"{where} is not JSON"), stamp)
    if complete:
        item = checked_item(job_id, stamp, fields, None)
        if item is not None:
            return item
    elif fields.get("id", job_id) == job_id and fields.get("state", stamp.state) == stamp.state:
        return partial_item(job_id, stamp, fields)
    return item_of_record(unreadable_record(entry, f"{where} does not begin as a record of "
                                            "this job"), stamp)
