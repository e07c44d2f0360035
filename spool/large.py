"""Terminal records too large to read whole: read from their head and tail only.

A record over :data:`PARSE_MAX_BYTES` (a backtest's equity curves can make one
of a GiB) would cost its size in memory to read and several times that to
parse.  Every reader that only needs what comes before ``result`` (the spool
writes every other field first) reads the first :data:`HEAD_BYTES` and the last
:data:`TAIL_BYTES` instead:

* :func:`read_record` gives a small file's bytes, or the :class:`Head` of a
  large one;
* :func:`leading_fields` parses the fields before ``result`` one by one from
  the head, and says whether each of them was complete;
* :class:`BoundedReader` is a :class:`~spool.reader.SpoolReader` whose large
  terminal records are built from those fields, without ``result``: its
  :attr:`~BoundedReader.large` names each one's file and size, and
  :func:`copy_record` writes such a file's bytes out unparsed, a chunk at a
  time.  ``spoolq show`` and ``wait`` read through it; statusd's index uses the
  functions above (:mod:`statusd.large`).

A large file that does not end in ``}`` is cut short, and one whose leading
fields are not a record of its id and state is another file: both read as
``unreadable`` (:func:`spool.reader.unreadable_record`), like a small record
that does not parse.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson
from pydantic import ValidationError

from spool.entries import read_opened
from spool.jobfile import read_fd
from spool.lease import open_nofollow
from spool.models import MAX_NESTING, Record, nesting_depth
from spool.reader import Entry, SpoolReader, terminal_record, unreadable_record
from spool.states import ACTIVE

PARSE_MAX_BYTES = 8 * 1024 * 1024
"""Terminal records up to this size are read and parsed whole."""
HEAD_BYTES = 4 * 1024 * 1024
"""How much of a larger record is read for its leading fields (params, meta, error...)."""
TAIL_BYTES = 64
LIST_WHOLE_MAX_BYTES = 32 * 1024
"""A list of jobs (``spoolq ls``, statusd's) carries a record larger than this without its
``result``, and with ``"result_omitted": true``."""
COPY_CHUNK_BYTES = 1024 * 1024

_SPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


class Head(NamedTuple):
    """The first and last bytes of a record too large to read whole."""

    head: bytes
    tail: bytes
    size: int


def read_record(path: str | os.PathLike[str], *, strict: bool = False,
                whole_max: int = PARSE_MAX_BYTES) -> bytes | Head | None:
    """A terminal file's bytes, or its :class:`Head` when over ``whole_max``; None when
    it is gone or not a regular file (never following a symlink, never blocking).
    ``strict``: out of descriptors or the disk failing raises the OSError instead, as
    :func:`spool.entries.read_regular` does."""
    def head_or_whole(fd: int, st: os.stat_result) -> bytes | Head:
        if st.st_size <= whole_max:
            data = read_fd(fd, whole_max, st.st_size)
            if len(data) <= whole_max:
                return data
            # Grown past the bound since its stat (written in place): read to its end,
            # statusd held 1 GB for a 192 MB record rewritten under a rescan.
            st = os.fstat(fd)
        head = os.pread(fd, HEAD_BYTES, 0)
        tail = os.pread(fd, TAIL_BYTES, max(0, st.st_size - TAIL_BYTES))
        return Head(head, tail, st.st_size)

    return read_opened(path, head_or_whole, strict=strict)


def leading_fields(head: bytes) -> tuple[dict[str, Any], bool]:
    """The top-level fields of a JSON object that come before ``result`` (or its end),
    parsed from its first bytes; and whether every one of them was complete.

    ValueError when the head is not the start of a JSON object, or nests a field deeper
    than :data:`~spool.models.MAX_NESTING` (or than the json module can parse).
    """
    text = _text(head)
    fields, complete, _ = _fields_of(text, _skip_space(text, 0), "result")
    return fields, complete


def result_head(head: bytes) -> dict[str, Any]:
    """The fields of a record's ``result`` (an object) that its first bytes hold whole:
    a backtest's strategy, params and summary, before its curves.  ValueError as
    :func:`leading_fields`."""
    text = _text(head)
    _, _, at = _fields_of(text, _skip_space(text, 0), "result")
    if at is None or text[at:at + 1] != "{":
        return {}
    return _fields_of(text, at, None)[0]


def _text(head: bytes) -> str:
    return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)


def _skip_space(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]


def _fields_of(text: str, pos: int, stop: str | None
               ) -> tuple[dict[str, Any], bool, int | None]:
    """The fields of the JSON object whose ``{`` is at ``pos``, each parsed whole, up to
    the key ``stop`` (then also where its value begins), the object's end, or the end of
    ``text`` (then not complete)."""
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    fields: dict[str, Any] = {}
    pos += 1
    while True:
        pos = _skip_space(text, pos)
        if text[pos:pos + 1] == "}":
            return fields, True, None
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return fields, False, None  # the head ends inside a key
        pos = _skip_space(text, pos)
        if not isinstance(key, str) or text[pos:pos + 1] != ":":
            raise ValueError("not a JSON object")
        pos = _skip_space(text, pos + 1)
        if key == stop:
            return fields, True, pos
        try:
            fields[key], pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return fields, False, None  # cut by the end of the head (or bad: the rest is unread)
        except RecursionError:  # nested past the stack: as orjson refuses a small one
            raise ValueError("nested too deep") from None
        if nesting_depth(fields[key]) > MAX_NESTING:  # no record the spool writes; and
            raise ValueError("nested too deep")  # past 254 levels orjson cannot write it
        pos = _skip_space(text, pos)
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] != "}":
            raise ValueError("not a JSON object")


def found_fields(found: bytes | Head) -> Any:
    """What a terminal file :func:`read_record` read says before its ``result``: a large
    one's leading fields (:func:`leading_fields` of its head), else its whole JSON value,
    which may be no object (the caller checks).  ValueError when it is not JSON."""
    return leading_fields(found.head)[0] if isinstance(found, Head) else orjson.loads(found)


@dataclass(frozen=True, slots=True)
class LargeRecord:
    """Where a record read from its head lives, and what was left unread."""

    path: Path
    size: int
    complete: bool
    """Every field before ``result`` was read (False: a huge field cut by the head)."""


def head_fields(entry: Entry, found: Head) -> tuple[dict[str, Any], bool] | Record:
    """The fields before ``result`` of a terminal file too large to read whole, and
    whether every one was complete; or its ``unreadable`` record when the file is cut
    short or not JSON (see the module docstring)."""
    where = f"{entry.state.value}/{entry.path.name}"
    if not found.tail.rstrip().endswith(b"}"):
        return unreadable_record(entry, f"{where} is cut short ({found.size} bytes, not "
                                 "ending in '}')")
    try:
        return leading_fields(found.head)
    except ValueError as exc:
        return unreadable_record(entry, f"{where} is not JSON ({exc})")


def of_this_job(entry: Entry, fields: dict[str, Any]) -> bool:
    """The leading fields name no other id or state than the file's own."""
    return bool(fields.get("id", entry.job_id) == entry.job_id
                and fields.get("state", entry.state.value) == entry.state.value)


def not_this_job(entry: Entry) -> Record:
    """The ``unreadable`` record of a large file that begins as no record of its job."""
    return unreadable_record(entry, f"{entry.state.value}/{entry.path.name} does not begin "
                             "as a record of this job")


def head_record(entry: Entry, found: Head) -> tuple[Record, bool]:
    """The record (without ``result``) of a terminal file too large to read whole, and
    whether its leading fields were all read; ``unreadable`` when it is not a record
    of this id and state (see the module docstring)."""
    read = head_fields(entry, found)
    if isinstance(read, Record):
        return read, True
    fields, complete = read
    if not of_this_job(entry, fields):
        return not_this_job(entry), True
    try:
        record = Record.model_validate({**fields, "id": entry.job_id, "state": entry.state})
    except ValidationError:
        where = f"{entry.state.value}/{entry.path.name}"
        return unreadable_record(entry, f"{where} does not begin as a valid record"), True
    return record, complete


class BoundedReader(SpoolReader):
    """A reader that never reads a terminal record over ``whole_max`` bytes whole
    (:data:`PARSE_MAX_BYTES` by default; less for a reader that shows no results)."""

    def __init__(self, *args: Any, whole_max: int = PARSE_MAX_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.whole_max = whole_max
        self.large: dict[str, LargeRecord] = {}
        """Job id -> the file of its last record read from the head."""

    def record_of(self, entry: Entry, data: bytes) -> Record:
        if entry.state in ACTIVE:
            return super().record_of(entry, data)
        if len(data) > self.whole_max:  # its bytes at hand, but shown as from its head
            found = Head(data[:HEAD_BYTES], data[-TAIL_BYTES:], len(data))
            if self._from_head_alone(found):
                return self._head_record(entry, found)
        self.large.pop(entry.job_id, None)  # read whole: no longer a large record
        return super().record_of(entry, data)

    def load(self, entry: Entry, *, strict: bool = False) -> Record | None:
        if entry.state in ACTIVE:
            return super().load(entry, strict=strict)
        found = read_record(entry.path, strict=strict, whole_max=self.whole_max)
        if isinstance(found, Head) and not self._from_head_alone(found):
            found = read_record(entry.path, strict=strict)  # whole, as any reader reads it
        if found is None:
            return None
        if not isinstance(found, Head):
            self.large.pop(entry.job_id, None)
            return terminal_record(entry, found)
        return self._head_record(entry, found)

    def _head_record(self, entry: Entry, found: Head) -> Record:
        self.large.pop(entry.job_id, None)
        record, complete = head_record(entry, found)
        if record.unreadable is None:
            self.large[entry.job_id] = LargeRecord(entry.path, found.size, complete)
        return record

    def _from_head_alone(self, found: Head) -> bool:
        """Whether a record can be shown from its head: one over :data:`PARSE_MAX_BYTES`
        always; a smaller one (a reader of a lower ``whole_max``) when its head holds
        its state and ``submitted_at`` before its result, as the spool writes them.  One
        rewritten by another program (``jq -S``: keys sorted, result before them) was
        listed without its tool and time, and out of its place (the review)."""
        return found.size > PARSE_MAX_BYTES or in_spool_order(found.head) is not None


def in_spool_order(head: bytes) -> dict[str, Any] | None:
    """The fields before ``result`` of a record's first bytes, when they are all there
    and hold its state and ``submitted_at`` (as the spool writes them: a file rewritten
    with sorted keys has its result before them); else None (not JSON too)."""
    try:
        fields, complete = leading_fields(head)
    except ValueError:
        return None
    return fields if complete and "state" in fields and "submitted_at" in fields else None


def read_result_head(large: LargeRecord) -> dict[str, Any]:
    """The fields of a large record's ``result`` its first :data:`HEAD_BYTES` hold whole
    (:func:`result_head`); {} when there are none, or the file is gone or replaced since
    it was read."""
    try:
        with _the_file_read(large) as fd:
            return {} if fd is None else result_head(os.pread(fd, HEAD_BYTES, 0))
    except (OSError, ValueError):
        return {}


def copy_record(large: LargeRecord, out: BinaryIO) -> bool:
    """Write a large record's file to ``out`` as stored, a chunk at a time; False when it
    is gone or no longer the file that was read (replaced since: read it again)."""
    with _the_file_read(large) as fd:
        if fd is None:
            return False
        with os.fdopen(fd, "rb", closefd=False) as src:
            while chunk := src.read(COPY_CHUNK_BYTES):
                out.write(chunk)
    out.flush()
    return True


@contextlib.contextmanager
def _the_file_read(large: LargeRecord) -> Iterator[int | None]:
    """A descriptor of ``large``'s file (its path not followed past a link), or None when
    it is gone or no longer the size that was read (replaced since)."""
    try:
        fd = open_nofollow(large.path)
    except OSError:
        yield None
        return
    try:
        yield fd if os.fstat(fd).st_size == large.size else None
    finally:
        os.close(fd)

