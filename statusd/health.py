"""What statusd can see of its spool: the state folders there or gone, listed or
failing, and the job files the disk could not stat.

Owns: the look for the folders before each read of the spool (:meth:`SpoolHealth.here`),
the state ``/healthz`` and the metrics say of the spool (:meth:`SpoolHealth.status`),
and the log lines that say each of these troubles once, and their end.

Guarantees: a spool whose folders are all gone, or that the disk fails to show, is
said so and never read as empty (the tracker keeps its index as it was); the disk
failing to tell (EIO) is never said to be a spool gone; each trouble is logged once
an outage, not at each rescan.
"""

from __future__ import annotations

import logging
import os
import stat

from spool.fsops import FAILING_IO, NO_DESCRIPTOR, REFUSED
from spool.layout import Layout
from spool.states import JobState

log = logging.getLogger("spoolq.statusd")


class SpoolHealth:
    """The troubles of one spool's folders, as the last looks found them."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.spool_missing = False
        """The spool's folders were not all there at the last look (see :meth:`here`)."""
        self.spool_trouble: OSError | None = None
        """Why the spool's folders could not be looked at (EIO), while that lasts: they
        were said to be gone ("unmounted, moved?"), where the disk failed to tell."""
        self._spool_said: str | None = None  # what the log last said of the folders
        self.came_back = False
        """The folders are back since the last look found none (see :meth:`here`): set in
        a worker thread, taken by the tracker's loop, which starts its feed again."""
        self.scan_trouble: OSError | None = None
        """The error (EIO, EACCES) that failed the last rescan's listing of a state folder,
        until a rescan goes through.  The folders' stat can go through (the inodes
        cached) while their listing fails: every rescan failed, the index stood still,
        and /healthz said ok."""
        self._unreadable_said: set[str] = set()
        """The ids the last scan left out (see :meth:`say_unreadable`)."""

    def status(self) -> str:
        """What /healthz (and the metrics' ``spoolq_statusd_spool_ok``) say of the spool:
        ``ok``, ``spool_missing`` (no state folder there) or ``spool_unreadable`` (the
        disk fails to show or list them); the index is kept as it was meanwhile."""
        if self.spool_missing:
            # The disk failing to tell (EIO) is not a spool gone: an operator looked for an
            # unmount where a disk was failing.
            return "spool_unreadable" if self.spool_trouble is not None else "spool_missing"
        return "ok" if self.scan_trouble is None else "spool_unreadable"

    def here(self) -> bool:
        """Whether the spool is there: any of its state folders.  When none is (the
        spool unmounted, moved away, a restore under way) the index stays as it was and
        /healthz says so: emptied, it showed a healthy empty spool, and when the folders
        came back every record was counted again in the metrics as a new transition.
        One folder removed (``rm -r pending``) takes its jobs with it, as before."""
        here, trouble = _folders_here(self.layout)
        said = None if here else (str(trouble) if trouble is not None else "missing")
        if said != self._spool_said:
            if here:
                log.warning("the spool's folders are back in %s: following it again",
                            self.layout.root)
                self.came_back = self._spool_said is not None
            elif trouble is not None:
                log.error("cannot look at the spool's folders in %s (%s): the index is "
                          "kept as it was until they can be", self.layout.root, trouble)
            else:
                log.error("no state folder in %s: the spool is gone (unmounted, moved?); "
                          "the index is kept as it was until it is back", self.layout.root)
        self._spool_said = said
        self.spool_missing = not here
        self.spool_trouble = None if here else trouble
        return here

    def listing_failed(self, exc: OSError) -> None:
        """A rescan's listing of the folders failed with ``exc``.  Not out of descriptors
        (that passes): the disk failing (EIO), or a folder statusd may no longer list
        (EACCES: a restore that left it root's), which /healthz said ok while the index
        stood still, a warning at each rescan."""
        if exc.errno not in NO_DESCRIPTOR:
            if self.scan_trouble is None:  # said once an outage, not at each rescan
                log.error("cannot list the spool's folders in %s (%s): the index is "
                          "kept as it was until they can be", self.layout.root, exc)
            self.scan_trouble = exc

    def listed(self) -> None:
        """A rescan listed the folders."""
        if self.scan_trouble is not None:
            log.warning("the spool's folders in %s can be listed again", self.layout.root)
            self.scan_trouble = None

    def say_unreadable(self, ids: set[str]) -> None:
        """A warning naming the ids a scan left out because the disk could not stat one
        of their files, when one is new to it; an info line once a scan leaves none out.
        Said at each rescan (every ``SPOOL_SCAN_S``: 17,000 lines a day for one bad
        sector), and on the quiet time of the read failures' warning, which it hid."""
        if not ids:
            if self._unreadable_said:
                log.info("the job files that could not be looked at can all be looked "
                         "at again")
                self._unreadable_said = set()
            return
        if not ids <= self._unreadable_said:
            shown = ", ".join(sorted(ids)[:5]) + (" ..." if len(ids) > 5 else "")
            log.warning("%d job files could not be looked at (I/O error), left as they "
                        "were: %s", len(ids), shown)
        self._unreadable_said = set(ids)

    def say_unreadable_too(self, ids: set[str]) -> None:
        """:meth:`say_unreadable` of ``ids`` and those said before (a pass that ended
        early did not look at them all)."""
        self.say_unreadable(ids | self._unreadable_said)


def _folders_here(layout: Layout) -> tuple[bool, OSError | None]:
    """Whether any state folder is there; when none is known to be, the error that kept
    one from being looked at (a failing disk: ``os.path.isdir`` took EIO for "none")."""
    trouble = None
    for state in JobState:
        try:
            if stat.S_ISDIR(os.stat(layout.folder(state)).st_mode):
                return True, None
        except OSError as exc:  # not there: "none"; not for this user: trouble, as EIO is
            if exc.errno in FAILING_IO or exc.errno in REFUSED:
                trouble = exc
    return False, trouble
