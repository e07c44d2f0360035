"""The only module that renames, links, unlinks or fsyncs spool files.

Guarantees:

* :meth:`Mover.publish` makes a file visible only when complete: write to
  a staging folder, fsync the file, rename into place, fsync the folder.
* :meth:`Mover.move` with ``replace=False`` never overwrites: it uses
  ``renameat2(RENAME_NOREPLACE)`` (falling back to ``link`` + ``unlink`` on
  filesystems without it) and reports a lost race as ``False``.  With
  ``replace=FILES_ONLY`` it replaces a regular file only: anything else at the
  name (a directory, FIFO, socket or symlink) is left there and ``False``
  returned, for the caller to set it aside.
* :meth:`Mover.retire` takes a finished job file out of ``running/``.  With
  ``recycle`` on, the inode is kept in ``stage/`` as a *spare* and the next
  :meth:`Mover.publish` writes its file into it instead of creating one: on
  ext4, creating an inode and freeing one cost ten renames, so a
  claim-and-complete that does neither runs about eight times faster.  A job
  file is only recycled when nothing else can reach it: it is a regular file
  of this process's user with one link, and a write lease (``F_SETLEASE``),
  which the kernel grants only when no other process has the file open,
  succeeds after the file has left ``running/``.  Anything else is unlinked
  as before.  Under ``never`` and ``batch`` a power cut before the next flush
  can leave a record file holding an earlier job file's bytes (which fail
  record validation) where a fresh inode would have been left empty;
  ``always`` fsyncs the spare before its rename, as it fsyncs a fresh file.
* :meth:`Mover.publish_advisory` replaces a file rewritten again and again (the
  processor's status) by swapping names with a kept inode, never freeing one; a
  file a reader holds is never written into (see the method).
* A recycling Mover (the processor's) stages everything in ``stage/``, a folder
  of its own, and leaves ``tmp/`` to the drops every client stages there: its
  renames in and out of ``tmp/`` otherwise contend with theirs for the folder's
  lock (a quarter to half of the processor's CPU under a burst of drops, in
  ``rwsem_spin_on_owner``).  A spool made before ``stage/`` existed gets it at
  the processor's start; when it cannot be made (or used), the Mover stages in
  ``tmp/`` as before and :attr:`Mover.staging_note` says why.  Clients stage in
  ``tmp/``, and so do the actions of :mod:`spool.transitions` (statusd looks for
  them there).
* Durability follows ``SPOOL_FSYNC``: ``always`` fsyncs file and folder at
  each step; ``batch`` defers to one ``syncfs`` per group of operations
  (at most ``BATCH_OPS`` operations or ``BATCH_INTERVAL_S`` seconds apart, and
  on :meth:`Mover.flush`); ``never`` leaves it to the kernel.

OS errors that mean the spool is unusable (EACCES, ENOSPC, EROFS, EDQUOT, EIO)
are raised as :class:`~spool.errors.SpoolIOError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeAlias

from spool.durability import FsyncMode
from spool.errors import SpoolIOError, UnreadableDrop
from spool.layout import Layout
from spool.states import JobState

log = logging.getLogger("spoolq.spool")

BATCH_OPS = 64
FILE_MODE = 0o640
BATCH_INTERVAL_S = 0.05
SPARES_MAX = 32
WRITE_TAG = "="
"""Begins the staging tag of a file :meth:`Mover.publish` writes afresh (``=<name>``, its
destination's name): no id or owner starts with it, so no such name reads as a move's
(``cancel-x`` is the record of job ``cancel-x``, never a cancel of ``x``).  Before it the
tag was the name alone (see :func:`spool.staged.names_itself`)."""
SPARE_TAG = "+spare"  # no job id starts with "+", so no record's staging file has this tag
STAGE_MODE = 0o700  # stage/ as a processor makes it: its own
PARENT_MODE = 0o755
"""The spool root and the folders above it that ``make_folders`` creates (less what the
umask takes): writable by their owner only, whatever the umask."""
_F_GETLEASE = getattr(fcntl, "F_GETLEASE", 1025)
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
"""fcntl's lease command (recycling's write lease here, intake's read lease in
:func:`spool.lease.open_for_writing`)."""
# Read once: on Python 3.11 each ``FsyncMode.X`` goes through the enum class's
# ``__getattr__`` hook (0.11 us), and every move and publish asks the mode.
_ALWAYS, _BATCH, _NEVER = FsyncMode.ALWAYS, FsyncMode.BATCH, FsyncMode.NEVER

# Paths are taken as ``str`` or ``Path``: the per-job path passes strings (see
# ``Layout.job_str``), everything else passes ``Path``.
StrPath: TypeAlias = str | os.PathLike[str]
FILES_ONLY: Literal["files"] = "files"
"""``replace=FILES_ONLY``: replace a regular file, and nothing else (see :meth:`Mover.move`)."""
Replace: TypeAlias = bool | Literal["files"]
_name = os.path.basename
_parent = os.path.dirname
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
NO_DESCRIPTOR = frozenset({errno.EMFILE, errno.ENFILE})
"""Out of descriptors (this process's RLIMIT_NOFILE, or the system's file table)."""
FAILING_IO = frozenset({errno.EIO, errno.ESTALE, errno.ENOMEM, errno.EINTR, errno.ENOLCK,
                        errno.ENOTCONN, errno.ECONNABORTED, errno.ETIMEDOUT})
"""The device or the kernel failed the operation (a failing disk, an NFS handle gone
stale, kernel memory short, no lock record to be had: ENOLCK, from an flock; a FUSE
filesystem whose daemon died, ENOTCONN, or ECONNABORTED to a request in flight as it
died, a full run's FUSE test: a crash, exit 1; or a network filesystem's server that did not
answer, ETIMEDOUT) or cut it short (EINTR: a FUSE or network filesystem's call
interrupted, which Python retries for reads and writes but not for a rename): nothing
about the file, and another try may go through.  (ENOLCK out of a recovery pass was none
the processor knew: a traceback; so was ENOTCONN, QA.)"""
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS,
                       errno.EINVAL})
"""What a ``link()`` fails with where the filesystem has no hard links."""
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
"""What a write says when the filesystem has no room for it (blocks or inodes, or the
user's quota)."""
NOT_NOW = NO_DESCRIPTOR | FAILING_IO
"""A file could not be opened or read now, for a reason that is not the file's: a reader
that decides by what it reads (recovery, statusd's index, ``show``) raises these, never
taking the file for one gone."""
_FATAL_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT,
                           errno.EXDEV}) | NO_DESCRIPTOR | FAILING_IO
