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

Only for root on a spool it does not own: a spool's owner needs no guard against
itself, and another user (a submitter in the spool's group) has nothing the owner could
reach through it that its own permissions do not already hand over.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import tempfile
from pathlib import Path

from spool.errors import SpoolIOError
from spool.layout import FOLDER_NAMES, Layout

_PROC_FD = "/proc/self/fd"
_PINNED = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def guarded(layout: Layout) -> Layout:
    """``layout``, or for root on a spool another user owns, the same spool with its
    folders pinned (see the module's docstring).  SpoolIOError when a folder is a
    symlink or no directory, or ``/proc`` cannot pin one."""
    if layout.view is not None or os.geteuid() != 0:
        return layout
    try:
        root = os.open(layout.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return layout  # no spool there, or no directory: Layout.require says which
    try:
        if os.fstat(root).st_uid == 0:
            return layout
        return _pinned(layout, root)
    finally:
        os.close(root)


def _pinned(layout: Layout, root: int) -> Layout:
    if not os.path.isdir(_PROC_FD):
        raise SpoolIOError(f"{_PROC_FD} is not there (/proc not mounted), so root cannot pin "
                           f"the folders of {layout.root}, whose owner could swap them for "
                           "symlinks; run spoolq as the spool's owner")
    view = tempfile.mkdtemp(prefix="spoolq-view-")
    atexit.register(_remove, view)
    held = os.open(view, _PINNED)  # the view's own path pinned too: where TMPDIR's folder
    # is another user's, the view could be renamed away and another put at its name
    for name in FOLDER_NAMES:
        try:
            fd = os.open(name, _PINNED, dir_fd=root)
        except FileNotFoundError:
            continue  # absent from the view too: Layout.require names a required one
        except OSError as exc:  # ENOTDIR: a symlink (O_NOFOLLOW) or a file
            raise _not_a_folder(layout, name, exc.strerror) from None
        if not stat.S_ISDIR(os.fstat(fd).st_mode):  # (should O_PATH hand the link itself)
            os.close(fd)
            raise _not_a_folder(layout, name, "a symlink")
        os.symlink(f"{_PROC_FD}/{fd}", os.path.join(view, name))
    return Layout(layout.root, view=Path(f"{_PROC_FD}/{held}"))


def _not_a_folder(layout: Layout, name: str, why: str | None) -> SpoolIOError:
    return SpoolIOError(
        f"{layout.root}/{name} is no folder ({why}): the spool's owner may have put a "
        "symlink there, which root will not follow; put the folder back (spoolq init "
        "--system mends owners and modes), or run spoolq as the spool's owner")


def _remove(view: str) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(view):
            os.unlink(os.path.join(view, name))
        os.rmdir(view)
