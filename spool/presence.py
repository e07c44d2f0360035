"""Which names may exist in a few spool folders, kept current by inotify.

Finishing a job removes whatever could be left of it: a progress file, a
cancel request, a terminal record of the other kind.  Almost always none is
there, and each ``unlink`` that finds nothing costs a path walk and a
directory lookup (three of them were about a tenth of a claim-and-complete,
docs/benchmarks.md).  A :class:`Presence` lists its folders once, then
follows their changes through inotify, so :meth:`Presence.may_exist` can say
"certainly not there" without a syscall per name.

Sound as long as inotify sees every change, so it refuses to work where it
may not: on filesystems where other hosts can write (NFS, CIFS, FUSE, ...),
only the filesystems in :data:`LOCAL_FILESYSTEMS` are followed.  A lost-event
overflow lists the folders again; a folder that is moved or removed, or grows
past :data:`MAX_NAMES`, is no longer followed (every name "may exist").  A
name created at the same moment as the check may be missed, exactly as an
``unlink`` issued a moment earlier would have missed it.

A folder can also be tracked (:meth:`Presence.track`): the names created, moved in or
out, or removed there are kept until taken (:meth:`Presence.take_changed`), so a caller
that listed the folder once learns what changed since without listing it again.  Unlike
the set of names, this goes on past MAX_NAMES names in the folder.  Or the whole set of
names can be read (:meth:`Presence.names`): after :meth:`Presence.refresh` it is what a
listing would say then, without one (statusd's loader asks it what ``tmp/`` holds).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import re
import termios
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from spool.feed import inotify_c, open_inotify, read_inotify

LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs",
                               "zfs", "bcachefs", "jfs", "reiserfs", "overlay"})
RESTART_S = 5.0
"""After a read of its descriptor failed, how long until a follower starts again."""
MAX_NAMES = 100_000
"""A folder holding more names than this is not followed (the set would cost memory)."""
_OCTAL = re.compile(r"\\([0-7]{3})")
"""mountinfo's escapes in a path (a blank is ``\\040``)."""


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo)."""
    try:
        dev = os.stat(path).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    # The mount of the path's device; else, as for a btrfs subvolume, whose st_dev is its
    # own and never the one mountinfo shows (the follower was off on btrfs, QA), the
    # innermost mount point holding the path.
    real, found, longest = os.path.realpath(path), None, -1
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or " - " not in line:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fields[2] == wanted:
            return fstype
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        if (real == point or real.startswith(point.rstrip("/") + "/")) \
                and len(point) >= longest:
            longest, found = len(point), fstype
    return found


class Presence:
    """Names that may exist in ``folders``; call :meth:`refresh` before asking."""

    def __init__(self, folders: Sequence[str]) -> None:
        self.folders = list(folders)
        self._names: list[set[str] | None] = [None] * len(self.folders)  # None: not followed
        # Tracked folder index -> names changed since last taken (None: some were lost).
        self._changed: dict[int, set[str] | None] = {}
        self._wd: dict[int, int] = {}  # watch descriptor -> folder index
        self._fd = -1
        self._waiting = array.array("i", [0])
        self._failed_at: float | None = None  # when a read failed: started again later

    def start(self) -> bool:
        """Follow the folders; False (and every name "may exist") where that is not sound."""
        if inotify_c is None or not self._all_local():
            return False
        const = inotify_c.InotifyConstants
        mask = (const.IN_CREATE | const.IN_MOVED_TO | const.IN_DELETE | const.IN_MOVED_FROM
                | const.IN_DELETE_SELF | const.IN_MOVE_SELF | const.IN_ONLYDIR)
        fd = open_inotify()
        if fd < 0:
            return False
        self._fd = fd
        for index, folder in enumerate(self.folders):
            wd = inotify_c.inotify_add_watch(fd, os.fsencode(folder), mask)
            if wd >= 0:
                self._wd[wd] = index
        self._list_all()  # after the watches: nothing falls between listing and events
        return True

    def _all_local(self) -> bool:
        """Every folder on one local filesystem (inotify misses other hosts' writes)."""
        try:
            devices = {os.stat(folder).st_dev for folder in self.folders}
        except OSError:
            return False
        return (len(devices) == 1
                and filesystem_type(self.folders[0]) in LOCAL_FILESYSTEMS)

    def refresh(self) -> None:
        """Apply every change reported so far (one read when nothing happened)."""
        if self._fd < 0:
            if self._failed_at is not None and time.monotonic() - self._failed_at > RESTART_S:
                self._failed_at = None
                self.start()  # lists its folders again: what changed meanwhile is known
            return
        try:
            # FIONREAD asks whether anything waits: a third of a read that fails EAGAIN.
            fcntl.ioctl(self._fd, termios.FIONREAD, self._waiting, True)
            if not self._waiting[0]:
                return
            events = list(read_inotify(self._fd))
        except OSError:
            # The kernel failed the read (EIO, ENOMEM): what it held is lost, and a
            # descriptor failing once may fail again.  Followed no more, every name "may
            # exist" and every tracked folder is listed again; raised, it ended the
            # processor in the middle of a record, its other runs failed ``abandoned`` at
            # the next start (QA).  Started again RESTART_S later, as the kernel may
            # read again by then (followed no more, each finish pays its syscalls).
            self.close()
            self._failed_at = time.monotonic()
            return
        if not all([self._apply(wd, mask, name) for wd, mask, name in events]):
            self._list_all()  # events were lost: list again, later events go on top
            self._changed = dict.fromkeys(self._changed)

    def _apply(self, wd: int, mask: int, raw: bytes) -> bool:
        """Apply one event; False when events were lost."""
        const = inotify_c.InotifyConstants
        if mask & const.IN_Q_OVERFLOW:
            return False
        index = self._wd.get(wd)
        if index is None:
            return True
        names = self._names[index]
        if mask & (const.IN_DELETE_SELF | const.IN_MOVE_SELF | const.IN_IGNORED):
            del self._wd[wd]  # the folder itself went: stop following it
            self._names[index] = None
            if index in self._changed:
                self._changed[index] = None
            return True
        if not raw:
            return True
        name = os.fsdecode(raw)
        if (changed := self._changed.get(index)) is not None:
            if len(changed) < MAX_NAMES:
                changed.add(name)
            else:
                self._changed[index] = None  # too many to keep: "some were lost"
        if names is not None:
            if not mask & (const.IN_CREATE | const.IN_MOVED_TO):
                names.discard(name)
            elif len(names) < MAX_NAMES:
                names.add(name)
            else:
                self._names[index] = None  # too many to follow
        return True

    def track(self, index: int) -> bool:
        """Keep the names changed in folder ``index`` from now on; False when it is not
        followed (then nothing is kept)."""
        if index not in self._wd.values():
            return False
        self._changed[index] = set()
        return True

    def take_changed(self, index: int) -> set[str] | None:
        """The names changed in tracked folder ``index`` since :meth:`track` or the last
        take, events read so far (call :meth:`refresh` first); None when some may have
        been lost, or the folder is no longer followed: list it again."""
        changed = self._changed.get(index)
        if index in self._wd.values() and index in self._changed:
            self._changed[index] = set()
        return changed

    def names(self, index: int) -> AbstractSet[str] | None:
        """Every name in folder ``index`` as of the events read so far (call
        :meth:`refresh` first; do not change the set); None when it is not followed."""
        return self._names[index]

    def may_exist(self, index: int, name: str) -> bool:
        """False only when ``name`` is certainly not in folder ``index``."""
        names = self._names[index]
        return names is None or name in names

    def forget(self, index: int, name: str) -> None:
        """``name`` was just removed from folder ``index`` by this process."""
        names = self._names[index]
        if names is not None:
            names.discard(name)

    def _list_all(self) -> None:
        for index, folder in enumerate(self.folders):
            if index not in self._wd.values():
                continue
            try:
                names = set(os.listdir(folder))
            except OSError:
                self._names[index] = None
                continue
            self._names[index] = names if len(names) <= MAX_NAMES else None

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        self._names = [None] * len(self.folders)
        self._wd.clear()
        self._changed.clear()
