"""The whole-spool scan behind statusd's start-up and its periodic rescan.

Owns: one directory pass per state folder (and ``progress/``) that stamps every id,
and reading every terminal record of a scan at once (:func:`terminal_items`).
:class:`statusd.loader.Loader` owns everything about one id, and builds the items
this module's fast path cannot.

Guarantees: only regular files are stamped (a symlink, directory or FIFO named
``<id>.json`` is no job, record or progress); an id with files in two folders is
stamped from the one :func:`spool.reader.newest` says tells its state; a running
id's stamp carries its progress file's mtime; a file that vanishes between the
listing and the read is None, never an error, and an id with a file the disk cannot
stat (EIO) is left out of the scan and named.  Nothing here follows a symlink.

Speed matters here: start-up reads every record (100,000 small files take a few
seconds).  From the page cache one thread reads fastest; from disk, a few reads
in flight together are faster, so the first chunk is timed and decides
(:data:`COLD_READ_S`).  A record over :data:`spool.large.PARSE_MAX_BYTES` is read
only for its head and tail (:mod:`statusd.large`), never whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from stat import S_ISREG

from spool.fsops import FAILING_IO
from spool.ids import JOB_SUFFIX, id_from_name
from spool.in_progress import is_in_progress_drop
from spool.large import Head, read_record
from spool.layout import Layout
from spool.reader import Entry, newest
from spool.states import ACTIVE, TERMINAL, JobState
from statusd.items import Item, Stamp, progress_stamp, terminal_item
from statusd.large import large_item

READ_THREADS = 8
COLD_READ_S = 30e-6
"""A read slower than this per file means a cold page cache: read the rest in threads."""
_READ_CHUNK = 2048


def scan_spool(layout: Layout, behind: dict[str, Stamp] | None = None,
               unreadable: set[str] | None = None, in_progress: list[int] | None = None
               ) -> dict[str, Stamp]:
    """The current stamp of every id in the spool (one directory pass per folder).

    ``behind``, when given, receives the stamp of the newest record of each id whose
    state is pending or running (a record behind a new drop: :mod:`statusd.behind`).
    ``unreadable`` receives the ids with a file the disk could not stat (EIO: see
    :func:`_list`); they are left out of the stamps.  ``in_progress`` receives the ctime
    of each regular file in ``pending/`` under an in-progress drop's name
    (:func:`spool.in_progress.is_in_progress_drop`).
    """
    found: dict[str, list[Entry]] = {}
    single: dict[str, Stamp] = {}
    failed: set[str] = set()
    for state in JobState:
        folder = layout.folder(state)
        for name, mtime_ns, ctime_ns, ino in _list(folder, failed):
            job_id = id_from_name(name)
            if job_id is None:
                if in_progress is not None and state is JobState.PENDING \
                        and is_in_progress_drop(name):
                    in_progress.append(ctime_ns)
                continue
            stamp = Stamp(state, mtime_ns, ctime_ns, 0, ino)
            if job_id in single or job_id in found:
                _collide(layout, found, single, job_id, stamp)
            else:
                single[job_id] = stamp
    for job_id, entries in found.items():
        best = newest(entries)
        if best is not None:
            single[job_id] = Stamp(best.state, best.mtime_ns, best.ctime_ns, 0, best.ino)
            if behind is not None and best.state in ACTIVE:
                record = newest(e for e in entries if e.state in TERMINAL)
                if record is not None:
                    behind[job_id] = Stamp(record.state, record.mtime_ns, record.ctime_ns,
                                           0, record.ino)
    progress = progress_stamps(layout)
    for job_id, progress_ns in progress.items():
        running = single.get(job_id)
        if running is not None and running.state is JobState.RUNNING:
            single[job_id] = running._replace(progress_ns=progress_ns)
    _leave_out(single, failed, unreadable)
    return single


def _leave_out(stamps: dict[str, Stamp], names: set[str], unreadable: set[str] | None
               ) -> None:
    """Take the ids of the file ``names`` a scan could not stat out of its ``stamps``
    (which of an id's files tells its state is not known) and into ``unreadable``."""
    ids = {job_id for name in names if (job_id := id_from_name(name)) is not None}
    for job_id in ids:
        stamps.pop(job_id, None)
    if unreadable is not None:
        unreadable.update(ids)


def _collide(layout: Layout, found: dict[str, list[Entry]], single: dict[str, Stamp],
             job_id: str, stamp: Stamp) -> None:
    # Rare (a completion cut short, a re-drop): only then build Entry objects
    # so the reader's own rule picks the file that tells the state.
    if job_id not in found:
        found[job_id] = [entry_of(layout, job_id, single[job_id])]
    found[job_id].append(entry_of(layout, job_id, stamp))


def entry_of(layout: Layout, job_id: str, stamp: Stamp) -> Entry:
    """The reader's :class:`~spool.reader.Entry` for one version of an id."""
    return Entry(job_id, stamp.state, layout.job(stamp.state, job_id), stamp.mtime_ns,
                 stamp.ctime_ns, stamp.ino)


def progress_stamps(layout: Layout) -> dict[str, int]:
    """The :func:`~statusd.items.progress_stamp` of every id's progress file (regular
    files only)."""
    stamps = {}
    for name, mtime_ns, _, ino in _list(layout.progress):
        job_id = id_from_name(name)
        if job_id is not None:
            stamps[job_id] = progress_stamp(mtime_ns, ino)
    return stamps


def terminal_items(layout: Layout, stamps: dict[str, Stamp],
                   advance: Callable[[int], None] | None = None
                   ) -> Iterator[tuple[str, Stamp, Item | None]]:
    """(id, stamp, item) for each terminal id of a scan, in the scan's order.

    The records are read by a few threads at once (reads release the GIL, which
    matters on a cold page cache) and parsed here, a chunk at a time (on one thread
    only a chunk's bytes are held at once; with several, ``pool.map`` reads every chunk
    ahead, so all the bytes may be, as before the load moved off the loop).  The item
    is None where this fast path cannot build it: the file vanished, or it fails the
    structural check (the loader then reads it through
    :class:`spool.reader.SpoolReader`).  ``advance(0)`` is called before each chunk is
    read (its exception, a stop, ends the reads there).
    """
    folders = {state: os.fspath(layout.folder(state)) for state in TERMINAL}
    terminal = [(i, s) for i, s in stamps.items() if s.state in TERMINAL]
    paths = [f"{folders[s.state]}/{i}{JOB_SUFFIX}" for i, s in terminal]
    done = 0
    for raws in _read_many(paths, advance or _nothing):
        for (job_id, stamp), raw, path in zip(terminal[done:done + len(raws)], raws,
                                              paths[done:done + len(raws)], strict=True):
            if isinstance(raw, Head):
                item: Item | None = large_item(job_id, stamp, Path(path), raw)
            else:
                item = terminal_item(job_id, stamp, raw) if raw is not None else None
            yield job_id, stamp, item
        done += len(raws)


def _read_many(paths: list[str], advance: Callable[[int], None]
               ) -> Iterator[list[bytes | Head | None]]:
    """The bytes of each file (None when it vanished), a chunk of files at a time.

    From the page cache one thread is fastest (threads only fight over the GIL:
    0.9 s against 1.7 s for 90,000 files here); from disk, reads in flight
    together are 2-3 times faster.  So the first chunk is timed and decides.
    """
    began = time.perf_counter()
    first = _read_chunk(paths[:_READ_CHUNK], advance)
    yield first
    rest = paths[_READ_CHUNK:]
    if not rest:
        return
    chunks = [rest[i:i + _READ_CHUNK] for i in range(0, len(rest), _READ_CHUNK)]
    if (time.perf_counter() - began) / len(first) < COLD_READ_S:
        for chunk in chunks:
            yield _read_chunk(chunk, advance)
        return
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="statusd-read") as pool:
        yield from pool.map(_read_chunk, chunks, repeat(advance))


