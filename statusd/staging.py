"""Which jobs a cancel, a retry or a quarantine holds in ``tmp/`` or ``stage/`` now.

Owns: following the names in those two folders for statusd (inotify through a
:class:`spool.presence.Presence` where one can follow the folder, a listing
elsewhere) and reading job ids out of spoolq's staging names
(:func:`spool.layout.parse_staging`).  :class:`statusd.loader.Loader` asks it to
tell an id that left every state folder on a move from one removed for good.

Guarantees: nothing is followed or listed until the first question (most spools
never remove a record); the answer is what a listing would say at the moment it is
asked; a ``tmp/`` that cannot be listed answers None (nothing tells a move from a
removal), a ``stage/`` that cannot be (missing, another user's) holds no id.  One
thread at a time asks (the tracker's worker).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from spool.layout import Layout, parse_staging
from spool.presence import Presence

STAGED_ACTIONS = ("cancel", "retry", "quarantine")
"""The tags of the staging names (``stage/`` or ``tmp/<action>-<id>.<pid>.<hex>.tmp``,
see :meth:`spool.fsops.Mover.action_staging`) under which :mod:`spool.transitions`
moves a job's file between two state folders."""


class StagedMoves:
    """The ids whose file is staged for a move in one spool; :meth:`close` when done."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._followers: dict[str, Presence | None] = {}
        """``tmp/``'s and ``stage/``'s names kept current by inotify, once a removal was
        looked into (None: that folder cannot be followed)."""

    def close(self) -> None:
        for presence in self._followers.values():
            if presence is not None:
                presence.close()
        self._followers.clear()

    def ids(self) -> set[str] | None:
        """The ids whose file a cancel, retry or quarantine holds in ``stage/`` or
        ``tmp/`` now (None when ``tmp/`` cannot be listed; a ``stage/`` that cannot be,
        missing or another user's, holds none that statusd could know of).

        Their names come from a :class:`spool.presence.Presence` where one can follow
        the folder: once its events so far are read, its names are what a listing would
        say now, without the listing (two per removal: a purge of records one by one
        listed ``tmp/`` twice per record, h67).  Elsewhere, or once it stops following
        (the folder replaced), the folder is listed.
        """
        names: list[str] = []
        for folder in (self.layout.tmp, self.layout.stage):
            found = self._names_in(os.fspath(folder))
            if found is None and folder == self.layout.tmp:
                return None
            names.extend(found or ())
        staged = set()
        for name in names:
            if (parsed := parse_staging(name)) is not None:
                action, _, job_id = parsed[0].partition("-")  # <action>-<id>
                if action in STAGED_ACTIONS:
                    staged.add(job_id)
        return staged

    def _names_in(self, folder: str) -> Iterable[str] | None:
        if folder not in self._followers:
            presence = Presence([folder])
            self._followers[folder] = presence if presence.start() else None
        follower = self._followers[folder]
        if follower is not None:
            follower.refresh()
            if (names := follower.names(0)) is not None:
                return names
        try:
            return os.listdir(folder)
        except OSError:
            return None