"""Errors that say the spool cannot be written now, not that one file is odd: the
processor pauses claims and writes (its I/O pause) and tries again.  Out of descriptors
(EMFILE, ENFILE) is one: a crash then failed every run it held as ``abandoned``, where a
pause lets the runs in flight end and give theirs back.  So is :data:`FAILING_IO`: an EIO
writing a record crashed the processor (a traceback, exit 1), and the next one failed
the run it had finished ``abandoned``."""

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = getattr(_libc, "renameat2", None)
except OSError:  # pragma: no cover - no libc
    _renameat2 = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reusable(fd: int, euid: int, egid: int) -> os.stat_result | None:
    """The stat of the file open on ``fd`` (just moved to a spare's name) if it can be reused.

    Reusable means ours alone and unreachable by others:

    * the file open on ``fd`` is a regular file of this user with one link
      (that it is the one now at the spare's name is checked when the spare
      is rewritten, see :meth:`Mover._rewrite_spare`);
    * no other open file description refers to it: a write lease is granted
      only then (and to the file's owner only), and it must still be held
      when checked again, so a writer that still holds the job file, or a
      reader that opened it in ``running/``, keeps the inode from being
      rewritten under it;
    * its group becomes ``egid`` (this process's) and its mode :data:`FILE_MODE`,
      so a submitter who kept an ``O_PATH`` handle on her drop (which no lease
      sees) cannot reopen it through ``/proc`` once it holds someone's record.
    """
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != euid:
            return None
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return None  # EAGAIN: open elsewhere; EINVAL/EACCES: no leases here
    try:
        held = fcntl.fcntl(fd, _F_GETLEASE) == fcntl.F_WRLCK  # not broken by an open
    except OSError:
        held = False
    try:  # a try, not contextlib.suppress (an object made and entered once a job)
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    except OSError:
        held = False  # a lease not given back: not a file to hand on
    if not held:
        return None
    try:
        if st.st_gid != egid:
            os.fchown(fd, -1, egid)
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        return None
    return st


def failing_read(exc: OSError, what: str) -> SpoolIOError | None:
    """``exc`` as the SpoolIOError of an I/O pause when it says the spool cannot be read
    now, for a reason that is not the file's (:data:`NOT_NOW`: out of descriptors, the
    device or the kernel failing); None for any other error (gone, not a file)."""
    return _trouble_of(exc, what, NOT_NOW)


def no_access(exc: OSError, what: str) -> SpoolIOError | None:
    """``exc`` as the SpoolIOError of an I/O pause when a folder of the spool refuses
    this process (EACCES, EPERM: a ``chmod`` by hand, an ACL); None for any other error.
    Raised as it was, it crashed the processor mid-run (a traceback, exit 1), and its
    runs failed ``abandoned`` at the next start (QA: ``chmod 000 pending/``)."""
    return _trouble_of(exc, what, REFUSED)


REFUSED = frozenset({errno.EACCES, errno.EPERM})
"""The spool refuses this process (see :func:`no_access`)."""


def refused_by_file(exc: BaseException | None, *folders: StrPath) -> bool:
    """``exc`` (a SpoolIOError's cause) is a move or removal refused (EPERM, EACCES) by
    the file itself, where its folders (``folders``, or those the error names) take
    writes: ``chattr +i`` or ``+a``, a security label.  That file's trouble, not the
    spool's: taken for the spool's, one such file paused every claim for as long as it
    stayed (QA)."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSED:
        return False
    named = [name for name in (exc.filename, exc.filename2) if name is not None]
    where = folders or tuple(os.path.dirname(os.fsdecode(name)) for name in named)
    effective = os.access in os.supports_effective_ids
    return bool(where) and all(
        os.access(folder, os.W_OK | os.X_OK, effective_ids=effective) for folder in where)


def sticky_owner(folder: StrPath) -> int | None:
    """The owner of ``folder`` when its sticky bit keeps this process from moving or
    removing another user's file in it: the folder is someone else's and the process
    lacks CAP_FOWNER (root has it, unless a unit's bounding set drops it).  None when the
    bit does not get in the way (or the folder cannot be looked at)."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    if not st.st_mode & stat.S_ISVTX or st.st_uid == os.geteuid() or _has_fowner():
        return None
    return st.st_uid


def sticky_said(folder: StrPath, owner: int) -> str:
    """What :func:`sticky_owner`'s finding means, for a log line or an error."""
    return (f"{os.fsdecode(folder)} has the sticky bit and belongs to uid {owner}, not "
            f"this user (uid {os.geteuid()}): another user's drop there cannot be moved; "
            "make the spool user its owner ('spoolq init --system' does)")


def _has_fowner() -> bool:
    """Whether CAP_FOWNER (3) is in this process's effective capabilities."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 3 & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _trouble_of(exc: OSError, what: str, errnos: frozenset[int]) -> SpoolIOError | None:
    if exc.errno not in errnos:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return SpoolIOError(f"{what}: {exc.strerror}{where}")


def failing_file(exc: OSError, what: str) -> UnreadableDrop | None:
    """``exc`` as one file's trouble when the disk failed that file (EIO: a bad sector
    under it), the :class:`~spool.errors.UnreadableDrop` to raise or say, left and looked
    at again later; None for any other error.  Taken for the spool's, such a file
    paused every claim, or failed every recovery pass, for as long as it lasted."""
    if exc.errno != errno.EIO:
        return None
    return UnreadableDrop(f"{what}: {exc.strerror}")


def is_there(path: StrPath, what: str) -> bool:
    """``path`` names something (never followed); raised when the disk cannot say: an EIO
    as that file's :class:`~spool.errors.UnreadableDrop` (see :func:`failing_file`), any
    other error as a :class:`~spool.errors.SpoolIOError` saying ``what`` failed.
    ``os.path.lexists`` takes such an error for nothing there.  A name past the longest a
    folder holds (ENAMETOOLONG) names nothing, as one under a file (ENOTDIR): raised, a
    kept entry's non-UTF-8 name, four characters a byte in its record, failed a purge."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise failing_file(exc, what) or SpoolIOError(f"{what}: {exc.strerror}") from exc
    return True


@contextlib.contextmanager
def unreadable_as_trouble(what: str) -> Iterator[None]:
    """Within it, an OSError of :data:`NOT_NOW` (this process out of descriptors, the disk
    failing) is raised as the SpoolIOError of :func:`failing_read` (spool trouble, never
    "the file is gone"); any other OSError as it is."""
    try:
        yield
    except OSError as exc:
        if (trouble := failing_read(exc, what)) is None:
            raise
        raise trouble from exc


def same_mount(a: StrPath, b: StrPath) -> bool:
    """Whether a rename from folder ``a`` into folder ``b`` could succeed: the kernel
    refuses one between two mounts (EXDEV) before it looks the names up, so renaming a
    name that is not in ``a`` tells, with nothing moved (ENOENT: the same mount).  A
    bind mount of the same filesystem is another mount, which ``st_dev`` misses; two
    btrfs subvolumes are one mount and two devices, which the probe misses (its lookup
    fails first), and a rename between them fails EXDEV all the same (QA: a ``done/``
    made a subvolume for snapshots held every job in ``running/``)."""
    devices = (device_of(a), device_of(b))
    if None not in devices and devices[0] != devices[1]:
        return False
    name = f".spoolq-mount-probe.{os.getpid()}.{os.urandom(6).hex()}"
    try:
        os.rename(os.path.join(a, name), os.path.join(b, name))
    except OSError as exc:
        return exc.errno != errno.EXDEV
    return True  # it was there after all: moved, and on one mount


