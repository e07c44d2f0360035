"""``spoolq init --system``: a spool with Postfix-style permissions.

* ``pending/`` and ``tmp/``: mode 2730, owner the spool user, group the
  submit group.  Members of the submit group may create files there (and the
  setgid bit gives new files that group) but cannot list or read what others
  dropped.
* Everything else: owner the spool user, mode 0750 (group = the spool
  user's own group, so statusd running in that group can read records).

Needs root (it changes owners).  Idempotent.
"""

from __future__ import annotations

import grp
import os
import pwd

from spool.errors import SpoolError
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState

DROP_MODE = 0o2730
PRIVATE_MODE = 0o750


def init_system(layout: Layout, fsync: FsyncMode, user: str, group: str) -> None:
    if os.geteuid() != 0:
        raise SpoolError("init --system changes owners: run it as root (e.g. with sudo)")
    try:
        owner = pwd.getpwnam(user)
    except KeyError:
        raise SpoolError(f"no user {user!r}: create it first, e.g. "
                         f"useradd --system --home-dir {layout.root} {user}") from None
    try:
        submit_gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise SpoolError(f"no group {group!r}: create it first, e.g. groupadd --system "
                         f"{group}") from None
    Mover(layout, fsync).make_folders(mode=PRIVATE_MODE)
    drop = {layout.folder(JobState.PENDING), layout.tmp}
    os.chown(layout.root, owner.pw_uid, owner.pw_gid)
    os.chmod(layout.root, 0o755)
    for folder in layout.all_folders():
        if folder in drop:
            os.chown(folder, owner.pw_uid, submit_gid)
            os.chmod(folder, DROP_MODE)
        else:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            os.chmod(folder, PRIVATE_MODE)
