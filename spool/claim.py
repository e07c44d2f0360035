"""Taking a job file: the no-overwrite move under its lease, and the claim that holds it.

Guarantees (DESIGN sections 2 and 9):

* A claim never overwrites its destination (``running/<id>.json``, or a staging name
  for a cancel or a retry); a lost race returns None, never an exception.
* The claim lease (an flock on the job's inode, see :mod:`spool.lease`) is taken
  before the move, so a live owner's running job is never taken.
* Only a regular file is claimed: anything else swapped in mid-claim goes back for
  intake to judge, and a file grown since intake judged it is read no further than a
  job can be (:data:`~spool.jobfile.MAX_ACTIVE_BYTES`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from stat import S_ISREG

from spool.errors import SpoolIOError, UnreadableDrop
from spool.fsops import (
    Mover,
    StrPath,
    failing_file,
    failing_read,
    refused_by_file,
    sticky_owner,
    sticky_said,
)
from spool.jobfile import MAX_ACTIVE_BYTES, READ_CHUNK, read_fd
from spool.lease import CLAIMS, OPEN_FLAGS, close_noted, open_nofollow, try_lock


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
            try:
                closer(self.fd)
            finally:  # after the close: a child forked before it closes its copy
                CLAIMS.pop(self.fd, None)


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


def take(mover: Mover, src: StrPath, dst: StrPath, job_id: str) -> Claim | None:
    """Move the job file ``src`` to ``dst`` under its lease, and read it; None when it is
    gone, not a regular file, leased by someone else, or ``dst`` is taken."""
    if (opened := _open(src, job_id)) is None:
        return None  # gone, or not a regular file: intake's business
    fd, before = opened
    CLAIMS[fd] = before  # noted from its open (in _open), now with the file it names
    try:
        if not S_ISREG(before.st_mode) or not _lock(fd, job_id):
            return None
        if (leased := _move_in(mover, src, dst, fd, before, job_id=job_id)) is None:
            return None  # never replaces
        fd = leased
        try:
            after = os.lstat(dst)
        except OSError as exc:  # moved, then not looked up (EIO, ESTALE): given back, as
            # a read's error, whatever the error (raised first, it crashed the processor,
            # the job left unleased in running/ and failed 'abandoned', never run)
            _give_back(mover, src, dst, before, moved=True)
            raise _lookup_trouble(exc, job_id) from exc
        if after.st_ino != before.st_ino or after.st_dev != before.st_dev:
            # A newer drop replaced the file between open and move: lease that one.
            close_noted(fd)
            fd = -1  # closed: the finally below must not close it again
            if (newer := _lease_newer(mover, src, dst, job_id, after)) is None:
                return None
            fd, before = newer  # its one fstat, given back on EIO as the file it replaced
        size = before.st_size
        # Grown since intake judged it (through a descriptor its writer kept), a file is
        # read no further than a job can be: the daemon then runs what it judged.  One
        # read when the file is as its stat says (read_fd's own first step, without its
        # frame).
        try:
            data = os.read(fd, size + 1) if size < READ_CHUNK else b""
            if len(data) != size:
                data += read_fd(fd, MAX_ACTIVE_BYTES - len(data))
        except OSError as exc:  # EIO: the claim is given back, the file's trouble (a
            # newer drop's got out raw, and crashed the processor); ESTALE, ENOMEM: the
            # spool's, waited out as its fstat's (said the file's, it waited for a scan)
            _give_back(mover, src, dst, before, moved=True)
            what = f"cannot claim {job_id}"
            raise (failing_file(exc, what) or failing_read(exc, what)
                   or UnreadableDrop(f"{what}: {exc.strerror}")) from exc
        claim = Claim(job_id, fd, data, after.st_ctime_ns, after.st_mtime_ns)
        fd = -1  # the claim holds it now
        return claim
    finally:
        if fd >= 0:
            close_noted(fd)


def _move_in(mover: Mover, src: StrPath, dst: StrPath, fd: int, before: os.stat_result, *,
             job_id: str) -> int | None:
    """:meth:`~spool.fsops.Mover.move_leased` of the claimed file (``fd``, locked, its
    fstat ``before``): the descriptor that holds its lease in ``dst`` (``fd``, or the new
    name's own lock, noted in its place), None when nothing moved.  Moved, then the
    folder's sync failed: given back, and raised (the file's own refusal as its
    :class:`~spool.errors.UnreadableDrop`)."""
    try:
        leased = mover.move_leased(src, dst, fd)
    except SpoolIOError as exc:
        _give_back(mover, src, dst, before)  # moved, then the folder's sync failed
        if (refused := _refused_by_file(exc, src, dst, job_id)) is not None:
            raise refused from exc
        raise
    if leased is not None and leased != fd:  # a link's new name (see Mover.move_leased)
        CLAIMS.pop(fd, None)
        CLAIMS[leased] = before
    return leased


def _open(src: StrPath, job_id: str) -> tuple[int, os.stat_result] | None:
    """``src`` open and its fstat; None when it is gone or no file to open.

    EIO (a bad sector under its inode) is the file's trouble, as its read's in
    :func:`take`: taken for the spool's, the claim was tried again at each pause's end,
    and every claim paused for as long as it lasted (its fstat's, out of the loop,
    crashed the processor).  Out of descriptors (or the kernel failing), the file is
    there all the same: spool trouble, which the caller waits out, where "lost" had the
    processor forget the job until its next periodic scan.  Its fstat's errors are taken
    as the open's (:func:`_files_trouble`).

    The descriptor is noted in :data:`~spool.lease.CLAIMS` at once (None: its file not
    known yet): a process forked during its fstat (a FAST tool's thread takes the GIL
    the fstat lets go) kept a copy that held the lock :func:`take` then took."""
    try:
        fd = os.open(src, OPEN_FLAGS)  # open_nofollow's flags, without its frame
    except OSError as exc:
        if (bad := failing_file(exc, f"cannot claim {job_id}")) is not None:
            raise bad from exc
        if (trouble := failing_read(exc, f"cannot claim {job_id}")) is not None:
            raise trouble from exc
        return None
    CLAIMS[fd] = None
    try:
        return fd, os.fstat(fd)
    except OSError as exc:
        close_noted(fd)  # never locked: forgotten before its close
        raise _files_trouble(exc, job_id) from exc


def _lock(fd: int, job_id: str) -> bool:
    """:func:`~spool.lease.try_lock` of the job still in ``pending/``; its errors are taken
    as its open's (:func:`_files_trouble`; raised, they crashed the processor: a
    traceback, exit 1)."""
    try:
        return try_lock(fd)
    except OSError as exc:
        raise _files_trouble(exc, job_id) from exc


def _files_trouble(exc: OSError, job_id: str) -> SpoolIOError:
    """What the claim raises for ``exc``, an error on its job's open file (its fstat, its
    lock, its lookup once moved): an EIO (a bad sector under its inode) is the file's
    :class:`~spool.errors.UnreadableDrop`, tried again at a later scan; the spool's
    passing trouble (:data:`~spool.fsops.NOT_NOW`: ESTALE, ENOMEM, EINTR, ENOLCK (the
    kernel or the lock daemon short of locks), out of descriptors) is the
    :class:`~spool.errors.SpoolIOError` the processor waits out, the job queued again,
    as the open's is (raised raw, it crashed the processor: a traceback, exit 1).
    ``exc`` itself is raised for any other error (a bug)."""
    what = f"cannot claim {job_id}"
    if (bad := failing_file(exc, what)) is not None:
        return bad
    if (trouble := failing_read(exc, what)) is not None:
        return trouble
    raise exc


def _lookup_trouble(exc: OSError, job_id: str) -> SpoolIOError:
    """What the claim raises for ``exc``, its lookup's error once its move landed.  Not
    there (ENOENT, ENOTDIR): the spool's folder went from under the processor between the
    two (a lazy unmount, a FUSE daemon dead, a mount over the path) or a hand removed the
    file: the spool's trouble, waited out while the loop looks at its spool (a changed
    one stops it, 75); raised raw, it crashed the processor, exit 1 (seen in
    tests/processor/test_spool_fuse.py under load).  Else :func:`_files_trouble`."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SpoolIOError(f"cannot claim {job_id}: moved into running/, then not found "
                            f"there ({exc.strerror})")
    return _files_trouble(exc, job_id)


