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
