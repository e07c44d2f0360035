"""Root's view of another user's spool: its folders pinned by descriptor.

The service user owns the spool's root, so it can put a symlink where a folder was
(``failed`` -> ``/root/secrets``), at any moment.  Root's ``spoolq purge`` then removed
the files of the folder the link named, ``cancel`` wrote a record over a root file,
``retry`` moved one into ``pending/`` (where the processor published its bytes), and
``submit`` staged its file wherever ``tmp`` led (h322).  A check of each folder before
each use would race the swap; taking the owner's identity (as Postfix's ``postsuper``)
left the command's lazy imports failing where Python is root's alone.

So each folder is opened once, without following a symlink, and every later path of the
command goes through that descriptor: a private folder of this process holds one link
per folder, ``failed`` -> ``/proc/self/fd/N``, and the layout's folders are reached
through it (``/proc/self/fd/M/failed/...``, ``M`` that private folder, pinned too).  A
name resolved through ``/proc/self/fd/N`` is the directory opened, wherever it has been
moved and whatever now stands at its name.  What the owner can still do is what it
could do anyway: put a folder of its own in place before the command starts.

The private folder is made in ``$TMPDIR`` and used only through its descriptor once it is
checked to be root's, mode 0700 (a ``$TMPDIR`` another user may write to could have it
swapped for theirs before the pin: h325); it is removed at exit, the links it holds by
name through that descriptor.  A kill that skips Python's exit (SIGKILL, an unhandled
SIGTERM) leaves it behind, a folder of dangling links: the process holds a lock on its
view's folder, and the next view made in that ``$TMPDIR`` removes those whose lock no
process holds (:func:`_sweep`).  One view serves a
process for a spool: made again only when a folder it pinned no longer stands at its
name (a library client made per call held ten descriptors and a folder each: h325),
the one before kept until exit.

Only for root, on a spool whose root another user owns or may write to: a spool's owner
needs no guard against itself, and another user (a submitter in the spool's group) has
nothing the owner could reach through it that its own permissions do not already hand
over.  Paths printed name the real folders (:func:`shown`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from spool.errors import SpoolIOError
from spool.layout import FOLDER_NAMES, Layout

_PROC_FD = "/proc/self/fd"
_PINNED = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HELD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""How a view's own folder is opened: readable, for its lock (``O_PATH`` takes none)."""
PREFIX = "spoolq-rootview-"
"""The name a view's folder starts with in ``$TMPDIR``."""
SWEEP_AGE_S = 60.0
"""A view's folder left unlocked this long is a killed command's (:func:`_sweep`): a new
one is unlocked only between its making and its lock."""
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def others_may_change(folder: os.stat_result) -> bool:
    """Whether another user than root may rename what ``folder`` holds (its owner, or its
    group or others by its mode): root then opens its entries without following a link
    (:func:`pin_folder`)."""
    return folder.st_uid != 0 or bool(folder.st_mode & _WRITABLE_BY_OTHERS)


def pin_folder(parent: int, name: str) -> int:
    """A descriptor (``O_PATH``) of the folder ``name`` in the folder ``parent``, opened
    without following a symlink; OSError as ``open`` raises it (ENOTDIR, ELOOP: a link
    or a file there), NotADirectoryError should ``O_PATH`` hand back a link itself."""
    fd = os.open(name, _PINNED, dir_fd=parent)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
    return fd


@dataclass
class _View:
    layout: Layout
    path: str  # the private folder's name in $TMPDIR
    held: int  # its descriptor
    pins: dict[str, int] = field(default_factory=dict)  # folder name -> its descriptor
    prefix: tuple[str, str] = ("", "")  # its paths' head, and the real root's
    marked: bool = False  # holds UNLOCKED (its lock could not be taken)

    def stands(self, root: int) -> bool:
        """Whether every folder pinned still stands at its name, and none was absent."""
        for name in FOLDER_NAMES:
            try:
                now = os.stat(name, dir_fd=root, follow_symlinks=False)
            except OSError:
                now = None
            fd = self.pins.get(name)
            if (fd is None) != (now is None) or (
                    fd is not None and now is not None
                    and not os.path.samestat(os.fstat(fd), now)):
                return False
        return True

    def release(self) -> None:
        """Remove the private folder (its links by name through its descriptor, never
        the name in $TMPDIR) and close every descriptor."""
        if self.held < 0:
            return  # released already
        for name in (*self.pins, *([UNLOCKED] if self.marked else [])):
            with contextlib.suppress(OSError):  # (not linked yet, when a pin failed)
                os.unlink(name, dir_fd=self.held)
        with contextlib.suppress(OSError):
            if self.path and os.path.samestat(os.lstat(self.path), os.fstat(self.held)):
                os.rmdir(self.path)
        for fd in (*self.pins.values(), self.held):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pins.clear()
        self.held = -1