def device_of(folder: StrPath) -> int | None:
    """``folder``'s ``st_dev``; None when it cannot be looked at (its user says why)."""
    try:
        return os.stat(folder).st_dev
    except OSError:
        return None


def _raise_fatal(exc: OSError, what: str) -> None:
    if exc.errno in _FATAL_ERRNOS:
        raise _said(exc, what) from exc


def _said(exc: OSError, what: str) -> SpoolIOError:
    """``exc`` as the spool's error: ``what``, the reason and the path."""
    where = f" ({exc.filename})" if exc.filename else ""  # a write names no file
    return SpoolIOError(f"{what}: {os_reason(exc)}{where}")


def os_reason(exc: OSError) -> str:
    """``exc``'s text; for a file that could not be made on a filesystem out of inodes,
    said so: "No space left on device" alone sent operators to ``df -h``, which showed
    room to spare."""
    if exc.errno == errno.ENOSPC and exc.filename:
        try:
            fs = os.statvfs(os.path.dirname(os.fsdecode(exc.filename)) or ".")
        except OSError:
            return str(exc.strerror)
        if fs.f_files and not fs.f_favail:  # 0 files in all: inodes made as needed
            return f"{exc.strerror}: no free inodes (df -i)"
    return str(exc.strerror)


STAGED_WRITE_TRIES = 3
"""How often :meth:`Mover.publish` writes its staged file again when it was removed before
its rename (see there)."""


def _refused(dest: StrPath) -> bool:
    """False, a publish to ``dest`` refused by what is there; SpoolIOError when the
    rename's refusal was the folder gone (see :func:`_folder_gone`)."""
    if (gone := _folder_gone(dest, dest)) is not None:
        raise gone
    return False


def _folder_gone(path: StrPath, dest: StrPath) -> SpoolIOError | None:
    """The SpoolIOError to raise when the folder of ``path`` is gone, for a publish to
    ``dest``; None while it is there.  ``path`` is ``dest`` after a publish that placed
    nothing (the rename's ENOENT was read as "something is there", and a client's submit
    into a spool whose ``pending/`` had been removed said the job was already pending),
    or the staging file a publish could not make (a bare FileNotFoundError reached the
    client's caller)."""
    folder = _parent(os.fspath(path))
    if os.path.isdir(folder):
        return None
    return SpoolIOError(f"cannot publish {_name(dest)}: the folder {folder} is gone")


