"""A run's sidecar (its progress file) that the disk cannot look up (EIO: a bad sector
under it) is that file's trouble.  Once the run's record landed, complete() raised the
lstat's OSError raw: the processor crashed (a traceback, exit 1) with the lease open.  And
recovery's sidecar pass raised it out of the pass, a pause at each pass for as long as the
sector stayed bad; the file is left and said there, tried again at each pass."""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import done_record, listing, submit

from spool.errors import SpoolIOError
from spool.fsops import StrPath
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _failing_lstat(path: str) -> object:
    real_lstat = os.lstat

    def lstat(p: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(p) == path:
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return real_lstat(p, *args, **kw)  # type: ignore[arg-type]
    return lstat


def test_a_run_whose_progress_file_cannot_be_looked_up_completes(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    progress = spool.layout.progress_str("x")
    with open(progress, "wb") as out:
        out.write(b'{"fraction": 0.5}')
    monkeypatch.setattr(os, "lstat", _failing_lstat(progress))
    spool.complete(claim, done_record(claim, "ok"))
    monkeypatch.undo()
    assert claim.closed
    assert listing(spool.layout.folder(JobState.DONE)) == ["x.json"]
    assert listing(spool.layout.folder(JobState.RUNNING)) == []


def test_a_leftover_progress_file_that_cannot_be_looked_up_is_said_and_left(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    progress = spool.layout.progress_str("gone")
    with open(progress, "wb") as out:
        out.write(b'{"fraction": 0.5}')  # of a run that ended long ago
    monkeypatch.setattr(os, "lstat", _failing_lstat(progress))
    report = Recovery(spool).scan()
    monkeypatch.undo()
    assert any("progress/gone.json" in said for said in report.unreadable), report.unreadable
    assert os.path.exists(progress)
    assert Recovery(spool).scan().removed == 1  # the disk reads again
    assert not os.path.exists(progress)


def test_a_leftover_progress_file_that_cannot_be_removed_is_said_and_left(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its unlink failing with EIO (SpoolIOError), as its lookup's: raised, it failed the
    pass, a pause at each pass for as long as the sector stayed bad."""
    progress = spool.layout.progress_str("gone")
    with open(progress, "wb") as out:
        out.write(b'{"fraction": 0.5}')  # of a run that ended long ago
    real_unlink = spool.mover.unlink

    def unlink(path: StrPath, **kw: bool) -> bool:
        if os.fspath(path) == progress:
            raise SpoolIOError("cannot remove gone.json: Input/output error") from OSError(
                errno.EIO, os.strerror(errno.EIO), progress)
        return real_unlink(path, **kw)

    monkeypatch.setattr(spool.mover, "unlink", unlink)
    report = Recovery(spool).scan()
    monkeypatch.undo()
    assert any("progress/gone.json" in said for said in report.unreadable), report.unreadable
    assert os.path.exists(progress)
    assert Recovery(spool).scan().removed == 1  # the disk writes again