_views: dict[str, _View] = {}
_made: dict[str, int] = {}  # views made of each spool by this process
_kept: list[_View] = []  # every view made, the ones replaced too: released at exit
MOST_VIEWS = 8
"""How many views of one spool a process makes at most (:func:`guarded`)."""


def guarded(layout: Layout) -> Layout:
    """``layout``, or for root on a spool another user owns or may write to, the same
    spool with its folders pinned (see the module's docstring).  SpoolIOError when a
    folder is a symlink or no directory, or cannot be pinned."""
    if layout.view is not None or os.geteuid() != 0:
        return layout
    try:
        root = os.open(layout.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return layout  # no spool there, or no directory: Layout.require says which
    try:
        if not others_may_change(os.fstat(root)):
            return layout
        key = os.fspath(layout.root)
        view = _views.get(key)
        if view is None or not view.stands(root):
            # The one before is kept to the end: a client made with it may still use its
            # paths, whose descriptors, closed, could name another folder once reused.
            # So a process pins one spool a bounded number of times: another user moving
            # its folders over and over had a long-running one run out of descriptors.
            made = _made.get(key, 0)
            if made >= MOST_VIEWS:
                raise SpoolIOError(
                    f"the folders of {layout.root} moved {made - 1} times while this "
                    "process used them (another user moving them?): root will not pin "
                    "them again; start it again once they stay put")
            view = _pinned(layout, root)
            _views[key], _made[key] = view, made + 1
        return view.layout
    finally:
        os.close(root)


def shown(text: str) -> str:
    """``text`` with each path through a view given as the real folder's (a message of
    root's named ``/proc/self/fd/4/tmp/...``: h325)."""
    for view in _views.values():
        head, real = view.prefix
        if head and head in text:
            text = text.replace(head, real)
    return text


def _pinned(layout: Layout, root: int) -> _View:
    if not os.path.isdir(_PROC_FD):
        raise SpoolIOError(f"{_PROC_FD} is not there (/proc not mounted), so root cannot pin "
                           f"the folders of {layout.root}, whose owner could swap them for "
                           "symlinks; run spoolq as the spool's owner")
    import tempfile  # noqa: PLC0415 - root's alone: the CLI's start stays cheap

    _sweep(tempfile.gettempdir())
    try:
        path = tempfile.mkdtemp(prefix=PREFIX)
    except OSError as exc:
        raise SpoolIOError(f"cannot make root's private view of {layout.root}'s folders in "
                           f"$TMPDIR: {exc.strerror}") from exc
    try:
        held = os.open(path, _HELD)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise SpoolIOError(f"cannot open root's private view of {layout.root}'s folders: "
                           f"{exc.strerror} ({path})") from exc
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except OSError:  # a $TMPDIR without locks (or none left): marked, never swept
        locked = False
    view = _View(layout, path, held)
    try:
        _fill(view, layout, root)
        if not locked:
            _mark_unlocked(view)
    except BaseException:
        view.release()
        raise
    if not _kept:
        atexit.register(release_all)
    _kept.append(view)
    return view


UNLOCKED = ".unlocked"
"""A file in a view's folder whose lock could not be taken: the sweep leaves a folder
holding anything but a view's links, and an unlocked live view was swept as a dead one
once a minute old, its process's paths gone from under it (QA h337)."""


def _mark_unlocked(view: _View) -> None:
    try:
        os.close(os.open(UNLOCKED, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=view.held))
    except OSError as exc:
        raise SpoolIOError(f"cannot make root's private view of {view.layout.root}'s "
                           f"folders: {exc.strerror} ({view.path}/{UNLOCKED})") from exc
    view.marked = True


def release_all() -> None:
    """Remove every view this process made and forget them (at exit; a test's end: a
    pytest-xdist worker ends without Python's exit handlers, and left its views)."""
    for view in _kept:
        view.release()
    _kept.clear()
    _views.clear()
    _made.clear()


def _fill(view: _View, layout: Layout, root: int) -> None:
    """Check the view's folder is this process's own, new and empty (a ``$TMPDIR``
    another user may write to: one of its own, or a view left by a killed command, put
    at its name before it was opened), then pin each folder and link it there."""
    st = os.fstat(view.held)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700 \
            or os.listdir(f"{_PROC_FD}/{view.held}"):
        view.path = ""  # not ours to remove
        raise SpoolIOError(f"the private folder made for root's view of {layout.root} was "
                           "replaced as it was made ($TMPDIR is another user's to write?): "
                           "set TMPDIR to a folder of root's alone")
    for name in FOLDER_NAMES:
        try:
            fd = pin_folder(root, name)
        except FileNotFoundError:
            continue  # absent from the view too: Layout.require names a required one
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):  # EMFILE, EACCES, EIO
                raise SpoolIOError(f"cannot open {layout.root}/{name}: {exc.strerror}") \
                    from exc
            raise _not_a_folder(layout, name, root, exc) from None
        view.pins[name] = fd
        try:
            os.symlink(f"{_PROC_FD}/{fd}", name, dir_fd=view.held)
        except OSError as exc:
            raise SpoolIOError(f"cannot make root's private view of {layout.root}'s "
                               f"folders: {exc.strerror} ({view.path}/{name})") from exc
    head = f"{_PROC_FD}/{view.held}/"
    view.prefix = (head, f"{os.path.abspath(layout.root).rstrip('/')}/")
    view.layout = Layout(layout.root, view=Path(head))


