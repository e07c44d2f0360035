"""Quarantine: what is no job, or stands where the spool keeps a file, and its record.

The spool's half of hostile input, for :class:`~spool.transitions.Spool`: a drop in
``pending/`` intake judged no job (:func:`from_pending`), and whatever is not a
regular file at a name where the spool keeps one, a record, a run's progress or a
cancel request (:func:`set_aside`): a directory, FIFO, socket or symlink that an
operator or a script made there.

Guarantees (DESIGN sections 2 and 9):

* A quarantined entry is renamed (never copied, deleted nor followed) to
  ``failed/<id>.orig`` before its record is published, so a crash can leave an
  original without a record (recovery writes one) but never lose it; an earlier
  original is never replaced.
* An entry set aside becomes the quarantined original of an id of its own, beside a
  record saying what it was and where it stood, so no such entry stops the spool or is
  lost.
* What the spool user may neither move out of its folder nor remove (another user's
  directory: a directory changes folder only if its mover may write it) is renamed
  within its folder to a name every pass and reader ignores (:func:`keep_in_place`),
  beside a record saying that an operator must remove it.
* A record that cannot be written (ENOSPC) puts its entry back first: the caller's
  write then fails on the name as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
from stat import S_ISDIR, S_ISREG
from typing import TYPE_CHECKING, NamedTuple

from spool.clock import utc_from_ns
from spool.errors import ErrorType, SpoolIOError
from spool.ids import id_from_name, invalid_id
from spool.layout import ORIG_SUFFIX
from spool.models import ErrorInfo, Record, Source, kind_of, record_bytes
from spool.states import JobState, check_transition

if TYPE_CHECKING:
    from spool.transitions import Spool


RECORD_NOTE = "record"
"""Tag of the note a quarantine leaves in ``stage/`` while it moves the drop into
``failed/``: the record it is about to publish (see :func:`from_pending`), named
``record-<inode>-<staged id>``: the drop's inode, which its staged file and original
keep, ties the note to them alone (:class:`spool.record_notes.RecordNotes`)."""


class Drop(NamedTuple):
    """What intake judged of a drop in ``pending/`` it quarantines in place."""

    inode: tuple[int, int]
    mtime_ns: int
    tool: str | None


def from_pending(spool: Spool, name: str, message: str, *, kind: str, size: int | None,
                 mtime_ns: int, inode: tuple[int, int], tool: str | None = None
                 ) -> Record | None:
    """pending -> failed for what cannot be a job; None if the entry vanished."""
    check_transition(JobState.PENDING, JobState.FAILED)
    layout, mover = spool.layout, spool.mover
    job_id = staged_id = id_from_name(name) or invalid_id(spool.clock.now())
    staged = mover.action_staging(f"quarantine-{staged_id}")
    src = layout.entry(JobState.PENDING, name)
    try:
        # Durable (both folders, as every move): its next move syncs stage/ again but
        # never pending/, which a power cut could then give the drop back to, beside
        # its failed/<id>.orig (a review).
        if not mover.move(src, staged, replace=False):
            return None
    except SpoolIOError as exc:
        if kind != "directory" or not may_not_change_folder(str(src), exc):
            raise
        # A submitter's directory (see may_not_change_folder): kept in pending/ under a
        # name intake ignores.  Before, the failed move paused claims after every retry,
        # so one mkdir in the drop folder stopped the spool.  Its own id, not the
        # name's: a later run of that id replaces the id's record, and would leave the
        # kept directory with none.
        return keep_in_place(spool, str(src), name=printable_name(name), message=(
            f"{message}; the spool user may not move it out of pending/ (a directory "
            "changes folder only if its mover may write it)"),
            drop=Drop(inode, mtime_ns, tool))
    moved = os.lstat(staged)
    if (moved.st_ino, moved.st_dev) != inode and mover.move(staged, src):
        return None  # a newer drop replaced it meanwhile: back it goes, judged afresh
    if size is not None and S_ISREG(moved.st_mode):
        # As moved, not as judged: a file under a bad name is judged by its name alone,
        # at once, and its writer may still have been at it (its record said 0 bytes
        # beside an .orig of 3,018).
        size = moved.st_size
    if (taken := _original_taken(layout.original_str(job_id), job_id)) is not None:
        # Never replace an earlier original: this drop gets an id of its own.
        job_id = invalid_id(spool.clock.now())
        message += taken
    record = Record(
        id=job_id, tool=tool, state=JobState.FAILED,
        submitted_at=utc_from_ns(mtime_ns), finished_at=spool.clock.now(),
        error=ErrorInfo(type=ErrorType.INVALID_JOB, message=message),
        source=Source(name=printable_name(name), size=size, kind=kind),
        host=spool.host, pid=spool.pid,
    )
    # Should this process die before the record is out, recovery publishes this note of
    # it: the drop's name and why it was refused are known only here.
    # Named by the drop's inode and staged id: its id may have changed since (an earlier
    # original), and a note a live process left (pid reuse) names another drop.
    note = mover.write_note(f"{RECORD_NOTE}-{moved.st_ino}-{staged_id}", record_bytes(record))
    try:
        placed = mover.move(staged, layout.original(job_id), replace=False)
    except SpoolIOError:
        mover.move(staged, src, replace=False)  # back to pending/, judged again later
        _drop_note(spool, note)
        raise
    if not placed:
        # An original of the id came since the lookup (a quarantine of another drop of
        # it): neither it nor its record is replaced (this record was published over the
        # earlier one's, these bytes left staged).  Back to pending/, judged afresh under
        # an id of its own; should a newer drop hold that name, recovery finishes this
        # quarantine from its note (Staged.restore_quarantine), as a crash leaves it.
        if mover.move(staged, src, replace=False):
            _drop_note(spool, note)
        return None
    try:
        spool.publish_terminal(record)
    except SpoolIOError:
        # No room for the record (ENOSPC, out of inodes): back to pending/, judged again
        # after the pause.  Left as failed/<id>.orig, no reader showed it, nothing tried
        # its record again until another change of failed/, and recovery then wrote
        # "quarantined when its processor died", the reason lost (QA, h315).  Should a
        # newer drop hold the name, it stays, and recovery records it from the note.
        with contextlib.suppress(SpoolIOError):
            if mover.move(layout.original(job_id), src, replace=False):
                _drop_note(spool, note)
        raise
    _drop_note(spool, note)
    return record


def _original_taken(original: str, job_id: str) -> str | None:
    """What a drop of ``job_id`` quarantined under an id of its own says of why, as the
    earlier original at ``original`` (``failed/<id>.orig``) is there, or the disk cannot
    look it up (EIO, ESTALE); None when the name is free.  ``os.path.lexists`` took such
    an error for nothing there: the drop's record replaced the earlier one's."""
    try:
        os.lstat(original)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return (f" (failed/{job_id}{ORIG_SUFFIX}, where an earlier quarantined {job_id}.json "
                f"may be kept, cannot be looked up: {exc.strerror}; this one is kept under "
                "an id of its own)")
    return f" (an earlier quarantined {job_id}.json is kept under its id)"


def _drop_note(spool: Spool, note: str | None) -> None:
    if note is not None:
        spool.mover.unlink(note)


def set_aside(spool: Spool, path: str, job_id: str, what: str) -> bool:
    """Move what stands at ``path``, where the spool keeps ``what`` of job ``job_id``
    (its record, its progress, its cancel request), out of the way when it is not a
    regular file: a directory, FIFO, socket or symlink made there by an operator or a
    script.  Before, a rename of a record over a directory failed (the processor
    crashed, and again at each restart), one over anything else took it away, and
    the removal of a sidecar or the id's other record removed a directory whole.

    It is renamed (never copied, deleted nor followed) into ``failed/`` as the
    quarantined original of an id of its own, beside a record (``invalid_job``) whose
    ``source`` says what it was and where it stood, as intake keeps a directory or
    FIFO dropped in ``pending/``.  An empty directory that cannot change parent (not
    the spool user's to write) is removed instead; one that holds files is renamed
    within its own folder (:meth:`Layout.kept_str`), beside such a record saying where
    it is and that an operator must remove it: before, the caller's finish was retried
    after every I/O pause and claims stayed paused for good.  False when nothing was
    set aside: ``path`` is a regular file or nothing.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if S_ISREG(st.st_mode):
        return False
    aside = invalid_id(spool.clock.now())
    kind = kind_of(st.st_mode)
    where = spool_relative(path)
    message = (f"not a regular file ({kind}) at {where}, where spoolq keeps the {what} "
               f"of job {job_id}")
    try:
        moved = spool.mover.move(path, spool.layout.original(aside), replace=False)
    except SpoolIOError as exc:
        # A directory may change parent only if its owner may write it (for its
        # '..'): an operator's `sudo mkdir` here cannot go to failed/.  Empty, it
        # holds nothing to keep, and its removal needs no more than this folder.
        if S_ISDIR(st.st_mode) and spool.mover.remove_empty_dir(path):
            return True
        if not may_not_change_folder(path, exc):
            raise
        # Not empty either: kept in its own folder, under a name every pass ignores.
        return keep_in_place(spool, path, name=where, message=(
            f"{message}; the spool user may neither move it into failed/ (a directory "
            "changes folder only if its mover may write it) nor remove it, as it holds "
            "files")) is not None
    if not moved:
        return False  # gone meanwhile
    record = Record(
        id=aside, state=JobState.FAILED, submitted_at=utc_from_ns(st.st_mtime_ns),
        finished_at=spool.clock.now(), host=spool.host, pid=spool.pid,
        error=ErrorInfo(type=ErrorType.INVALID_JOB, message=(
            f"{message}: moved aside, kept as failed/{aside}{ORIG_SUFFIX}")),
        source=Source(name=where, size=None, kind=kind))
    _record_or_put_back(spool, record, str(spool.layout.original(aside)), path)
    return True


def keep_in_place(spool: Spool, path: str, *, name: str, message: str,
                  drop: Drop | None = None) -> Record | None:
    """Rename what stands at ``path``, which the spool user may neither move out of its
    folder nor remove (another user's directory), within that folder to a name every
    pass and reader ignores (:meth:`Layout.kept_str`), beside a failed record of an id
    of its own (``invalid_job``; ``source.name``: ``name``, ``source.kept_at``: where
    it now is) saying ``message`` and that an operator must remove it.  A rename
    within a folder needs only that folder's write permission.  The record; None when
    nothing was there.  Should the record not be written, the entry goes back first.

    ``drop``: what intake judged at ``path``, a drop in ``pending/`` it quarantines in
    place (:func:`from_pending`).  Anything else found there once renamed (a newer drop)
    goes back to be judged afresh (None); the record has the drop's time and tool, and
    is published as every quarantine record is (:meth:`Spool.publish_terminal`).
    """
    if drop is None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
    aside = invalid_id(spool.clock.now())
    kept = spool.layout.kept_str(path, aside)
    if not spool.mover.move(path, kept, replace=False):
        return None
    if drop is None:
        mtime_ns, tool = st.st_mtime_ns, None
    else:
        st = os.lstat(kept)
        if (st.st_ino, st.st_dev) != drop.inode and spool.mover.move(kept, path):
            return None  # a newer drop replaced it meanwhile: back it goes, judged afresh
        mtime_ns, tool = drop.mtime_ns, drop.tool
    record = _kept_record(spool, aside, kept, st.st_mode, mtime_ns, name=name,
                          message=message, tool=tool)
    _record_or_put_back(spool, record, kept, path, terminal=drop is not None)
    return record


def remove_original(spool: Spool, path: str, *, durable: bool = False) -> bool:
    """Remove the quarantined original at ``path`` (a directory drop whole); True when
    it was there.  One the spool user may not remove (a submitter's directory it may
    move, holding a folder of theirs with files in it) is kept in ``failed/``
    (:func:`keep_in_place`): before, its removal by the completion of a later run of
    its id failed with EACCES after each I/O pause, and claims stayed paused."""
    try:
        return spool.mover.unlink_durable(path) if durable else spool.mover.unlink(path)
    except SpoolIOError as exc:
        if not refused_directory(path, exc):
            raise
        where = spool_relative(path)
        return keep_in_place(spool, path, name=where, message=(
            f"the quarantined original {where}, superseded by a later record of its "
            "id: the spool user may not remove it, as it holds files it may not delete")) \
            is not None


def _record_or_put_back(spool: Spool, record: Record, moved: str, back: str, *,
                        terminal: bool = False) -> None:
    """Publish the failed ``record`` of an entry just moved from ``back`` to ``moved``
    (never over anything at its name; ``terminal``: as :meth:`Spool.publish_terminal`
    does); not recorded (ENOSPC), the entry goes back before the error propagates, so
    the caller's write fails on the name as it was (and its undo sees that).  Left
    there, recovery would record it."""
    try:
        if terminal:
            spool.publish_terminal(record)
        else:
            spool.mover.publish(spool.layout.job_str(JobState.FAILED, record.id),
                                record_bytes(record), replace=False)
    except BaseException:
        with contextlib.suppress(SpoolIOError, OSError):
            spool.mover.move(moved, back, replace=False)
        raise


def _kept_record(spool: Spool, job_id: str, kept: str, mode: int, mtime_ns: int, *,
                 name: str, message: str, tool: str | None = None) -> Record:
    """The failed record of what was kept in its own folder at ``kept``."""
    kept_at = spool_relative(kept)
    return Record(
        id=job_id, tool=tool, state=JobState.FAILED, submitted_at=utc_from_ns(mtime_ns),
        finished_at=spool.clock.now(), host=spool.host, pid=spool.pid,
        error=ErrorInfo(type=ErrorType.INVALID_JOB, message=(
            f"{message}, so it was renamed to {kept_at}, which spoolq ignores: an "
            "operator must remove it")),
        source=Source(name=name, size=None, kind=kind_of(mode), kept_at=kept_at))


def may_not_change_folder(path: str, exc: SpoolIOError) -> bool:
    """``exc``, raised moving ``path`` to another folder, says the spool user may not move
    that directory out of its folder: refused (EACCES, EPERM) and the directory is not
    the spool user's to write.  Linux lets a directory change parent only if its mover
    may write it (its '..'); a rename within its folder needs only the folder."""
    return refused_directory(path, exc) and not os.access(path, os.W_OK, effective_ids=True)


def refused_directory(path: str, exc: SpoolIOError) -> bool:
    """``exc``, raised moving or removing ``path``, is a refusal (EACCES, EPERM) and
    ``path`` is a directory (not a symlink to one)."""
    cause = exc.__cause__
    return (isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM)
            and os.path.isdir(path) and not os.path.islink(path))


def spool_relative(path: str) -> str:
    """``<folder>/<name>`` of a path in one of the spool's folders, printable."""
    folder, _, name = path.rpartition("/")
    return printable_name(f"{os.path.basename(folder)}/{name}")


def printable_name(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes shown as escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
