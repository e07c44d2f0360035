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


def test_the_lookup_of_originals_costs_what_lexists_did_when_the_disk_answers(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id gone for good (a purge removes thousands) has its original looked up twice:
    :func:`~spool.fsops.is_there`'s message, built at each of those lookups whatever
    came of them, made them some 5% slower than ``os.path.lexists``.  It is asked only once
    the disk fails the plain ``lstat``; the answers stay those of the disk."""
    for job_id in ("purged", "quarantined"):
        submit(spool, job_id)
    loader = Loader(spool.layout)
    try:
        known = {job_id: stamp for job_id in ("purged", "quarantined")
                 if (stamp := loader.current(job_id)) is not None}
        os.unlink(spool.layout.job(JobState.PENDING, "purged"))
        os.rename(spool.layout.job(JobState.PENDING, "quarantined"),
                  spool.layout.original_str("quarantined"))

        def is_there(path: StrPath, what: str) -> bool:
            raise AssertionError(f"looked up with a message built: {what}")

        monkeypatch.setattr("statusd.loader.is_there", is_there)
        failed: dict[str, SpoolIOError] = {}
        changes = loader.refresh(["purged", "quarantined"], known, failed)
        assert sorted(changes) == [("purged", Absent.GONE), ("quarantined", Absent.MOVING)]
        assert failed == {}
    finally:
        loader.close()
