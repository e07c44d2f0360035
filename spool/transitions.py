"""Every move of a job between states: claim, complete, fail, requeue, quarantine,
cancel and retry.

Guarantees (DESIGN sections 2 and 9):

* A claim never overwrites ``running/<id>.json``; a lost race returns None.
* The claim lease (an flock on the job's inode, see :mod:`spool.lease`) is
  taken before the move, so a live owner's running job is never taken.
* Completion publishes the full record into ``done/`` or ``failed/`` first,
  removes any older terminal record of the id, then ``running/<id>.json``.
* Quarantine renames (never copies, never follows) the original to
  ``failed/<id>.orig`` before it publishes the record, so a crash can leave an
  original without a record (recovery writes one) but never lose it.
* A record replaces an earlier record of its id, and finishing a run removes the
  id's other record and its sidecars, but only ever regular files: anything else
  found at one of those names (a directory, FIFO, socket or symlink that an
  operator or a script made there) is set aside as a quarantined original of an
  id of its own, beside a record saying what it was and where it stood
  (:meth:`Spool.set_aside`), so no such entry stops the spool or is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, NamedTuple

from spool.clock import Clock, SystemClock, utc_from_ns
from spool.errors import ConflictError, ErrorType, InvalidJob, NotFoundError, SpoolIOError
from spool.exact import inexact_integer
from spool.fsops import FILES_ONLY, Mover, StrPath
from spool.ids import JOB_SUFFIX, id_from_name, invalid_id
from spool.layout import ORIG_SUFFIX, Layout
from spool.lease import OPEN_FLAGS, open_nofollow, try_lock
from spool.models import (
    MAX_NESTING,
    ErrorInfo,
    Job,
    Record,
    Source,
    job_bytes,
    kind_of,
    nesting_depth,
    parse_record,
    record_bytes,
)
from spool.presence import Presence
from spool.settings import Settings
from spool.states import JobState, check_transition

_READ_CHUNK = 1 << 16
# Folders a Spool's Presence follows, by index.
_PROGRESS, _CANCEL, _FAILED = 0, 1, 2
# The states, read once: on Python 3.11 each ``JobState.X`` goes through the enum class's
# ``__getattr__`` hook (0.11 us), and a claim-and-complete read a dozen of them.
_S_PENDING, _S_RUNNING, _S_DONE, _S_FAILED = (JobState.PENDING, JobState.RUNNING,
                                              JobState.DONE, JobState.FAILED)


@dataclass(slots=True)
class Claim:
    """A job taken into ``running/`` (or staging) with its lease held on ``fd``."""

    job_id: str
    fd: int
    data: bytes
    claimed_ns: int
    mtime_ns: int
    closed: bool = field(default=False)

    def close(self, closer: Callable[[int], None] = os.close) -> None:
        if not self.closed:
            self.closed = True
            closer(self.fd)


class Drop(NamedTuple):
    """What intake judged of a drop in ``pending/`` it quarantines in place."""

    inode: tuple[int, int]
    mtime_ns: int
    tool: str | None


class BackgroundCloser:
    """Closes descriptors on a thread of its own.

    Closing the last descriptor of an unlinked job file is when the
    filesystem frees the inode, which on ext4 costs as much as the rest of a
    transition.  Once the file is gone from every folder its lease protects
    nothing, so the close can happen off the caller's thread.
    """

    def __init__(self) -> None:
        self._fds: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="closer", daemon=True)
        self._thread.start()

    def close(self, fd: int) -> None:
        self._fds.put(fd)

    def _run(self) -> None:
        while (fd := self._fds.get()) is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def stop(self) -> None:
        self._fds.put(None)
        self._thread.join(timeout=10)


def read_fd(fd: int, limit: int | None = None, size: int = -1) -> bytes:
    """Read a whole file from ``fd`` (at most ``limit + 1`` bytes when given).

    ``size``: the file's size from a stat; when one read returns exactly that
    many bytes (of the ``size + 1`` asked for), the end was reached and no
    second read is made to see it.
    """
    chunks: list[bytes] = []
    total = 0
    if 0 <= size < _READ_CHUNK and (limit is None or size <= limit):
        first = os.read(fd, size + 1)
        if len(first) == size:
            return first
        chunks.append(first)
        total = len(first)
        if not first:
            return first
    while True:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            return b"".join(chunks)


MAX_ACTIVE_BYTES = 16 * 1024 * 1024
"""A pending or running file larger than this is not a job (intake quarantines it): a
claim reads no more of one that grew after intake judged it."""
ASIDE_TRIES = 3
"""How often :meth:`Spool.publish_file` sets aside what took its name before giving up:
more than once only when something keeps making a directory (say) there."""
RETRY_MAX_BYTES = MAX_ACTIVE_BYTES
"""The most of a failed record ``retry`` reads: anything larger in ``failed/`` is no
job's record, and read whole it took statusd's memory (a POST .../retry) with it."""


class Spool:
    """The transitions of one spool; the only writer of its state folders."""

    def __init__(self, layout: Layout, mover: Mover, clock: Clock | None = None, *,
                 follow: bool = False) -> None:
        """``follow``: keep a :class:`~spool.presence.Presence` of the sidecar folders, so
        finishing a job skips removing what is not there (for a long-lived processor)."""
        self.layout = layout
        self.mover = mover
        self.clock: Clock = clock or SystemClock()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.closer: Callable[[int], None] = os.close
        self.presence: Presence | None = None
        if follow:
            presence = Presence([str(layout.progress), str(layout.cancel),
                                 str(layout.folder(JobState.FAILED))])
            if presence.start():
                self.presence = presence

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None, *,
                      recycle: bool = False) -> Spool:
        """``recycle``: as a processor runs it (recycled inodes, followed sidecars)."""
        layout = Layout(settings.spool_dir)
        return cls(layout, Mover(layout, settings.fsync, recycle=recycle), clock,
                   follow=recycle)

    def close(self) -> None:
        if self.presence is not None:
            self.presence.close()
            self.presence = None

    # -- claim -------------------------------------------------------------------

    def claim(self, job_id: str) -> Claim | None:
        """pending -> running; None when another claimant won or the id is running."""
        check_transition(_S_PENDING, _S_RUNNING)
        layout = self.layout
        return self._take(layout.job_str(_S_PENDING, job_id),
                          layout.job_str(_S_RUNNING, job_id), job_id)

    def _take(self, src: StrPath, dst: StrPath, job_id: str) -> Claim | None:
        try:
            fd = os.open(src, OPEN_FLAGS)  # open_nofollow's flags, without its frame
        except OSError:
            return None  # gone, or not a regular file: intake's business
        try:
            before = os.fstat(fd)
            if not S_ISREG(before.st_mode) or not try_lock(fd):
                return None
            if not self.mover.move(src, dst):  # never replaces
                return None
            after = os.lstat(dst)
            if after.st_ino == before.st_ino and after.st_dev == before.st_dev:
                size = before.st_size
                # Grown since intake judged it (through a descriptor its writer kept), a
                # file is read no further than a job can be: the daemon then runs what it
                # judged.  One read when the file is as its stat says (read_fd's own first
                # step, without its frame).
                data = os.read(fd, size + 1) if size < _READ_CHUNK else b""
                if len(data) != size:
                    data += read_fd(fd, MAX_ACTIVE_BYTES - len(data))
            else:
                # A newer drop replaced the file between open and move: lease that one.
                os.close(fd)
                fd = -1  # closed: the finally below must not close it again
                fd = self._lease_newer(src, dst)
                if fd < 0:
                    return None
                data = read_fd(fd, MAX_ACTIVE_BYTES)
            claim = Claim(job_id, fd, data, after.st_ctime_ns, after.st_mtime_ns)
            fd = -1  # the claim holds it now
            return claim
        finally:
            if fd >= 0:
                os.close(fd)

    def _lease_newer(self, src: StrPath, dst: StrPath) -> int:
        """The leased fd of what a newer drop put at ``dst`` (just moved from ``src``); -1 if
        there is none to take.

        Only a regular file can be claimed.  Anything else (a symlink, a directory, a
        FIFO swapped in mid-claim) goes back to ``src`` for intake to quarantine; should a
        newer drop hold ``src`` by then, recovery quarantines it from ``dst``.  A regular
        file someone else holds stays: it is that claimant's, or recovery's once it lets go.
        """
        try:
            fd = open_nofollow(dst)
        except OSError:
            fd = -1
        if fd >= 0:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                if try_lock(fd):
                    return fd
                os.close(fd)
                return -1  # another claimant's: theirs, or recovery's once they let go
            os.close(fd)
        self.mover.move(dst, src, replace=False)  # not a file: back for intake to judge
        return -1

    # -- finishing ---------------------------------------------------------------

    def complete(self, claim: Claim, record: Record) -> None:
        """running -> done."""
        self._finish(claim, record, _S_DONE)

    def fail(self, claim: Claim, record: Record) -> None:
        """running -> failed."""
        self._finish(claim, record, _S_FAILED)

    def _finish(self, claim: Claim, record: Record, state: JobState) -> None:
        check_transition(_S_RUNNING, state)
        if record.state is not state or record.id != claim.job_id:
            record = record.model_copy(update={"state": state, "id": claim.job_id})
        self.publish_terminal(record)
        self._retire(claim, refresh=False)  # publish_terminal refreshed after the publish

    def publish_terminal(self, record: Record,
                         unwritten: Callable[[], object] | None = None) -> None:
        """Write the one terminal record of an id, replacing any earlier one.

        ``unwritten`` is called before the error propagates when the write fails and
        the record's path still names what it named before (no record, or an earlier
        one of the id) or nothing (what was there set aside); a failure after the
        rename landed, such as a folder fsync's EIO, leaves this record in place and
        skips it.
        """
        path = self.layout.job_str(record.state, record.id)
        before = _inode(path) if unwritten is not None else None
        try:
            if not self.publish_file(path, record_bytes(record), record.id, "record"):
                raise SpoolIOError(f"cannot publish {record.state}/{record.id}.json: "
                                   "something that is not a regular file keeps taking its name")
        except BaseException:
            if unwritten is not None and _inode(path) in (before, None):
                with contextlib.suppress(SpoolIOError, OSError):
                    unwritten()
            raise
        self._drop_superseded(record)

    def _drop_superseded(self, record: Record) -> None:
        """Remove what the just-published terminal ``record`` replaces: the other terminal
        record of its id and, when it belongs to it, a quarantined original."""
        job_id, state = record.id, record.state
        layout = self.layout
        # Each sidecar below is removed (its path built) only when it may be there.
        presence = self.presence
        if presence is not None:
            presence.refresh()
        dropped_other = False
        if state is _S_DONE:
            name = job_id + JOB_SUFFIX
            if presence is None or presence.may_exist(_FAILED, name):
                dropped_other = self._drop(_FAILED, name, layout.job_str(_S_FAILED, job_id),
                                           durable=True, of=(job_id, "record"))
        else:
            dropped_other = self.remove_file(layout.job_str(_S_DONE, job_id), job_id, "record",
                                             durable=True)
        if record.source is None and (state is _S_FAILED or dropped_other):
            # A quarantined original belongs to the failed record it sat beside.
            name = job_id + ORIG_SUFFIX
            if presence is None or presence.may_exist(_FAILED, name):
                self._drop(_FAILED, name, layout.original_str(job_id))

    def _drop(self, folder: int, name: str, path: str, *, durable: bool = False,
              of: tuple[str, str] | None = None) -> bool:
        """Remove ``path``, which is ``name`` in the followed folder ``folder``: whatever
        it is (a quarantined original may be a directory drop), or with ``of`` (the job id
        and what the spool keeps there) only a regular file (:meth:`remove_file`)."""
        if of is not None:
            removed = self.remove_file(path, *of, durable=durable)
        else:
            removed = self.remove_original(path, durable=durable)
        if self.presence is not None:
            self.presence.forget(folder, name)
        return removed

    def remove_file(self, path: str, job_id: str, what: str, *, durable: bool = False) -> bool:
        """Remove ``path``, where the spool keeps ``what`` of job ``job_id``, when it is a
        regular file; anything else there is set aside (:meth:`set_aside`).  True when a
        file was removed.  The lstat replaces the unlink that found nothing, as it
        usually does: no cost but when something is there."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if S_ISREG(st.st_mode):
            unlink = self.mover.unlink_durable if durable else self.mover.unlink
            try:
                return unlink(path, tree=False)
            except IsADirectoryError:
                pass  # a directory made there since the lstat
        self.set_aside(path, job_id, what)
        return False

    def publish_file(self, path: str, data: bytes, job_id: str, what: str, *,
                     durable: bool = True) -> bool:
        """Write ``data`` at ``path``, where the spool keeps ``what`` of job ``job_id``
        (its record, its progress, its cancel request), over a regular file there (an
        earlier one); anything else there is set aside first (:meth:`set_aside`).  False
        when something that is no regular file keeps taking the name."""
        for _ in range(ASIDE_TRIES):
            if self.mover.publish(path, data, replace=FILES_ONLY, durable=durable):
                return True
            self.set_aside(path, job_id, what)
        return False

    def set_aside(self, path: str, job_id: str, what: str) -> bool:
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
        aside = invalid_id(self.clock.now())
        kind = kind_of(st.st_mode)
        where = spool_relative(path)
        message = (f"not a regular file ({kind}) at {where}, where spoolq keeps the {what} "
                   f"of job {job_id}")
        try:
            moved = self.mover.move(path, self.layout.original(aside), replace=False)
        except SpoolIOError as exc:
            # A directory may change parent only if its owner may write it (for its
            # '..'): an operator's `sudo mkdir` here cannot go to failed/.  Empty, it
            # holds nothing to keep, and its removal needs no more than this folder.
            if S_ISDIR(st.st_mode) and self.mover.remove_empty_dir(path):
                return True
            if not may_not_change_folder(path, exc):
                raise
            # Not empty either: kept in its own folder, under a name every pass ignores.
            return self.keep_in_place(path, name=where, message=(
                f"{message}; the spool user may neither move it into failed/ (a directory "
                "changes folder only if its mover may write it) nor remove it, as it holds "
                "files")) is not None
        if not moved:
            return False  # gone meanwhile
        record = Record(
            id=aside, state=_S_FAILED, submitted_at=utc_from_ns(st.st_mtime_ns),
            finished_at=self.clock.now(), host=self.host, pid=self.pid,
            error=ErrorInfo(type=ErrorType.INVALID_JOB, message=(
                f"{message}: moved aside, kept as failed/{aside}{ORIG_SUFFIX}")),
            source=Source(name=where, size=None, kind=kind))
        self._record_or_put_back(record, str(self.layout.original(aside)), path)
        return True

    def keep_in_place(self, path: str, *, name: str, message: str,
                      drop: Drop | None = None) -> Record | None:
        """Rename what stands at ``path``, which the spool user may neither move out of its
        folder nor remove (another user's directory), within that folder to a name every
        pass and reader ignores (:meth:`Layout.kept_str`), beside a failed record of an id
        of its own (``invalid_job``; ``source.name``: ``name``, ``source.kept_at``: where
        it now is) saying ``message`` and that an operator must remove it.  A rename
        within a folder needs only that folder's write permission.  The record; None when
        nothing was there.  Should the record not be written, the entry goes back first.

        ``drop``: what intake judged at ``path``, a drop in ``pending/`` it quarantines in
        place (:meth:`quarantine`).  Anything else found there once renamed (a newer drop)
        goes back to be judged afresh (None); the record has the drop's time and tool, and
        is published as every quarantine record is (:meth:`publish_terminal`).
        """
        if drop is None:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
        aside = invalid_id(self.clock.now())
        kept = self.layout.kept_str(path, aside)
        if not self.mover.move(path, kept, replace=False):
            return None
        if drop is None:
            mtime_ns, tool = st.st_mtime_ns, None
        else:
            st = os.lstat(kept)
            if (st.st_ino, st.st_dev) != drop.inode and self.mover.move(kept, path):
                return None  # a newer drop replaced it meanwhile: back it goes, judged afresh
            mtime_ns, tool = drop.mtime_ns, drop.tool
        record = self._kept_record(aside, kept, st.st_mode, mtime_ns, name=name,
                                   message=message, tool=tool)
        self._record_or_put_back(record, kept, path, terminal=drop is not None)
        return record

    def _record_or_put_back(self, record: Record, moved: str, back: str, *,
                            terminal: bool = False) -> None:
        """Publish the failed ``record`` of an entry just moved from ``back`` to ``moved``
        (never over anything at its name; ``terminal``: as :meth:`publish_terminal` does);
        not recorded (ENOSPC), the entry goes back before the error propagates, so the
        caller's write fails on the name as it was (and its undo sees that).  Left
        there, recovery would record it."""
        try:
            if terminal:
                self.publish_terminal(record)
            else:
                self.mover.publish(self.layout.job_str(_S_FAILED, record.id),
                                   record_bytes(record), replace=False)
        except BaseException:
            with contextlib.suppress(SpoolIOError, OSError):
                self.mover.move(moved, back, replace=False)
            raise

    def remove_original(self, path: str, *, durable: bool = False) -> bool:
        """Remove the quarantined original at ``path`` (a directory drop whole); True when
        it was there.  One the spool user may not remove (a submitter's directory it may
        move, holding a folder of theirs with files in it) is kept in ``failed/``
        (:meth:`keep_in_place`): before, its removal by the completion of a later run of
        its id failed with EACCES after each I/O pause, and claims stayed paused."""
        try:
            return self.mover.unlink_durable(path) if durable else self.mover.unlink(path)
        except SpoolIOError as exc:
            if not refused_directory(path, exc):
                raise
            where = spool_relative(path)
            return self.keep_in_place(path, name=where, message=(
                f"the quarantined original {where}, superseded by a later record of its "
                "id: the spool user may not remove it, as it holds files it may not delete")) \
                is not None

    def _retire(self, claim: Claim, *, refresh: bool = True) -> None:
        """The run is recorded: drop its running file, sidecars and lease."""
        kept = self.mover.retire(self.layout.job_str(_S_RUNNING, claim.job_id), claim.fd)
        self._forget_run(claim.job_id, refresh=refresh)
        claim.close(os.close if kept else self.closer)  # only freeing an inode is slow

    def _forget_run(self, job_id: str, *, refresh: bool = True) -> None:
        """Drop the run's progress file and cancel request.

        ``refresh=False`` when the presence was refreshed after the run's terminal
        record was published: that refresh saw every sidecar that can matter.  A
        progress file is written by this processor, never once the run is finishing;
        a cancel request's writer (``Client.cancel``) looks for the terminal record
        after writing it and removes a request that came too late, so a request
        created after that refresh is removed by its writer.
        """
        presence = self.presence
        if presence is not None and refresh:
            presence.refresh()
        name = job_id + JOB_SUFFIX
        if presence is None or presence.may_exist(_PROGRESS, name):
            self._drop(_PROGRESS, name, self.layout.progress_str(job_id),
                       of=(job_id, "progress"))
        if presence is None or presence.may_exist(_CANCEL, job_id):
            self._drop(_CANCEL, job_id, self.layout.cancel_str(job_id),
                       of=(job_id, "cancel request"))

    def requeue(self, claim: Claim, job: Job) -> bool:
        """running -> pending with ``job`` as the new pending file.

        False (nothing moved) when a newer drop of the id is already pending:
        the caller then fails the run, and the newer drop supersedes it.
        """
        check_transition(JobState.RUNNING, JobState.PENDING)
        dest = self.layout.job_str(JobState.PENDING, claim.job_id)
        if not self.mover.publish(dest, job_bytes(job), replace=False):
            return False
        self._retire(claim)
        return True

    def release(self, claim: Claim) -> bool:
        """running -> pending, the claimed file itself by rename: a claim that found the
        drop replaced, since intake judged it, by something that is no job gives it back
        for intake to judge (and quarantine with its bytes).  False (nothing moved) when
        a newer drop of the id is pending."""
        check_transition(JobState.RUNNING, JobState.PENDING)
        if not self.mover.move(self.layout.job_str(JobState.RUNNING, claim.job_id),
                               self.layout.job_str(JobState.PENDING, claim.job_id)):
            return False
        claim.close()
        with contextlib.suppress(SpoolIOError, OSError):
            self._forget_run(claim.job_id)  # the job is back; recovery drops what stays
        return True

    def requeue_cut_short(self, claim: Claim, job: Job) -> bool:
        """running -> pending for a run an orderly stop cut short: its attempt not counted.

        ``job`` (the job as claimed, its submission time pinned) becomes the pending
        file as :meth:`requeue` writes it.  Should the disk refuse that write (ENOSPC,
        EIO), the running file itself goes back by rename: it holds the bytes that were
        claimed, the attempts as they were before this run, so nothing needs writing
        and the attempt still does not count (left in ``running/``, recovery would
        count it).  False, as for :meth:`requeue`, when a newer drop is pending.
        """
        try:
            return self.requeue(claim, job)
        except (SpoolIOError, OSError):
            running = self.layout.job_str(JobState.RUNNING, claim.job_id)
            pending = self.layout.job_str(JobState.PENDING, claim.job_id)
            if os.path.lexists(pending) or not os.path.lexists(running):
                # Written, then the disk failed (recovery finishes that requeue), or a
                # newer drop is pending (recovery fails this run as superseded, as the
                # caller would): either way, left for recovery.
                raise
            if not self.mover.move(running, pending, replace=False):
                return False
        claim.close()
        with contextlib.suppress(SpoolIOError, OSError):
            self._forget_run(claim.job_id)  # the job is back; recovery drops what stays
        return True

    # -- quarantine --------------------------------------------------------------

    def quarantine(self, name: str, message: str, *, kind: str, size: int | None,
                   mtime_ns: int, inode: tuple[int, int], tool: str | None = None
                   ) -> Record | None:
        """pending -> failed for what cannot be a job; None if the entry vanished."""
        check_transition(JobState.PENDING, JobState.FAILED)
        job_id = id_from_name(name) or invalid_id(self.clock.now())
        staged = self.layout.staging(f"quarantine-{job_id}")
        src = self.layout.entry(JobState.PENDING, name)
        try:
            if not self.mover.move(src, staged, replace=False, durable=False):
                return None
        except SpoolIOError as exc:
            if kind != "directory" or not may_not_change_folder(str(src), exc):
                raise
            # A submitter's directory (see may_not_change_folder): kept in pending/ under a
            # name intake ignores.  Before, the failed move paused claims after every retry,
            # so one mkdir in the drop folder stopped the spool.  Its own id, not the
            # name's: a later run of that id replaces the id's record, and would leave the
            # kept directory with none.
            return self.keep_in_place(str(src), name=printable_name(name), message=(
                f"{message}; the spool user may not move it out of pending/ (a directory "
                "changes folder only if its mover may write it)"),
                drop=Drop(inode, mtime_ns, tool))
        moved = os.lstat(staged)
        if (moved.st_ino, moved.st_dev) != inode and self.mover.move(staged, src):
            return None  # a newer drop replaced it meanwhile: back it goes, judged afresh
        if os.path.lexists(self.layout.original(job_id)):
            # Never replace an earlier original: this drop gets an id of its own.
            earlier, job_id = job_id, invalid_id(self.clock.now())
            message += f" (an earlier quarantined {earlier}.json is kept under its id)"
        try:
            self.mover.move(staged, self.layout.original(job_id), replace=False)
        except SpoolIOError:
            self.mover.move(staged, src, replace=False)  # back to pending/, judged again later
            raise
        record = Record(
            id=job_id, tool=tool, state=JobState.FAILED,
            submitted_at=utc_from_ns(mtime_ns), finished_at=self.clock.now(),
            error=ErrorInfo(type=ErrorType.INVALID_JOB, message=message),
            source=Source(name=printable_name(name), size=size, kind=kind),
            host=self.host, pid=self.pid,
        )
        self.publish_terminal(record)
        return record

    def _kept_record(self, job_id: str, kept: str, mode: int, mtime_ns: int, *,
                     name: str, message: str, tool: str | None = None) -> Record:
        """The failed record of what was kept in its own folder at ``kept``."""
        kept_at = spool_relative(kept)
        return Record(
            id=job_id, tool=tool, state=_S_FAILED, submitted_at=utc_from_ns(mtime_ns),
            finished_at=self.clock.now(), host=self.host, pid=self.pid,
            error=ErrorInfo(type=ErrorType.INVALID_JOB, message=(
                f"{message}, so it was renamed to {kept_at}, which spoolq ignores: an "
                "operator must remove it")),
            source=Source(name=name, size=None, kind=kind_of(mode), kept_at=kept_at))

    # -- client operations -------------------------------------------------------

    def submit(self, job: Job, job_id: str, *, max_bytes: int | None = None) -> None:
        """Publish a new job into ``pending/``; ConflictError if that id is pending.

        InvalidJob for what intake would quarantine: nesting deeper than
        :data:`~spool.models.MAX_NESTING` and, with ``max_bytes``, a job file (as
        written with its id and submission time) over that size.
        """
        if nesting_depth({"params": job.params, "meta": job.meta}) > MAX_NESTING:
            raise InvalidJob(f"invalid job: nested more than {MAX_NESTING} levels deep")
        job = job.model_copy(update={"id": job_id, "submitted_at": job.submitted_at
                                     or self.clock.now()})
        data = job_bytes(job)
        if max_bytes is not None and len(data) > max_bytes:
            raise InvalidJob(f"too large: the job file would be {len(data)} bytes, over "
                             f"SPOOL_MAX_JOB_BYTES={max_bytes}")
        if not self.mover.publish(self.layout.job(JobState.PENDING, job_id), data,
                                  replace=False):
            raise ConflictError(f"job {job_id} is already pending")

    def cancel_pending(self, job_id: str) -> Record | None:
        """pending -> failed ``cancelled``; None when the job is not (or no longer) pending."""
        check_transition(JobState.PENDING, JobState.FAILED)
        staged = self.layout.staging(f"cancel-{job_id}")
        claim = self._take(self.layout.job(JobState.PENDING, job_id), staged, job_id)
        if claim is None:
            return None
        return self.finish_cancel(claim, staged)

    def finish_cancel(self, claim: Claim, staged: Path) -> Record:
        """Publish the ``cancelled`` record of a job staged for cancel, then drop the staging.

        Should the record not be written (ENOSPC, EIO), the job goes back to ``pending/``
        before the error is raised: the cancel did not happen, and left staged the job
        would wait for a recovery scan to put it back.  Recovery still settles what this
        leaves: a newer drop of the id pending meanwhile, or an error after the record
        landed.
        """
        try:
            record = self.record_of_claim(claim, JobState.FAILED)
            record.error = ErrorInfo(type=ErrorType.CANCELLED, message="cancelled while pending")
            pending = self.layout.job(JobState.PENDING, claim.job_id)
            if record.tool is None:  # no job in it: kept as intake would have
                return self._cancel_no_job(claim, staged, record, pending)
            self.publish_terminal(record, unwritten=lambda: self.mover.move(
                staged, pending, replace=False))
            self.mover.unlink(staged)
            return record
        finally:
            claim.close()

    def _cancel_no_job(self, claim: Claim, staged: Path, record: Record,
                       pending: Path) -> Record:
        """Cancel a pending file that holds no job: its bytes become the record's
        quarantined original (``failed/<id>.orig``), as intake's quarantine keeps them,
        and a retry asks for the file to be fixed.  An earlier original of the id goes:
        it belonged to the failed record this one replaces.  Cut short between the two
        renames, recovery writes the original's record (``Recovery._settle_original``;
        ``Recovery._settle_kept`` when an earlier original was kept linked in ``tmp/``)."""
        original = self.layout.original(claim.job_id)
        record.error = ErrorInfo(type=ErrorType.CANCELLED, message=(
            f"cancelled while pending; not a valid job, its bytes are kept in "
            f"failed/{original.name}"))
        record.source = Source(name=f"{claim.job_id}{JOB_SUFFIX}",
                               size=os.fstat(claim.fd).st_size)
        # An earlier original is replaced below, yet it stays its record's should this
        # record not be written: a link to it is kept in tmp/ until then.
        kept = self.layout.staging(f"kept-{claim.job_id}")
        aside = kept if self.mover.link(original, kept) else None
        try:
            try:
                self.mover.move(staged, original, replace=True)
            except (SpoolIOError, OSError) as exc:
                self.mover.move(staged, pending, replace=False)  # not cancelled: back it goes
                if isinstance(exc, OSError):  # an earlier original that is a directory
                    raise ConflictError(
                        f"{claim.job_id} is not cancelled: its bytes cannot be kept as "
                        f"failed/{original.name} ({exc.strerror})") from exc
                raise

            def undo() -> None:  # not written: the bytes go back, the earlier original too
                # With a newer drop of the id pending meanwhile, the bytes stay staged:
                # recovery finishes the cancel (Recovery._restore_cancel), as it does
                # for a job whose record is not written.
                if (self.mover.move(original, pending, replace=False)
                        or self.mover.move(original, staged, replace=False)) and aside:
                    self.mover.move(aside, original, replace=False)

            self.publish_terminal(record, unwritten=undo)
        finally:
            if aside is not None:
                with contextlib.suppress(SpoolIOError, OSError):
                    self.mover.unlink(aside)
        return record

    def retry(self, job_id: str) -> Record:
        """failed -> pending with attempts reset to 0; the failed record goes with it."""
        check_transition(JobState.FAILED, JobState.PENDING)
        src = self.layout.job(JobState.FAILED, job_id)
        try:
            fd = open_nofollow(src)  # a symlink in failed/ is never followed out of the spool
        except FileNotFoundError as exc:
            raise NotFoundError(f"no failed job {job_id}") from exc
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink, a socket
                raise ConflictError(f"failed/{job_id}.json is not a regular file") from exc
            raise SpoolIOError(f"cannot read failed/{job_id}.json: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConflictError(f"failed/{job_id}.json is not a regular file")
            data = read_fd(fd, RETRY_MAX_BYTES)
            if len(data) > RETRY_MAX_BYTES:
                raise ConflictError(f"failed/{job_id}.json is too large to retry (over "
                                    f"{RETRY_MAX_BYTES} bytes: no job is that large)")
            record = parse_record(data)
        except ValueError as exc:
            raise ConflictError(f"failed/{job_id}.json is not a valid record") from exc
        finally:
            os.close(fd)
        if record.source is not None or record.tool is None:
            reason = record.error.message if record.error else "invalid job"
            raise ConflictError(f"{job_id} was quarantined ({reason}); "
                                "fix the file and drop it again")
        staged = self.layout.staging(f"retry-{job_id}")
        claim = self._take(src, staged, job_id)
        if claim is None:
            raise ConflictError(f"job {job_id} is being retried by someone else")
        try:
            job = record.to_job().model_copy(update={"attempts": 0, "not_before": None,
                                                     "id": job_id, "error": record.error})
            if not self.mover.publish(self.layout.job(JobState.PENDING, job_id),
                                      job_bytes(job), replace=False):
                self.mover.move(staged, src, replace=False)
                raise ConflictError(f"job {job_id} is already pending")
            self.mover.unlink_durable(staged)
        finally:
            claim.close()
        # The job as it now stands in pending/ (no run's start, host or backoff).
        return record_from_job(job, job_id, JobState.PENDING, claim.mtime_ns)

    def record_of_claim(self, claim: Claim, state: JobState) -> Record:
        """A record for a claimed job file (tolerating a file that is not a valid job)."""
        job = job_in(claim.data)
        if job is None:
            return Record(id=claim.job_id, state=state, submitted_at=utc_from_ns(claim.mtime_ns),
                          finished_at=self.clock.now(), host=self.host, pid=self.pid)
        return record_from_job(job, claim.job_id, state, claim.mtime_ns,
                               finished_at=self.clock.now(), host=self.host, pid=self.pid)


def _inode(path: StrPath) -> int | None:
    """The inode ``path`` names now; None when nothing is there."""
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


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


def job_in(data: bytes) -> Job | None:
    """The job a job file's bytes hold; None when they hold none (not a valid job, or an
    integer past 64 bits: pydantic reads it exactly, and no record could hold it)."""
    if inexact_integer(data) is not None:
        return None
    try:
        return Job.model_validate_json(data)
    except ValueError:
        return None


def record_from_job(job: Job, job_id: str, state: JobState, mtime_ns: int,
                    **fields: Any) -> Record:
    """The record view of a job file (submitted_at from the file when the job lacks it).

    ``fields`` set or override record fields in the same validation.  The job's
    fields go in as they are, not dumped first: validating its field values
    again is a third of the cost of a dump (and ``model_construct`` is slower
    than either).  The dict is built in one expression and handed to the
    validator itself: ``model_validate`` only forwards to it, and its frame and
    keyword handling were a sixth of building a record (1 us of 6).
    """
    record: Record = Record.__pydantic_validator__.validate_python(
        {**job.__dict__, "id": job_id, "state": state,
         "submitted_at": job.submitted_at or utc_from_ns(mtime_ns), **fields})
    return record


def printable_name(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes shown as escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