def _refused_by_file(exc: SpoolIOError, src: StrPath, dst: StrPath, job_id: str
                     ) -> UnreadableDrop | None:
    """The claim's move refused by the file itself (:func:`spool.fsops.refused_by_file`):
    one immutable file in ``pending/`` paused every claim for as long as it stayed (a job
    submitted beside it waited 11 minutes, QA)."""
    if not refused_by_file(exc.__cause__, os.path.dirname(src), os.path.dirname(dst)):
        return None
    cause = exc.__cause__
    reason = cause.strerror if isinstance(cause, OSError) else str(cause)
    folder = os.path.dirname(src)
    if (owner := sticky_owner(folder)) is not None and not _owned(src):
        return UnreadableDrop(f"cannot move the file of {job_id}: {reason} "
                              f"({sticky_said(folder, owner)})")
    return UnreadableDrop(f"cannot move the file of {job_id}: {reason} (the file refuses "
                          "the move, its folders do not: immutable or append-only, or a "
                          "security label)")


def _owned(path: StrPath) -> bool:
    """Whether this process's user owns ``path`` (False when it cannot be looked at)."""
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except OSError:
        return False


def _give_back(mover: Mover, src: StrPath, dst: StrPath, before: os.stat_result, *,
               moved: bool = False) -> None:
    """Move the job file ``before`` describes from ``dst`` back to ``src`` when the claim
    fails on disk trouble after its move: closing its lease with the file left in
    ``running/`` made it an orphan, which the next scan failed ``abandoned`` (at
    ``max_attempts`` 1) under a live processor.  Nothing when it did not land there, or
    when the disk refuses this move too (then recovery settles it).

    ``moved`` (the move into ``dst`` is known to have landed): a ``dst`` the disk cannot
    look up (EIO) goes back all the same, what is there being what that move put there
    (it never replaces), where doing nothing left the job in ``running/`` with its lease
    closed, abandoned by the next scan under a live processor."""
    with contextlib.suppress(OSError, SpoolIOError):
        try:
            after = os.lstat(dst)
        except (FileNotFoundError, NotADirectoryError):
            return  # not there: nothing to give back
        except OSError:
            if not moved:
                return
            after = before  # not looked up: the claim's own move put it there
        if after.st_ino == before.st_ino and after.st_dev == before.st_dev:
            mover.move(dst, src, replace=False, durable=False)


