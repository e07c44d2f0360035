"""The only module that renames, links, unlinks or fsyncs spool files.

Guarantees:

* :meth:`Mover.publish` makes a file visible only when complete: write to
  ``tmp/``, fsync the file, rename into place, fsync the folder.
* :meth:`Mover.move` with ``replace=False`` never overwrites: it uses
  ``renameat2(RENAME_NOREPLACE)`` (falling back to ``link`` + ``unlink`` on
  filesystems without it) and reports a lost race as ``False``.
* Durability follows ``SPOOL_FSYNC``: ``always`` fsyncs file and folder at
  each step; ``batch`` defers to one ``syncfs`` per group of operations
  (at most ``BATCH_OPS`` operations or ``BATCH_INTERVAL_S`` seconds apart, and
  on :meth:`Mover.flush`); ``never`` leaves it to the kernel.

OS errors that mean the spool is unusable (EACCES, ENOSPC, EROFS, EDQUOT)
are raised as :class:`~spool.errors.SpoolIOError`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import time
from pathlib import Path

from spool.errors import SpoolIOError
from spool.layout import Layout
from spool.settings import FsyncMode

BATCH_OPS = 64
FILE_MODE = 0o640
BATCH_INTERVAL_S = 0.05
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_FATAL_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT,
                           errno.EXDEV})

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = getattr(_libc, "renameat2", None)
except OSError:  # pragma: no cover - no libc
    _renameat2 = None


def _raise_fatal(exc: OSError, what: str) -> None:
    if exc.errno in _FATAL_ERRNOS:
        raise SpoolIOError(f"{what}: {exc.strerror} ({exc.filename or ''})") from exc


class Mover:
    """Moves and writes spool files under one fsync policy."""

    def __init__(self, layout: Layout, mode: FsyncMode) -> None:
        self.layout = layout
        self.mode = mode
        self._pending_ops = 0
        self._last_flush = time.monotonic()
        self._noreplace_native = _renameat2 is not None

    # -- writing -----------------------------------------------------------------

    def publish(self, dest: Path, data: bytes, *, replace: bool = True,
                durable: bool = True) -> bool:
        """Write ``data`` to ``dest`` atomically; False if ``replace=False`` and it exists."""
        tmp = self.layout.staging(dest.stem)
        try:
            self._write_tmp(tmp, data, durable)
            moved = self.move(tmp, dest, replace=replace, durable=durable)
        except OSError as exc:
            self.unlink(tmp)
            _raise_fatal(exc, f"cannot publish {dest.name}")
            raise
        except BaseException:
            self.unlink(tmp)
            raise
        if not moved:
            self.unlink(tmp)
        return moved

    def _write_tmp(self, tmp: Path, data: bytes, durable: bool) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # whatever the writer's umask: the spool user must read it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable and self.mode is FsyncMode.ALWAYS:
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- moving ------------------------------------------------------------------

    def move(self, src: Path, dst: Path, *, replace: bool = False, durable: bool = True) -> bool:
        """Rename ``src`` to ``dst``; False when src is gone or (no replace) dst exists."""
        try:
            if replace:
                os.rename(src, dst)
            elif not self._rename_noreplace(src, dst):
                return False
        except FileNotFoundError:
            return False
        except OSError as exc:
            _raise_fatal(exc, f"cannot move {src.name} to {dst.parent.name}/")
            raise
        if durable and self.mode is not FsyncMode.NEVER:
            self._synced(dst.parent, src.parent)
        return True

    def _rename_noreplace(self, src: Path, dst: Path) -> bool:
        if self._noreplace_native:
            assert _renameat2 is not None
            rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                            _RENAME_NOREPLACE)
            if rc == 0:
                return True
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                return False
            if err not in (errno.EINVAL, errno.ENOSYS):
                raise OSError(err, os.strerror(err), str(src))
            self._noreplace_native = False  # filesystem without RENAME_NOREPLACE
        return self._link_then_unlink(src, dst)

    @staticmethod
    def _link_then_unlink(src: Path, dst: Path) -> bool:
        if stat.S_ISDIR(os.lstat(src).st_mode):
            if os.path.lexists(dst):
                return False
            os.rename(src, dst)  # directories cannot be hard-linked; best effort
            return True
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            return False
        os.unlink(src)
        return True

    # -- removing ----------------------------------------------------------------

    def unlink(self, path: Path) -> bool:
        """Remove a file or symlink (a directory tree too); False if it was not there."""
        try:
            try:
                os.unlink(path)  # never follows a symlink; EISDIR for a directory
            except IsADirectoryError:
                shutil.rmtree(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            _raise_fatal(exc, f"cannot remove {path.name}")
            raise
        return True

    def unlink_durable(self, path: Path) -> bool:
        removed = self.unlink(path)
        if removed and self.mode is not FsyncMode.NEVER:
            self._synced(path.parent)
        return removed

    # -- durability --------------------------------------------------------------

    def _synced(self, *folders: Path, durable: bool = True) -> None:
        if not durable or self.mode is FsyncMode.NEVER:
            return
        if self.mode is FsyncMode.ALWAYS:
            for folder in dict.fromkeys(folders):
                self.sync_dir(folder)
            return
        self._pending_ops += 1
        if (self._pending_ops >= BATCH_OPS
                or time.monotonic() - self._last_flush >= BATCH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        """Make every earlier operation durable (``batch``: one syncfs for the group)."""
        if self.mode is not FsyncMode.BATCH or not self._pending_ops:
            return
        fd = os.open(self.layout.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if hasattr(_libc, "syncfs"):
                _libc.syncfs(fd)
            else:  # pragma: no cover
                os.sync()
        finally:
            os.close(fd)
        self._pending_ops = 0
        self._last_flush = time.monotonic()

    @staticmethod
    def sync_dir(folder: Path) -> None:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            # A submitter may write to a drop folder it cannot read (mode 3730, see
            # ``spoolq init --system``): its file is fsynced and renamed in; flushing the
            # folder's entry is left to the kernel rather than failing a drop that happened.
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def make_folders(self, mode: int = 0o750) -> None:
        """Create the spool's folders (idempotent)."""
        for folder in self.layout.all_folders():
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=mode)
            except OSError as exc:
                _raise_fatal(exc, f"cannot create {folder}")
                raise
        self.sync_dir(self.layout.root)
