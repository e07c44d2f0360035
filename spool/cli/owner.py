"""A mutating command run as root acts as the spool's owner.

The spool's root is its service user's (``spoolq init --system``), so that user can
put a symlink where a folder was.  Run as root, ``spoolq purge`` then unlinked the
records of whatever folder the link named, ``cancel`` replaced a root file there with
a record of that user's choosing and ``retry`` moved one into ``pending/``, where the
submitters read it (QA: the service user made root's commands work outside the
spool).  As Postfix's ``postsuper`` does, such a command first takes the owner's
identity (its uid, its groups): it can then do nothing the owner could not do itself.
A spool of root's own is left as it is.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

ACTS_AS_OWNER = frozenset({"cancel", "retry", "purge", "submit"})
"""The commands that write, move or remove what is in the spool (``submit``: a file
in a ``tmp/`` the owner may have replaced with a link), but see :func:`acts_as_owner`."""


def acts_as_owner(command: str, job_file: str | None) -> bool:
    """Whether ``command`` (with its ``--file``, for ``submit``) takes the owner's
    identity when run as root: a ``submit --file PATH`` keeps root's, as the file it
    names may be root's alone to read."""
    return command in ACTS_AS_OWNER and (command != "submit" or job_file in (None, "-"))


def act_as_owner(root: Path) -> None:
    """Root's command takes the identity of the owner of the spool at ``root`` (its
    uid, primary group and supplementary groups); nothing when not root, or when the
    spool is root's (or not there: the command says so itself)."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(root)
    except OSError:
        return
    if st.st_uid == 0:
        return
    try:
        user = pwd.getpwuid(st.st_uid)
        gid, groups = user.pw_gid, os.getgrouplist(user.pw_name, user.pw_gid)
    except KeyError:  # a uid with no name: its folder's group alone
        gid, groups = st.st_gid, [st.st_gid]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(st.st_uid)
