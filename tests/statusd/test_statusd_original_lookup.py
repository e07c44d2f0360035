"""An indexed id found in no state folder whose quarantined original the disk cannot
look up (EIO on ``failed/<id>.orig``): a quarantine moves the drop there first and
writes its record after, so the original's lookup is what tells that move from a
removal.  ``os.path.lexists`` took the error for no original: the id was taken for
gone, removed from the index at once, its task streams ended and a GET answered 404
for a job whose record was on its way.  It is kept as it was, its trouble reported as
any failed lookup's, and looked at again."""

from __future__ import annotations

import errno
import os

import pytest
from statusdkit import submit

from spool.errors import SpoolIOError
from spool.fsops import StrPath
from spool.states import JobState
from spool.transitions import Spool
from statusd.loader import Absent, Loader, failed_file


def test_an_id_whose_original_cannot_be_looked_up_is_kept_not_gone(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "q")
    loader = Loader(spool.layout)
    try:
        stamp = loader.current("q")
        assert stamp is not None
        original = spool.layout.original_str("q")
        os.rename(spool.layout.job(JobState.PENDING, "q"), original)  # a quarantine's move
        real_lstat = os.lstat

        def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
            if os.fspath(path) == original:
                raise OSError(errno.EIO, os.strerror(errno.EIO), original)
            return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

        failed: dict[str, SpoolIOError] = {}
        monkeypatch.setattr(os, "lstat", lstat)
        changes = loader.refresh(["q"], {"q": stamp}, failed)
        monkeypatch.undo()
        assert ("q", Absent.GONE) not in changes
        assert changes == [] and list(failed) == ["q"] and failed_file(failed["q"])
        assert loader.refresh(["q"], {"q": stamp}, {}) == [("q", Absent.MOVING)]
    finally:
        loader.close()