def _lease_newer(mover: Mover, src: StrPath, dst: StrPath, job_id: str,
                 moved: os.stat_result) -> tuple[int, os.stat_result] | None:
    """The leased fd of what a newer drop put at ``dst`` (just moved from ``src``; its
    lstat there is ``moved``), and its fstat; None if there is none to take.

    Only a regular file can be claimed.  Anything else (a symlink, a directory, a
    FIFO swapped in mid-claim) goes back to ``src`` for intake to quarantine; should a
    newer drop hold ``src`` by then, recovery quarantines it from ``dst``.  A regular
    file someone else holds goes back too: that claimant locked it in ``src``, where this
    move took it from, so its own move can no longer land it (left here, its claim failed
    and let go, and the file sat unleased in ``running/``, failed ``abandoned`` by the
    next scan under two live processors: a review).  Back in ``src``, it is that
    claimant's if its move comes after, else the next claim's.  Another file at ``dst``
    by then (not ``moved``) is left to whoever put it there.
    One whose fstat or lock fails is given back, whatever the error, and raised as the
    file it replaced would be (:func:`_files_trouble`: EIO its
    :class:`~spool.errors.UnreadableDrop`, ESTALE or ENOMEM spool trouble); raised raw, it
    crashed the processor, the file unleased in ``running/``.
    """
    try:
        fd = open_nofollow(dst)
    except OSError:
        fd = -1
    if fd >= 0:
        CLAIMS[fd] = None  # noted before its lock, as in _open
        try:
            CLAIMS[fd] = st = os.fstat(fd)
            regular = S_ISREG(st.st_mode)
            if regular and try_lock(fd):
                return fd, st
        except OSError as exc:  # given back whatever the error, then raised as the claim's
            close_noted(fd)
            with contextlib.suppress(OSError, SpoolIOError):
                mover.move(dst, src, replace=False, durable=False)
            raise _files_trouble(exc, job_id) from exc
        close_noted(fd)
        if regular and (st.st_ino, st.st_dev) != (moved.st_ino, moved.st_dev):
            return None  # not the file this claim moved: whoever put it there holds it
    mover.move(dst, src, replace=False)  # back for its claimant, or for intake to judge
    return None
