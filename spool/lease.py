"""Kernel-held locks: who is alive is the kernel's word, never a timeout.

* A *claim lease* is an exclusive ``flock`` on the job file in ``running/``,
  taken on the pending inode *before* it is moved, so the file is never
  visible in ``running/`` unlocked.  The processor keeps the descriptor open
  for the whole run; when the owner dies, the kernel drops the lock at once.
* An *owner lease* is an ``flock`` on ``owners/<owner>.lock`` held for the
  life of a processor; statusd and the CLI test it to say whether a
  processor is up.

Descriptors are opened ``O_CLOEXEC`` and workers are started by
``forkserver``/``spawn``, so no child process inherits a lease; a child forked without
an exec (a FAST tool's ``os.fork()``, a ``multiprocessing`` fork) closes its copies of
both kinds at once (:func:`_forked`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import signal
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from spool.fsops import F_SETLEASE, NOT_NOW

if TYPE_CHECKING:
    from spool.models import OwnerStatus

HEARTBEAT_STALE_S = 60.0
"""A processor whose heartbeat is older than this is not live, though it holds its lock
(stopped by SIGSTOP, or its loop hung): its workers and counts are no longer shown."""


def heartbeat_fresh(status: OwnerStatus, now: float) -> bool:
    """Whether a lock holder's heartbeat is under :data:`HEARTBEAT_STALE_S` old at ``now``
    (seconds since the epoch): live, not hung."""
    return now - status.heartbeat_at.timestamp() < HEARTBEAT_STALE_S


STARTING_S = 60.0
"""How long a processor holding its lock with no status file is taken for one starting
by the readers (``spoolq submit`` and ``show``, statusd's POST, ``wait``'s lookout):
the processors leave it jobs for their grace, ``RESTART_GRACE_S`` (60 s) and the stop's
``SPOOL_GRACE_S`` (processor.elsewhere), then fail them.  Unbounded, a start stuck (a
tools module's import that hangs) had ``spoolq submit`` take a tool no processor offers
(a typo, exit 0) for ever, and the processors failed it ``unknown_tool`` at once (h413)."""


OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_nofollow(path: str | os.PathLike[str]) -> int:
    """Open for reading without following a symlink or blocking on a FIFO."""
    return os.open(path, OPEN_FLAGS)


def open_for_writing(path: str, inode: int) -> bool | None:
    """Whether a process has the file at ``path`` (inode ``inode``) open for writing: the
    kernel refuses a read lease exactly then (EAGAIN), and grants one otherwise.

    None when it cannot tell: a lease is granted only to the file's owner (or with
    CAP_LEASE), on a filesystem that grants leases, and is not asked for by a process
    that the lease-break signal (SIGIO) would end; or the file is not ``inode`` now.
    The lease is given up before the descriptor is closed: a process forked meanwhile
    (a FAST tool's thread) shares the descriptor, and would hold the lease on, each
    writer's open of the file waiting for the kernel's lease-break time (45 s).
    """
    if signal.getsignal(signal.SIGIO) in (signal.SIG_DFL, None):
        return None
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino != inode:
            return None
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        with contextlib.suppress(OSError):  # the close gives it up then
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)
    return False


def try_lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False when someone holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def names(path: Path, fd: int) -> bool:
    """``path`` names the file open at ``fd``."""
    try:
        return os.path.samestat(os.lstat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def lock_if_free(path: Path) -> int | None:
    """A descriptor of ``path`` holding its lock, taken now, when nobody held it (the
    caller closes it, which releases it); None when someone does, or there is no such
    file to test (:func:`is_locked`'s None).  What is removed of a dead owner is removed
    while this is held, so a processor starting under the same name waits, then makes
    its lock file again (:class:`OwnerLease`)."""
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        if try_lock(fd):
            return fd
    except OSError:  # ENOLCK: raised, the descriptor closed (it was left open)
        os.close(fd)
        raise
    os.close(fd)
    return None


NOT_THERE = frozenset({errno.ENOENT, errno.ELOOP, errno.ENXIO})
"""What an open in ``owners/`` says when there is no file there to test or read: none
(gone since it was listed), a symlink (never followed), a socket."""


def is_locked(path: Path, *, strict: bool = False) -> bool | None:
    """True when a live process holds ``path``'s lock; None when there is no such file
    (or none this process can test: a symlink, which is never followed, or no read access).
    Out of descriptors or the disk failing, the OSError: nothing is known of the lock
    then, and reading it as not held called a live processor dead.  ``strict``: any open
    that fails for another reason than :data:`NOT_THERE` is raised too (no read access,
    EACCES), for a caller that says whether a processor is alive.
    """
    try:
        fd = open_nofollow(path)
    except OSError as exc:
        if exc.errno in NOT_NOW or (strict and exc.errno not in NOT_THERE):
            raise
        return None
    try:
        if try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


OWNER_LOCK_WAIT_S = 1.0
"""How long :class:`OwnerLease` tries for a lock another process holds: readers test
owner locks by taking them for a moment (:func:`is_locked`), and recovery holds a dead
owner's while it removes its files (:func:`lock_if_free`)."""


class Standing(enum.Enum):
    """Whether an :class:`OwnerLease` still holds what others test (:meth:`OwnerLease.standing`)."""

    HELD = "held"
    """The path names the locked file."""
    GONE = "gone"
    """The file was removed or replaced, in the same spool: others see no lock, though
    the claims' locks still hold (the same files); the lease is taken again."""
    MOVED = "moved"
    """Another spool's root is at the path (the spool remounted, or unmounted lazily
    and mounted again): nobody else sees this process's locks, the owner's nor its
    claims'."""
    UNKNOWN = "unknown"
    """The lookups failed (EIO, a stalled mount), or no spool is at the path for now
    (moved away, unmounted): nothing is known yet."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


_LEASES: weakref.WeakSet[OwnerLease] = weakref.WeakSet()
"""The owner leases this process holds, closed in a child it forks (:func:`_forked`)."""

CLAIMS: dict[int, os.stat_result | None] = {}
"""The claim leases this process holds: descriptor -> the job file's fstat (None between
its open and its fstat), closed in a child it forks (:func:`_forked`).  Kept by
:mod:`spool.claim` (a claim's take and :meth:`~spool.claim.Claim.close`) and
:func:`spool.orphans.lease`; a plain dict, as the claim is the processor's hot path (a
store and a pop a job, some 0.1 us).  Noted from the open (a copy forked before the lock
holds it once taken), and forgotten after the close (forgotten before, a copy forked in
between held the lock for as long as the child lived): a number noted of a descriptor
closed a moment ago may name another file meanwhile, which the child tells by its
device and inode (a pipe or a socket a FAST tool opened has an inode number of its own
device, which may be the job file's)."""


def close_noted(fd: int) -> None:
    """Close ``fd``, a descriptor noted in :data:`CLAIMS`, and forget it: after its close
    when its file is noted (a child forked before it closes its copy, told by its
    identity), before it when only its open is (None: not locked yet, and closed
    unlooked-at in a child, its number might name another file by then)."""
    if fd in CLAIMS and CLAIMS[fd] is None:
        del CLAIMS[fd]
        os.close(fd)
        return
    try:
        os.close(fd)
    finally:
        CLAIMS.pop(fd, None)


def _forked() -> None:
    """In a child this process forked: its copies of the owner leases' and the claim
    leases' descriptors closed (never unlocked: the locks are the parent's, on the same
    open files).  A flock stays held while any copy is open: a child a tools module
    forked at its import (the lease is taken before the tools load) or a FAST tool
    forked, and that outlived a processor SIGKILLed, held its lock, which read as a hung
    processor's for as long as the child lived, and no recovery removed its files
    (h415); and it held the lease of every job running at its fork, the forking FAST
    job's own too, which recovery took for a live owner's and left in ``running/`` for
    as long as the child lived (h416).  The child's work is its tool's (the processor
    kills it at its stop, as systemd's cgroup kill does at its death), no run of its
    own: the job is recovered like any other the dead processor ran.  A descriptor is
    closed only if it is still open on the file its claim noted (device and inode), or
    noted as just opened (None: its fstat not back yet)."""
    for lease in list(_LEASES):
        lease.forget()
    claims = list(CLAIMS.items())
    CLAIMS.clear()
    for fd, noted in claims:
        with contextlib.suppress(OSError):
            if noted is None or _identity(os.fstat(fd)) == _identity(noted):
                os.close(fd)


os.register_at_fork(after_in_child=_forked)


class OwnerLease:
    """A processor's lease on ``owners/<owner>.lock``, held until :meth:`release`.

    The lease is held on the file the path names: a lock taken on a file another
    processor's recovery removed meanwhile (it found the file unlocked between this
    one's open and its lock) is no lease, as nobody could see it; the file is made
    again.  A lock taken for a moment by a reader or a recovery pass is waited for.
    The spool's root (two folders up) is noted as the lease is taken, for
    :meth:`standing`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = self._take()
        try:
            self._root = _identity(os.stat(path.parent.parent))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _LEASES.add(self)

    def _take(self, wait_s: float = OWNER_LOCK_WAIT_S) -> int:
        deadline = time.monotonic() + wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o644)
            try:
                if self._held(fd, deadline):
                    return fd
            except BaseException:  # ENOLCK (a network lock daemon down), an lstat's EIO:
                os.close(fd)  # raised with the descriptor closed (it was left open)
                raise
            os.close(fd)

    def standing(self) -> Standing:
        """Whether the path still names the locked file, and if not, why (see
        :class:`Standing`).  Two lookups when it does: ``lstat`` and ``fstat``.  The
        spool's root is looked at when it does not, or the file's lookups fail (the lease
        on a FUSE mount whose daemon died, its root mounted again)."""
        try:
            if names(self.path, self._fd):
                return Standing.HELD
            unknown = False
        except OSError:
            unknown = True
        try:
            if _identity(os.stat(self.path.parent.parent)) == self._root:
                return Standing.UNKNOWN if unknown else Standing.GONE
            # Another spool's folders there: a remount.  None (yet): moved away for a
            # moment, or a mount point before its filesystem is mounted again, waited
            # for (claims pause); taken for another spool, the processor exited, and its
            # restart found no spool and stayed down (the review:
            # RestartPreventExitStatus=2).
            return Standing.MOVED if os.path.isdir(self.path.parent) else Standing.UNKNOWN
        except OSError:  # no spool root at its path now, or it cannot be looked at
            return Standing.UNKNOWN

    def take_again(self) -> None:
        """After :attr:`Standing.GONE`: the lease on a file at the path again (made anew),
        the old descriptor closed once the new one holds.  OSError when it cannot be
        (``owners/`` removed, the disk full; RuntimeError: another process holds it):
        the old lease stays, tried again later."""
        # One try: held by another, it is tried at the next heartbeat (waiting, it held
        # the loop a second each time: the review).
        fd = self._take(0.0)
        os.close(self._fd)
        self._fd = fd

    def _held(self, fd: int, deadline: float) -> bool:
        """One try: True when ``fd`` holds the lock of the file the path names; False to
        try again (a lock held a moment, or taken on a file removed meanwhile)."""
        if try_lock(fd):
            return names(self.path, fd)
        if time.monotonic() > deadline:
            raise RuntimeError(f"owner lease {self.path.name} is held by another process")
        time.sleep(0.01)
        return False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def forget(self) -> None:
        """In a forked child: its copy of the descriptor closed, the parent's lock kept."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
