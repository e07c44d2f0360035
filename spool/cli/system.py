"""``spoolq init --system``: a spool with Postfix-style owners and modes.

* ``pending/`` and ``tmp/``: mode 3730, owner the spool user, group the
  submit group.  Members of the submit group may create files there (and the
  setgid bit gives new files that group, so the spool user, a member, can
  read them) but cannot list what others dropped (a drop is group-readable,
  for the processor, so a member who knows its name can read it while it
  waits in ``pending/``); the sticky bit
  (as Postfix's maildrop) stops them removing or replacing another
  member's drop, while the spool user, the folder's owner, still moves them.
* ``stage/``: owner the spool user and its own group, mode 0700: the
  processor's own staging (spare inodes, records being written), which
  nobody else reads.
* Every other folder: owner the spool user and its own group, mode 0750, so
  a daemon running in that group (statusd) can read records.
* The root: mode 0755, so submitters can reach ``pending/`` and ``tmp/``.

Checks come first and change nothing: the user and group exist, the user is
in the submit group (else it could not read the jobs members drop: they are
mode 0640), and we are root.  Idempotent: it sets the same owners and modes
again.  chown/chmod are not moves, so they live here and not in ``fsops``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from spool.durability import FsyncMode
from spool.errors import SpoolError
from spool.fsops import Mover
from spool.layout import Layout
from spool.states import JobState

DEFAULT_USER = "spoolq"
DEFAULT_GROUP = "spoolq-submit"
DROP_MODE = 0o3730
PRIVATE_MODE = 0o750
STAGE_MODE = 0o700
ROOT_MODE = 0o755
_T = TypeVar("_T")


def init_system(layout: Layout, fsync: FsyncMode, user: str, group: str) -> None:
    """Create ``layout``'s folders with system owners and modes; SpoolError if it can't."""
    owner, submit = _accounts(layout, user, group)
    if os.geteuid() != 0:
        raise SpoolError("init --system sets owners: run it as root (e.g. with sudo)")
    layout = _real_root(layout)
    _require_new_or_spool(layout, user)
    Mover(layout, fsync).make_folders(mode=PRIVATE_MODE)
    drop = {layout.folder(JobState.PENDING), layout.tmp}
    _set(layout.root, owner.pw_uid, owner.pw_gid, ROOT_MODE)
    for folder in layout.all_folders():
        if folder in drop:
            _set(folder, owner.pw_uid, submit.gr_gid, DROP_MODE)
        elif folder == layout.stage:
            _set(folder, owner.pw_uid, owner.pw_gid, STAGE_MODE)
        else:
            _set(folder, owner.pw_uid, owner.pw_gid, PRIVATE_MODE)


def _real_root(layout: Layout) -> Layout:
    """``layout`` at the root's target when the root is a symlink root owns (a short
    name for a spool elsewhere, as the troubleshooting advises), else as it is: one that
    another user owns could point root's chown anywhere."""
    try:
        st = os.lstat(layout.root)
    except OSError:
        return layout
    if not stat.S_ISLNK(st.st_mode):
        return layout
    if st.st_uid != 0:
        raise SpoolError(f"{layout.root} is a symlink of uid {st.st_uid}, not root's: "
                         "give the spool's real path")
    return Layout(Path(os.path.realpath(layout.root)))


def _require_new_or_spool(layout: Layout, user: str) -> None:
    """Refuse a root that holds other files and no spool: a typo (``/var/spool``) was
    handed to the spool user whole (QA)."""
    try:
        names = set(os.listdir(layout.root)) - ALLOWED_BESIDE
    except OSError:
        return  # none yet (made), or no directory (_set says what it is)
    if names and not names & {layout.folder(state).name for state in JobState}:
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise SpoolError(f"{layout.root} holds other files ({shown}) and no spool: init "
                         f"--system would give it to user {user}; name a new or empty "
                         "folder, or an existing spool")


ALLOWED_BESIDE = frozenset({"lost+found", "data"})
"""What may be there before a spool: a new filesystem's ``lost+found`` (a volume of the
spool's own), and ``data/`` (SPOOL_DATA_DIR's default, filled first).  Not the other
folders' names: a shared ``tmp/`` alone (1777) was handed to the spool user (the
session's own review)."""


def _accounts(layout: Layout, user: str, group: str
              ) -> tuple[pwd.struct_passwd, grp.struct_group]:
    """The spool user and the submit group, the user in it; else SpoolError naming every
    command that makes them so, in one line: said one at a time, the operator met a
    second error after following the first hint (QA)."""
    owner, submit = _found(pwd.getpwnam, user), _found(grp.getgrnam, group)
    if owner is not None and submit is not None:
        if owner.pw_gid != submit.gr_gid and user not in submit.gr_mem:
            raise SpoolError(f"user {user} is not in group {group}, so it could not read the "
                             f"jobs members drop: usermod -aG {shlex.quote(group)} "
                             f"{shlex.quote(user)}")
        return owner, submit
    make_group = f"groupadd --system {shlex.quote(group)}"
    if owner is None and submit is None:
        said = f"no group {group!r} and no user {user!r}: create them first, e.g. " \
               f"{make_group} && {_useradd(user, layout, group)}"
    elif owner is None:
        said = f"no user {user!r}: create it first, e.g. {_useradd(user, layout, group)}"
    else:  # the user, and no group for it to be in
        said = f"no group {group!r}: create it first, with user {user} in it to read the " \
               f"jobs members drop, e.g. {make_group} && usermod -aG {shlex.quote(group)} " \
               f"{shlex.quote(user)}"
    raise SpoolError(said)


def _useradd(name: str, layout: Layout, group: str) -> str:
    """The command that makes the spool user as the units and the checks want it: a
    group of its own (``Group=``), and in the submit ``group``."""
    # A group of the user's name that is there already is its group (--user-group would
    # make it again: useradd exit 9); the path quoted, to be pasted as it is.
    own = f"--gid {shlex.quote(name)}" if _found(grp.getgrnam, name) or group == name else \
        "--user-group"
    groups = own if group == name else f"{own} --groups {shlex.quote(group)}"
    return (f"useradd --system {groups} --home-dir {shlex.quote(str(layout.root))} "
            f"--no-create-home --shell /usr/sbin/nologin {shlex.quote(name)}")


def _found(look_up: Callable[[str], _T], name: str) -> _T | None:
    try:
        return look_up(name)
    except KeyError:
        return None


def _set(path: os.PathLike[str], uid: int, gid: int, mode: int) -> None:
    """Owner and mode of one spool folder, through a descriptor that followed no symlink.

    Run as root on folders the spool user owns: a symlink there (``done`` -> ``/etc``)
    must never have its target handed to that user.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SpoolError(f"{os.fspath(path)} is not a directory (a symlink, or another kind "
                         f"of file: {exc.strerror}); give the spool's real folders") from None
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