def _not_a_folder(layout: Layout, name: str, root: int, exc: OSError) -> SpoolIOError:
    try:
        kind = os.stat(name, dir_fd=root, follow_symlinks=False).st_mode
    except OSError:
        kind = 0
    what = "a symlink" if stat.S_ISLNK(kind) else f"no folder ({exc.strerror})"
    return SpoolIOError(
        f"{layout.root}/{name} is {what}: the spool's owner may have put it there, and root "
        f"will not work through it; move it aside and run spoolq init --system (which makes "
        "the folder again), or run spoolq as the spool's owner")


def _sweep(tmpdir: str) -> None:
    """Remove the views killed commands left in ``tmpdir`` (see the module's docstring);
    whatever cannot be removed stays, as it did."""
    try:
        parent = os.open(tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for name in os.listdir(parent):
            if name.startswith(PREFIX):
                with contextlib.suppress(OSError):
                    _sweep_one(parent, name)
    finally:
        os.close(parent)


def _sweep_one(parent: int, name: str) -> None:
    """Remove the folder ``name`` in ``parent`` when it is a view's that no process holds:
    this user's, mode 0700, unlocked for :data:`SWEEP_AGE_S`, holding only a view's links
    (anything else there is left alone, the folder with it).  Looked at before it is
    opened: another user's entries at such names cost a lookup each, not an open (h337:
    50,000 of them slowed a root command from 0.33 to 0.81 s)."""
    if not _sweepable(os.stat(name, dir_fd=parent, follow_symlinks=False)):
        return
    fd = os.open(name, _HELD, dir_fd=parent)
    try:
        st = os.fstat(fd)
        if not _sweepable(st):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its process is alive
        links = os.listdir(fd)
        if any(link not in FOLDER_NAMES
               or not os.readlink(link, dir_fd=fd).startswith(f"{_PROC_FD}/")
               for link in links):
            return
        for link in links:
            os.unlink(link, dir_fd=fd)
        if os.path.samestat(os.stat(name, dir_fd=parent, follow_symlinks=False), st):
            os.rmdir(name, dir_fd=parent)
    finally:
        os.close(fd)


def _sweepable(st: os.stat_result) -> bool:
    """Whether ``st`` may be a killed command's view: a folder of this user's, mode 0700,
    unchanged for :data:`SWEEP_AGE_S`."""
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == 0o700 and time.time() - st.st_mtime >= SWEEP_AGE_S)