def _read_chunk(paths: list[str], advance: Callable[[int], None]
                ) -> list[bytes | Head | None]:
    advance(0)  # a stop is seen between chunks, not after every read
    return [read_record(path) for path in paths]


def _nothing(files: int) -> None:
    """No one counts the files read."""


def _list(folder: os.PathLike[str] | str, failed: set[str] | None = None
          ) -> list[tuple[str, int, int, int]]:
    """(name, mtime_ns, ctime_ns, inode) of the regular files of a folder; [] when it is
    missing.

    Not symlinks, directories or FIFOs: one of those named ``<id>.json`` is no job,
    record or progress, and as the newest file of an id it hid the id's record.  A file
    the disk cannot stat (:data:`~spool.fsops.FAILING_IO`: one bad inode) is left out
    and its name put in ``failed``: it failed the whole scan, and so statusd's start and
    every rescan, for as long as it lasted.
    """
    out = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if failed is None or exc.errno not in FAILING_IO:
                        raise
                    failed.add(entry.name)
                    continue
                if S_ISREG(st.st_mode):
                    mtime_ns, ctime_ns = st.st_mtime_ns, st.st_ctime_ns
                    # One int for both when equal (a file written and renamed within one
                    # tick of the kernel's coarse clock: nearly every record): the index
                    # keeps each stamp, and a 64-bit time is a 36-byte int.
                    out.append((entry.name, mtime_ns,
                                mtime_ns if ctime_ns == mtime_ns else ctime_ns, st.st_ino))
    except FileNotFoundError:
        return []
    return out
