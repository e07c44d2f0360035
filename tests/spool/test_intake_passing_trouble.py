"""Intake's look-up of a drop failing for a passing reason (ESTALE: an NFS handle gone
stale; ENOMEM: kernel memory short) is spool trouble the processor waits out, the name
judged once it passes, as the open's same errors are.  Raised raw (an ``OSError``), it got
out of the processor's loop: a traceback, exit 1.  An EIO is the file's own trouble."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from spoolkit import make_spool, submit

from spool.clock import SystemClock
from spool.errors import SpoolIOError, UnreadableDrop
from spool.fsops import StrPath
from spool.intake import Intake, Verdict
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.parametrize(("code", "kind"), [(errno.ESTALE, SpoolIOError),
                                            (errno.ENOMEM, SpoolIOError),
                                            (errno.EIO, UnreadableDrop)],
                         ids=["ESTALE", "ENOMEM", "EIO"])
def test_a_drop_not_looked_up_for_now_is_left_for_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
        kind: type[SpoolIOError]) -> None:
    spool = make_spool(tmp_path / "spool")
    submit(spool, "j1")
    path = spool.layout.job_str(JobState.PENDING, "j1")
    intake = Intake(spool, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock())
    real_lstat = os.lstat

    def lstat(p: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(p) == path:
            raise OSError(code, os.strerror(code), path)
        return real_lstat(p, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(kind, match=r"cannot look up j1\.json") as raised:
        intake.inspect("j1.json")
    monkeypatch.undo()
    assert isinstance(raised.value, UnreadableDrop) == (kind is UnreadableDrop)
    assert intake.inspect("j1.json").verdict is Verdict.READY


def test_a_bad_drop_whose_ids_run_cannot_be_looked_up_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad drop of an id whose ``running/`` file the disk fails (EIO) is left, said as
    that file's trouble.  ``os.path.lexists`` took the error for no run: the drop was
    quarantined beside the run, whose record, once it ended, erased it with its bytes."""
    spool = make_spool(tmp_path / "spool")
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    try:
        pending = spool.layout.job(JobState.PENDING, "x")
        pending.write_bytes(b'{"tool": "echo", "priority": "high"}')
        running = spool.layout.job_str(JobState.RUNNING, "x")
        intake = Intake(spool, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock())
        real_lstat = os.lstat

        def lstat(p: StrPath, *args: object, **kw: object) -> os.stat_result:
            if os.fspath(p) == running:
                raise OSError(errno.EIO, os.strerror(errno.EIO), running)
            return real_lstat(p, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "lstat", lstat)
        with pytest.raises(UnreadableDrop, match=r"cannot look up running/x\.json"):
            intake.inspect("x.json")
        monkeypatch.undo()
        assert pending.exists()
        assert os.listdir(spool.layout.folder(JobState.FAILED)) == []
        assert intake.inspect("x.json").verdict is Verdict.WAITING  # the run ends first
    finally:
        claim.close()
