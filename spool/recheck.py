"""Which names of ``failed/`` a periodic recovery pass checks, so that its cost does not
grow with ``failed/`` and ``done/``, which only ``spoolq purge`` shrinks.

What recovery settles there (an id with a record in both ``done/`` and ``failed/``, an
original beside no record or beside a later run's record) is always made by a change of
one of the two folders: a record or an original moved in, replaced or removed.  So a
:class:`Recheck` watches each folder's stamp (device, inode, mtime, ctime: any entry
added, removed or renamed over changes it):

* ``failed/`` unchanged: not listed.  Changed: the ids of the names added, removed or
  replaced (another inode) since the last pass are checked, both their record and their
  original, in that same pass (a kept name, ``.<name>.kept-<id>``, itself).  Where a
  :class:`~spool.presence.Presence` follows ``failed/`` (a processor's, on a local
  filesystem) its events name them; else ``failed/`` is listed again and compared with
  the last listing.
* ``done/`` unchanged: nothing is looked up in it.  Changed (as every job done changes
  it): which names came is unknown without listing ``done/``, so the names of
  ``failed/`` are checked in a rotation, in sorted order, :data:`ROTATION_NAMES` a pass,
  until one full turn has passed since the last change.

Hence every such leftover is settled by the first pass after it is made, when it is
made in ``failed/``, and within ``ceil(len(failed/) / ROTATION_NAMES) + 1`` passes when
it is made in ``done/`` alone (the last change of ``done/`` restarts the turn).  A quiet
pass costs two ``stat`` calls; one after ``done/`` changed, at most ROTATION_NAMES
lookups; one after ``failed/`` changed, a ``stat`` of each name that changed (a
listing of ``failed/`` where no Presence follows it, or it lost events).

A stamp read less than :data:`RACY_NS` after the folder's last change may miss a change
made in the same tick of the filesystem's clock (or second, where timestamps are that
coarse), so the next pass looks again.  The filesystem's times are compared with the
wall clock, not the spool's (injectable) clock.  On a network filesystem a client's
cached attributes delay what a stamp shows by their cache time.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass
from pathlib import Path

from spool.ids import JOB_SUFFIX
from spool.layout import ORIG_SUFFIX, is_kept_name
from spool.presence import Presence

ROTATION_NAMES = 1000
"""Names of ``failed/`` a pass checks after ``done/`` changed (about 2 ms of lookups)."""
RACY_NS = 2_000_000_000
"""How long after a folder's change its stamp is not trusted to show the next one."""

Stamp = tuple[int, int, int, int]


@dataclass(slots=True)
class Plan:
    """What one pass checks: ``names`` of ``failed/`` (some perhaps gone), and every name
    of ``failed/`` when this pass listed it (else None)."""

    names: list[str]
    listed: set[str] | None


