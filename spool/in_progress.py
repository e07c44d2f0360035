"""Files in ``pending/`` under an in-progress name: ignored until renamed, and counted.

Owns: what an in-progress name is (intake rule 1: a dot name, or one ending in
``.tmp .part .partial .filepart .crdownload ~`` in any case), and the count of such
regular files with the time the one changed longest ago last changed (its ctime: a
write, a chmod; never set back, as an mtime is by a copy that keeps its source's).

An upload in progress ends in a rename and becomes a job.  One cut off (an SFTP
client's ``report.json.filepart`` when the link dropped, an editor's ``job.json~``)
stays in ``pending/``, ignored, for good: nothing ran, and nothing said so.  The stats
count them (``in_progress_drops``), with how long the stalest has gone unwritten, so that
monitoring can tell a client whose drop never arrived (QA h388).  spoolq's own
``.<name>.kept-<id>`` (:data:`spool.layout.KEPT_TAG`) is no drop and is not counted, nor
is the name a filesystem gives a file unlinked while open (:data:`UNLINKED_OPEN_PREFIXES`),
nor a Mac's metadata beside the files it copies (:data:`DESKTOP_PREFIXES`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any, NamedTuple

from spool.fsops import FAILING_IO
from spool.layout import is_kept_name

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", "~")
UNLINKED_OPEN_PREFIXES = (".fuse_hidden", ".nfs")
"""Where a filesystem keeps a file unlinked while a process holds it open, until it is
closed: libfuse's high-level API (bindfs, sshfs) renames it ``.fuse_hidden<ino><n>``, an
NFS client ``.nfs<fileid><n>``.  A claim there moves by a link and an unlink, its lease
open: each claim left ``pending/.fuse_hidden...`` for up to 0.1 s, a regular file with
the job's mtime, and a backlog two hours old drained under ``spoolq stats`` read as an
upload cut off two hours ago (QA h397).  Never a client's drop."""
DESKTOP_PREFIXES = (".DS_Store", "._")
"""What a Mac writes beside files it copies to a share (Finder's folder settings, the
AppleDouble ``._<name>`` of a file's resource fork): there for good, and no upload; each
would have kept the alert on a cut-off upload firing (QA h397)."""


def is_in_progress_name(name: str) -> bool:
    """A dot name, or one ending in an in-progress suffix in any case: a Windows-side
    uploader's ``.TMP`` was quarantined as a bad name mid-upload, and its rename to
    ``.json`` then found nothing (QA)."""
    return name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES)


def is_in_progress_drop(name: str) -> bool:
    """An in-progress name a client's drop can have: not spoolq's own kept names (a
    client's ``a.kept-1.part`` is one), nor a filesystem's for a file unlinked open."""
    return is_in_progress_name(name) and not is_kept_name(name) \
        and not name.startswith(UNLINKED_OPEN_PREFIXES + DESKTOP_PREFIXES)


class InProgress(NamedTuple):
    """The regular files in ``pending/`` under an in-progress drop's name."""

    files: int
    stalest_ctime_ns: int | None
    """The ctime of the one changed longest ago; None when there is none.  Not the mtime:
    a copy keeping its source's (``rsync -t`` sets it before its rename) read as an upload
    cut off hours ago, and one dated ahead (a wrong clock at the client) as one going on
    for as long (QA h397)."""

    def document(self, now: float) -> dict[str, Any]:
        """The stats' ``in_progress_drops``: the count, and ``idle_s``, the seconds since
        the stalest one last changed (0 for a time ahead of the clock)."""
        idle = None if self.stalest_ctime_ns is None \
            else max(0.0, now - self.stalest_ctime_ns / 1e9)
        return {"count": self.files, "idle_s": idle}


def in_progress_of(ctimes: Iterable[int]) -> InProgress:
    """:class:`InProgress` of the files' ctimes (nanoseconds)."""
    count, stalest = 0, None
    for ctime_ns in ctimes:
        count += 1
        stalest = ctime_ns if stalest is None else min(stalest, ctime_ns)
    return InProgress(count, stalest)


def in_progress_in(folder: str | os.PathLike[str]) -> InProgress:
    """:class:`InProgress` of ``folder`` (``pending/``): one listing, and a stat
    (never followed) of the in-progress names alone; one the disk cannot stat
    (:data:`~spool.fsops.FAILING_IO`) is left out.  A missing folder holds none; any
    other listing error is raised."""
    ctimes = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not is_in_progress_drop(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # renamed into a job meanwhile
                    continue
                except OSError as exc:  # one a bad inode (EIO) makes unknown is left
                    # out, as statusd's scan leaves it: it failed `spoolq stats` whole,
                    # which never looked at a client's upload before (QA h397)
                    if exc.errno not in FAILING_IO:
                        raise
                    continue
                if stat.S_ISREG(st.st_mode):
                    ctimes.append(st.st_ctime_ns)
    except FileNotFoundError:
        pass
    return in_progress_of(ctimes)