def _shared_lock(first: str, second: str) -> bool | None:
    """Whether ``second``, a hard link of ``first``, shares its flock (see
    :meth:`Mover.links_share_locks`, which says so in a line when not); None when the
    try fails."""
    fds: list[int] = []
    try:
        fds.append(os.open(first, os.O_RDONLY | os.O_CLOEXEC))
        fcntl.flock(fds[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(os.open(second, os.O_RDONLY | os.O_CLOEXEC))
        try:
            fcntl.flock(fds[1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        log.info("the spool's filesystem gives a hard link's new name a lock of its own "
                 "(a FUSE filesystem without RENAME_NOREPLACE?): each claim takes its "
                 "lease again on the name in running/")
        return False
    except OSError:
        return None
    finally:
        for opened in fds:
            os.close(opened)


def _unlink_all(*paths: str) -> None:
    """Remove a probe's files, whatever is left of them."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _remove_on_error(mover: Mover, tmp: StrPath, dest: StrPath, exc: BaseException) -> None:
    """Remove the staging file ``tmp`` after writing or placing it failed with ``exc``;
    raise SpoolIOError for an ``exc`` that means the spool is unusable (the caller
    re-raises ``exc`` otherwise).

    Called from an ``except`` clause rather than a context manager: entering and
    leaving one cost a few hundred nanoseconds on every publish.
    """
    # The staging folder not writable (so never made): report what failed first.  One
    # made before its folder turned unwritable stays: the next sweep removes it.
    try:
        mover.unlink(tmp)
    except (OSError, SpoolIOError):
        mover.litter.append(tmp)
    if isinstance(exc, OSError):
        _raise_fatal(exc, f"cannot publish {_name(dest)}")


class Mover:
    """Moves and writes spool files under one fsync policy."""

    def __init__(self, layout: Layout, mode: FsyncMode, *, recycle: bool = False) -> None:
        self.layout = layout
        self.mode = mode
        self.recycle = recycle
        # Spare inodes in stage/ as (path, inode, size).  Only the thread that
        # completes runs may publish or retire on a recycling Mover.
        self._spares: list[tuple[str, int, int]] = []
        # Staging files whose removal after a failed write or move was refused (their
        # folder made unwritable meanwhile): removed by sweep_litter.
        self.litter: list[StrPath] = []
        self._pending_ops = 0
        self._last_flush = time.monotonic()
        self._noreplace_native = _renameat2 is not None
        self._links_share_locks: bool | None = None
        """Whether a hard link's new name shares its file's flock (see :meth:`move_leased`):
        None until a claim's move by link tells."""
        # Set once: a Mover serves one process (the processor never forks with it).
        self._euid, self._egid = os.geteuid(), os.getegid()
        # Why a recycling Mover stages in tmp/ (for its owner to log); None when it need not.
        self.staging_note: str | None = None
        self._choose_staging()
        self._spare_count = itertools.count()
        self._folder_gids: dict[str, int] = {}  # each folder's group, looked up once
        self._staged_gid: int | None = None  # the group a new staged file gets
        self._buffers: dict[str, tuple[str, int]] = {}  # see publish_advisory
        self._exchange = _renameat2 is not None

    # -- writing -----------------------------------------------------------------

    def publish(self, dest: StrPath, data: bytes, *, replace: Replace = True,
                durable: bool = True) -> bool:
        """Write ``data`` to ``dest`` atomically; False if something is there that
        ``replace`` (as for :meth:`move`) may not replace."""
        spare, inode = self._rewrite_spare(data, durable)
        if spare is not None:
            placed = self._place(spare, dest, replace, durable)
            if placed:
                return True
            if placed is not None:  # dest exists and may not be replaced
                self._spares.append((spare, inode, len(data)))
                return _refused(dest)
            # the spare vanished under us: write a fresh file instead
        tag = WRITE_TAG + _name(dest).removesuffix(".json")
        for _ in range(STAGED_WRITE_TRIES):
            tmp = self._write_fresh(lambda: self._staging(tag), dest, data, durable)
            placed = self._place(tmp, dest, replace, durable)
            if placed:
                return True
            if placed is not None:
                self.unlink(tmp)
                return _refused(dest)
            if (gone := _folder_gone(dest, dest)) is not None:
                raise gone
            # The staged file went before its rename: another processor's recovery, to
            # which its writer's pid looked dead (another pid namespace: a container
            # sharing the spool).  Taken for "dest exists", a submit said the job was
            # already pending, and no job was (QA).
        raise SpoolIOError(f"cannot publish {_name(dest)}: its staged file in "
                           f"{_name(_parent(tmp))}/ was removed before it could be moved "
                           f"in, {STAGED_WRITE_TRIES} times")

    def _place(self, staged: str, dest: StrPath, replace: Replace, durable: bool
               ) -> bool | None:
        """Move the staged file ``staged`` to ``dest``: True when placed; False when
        ``dest`` holds what ``replace`` may not replace (``staged`` is left); None when
        ``staged`` went before its rename."""
        try:
            if self.move(staged, dest, replace=replace, durable=durable):
                return True
        except BaseException as exc:
            _remove_on_error(self, staged, dest, exc)
            raise
        return False if os.path.lexists(staged) else None

    def publish_advisory(self, dest: StrPath, data: bytes) -> None:
        """Replace ``dest`` (a file rewritten again and again: the processor's status)
        with ``data``, whole at every instant but not durably, keeping the inode replaced.

        A rename over ``dest`` frees the inode it replaces: about 0.4 ms on ext4 mounted
        with ``discard``, in the loop that completes jobs.  Here the new file and ``dest``
        swap names (``renameat2(RENAME_EXCHANGE)``), and the old one stays in ``stage/`` as
        ``dest``'s buffer for the next call, which rewrites it holding a write lease: one
        is granted only when nothing else has the file open (a reader that opened
        ``dest`` before the swap), and should anything open it meanwhile, its open waits
        until the write is whole.  A buffer that cannot be leased is unlinked.  Only on a
        recycling Mover (whose process does not die of ``SIGIO``): others publish.
        """
        if not self.recycle:
            self.publish(dest, data, durable=False)
            return
        path = os.fspath(dest)
        buffer, inode = self._buffers.pop(path, ("", 0))
        if not buffer or not self._rewrite_buffer(buffer, inode, data):
            buffer = self._write_fresh(self._spare_name, path, data, False)
        try:
            if self._exchange and self._swap(buffer, path):
                self._buffers[path] = (buffer, os.lstat(buffer).st_ino)
                return
            os.rename(buffer, path)
        except BaseException as exc:
            _remove_on_error(self, buffer, dest, exc)
            raise
        if self._exchange:
            self._keep_buffer(path, data)

    def _keep_buffer(self, path: str, data: bytes) -> None:
        """``path`` was just made (it was not there): its buffer is made now, while an
        inode can be had, not at the next :meth:`publish_advisory` (on a filesystem out
        of inodes by then, the status file could not be rewritten, and went stale until
        one was free).  Nothing when it cannot be made."""
        try:
            spare = self._write_fresh(self._spare_name, path, data, False)
        except (OSError, SpoolIOError):
            return
        with contextlib.suppress(OSError):
            if self._swap(spare, path):  # the same bytes: readers see no change
                self._buffers[path] = (spare, os.lstat(spare).st_ino)
                return
        with contextlib.suppress(OSError, SpoolIOError):
            self.unlink(spare)

    def _swap(self, src: str, dst: str) -> bool:
        """Exchange ``src`` and ``dst``; False when ``dst`` is missing or the filesystem
        cannot (the caller renames instead)."""
        assert _renameat2 is not None
        if _renameat2(_AT_FDCWD, src.encode(_FS_ENCODING, _FS_ERRORS),
                      _AT_FDCWD, dst.encode(_FS_ENCODING, _FS_ERRORS), _RENAME_EXCHANGE) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS):
            self._exchange = False
        elif err != errno.ENOENT:
            raise OSError(err, os.strerror(err), dst)
        return False

    def _rewrite_buffer(self, buffer: str, inode: int, data: bytes) -> bool:
        """Write ``data`` into the kept inode ``buffer`` under a write lease; False (and
        the buffer unlinked when it is ours) if it is not ours alone."""
        try:
            fd = os.open(buffer, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if (st.st_ino != inode or st.st_nlink != 1 or not stat.S_ISREG(st.st_mode)
                    or st.st_uid != self._euid):
                return False  # not the file we kept: leave it alone
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)  # EAGAIN: open elsewhere
            try:
                _write_all(fd, data)
                if len(data) < st.st_size:
                    os.ftruncate(fd, len(data))
            finally:
                fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            with contextlib.suppress(OSError, SpoolIOError):
                self.unlink(buffer)
            return False
        finally:
            os.close(fd)
        return True

    def _write_fresh(self, name: Callable[[], str], dest: StrPath, data: bytes,
                     durable: bool) -> str:
        """A new staged file holding ``data`` for ``dest``, at the path ``name()`` gives,
        and at another should the staging folder have gone (:meth:`_staging_gone`); on
        failure it is removed and the error raised as :func:`_remove_on_error` says."""
        gid = self._group_of_folder(_parent(os.fspath(dest)))
        path = name()
        try:
            try:
                self._write_tmp(path, data, durable, gid)
            except FileNotFoundError as exc:
                if not self._staging_gone():
                    if (gone := _folder_gone(path, dest)) is not None:
                        raise gone from exc
                    raise
                path = name()
                try:
                    self._write_tmp(path, data, durable, gid)
                except FileNotFoundError as again:  # gone too (the spool unmounted under
                    # it): the spool's trouble, a pause; raised raw, it crashed the processor
                    if (gone := _folder_gone(path, dest)) is not None:
                        raise gone from again
                    raise
        except BaseException as exc:
            _remove_on_error(self, path, dest, exc)
            raise
        return path

    def _spare_name(self) -> str:
        """A new name in the staging folder for a spare or a buffer, unique to this Mover."""
        return f"{self._spare_base}{next(self._spare_count):x}.tmp"

    def _write_tmp(self, tmp: StrPath, data: bytes, durable: bool, gid: int) -> None:
        """A new file ``tmp`` holding ``data``, of group ``gid`` (-1: as made) if its writer
        may give it that group."""
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the writer's umask: the spool user must read it
            if gid >= 0 and gid != self._new_file_gid():
                # tmp/ is setgid spoolq-submit under `init --system`, for the drops; a record
                # goes to done/ or failed/, whose group (spoolq) may read it.
                with contextlib.suppress(OSError):  # not the writer's group: as made
                    os.fchown(fd, -1, gid)
            _write_all(fd, data)
            if durable and self.mode is _ALWAYS:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _group_of_folder(self, folder: str) -> int:
        """The group of ``folder`` (-1 when it cannot be seen), which what is published
        into it takes."""
        gid = self._folder_gids.get(folder)
        if gid is None:
            try:
                gid = os.stat(folder).st_gid
            except OSError:
                return -1
            self._folder_gids[folder] = gid
        return gid

    def _new_file_gid(self) -> int:
        """The group a file made in the staging folder gets: the folder's when it is
        setgid (``tmp/`` under ``init --system``)."""
        if self._staged_gid is None:
            try:
                st = os.stat(self._stage_dir)
            except OSError:
                return self._egid
            self._staged_gid = st.st_gid if st.st_mode & stat.S_ISGID else self._egid
        return self._staged_gid

    def _rewrite_spare(self, data: bytes, durable: bool) -> tuple[str | None, int]:
        """A spare inode (in ``stage/``) now holding exactly ``data`` (and its inode number)."""
        while True:
            try:
                spare, inode, size = self._spares.pop()
            except IndexError:
                return None, 0
            try:
                fd = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue  # gone: taken by a recovery scan, or the folder changed
            try:
                st = os.fstat(fd)
                if st.st_ino != inode or st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
                    continue  # not the file we kept: leave it alone
                written = os.write(fd, data)  # one write but for a huge record
                if written < len(data):
                    _write_all(fd, data[written:])
                if len(data) < size:
                    os.ftruncate(fd, len(data))
                if durable and self.mode is _ALWAYS:
                    os.fsync(fd)
            except OSError:
                self.unlink(spare)
                continue
            finally:
                os.close(fd)
            return spare, inode

    def retire(self, path: StrPath, lease_fd: int) -> bool:
        """Take a finished job file (open on ``lease_fd``) out of its folder.

        The inode becomes a spare when :attr:`recycle` is on and nothing else can
        reach it; otherwise it is unlinked.  The caller closes ``lease_fd`` either
        way; True (the inode was kept) means that close frees nothing and is cheap.
        The check holds a write lease for an instant, so a process that recycles
        must not die of ``SIGIO`` (the kernel's lease-break notice, sent should
        anything open the spare then).
        """
        if not self.recycle or len(self._spares) >= SPARES_MAX:
            self.unlink_durable(path)
            return False
        for again in (False, True):  # again: into a staging folder made afresh
            spare = self._spare_name()
            try:
                os.rename(path, spare)
                break
            except FileNotFoundError:
                if again or not self._staging_gone():
                    return False  # the job file is gone
            except OSError:
                # The staging folder refuses a spare (made read-only under a running
                # processor, out of room for an entry): removed instead, as without
                # recycling.  Raised, the run's record stood beside its running file
                # while the processor paused and wrote it again: an id in done/ and
                # running/ at once for as long as stage/ refused (a full run, under load).
                self.unlink_durable(path)
                return False
        if self.mode is not _NEVER:
            self._synced(_parent(path))
        st = _reusable(lease_fd, self._euid, self._egid)
        if st is not None:
            self._spares.append((spare, st.st_ino, st.st_size))
            return True
        self.unlink(spare)
        return False

    def sweep_litter(self) -> None:
        """Remove the staging files a failed write left behind (see :attr:`litter`);
        those whose folder still refuses stay listed for the next sweep."""
        litter, self.litter = self.litter, []
        for path in litter:
            try:
                self.unlink(path)
            except (OSError, SpoolIOError):
                self.litter.append(path)

    def drop_spares(self) -> None:
        """Remove every spare inode and what a failed write left (at shutdown)."""
        self.sweep_litter()
        while self._spares:
            self.unlink(self._spares.pop()[0])
        while self._buffers:
            self.unlink(self._buffers.popitem()[1][0])

    def holds_spare(self, path: StrPath) -> bool:
        """True when ``path`` is one of this Mover's spares."""
        name = os.fspath(path)
        return (any(spare == name for spare, _, _ in self._spares)
                or any(buffer == name for buffer, _ in self._buffers.values()))

    def _choose_staging(self) -> None:
        """Stage in ``stage/`` when this Mover recycles and may, else in ``tmp/``."""
        self.staging_note = None
        private = self.recycle and self._private_staging()
        self._stage_dir = os.fspath(self.layout.stage if private else self.layout.tmp)
        self._staging = (self.layout.private_staging_str if private
                         else self.layout.staging_str)
        self._staged_gid = None
        self._spare_base = self._staging(SPARE_TAG).removesuffix(".tmp")  # unique to us

    def _staging_gone(self) -> bool:
        """After ENOENT writing into the staging folder: True when that folder is gone (an
        operator removed ``stage/`` under a running processor) and staging was chosen
        again, ``stage/`` made anew or else ``tmp/`` (:attr:`staging_note` says why).  The
        spares and buffers went with the folder.  False for a non-recycling Mover, or when
        the folder is there (what was missing was something else)."""
        if not self.recycle or os.path.isdir(self._stage_dir):
            return False
        self._spares.clear()
        self._buffers.clear()
        self._choose_staging()
        return True

    def action_staging(self, tag: str) -> Path:
        """Where a cancel, retry or quarantine holds a job's file while it moves it:
        ``stage/`` when this user may stage there, else ``tmp/``.  Recovery completes
        what such a move left only where no submitter could have named a file like it
        (:class:`spool.staged.Staged`): in a shared ``tmp/`` a member of the submit group
        could, and had recovery replace another user's record with hers."""
        if self.moves_in_stage():
            return Path(self.layout.private_staging_str(tag))
        if not self.recycle and self.tmp_shared():
            # Recovery keeps such a move cut short in a shared tmp/ as a quarantine, not
            # as the move: refused before anything moves.  (A processor that cannot use
            # stage/ stages in tmp/ as before: its own recovery trusts tmp/ then.)
            raise SpoolIOError(
                f"cannot stage this move in {self.layout.stage} ({self.staging_note or 'missing'})"
                " and tmp/ is shared with submitters: run it as the spool's user, or start "
                "the processor once (it makes stage/)")
        return self.layout.staging(tag)

    def write_note(self, tag: str, data: bytes) -> str | None:
        """``data`` in ``stage/`` as ``<tag>.<pid>.<hex>.tmp``, for recovery to read should
        this process die mid-move (durable under ``always``: the file and the folder);
        the caller removes it when the move is done.  None, with nothing left, when moves
        do not stage in ``stage/`` (in a shared ``tmp/`` a submitter could write one) or
        it cannot be written (a full disk): a note only adds to what recovery knows."""
        if not self.moves_in_stage():
            return None
        path = self.layout.private_staging_str(tag)
        try:
            self._write_tmp(path, data, True, -1)
            if self.mode is _ALWAYS:
                self.sync_dir(self.layout.stage)
        except (OSError, SpoolIOError):
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        return path

    def tmp_shared(self) -> bool:
        """``tmp/`` may be written by others than its owner (a submit group)."""
        try:
            return bool(os.stat(self.layout.tmp).st_mode & 0o022)
        except OSError:
            return False

    def moves_in_stage(self) -> bool:
        """True when :meth:`action_staging` names a file in ``stage/``."""
        # A processor's Mover chose once (and said why not); another looks now.
        return (self._stage_dir == os.fspath(self.layout.stage) if self.recycle
                else self._private_staging(make=False))

    def _private_staging(self, *, make: bool = True) -> bool:
        """True when this Mover may stage in ``stage/``: a folder of this user's on the
        spool's filesystem, made now (``make``) if the spool (its ``tmp/``) lacks it; else
        False, with :attr:`staging_note` saying why (when there is a spool to say it of)."""
        stage, tmp = self.layout.stage, self.layout.tmp
        if device_of(tmp) is None:
            return False  # no spool (yet): make nothing in it, stage as clients do
        try:
            if make:
                with contextlib.suppress(FileExistsError):  # another processor's, just made
                    os.mkdir(stage, STAGE_MODE)
            # Through root's view (spool.view) each folder is a link to the directory it
            # pinned, never followed elsewhere: its lstat was a link's, and root's cancel
            # or retry on a system spool was refused ("stage is not a directory": h386).
            st = os.lstat(stage) if self.layout.view is None else os.stat(stage)
        except OSError as exc:
            if not make:
                return False  # none yet, or not ours to look into: stage as clients do
            self.staging_note = f"cannot make {stage}: {exc.strerror}"
            return False
        if not stat.S_ISDIR(st.st_mode):
            self.staging_note = f"{stage} is not a directory"
        elif not same_mount(stage, tmp):  # (its devices, then its mounts)
            self.staging_note = f"{stage} is not on tmp/'s mount"
        elif self._euid not in (st.st_uid, 0):
            self.staging_note = f"{stage} is not this user's (uid {st.st_uid})"
        elif st.st_mode & 0o022:  # others could rename our files there
            self.staging_note = f"{stage} is writable by others (mode {st.st_mode & 0o7777:o})"
        elif not os.access(stage, os.W_OK | os.X_OK, effective_ids=True):
            self.staging_note = f"{stage} is not writable"
        else:
            return True
        return False

    # -- moving ------------------------------------------------------------------

    def move(self, src: StrPath, dst: StrPath, *, replace: Replace = False,
             durable: bool = True) -> bool:
        """Rename ``src`` to ``dst``; False when src is gone or dst exists and ``replace``
        does not allow replacing it: ``True`` replaces anything, ``FILES_ONLY`` a regular
        file (a record by its newer one) but never a directory, FIFO, socket or symlink,
        ``False`` nothing.

        ``FILES_ONLY`` costs what ``True`` does when ``dst`` is free (one ``renameat2``)
        and one ``lstat`` more when it is taken: where a rename over it would fail
        (EISDIR) or silently take away a name someone else made.
        """
        try:
            if replace is True:
                os.rename(src, dst)
            elif not self._rename_noreplace(src, dst) and not (
                    replace == FILES_ONLY and self._rename_over_file(src, dst)):
                return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            _raise_fatal(exc, f"cannot move {_name(src)} to {_name(_parent(dst))}/")
            raise
        if durable and self.mode is not _NEVER:
            self._synced(_parent(dst), _parent(src))
        return True

    def move_leased(self, src: StrPath, dst: StrPath, fd: int) -> int | None:
        """:meth:`move` (never replacing) of a regular file whose flock ``fd`` holds: the
        descriptor that holds the lease of ``dst`` once moved (``fd``; or a new one of
        ``dst``, and then ``fd`` is closed), None when nothing moved.

        Without RENAME_NOREPLACE the move is a link and an unlink, and some FUSE
        filesystems (bindfs, and others on libfuse's high-level API) give the new name a
        lock of its own: a claim's lease covered nothing in ``running/``, and the
        processor's own recovery scan took its running jobs for orphans (QA: a job run to
        the end three times, two runs of one id at once).  There the new name's lock is
        taken between the link and the unlink; held by someone else already, the link
        is taken back and nothing moved.  (The move that finds RENAME_NOREPLACE missing
        takes it just after.)"""
        if self._noreplace_native:
            if not self.move(src, dst):
                return None
            return fd if self._noreplace_native else self._leased(dst, fd, linked=False)
        try:
            try:
                os.link(src, dst, follow_symlinks=False)
            except FileExistsError:
                return None
            leased = self._leased(dst, fd, linked=True)
            if leased is not None:
                self._unlink_linked(src, dst, leased, fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _raise_fatal(exc, f"cannot move {_name(src)} to {_name(_parent(dst))}/")
            raise
        if leased is not None and self.mode is not _NEVER:
            try:
                self._synced(_parent(dst), _parent(src))
            except BaseException:
                if leased != fd:  # the caller, still holding fd, gives the move back
                    os.close(leased)
                raise
        if leased is not None and leased != fd:
            os.close(fd)
        return leased

    @staticmethod
    def _unlink_linked(src: StrPath, dst: StrPath, leased: int, fd: int) -> None:
        """The old name's unlink of a move by link, whose new name ``leased`` holds: one
        the disk fails takes the link back when the old name is still there (the file
        stays where it was, leased by ``fd``), the new name's descriptor closed; the old
        name gone meanwhile, or by the failed unlink itself (a network filesystem's reply
        lost), leaves the move made, the new name its only one (taken back, the job was
        in no folder: the review)."""
        try:
            os.unlink(src)
        except FileNotFoundError:
            pass
        except OSError:
            try:
                os.lstat(src)
            except FileNotFoundError:
                return  # gone all the same (an error said of an unlink made): moved
            except OSError:
                pass  # not known: both names left, the lease let go, for recovery
            else:  # still there: the new name, not its only one, is taken back
                with contextlib.suppress(OSError):
                    os.unlink(dst)
            if leased != fd:
                os.close(leased)
            raise

    def _leased(self, dst: StrPath, fd: int, *, linked: bool) -> int | None:
        """The descriptor holding ``dst``'s lease, a hard link of the file ``fd`` holds
        the lock of (see :meth:`move_leased`): ``fd`` where links share their file's lock,
        else a new one holding ``dst``'s own.  None (the link removed) when someone else
        holds that: only while ``linked``, the file still in its folder."""
        if self._links_share_locks is None:
            self._links_share_locks = self.links_share_locks()
        if self._links_share_locks:
            return fd
        try:
            new = os.open(dst, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            if not linked:
                return fd  # moved already: its lease as it was
            os.unlink(dst)  # the move taken back: the file stays where it was, leased
            raise
        try:
            fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(new)
            if not linked or self._links_share_locks is None:
                # Not known (the probe failed: a full disk, say): held, the new name
                # most likely shares fd's lock; tried again at the next claim.
                return fd
            os.unlink(dst)  # someone else holds the new name: not ours to move
            return None
        except BaseException:
            os.close(new)
            if linked:
                os.unlink(dst)
            raise
        self._links_share_locks = False  # a lock of its own: proved, whatever the probe
        if not linked:
            os.close(fd)  # moved already: the caller's descriptor leases nothing now
        return new

    def links_share_locks(self) -> bool | None:
        """Whether a hard link's new name shares its file's flock here, tried on two
        names of a file of its own where this Mover stages (judged from a claim's own
        names, another's recovery scan holding the new one was taken for "shared" for
        good: the review); None when the try fails."""
        first, second = self._probe_names("lock")
        try:
            os.close(os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE))
            os.link(first, second, follow_symlinks=False)
            return _shared_lock(first, second)
        except OSError:
            return None
        finally:
            _unlink_all(first, second)

    def _probe_names(self, tag: str) -> tuple[str, str]:
        """Two names for a probe's file where this Mover stages: a name no staging file
        has (a client's file to recovery, removed in a day, should one be left)."""
        base = os.path.join(self._stage_dir,
                            f"{tag}-probe-{os.getpid()}-{os.urandom(4).hex()}")
        return base + ".a", base + ".b"

    def _renameat2_noreplace(self, src: StrPath, dst: StrPath) -> bool | None:
        """``renameat2(RENAME_NOREPLACE)``: whether it moved; None where the kernel or the
        filesystem has none."""
        if not self._noreplace_native:
            return None
        assert _renameat2 is not None
        # What os.fsencode does, without its Python frame (this runs once a claim).
        rc = _renameat2(_AT_FDCWD, os.fspath(src).encode(_FS_ENCODING, _FS_ERRORS),
                        _AT_FDCWD, os.fspath(dst).encode(_FS_ENCODING, _FS_ERRORS),
                        _RENAME_NOREPLACE)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src))
        self._noreplace_native = False  # filesystem without RENAME_NOREPLACE
        return None

    def _rename_noreplace(self, src: StrPath, dst: StrPath) -> bool:
        if (moved := self._renameat2_noreplace(src, dst)) is not None:
            return moved
        return self._link_then_unlink(src, dst)

    @staticmethod
    def _rename_over_file(src: StrPath, dst: StrPath) -> bool:
        """Rename ``src`` over ``dst`` when that is a regular file (or went meanwhile);
        False, nothing moved, when it is anything else."""
        try:
            if not stat.S_ISREG(os.lstat(dst).st_mode):
                return False
        except FileNotFoundError:
            pass  # the name is free now
        os.rename(src, dst)
        return True

    @staticmethod
    def _link_then_unlink(src: StrPath, dst: StrPath) -> bool:
        if stat.S_ISDIR(os.lstat(src).st_mode):
            # Directories cannot be hard-linked; best effort.  A lookup the disk fails
            # (EIO, ESTALE) is raised, as the rename's would be: os.path.lexists took it
            # for a free name, and the rename replaced an empty directory there (an
            # earlier drop's kept original).
            try:
                os.lstat(dst)
            except FileNotFoundError:
                os.rename(src, dst)
                return True
            return False
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            return False
        os.unlink(src)
        return True

    @staticmethod
    def link(src: StrPath, dst: StrPath) -> bool:
        """A second name ``dst`` for the file ``src`` (a symlink itself, never followed);
        False when there is none to make: src gone or a directory, dst taken, or the
        filesystem refusing."""
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            return False
        return True

    # -- removing ----------------------------------------------------------------

    def unlink(self, path: StrPath, *, tree: bool = True) -> bool:
        """Remove a file or symlink (a directory tree too; with ``tree=False`` a directory
        raises IsADirectoryError instead); False if it was not there."""
        try:
            try:
                os.unlink(path)  # never follows a symlink; EISDIR for a directory
            except IsADirectoryError:
                if not tree:
                    raise
                _remove_tree(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            _raise_fatal(exc, f"cannot remove {_name(path)}")
            raise
        return True

    def remove_empty_dir(self, path: StrPath) -> bool:
        """Remove ``path`` if it is an empty directory (never a symlink to one); False,
        nothing removed, when it is not there, not a directory, or not empty."""
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                return False
            _raise_fatal(exc, f"cannot remove {_name(path)}")
            raise
        return True

    def unlink_durable(self, path: StrPath, *, tree: bool = True) -> bool:
        removed = self.unlink(path, tree=tree)
        if removed and self.mode is not _NEVER:
            self._synced(_parent(path))
        return removed

    # -- durability --------------------------------------------------------------

    def _synced(self, *folders: StrPath, durable: bool = True) -> None:
        if not durable or self.mode is _NEVER:
            return
        if self.mode is _ALWAYS:
            for folder in dict.fromkeys(folders):
                self.sync_dir(folder)
            return
        self._pending_ops += 1
        if (self._pending_ops >= BATCH_OPS
                or time.monotonic() - self._last_flush >= BATCH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        """Make every earlier operation durable (``batch``: one syncfs for the group)."""
        if self.mode is not _BATCH or not self._pending_ops:
            return
        try:
            fd = os.open(self.layout.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in NO_DESCRIPTOR:
                raise
            os.sync()  # out of descriptors: every filesystem's, which needs none
        else:
            try:
                if hasattr(_libc, "syncfs"):
                    # Its failure was not looked at: an EIO went unsaid, the group taken
                    # for durable.  Raised as an fsync's is under ``always``.
                    if _libc.syncfs(fd) != 0:
                        err = ctypes.get_errno()
                        failed = OSError(err, os.strerror(err))
                        _raise_fatal(failed, f"cannot sync {self.layout.root}")
                        raise failed
                else:  # pragma: no cover
                    os.sync()
            finally:
                os.close(fd)
        self._pending_ops = 0
        self._last_flush = time.monotonic()

    @staticmethod
    def sync_dir(folder: StrPath) -> None:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            # A submitter may write to a drop folder it cannot read (mode 3730, see
            # ``spoolq init --system``): its file is fsynced and renamed in; flushing the
            # folder's entry is left to the kernel rather than failing a drop that happened.
            return
        except OSError as exc:
            if exc.errno not in NO_DESCRIPTOR:
                _raise_fatal(exc, f"cannot sync {_name(folder)}/")
                raise
            # Out of descriptors after the move it follows was made: raised, the caller
            # took the move for undone (a claim's file left in running/ with no run).
            # sync() needs none and makes the folder's entry durable as well.
            os.sync()
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            _raise_fatal(exc, f"cannot sync {_name(folder)}/")  # EIO: spool trouble
            raise
        finally:
            # A read-only descriptor of a folder: its close has nothing to flush, and
            # Linux frees it whatever close returns.  Its error raised ended the
            # processor, or a cancel made, as trouble (QA: strace's EIO on close).
            with contextlib.suppress(OSError):
                os.close(fd)

    def require_one_mount(self) -> None:
        """SpoolIOError naming the spool's folders that are on another mount than
        ``pending/`` (a mount point, or a symlink to another filesystem): a rename
        between them fails (EXDEV), so no job could move through them.  ``stage/`` is
        left out: a processor stages in ``tmp/`` where it cannot use it."""
        pending = self.layout.folder(JobState.PENDING)
        apart = [folder.name for folder in self.layout.required_folders()
                 if folder != pending and not same_mount(pending, folder)]
        if apart:
            raise SpoolIOError(
                f"{', '.join(name + '/' for name in apart)} of {self.layout.root} "
                f"{'is' if len(apart) == 1 else 'are'} on another mount than pending/ (a "
                "mount point, or a symlink to another filesystem): rename() cannot cross "
                "mounts (EXDEV), so no job could move; the spool's folders must be one "
                "mount")

    def require_claimable(self) -> None:
        """SpoolIOError when the spool's filesystem can move a file without replacing
        another in neither way a claim knows: ``renameat2(RENAME_NOREPLACE)``, or a hard
        link and an unlink (s3fs, rclone, CIFS without UNIX extensions).  The processor
        started there, said it was up, and each job stayed pending for good with a line
        that blamed its file (QA).  Tried on two files of its own where it stages (a
        name no staging file has: a client's file to recovery, removed in a day, should
        one be left); where it links, whether the new name shares the file's lock is
        tried on the same two names (:meth:`links_share_locks`)."""
        first, second = self._probe_names("claim")
        # Any error is said as the spool's (one line: exit 75 for trouble that passes,
        # else 2), none raised raw: an odd errno (EMLINK, ELOOP) was a traceback.
        try:
            os.close(os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE))
        except OSError as exc:
            raise _said(exc, f"cannot make a file in {_name(self._stage_dir)}/") from exc
        try:
            try:
                if self._renameat2_noreplace(first, second) is not None:
                    return
            except OSError as exc:
                raise _said(exc, "cannot move a file to claim by") from exc
            try:
                os.link(first, second, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:  # a full disk, say: the spool's trouble
                    raise _said(exc, "cannot link a file to claim by") from exc
                raise SpoolIOError(
                    "the spool's filesystem has neither renameat2(RENAME_NOREPLACE) "
                    f"nor hard links ({exc.strerror}): no job could be claimed "
                    "without the risk of replacing another's; put the spool on a "
                    "filesystem with either (see scaling.md)") from exc
            self._links_share_locks = _shared_lock(first, second)
        finally:
            _unlink_all(first, second)
        if self._links_share_locks is False:
            log.warning("claims move by a hard link here, and its new name has a lock of "
                        "its own: each claim takes its lease again on the name in running/")

    def make_folders(self, mode: int = 0o750) -> None:
        """Create the spool's folders (idempotent)."""
        self.layout.require_short_enough()
        self.layout.require_root_is_dir()
        self.layout.require_no_file_in_place(self.layout.all_folders())
        for folder in self.layout.all_folders():
            try:
                make_dir(folder, mode)
            except OSError as exc:
                _raise_fatal(exc, f"cannot create {folder}")
                raise
        self.sync_dir(self.layout.root)
        if self.recycle:
            self._choose_staging()  # stage/ is there now


_TREE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(path: StrPath) -> None:
    """Remove the directory ``path`` and all it holds, never following a symlink, with no
    recursion and two descriptors at most.

    shutil.rmtree recursed once per level (through Python 3.12): a quarantined directory
    nested deeper than the recursion limit (``pending/x.json/d/d/...``, 3,000 levels)
    raised RecursionError, which no caller expects, when a later run of its id
    superseded it: the processor crashed, and again at each start, as recovery removed
    it (QA).  Here a subdirectory that is not empty has its files removed and its
    subdirectories moved up into ``path`` (fresh names), and is then removed, until
    ``path`` holds nothing.  An error (EACCES on a submitter's subdirectory) is raised
    as rmtree raised it; what was moved up by then stays in ``path``."""
    top = os.open(path, _TREE_FLAGS)
    fresh = itertools.count()
    try:
        while entries := os.listdir(top):
            for name in entries:
                _remove_entry(top, name, fresh)
    finally:
        os.close(top)
    os.rmdir(path)


def _remove_entry(top: int, name: str, fresh: Iterator[int]) -> None:
    """Remove ``name`` in the folder ``top``: a file at once, a directory once empty
    (its files removed and its subdirectories moved up into ``top`` first, for the
    caller's next pass)."""
    with contextlib.suppress(FileNotFoundError):
        try:
            os.unlink(name, dir_fd=top)  # never follows a symlink; EISDIR for a directory
            return
        except IsADirectoryError:
            pass
        sub = os.open(name, _TREE_FLAGS, dir_fd=top)
        try:
            for inner in os.listdir(sub):
                try:
                    os.unlink(inner, dir_fd=sub)  # a file goes where it is
                except IsADirectoryError:
                    _remove_or_move_up(sub, inner, top, fresh)
                except FileNotFoundError:
                    pass
        finally:
            os.close(sub)
        _rmdir_if_empty(top, name)  # not empty: something came in meanwhile, for the next pass


def _remove_or_move_up(sub: int, name: str, top: int, fresh: Iterator[int]) -> None:
    """Remove the empty directory ``name`` in the folder ``sub``, else move it up.

    Removed first where empty: a directory changes parent only if its mover may write
    it, so another user's empty subdirectory (mode 0755), which rmtree removed, was
    refused (EACCES) moved up, and the tree kept."""
    if not _rmdir_if_empty(sub, name):
        _move_up(sub, name, top, fresh)


def _rmdir_if_empty(folder: int, name: str) -> bool:
    """Remove the directory ``name`` in ``folder``; False when it is not empty (True when
    it is gone, or was already)."""
    try:
        os.rmdir(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False
    return True


def _move_up(sub: int, name: str, top: int, fresh: Iterator[int]) -> None:
    """Move the directory ``name`` from the folder ``sub`` into ``top`` under a name of
    its own (an empty directory of the tree there under that name goes: the tree goes
    whole anyway)."""
    while True:
        try:
            os.rename(name, f".rm{next(fresh)}", src_dir_fd=sub, dst_dir_fd=top)
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # the name is taken: a directory not empty, or a file
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR,
                                 errno.ENOTDIR):
                raise


def make_dir(path: Path, mode: int) -> None:
    """``mkdir -p`` with :data:`PARENT_MODE` for the folders above ``path``.

    ``Path.mkdir(parents=True)`` makes them 0777 less the umask: under umask 000 (a
    cron job's, a container's) ``spoolq init`` left the spool root world-writable, so
    any local user could rename ``pending/`` or ``done/`` away and put a folder of
    their own in its place (jobs taken, results forged); ``spoolq data synth``, which
    makes ``$SPOOL_DIR/data`` and so the spool root when run first, did the same
    (QA h401)."""
    try:
        path.mkdir(mode=mode)
    except FileNotFoundError:
        make_dir(path.parent, PARENT_MODE)
        path.mkdir(mode=mode, exist_ok=True)
    except FileExistsError:
        if not path.is_dir():
            raise