class Recheck:
    """The names of ``failed/`` each pass checks (see the module docstring)."""

    def __init__(self, failed: Path, done: Path, presence: Presence | None = None) -> None:
        """``presence``: one that follows ``failed/``, to learn its changes from."""
        self.failed = failed
        self.done = done
        self.presence = presence
        self._index: int | None = None  # failed/'s in presence.folders, once tracked
        self._inodes: dict[str, int] | None = None  # failed/'s names when last listed
        self._stamps: tuple[Stamp | None, Stamp | None] = (None, None)
        self._rotation: list[str] = []  # failed/'s names, sorted
        self._after = ""  # the rotation goes on after this name
        self._owed = 0  # names the rotation still checks since done/ last changed

    def full(self) -> Plan:
        """Every name of ``failed/`` (the start-up pass, and whenever asked)."""
        failed_stamp, done_stamp = folder_stamp(self.failed), folder_stamp(self.done)
        self._track()  # before the listing: a change after it is among the events
        inodes = _listing(self.failed)
        self._relisted(inodes)
        self._owed = 0
        self._stamps = (failed_stamp, done_stamp)
        return Plan(list(inodes), set(inodes))

    def next(self) -> Plan:
        """The names a periodic pass checks: those changed in ``failed/`` since the last
        pass, and the rotation's share while ``done/`` has changed."""
        if self._inodes is None:
            return self.full()
        failed_stamp, done_stamp = folder_stamp(self.failed), folder_stamp(self.done)
        tracked = self._index is not None
        changed = self._events()
        listed = None
        if changed is not None:
            self._learn(changed)
        elif tracked or failed_stamp is None or failed_stamp != self._stamps[0]:
            # No events to tell (or some were lost): list failed/ and compare.
            inodes = _listing(self.failed)
            before = self._inodes
            changed = {name for name, ino in inodes.items() if before.get(name) != ino}
            changed.update(name for name in before if name not in inodes)
            self._relisted(inodes)
            listed = set(inodes)
        names: set[str] = set()
        for name in changed or ():
            if is_kept_name(name):
                names.add(name)  # its record is named after the id it carries
                continue
            job_id = _stem(name)
            names.update((job_id + JOB_SUFFIX, job_id + ORIG_SUFFIX))
        if done_stamp is None or done_stamp != self._stamps[1]:
            self._owed = len(self._rotation)
        names.update(self._turn())
        self._stamps = (failed_stamp, done_stamp)
        return Plan(sorted(names), listed)

    def _track(self) -> None:
        presence = self.presence
        folder = str(self.failed)
        if presence is not None and folder in presence.folders:
            index = presence.folders.index(folder)
            presence.refresh()
            self._index = index if presence.track(index) else None

    def _events(self) -> set[str] | None:
        """The names changed in ``failed/`` since the last pass, by the presence's
        events; None when there are none to tell."""
        if self.presence is None or self._index is None:
            return None
        self.presence.refresh()
        changed = self.presence.take_changed(self._index)
        if changed is None and not self.presence.track(self._index):
            self._index = None  # no longer followed: the stamps tell from now on
        return changed

    def _learn(self, changed: set[str]) -> None:
        """Bring the listing and the rotation up to date with the ``changed`` names."""
        inodes, rotation = self._inodes, self._rotation
        assert inodes is not None
        for name in changed:
            try:
                ino: int | None = os.lstat(self.failed / name).st_ino
            except FileNotFoundError:
                ino = None
            known = name in inodes
            if ino is not None:
                inodes[name] = ino
                if not known:
                    bisect.insort(rotation, name)
            elif known:
                del inodes[name]
                at = bisect.bisect_left(rotation, name)
                if rotation[at:at + 1] == [name]:
                    del rotation[at]

    def _relisted(self, inodes: dict[str, int]) -> None:
        if self._inodes is None or self._inodes.keys() != inodes.keys():
            self._rotation = sorted(inodes)
        self._inodes = inodes

    def _turn(self) -> list[str]:
        """The rotation's next names, after the last one checked, wrapping round."""
        rotation = self._rotation
        count = min(self._owed, ROTATION_NAMES, len(rotation))
        if count == 0:
            self._owed = 0
            return []
        start = bisect.bisect_right(rotation, self._after)
        names = (rotation[start:start + count]
                 + rotation[:max(0, start + count - len(rotation))])
        self._after = names[-1]
        self._owed -= count
        return names


def _stem(name: str) -> str:
    for suffix in (JOB_SUFFIX, ORIG_SUFFIX):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def folder_stamp(folder: Path) -> Stamp | None:
    """The folder's stamp; None when it is missing or may not show a change made now."""
    now_ns = time.time_ns()  # before the stat: a change after it is newer than this
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return None
    if max(st.st_mtime_ns, st.st_ctime_ns) >= now_ns - RACY_NS:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _listing(folder: Path) -> dict[str, int]:
    """Name -> inode of every entry of ``folder`` (read with the names, no ``stat``)."""
    try:
        with os.scandir(folder) as it:
            return {entry.name: entry.inode() for entry in it}
    except FileNotFoundError:
        return {}
