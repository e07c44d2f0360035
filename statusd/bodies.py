"""The bytes of a record as ``GET /api/v1/tasks/{id}`` serves them from disk.

Owns: opening the terminal record an index item was built from (:func:`open_indexed`,
for streaming), reading it whole when it is small (:func:`indexed_body`), and the
record JSON of one version of an id as it stands (:func:`body_of`, which
:meth:`statusd.loader.Loader.full_body` reads where the file went when it moves).

Guarantees: a version the index checked is served as it is, without a second parse
(records are replaced by rename, never rewritten, so an open descriptor stays that
version); a record over :data:`spool.large.PARSE_MAX_BYTES` is never read whole here
(it is streamed); nothing here follows a symlink.
"""

from __future__ import annotations

import os
from stat import S_ISREG

from spool.fsops import unreadable_as_trouble
from spool.jobfile import read_fd
from spool.large import PARSE_MAX_BYTES, Head, read_record
from spool.layout import Layout
from spool.lease import open_nofollow
from spool.models import Record, record_bytes
from spool.reader import SpoolReader
from spool.states import TERMINAL
from statusd.items import Stamp, terminal_item
from statusd.scan import entry_of


def open_indexed(layout: Layout, job_id: str, stamp: Stamp) -> tuple[int, int] | None:
    """A descriptor open on the terminal record ``stamp`` was built from, and its size.

    None when the file is no longer that version (a new record, a chmod) or not a
    regular file.  The index checked that version when it was read, so what the
    descriptor reads can be served as it is, without parsing it again; records are
    replaced by rename, never rewritten, so it stays that version while it is open.
    """
    if stamp.state not in TERMINAL:
        return None
    try:
        fd = open_nofollow(layout.job(stamp.state, job_id))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or not S_ISREG(st.st_mode) or (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) \
            != (stamp.mtime_ns, stamp.ctime_ns, stamp.ino):
        os.close(fd)
        return None
    return fd, st.st_size


def indexed_body(layout: Layout, job_id: str, stamp: Stamp) -> bytes | None:
    """The bytes of the terminal record ``stamp`` was built from (see open_indexed)."""
    opened = open_indexed(layout, job_id, stamp)
    if opened is None:
        return None
    fd, size = opened
    if size > PARSE_MAX_BYTES:  # streamed (routes.get_task), never read whole
        os.close(fd)
        return None
    try:
        data = os.read(fd, size)  # one read, one copy (read_fd joins 64 KiB pieces)
        if len(data) < size:  # cut short: the rest, no further than the bound
            data += read_fd(fd, PARSE_MAX_BYTES - len(data))
        # Grown past the bound (written in place): not the version indexed, and never
        # read whole here.
        return None if len(data) > PARSE_MAX_BYTES else data
    except OSError:
        return None
    finally:
        os.close(fd)


def body_of(layout: Layout, reader: SpoolReader, job_id: str, stamp: Stamp
            ) -> bytes | Head | None:
    """The record JSON of one version of an id, the :class:`Head` of a large record,
    None when the file vanished meanwhile; SpoolIOError as
    :meth:`statusd.loader.Loader.load` raises it."""
    with unreadable_as_trouble(f"cannot read {job_id}"):
        entry = entry_of(layout, job_id, stamp)
        if stamp.state in TERMINAL:
            raw = read_record(layout.job(stamp.state, job_id), strict=True)
            if raw is None:
                return None
            if isinstance(raw, Head) or terminal_item(job_id, stamp, raw) is not None:
                return raw
            # What was read, not read again: a record rewritten in place, read while it
            # was short (no valid record), was then read again whole at 192 MiB, and
            # statusd peaked at 1 GiB (a full run; the bound of read_record bypassed).
            record: Record | None = reader.record_of(entry, raw)
        else:
            record = reader.load(entry, strict=True)
        return None if record is None else record_bytes(record)
