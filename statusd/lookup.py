"""Looking one id up on disk: which of its files tells its state now, by ``lstat``
alone (no read), so parts of it can run on the event loop.

Owns: the stamp of the file that tells an id's state (:func:`current`, after
:func:`spool.reader.newest`'s rule), whether a stamp the index holds surely still
tells it (:func:`unchanged`, four or five lstat calls: the loop asks it), and
reading the file that tells the state where it went when it moves between its stat
and its read (:func:`read_current`).  :class:`statusd.loader.Loader` builds items on
top of these.

Guarantees: only regular files tell a state (a symlink, directory or FIFO named
``<id>.json`` is no job or record); nothing here follows a symlink; a ``Path`` is
built only for the files found.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from stat import S_ISREG
from typing import TypeVar

from spool.fsops import failing_read
from spool.layout import Layout
from spool.reader import Entry, newest
from spool.states import ACTIVE, JobState
from statusd.items import Stamp, progress_stamp

_T = TypeVar("_T")


def current(layout: Layout, states: Iterable[JobState], job_id: str) -> Stamp | None:
    """The stamp of the file that tells ``job_id``'s state now (looked for in
    ``states``); None when there is none."""
    best = newest(entries_of(layout, states, job_id))
    if best is None:
        return None
    progress_ns = 0
    if best.state is JobState.RUNNING:
        try:
            progress_ns = _progress_ns(layout, job_id)
        except OSError:
            progress_ns = 0  # a progress file that cannot be stat'ed is no progress
    mtime_ns, ctime_ns = best.mtime_ns, best.ctime_ns  # one int when equal (scan._list)
    return Stamp(best.state, mtime_ns, mtime_ns if ctime_ns == mtime_ns else ctime_ns,
                 progress_ns, best.ino)


def entries_of(layout: Layout, states: Iterable[JobState], job_id: str) -> list[Entry]:
    """:meth:`spool.reader.SpoolReader.entries_of`, with a Path built only for the
    files found: most lookups find one file or none, and building a Path for each
    state folder was half this thread's Python time in a purge one by one.
    SpoolIOError when an lstat fails for a reason not the file's (EIO: a GET
    answered 500)."""
    found = []
    for state in states:
        path = layout.job_str(state, job_id)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if (trouble := failing_read(exc, f"cannot look up {job_id}")) is None:
                raise
            raise trouble from exc
        if S_ISREG(st.st_mode):
            found.append(Entry(job_id, state, Path(path), st.st_mtime_ns, st.st_ctime_ns,
                               st.st_ino))
    return found


def unchanged(layout: Layout, job_id: str, stamp: Stamp) -> bool:
    """Whether ``stamp`` surely still tells ``job_id``'s state: its file is that
    version, no other file of the id could tell it instead, and (running) its
    progress is the same.  Four or five lstat calls and no read, so a GET can ask it
    on the event loop (:meth:`statusd.refreshing.Refresher.catch_up`); False means "look
    with :func:`current`".  A folder that cannot be read (EACCES) says nothing new:
    True, the index stands.
    """
    # spool.reader.newest's rule, for the cases it settles without a read: a pending
    # drop tells the state; else the newest file (claims and drops by ctime, records
    # by mtime).  An older record beside a re-run or a re-drop changes nothing.
    # The id's own file first: when it is gone (a move on, a removal), that one
    # lstat says so.
    own_ns = stamp.ctime_ns if stamp.state in ACTIVE else stamp.mtime_ns
    for state in (stamp.state, *(s for s in JobState if s is not stamp.state)):
        try:
            st = os.lstat(layout.job_str(state, job_id))
        except FileNotFoundError:
            if state is stamp.state:
                return False
            continue
        except OSError:
            continue
        if state is stamp.state:
            if not S_ISREG(st.st_mode) or (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != \
                    (stamp.mtime_ns, stamp.ctime_ns, stamp.ino):
                return False
        elif S_ISREG(st.st_mode) and stamp.state is not JobState.PENDING:
            other_ns = st.st_ctime_ns if state in ACTIVE else st.st_mtime_ns
            if state is JobState.PENDING or other_ns >= own_ns:
                return False  # it may tell the state now: the full rule decides
    if stamp.state is JobState.RUNNING:
        try:
            return _progress_ns(layout, job_id) == stamp.progress_ns
        except OSError:
            return True
    return True


def _progress_ns(layout: Layout, job_id: str) -> int:
    """The :func:`~statusd.items.progress_stamp` of ``job_id``'s progress file, 0 when
    there is none or it is not a regular file; other OSErrors are the caller's.  lstat,
    as the scan stamps it: a symlink there (to a loop, say) is never followed."""
    try:
        st = os.lstat(layout.progress_str(job_id))
    except FileNotFoundError:
        return 0
    return progress_stamp(st.st_mtime_ns, st.st_ino) if S_ISREG(st.st_mode) else 0


def read_current(job_id: str, look: Callable[[str], Stamp | None],
                 read: Callable[[str, Stamp], _T | None], looks: int) -> _T | None:
    """``read`` of the file that tells ``job_id``'s state now (``look``: its stamp),
    looked up again (up to ``looks`` times in all) while the read finds it gone: a file
    that moved between its stat and its read (a claim, a completion removing
    ``running/<id>.json``) is read where it went, as :meth:`spool.reader.SpoolReader.get`
    does, so a job that never left the spool is not answered 404.  None when the id is
    in no state folder, or moved on at every look."""
    for _ in range(looks):
        stamp = look(job_id)
        if stamp is None:
            return None
        if (found := read(job_id, stamp)) is not None:
            return found
    return None
