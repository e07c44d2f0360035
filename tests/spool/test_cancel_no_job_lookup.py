"""A cancel of a pending file that holds no job, while its id's ``running/`` file cannot
be looked up (EIO: a bad sector under it), is refused with the file left pending.
``os.path.lexists`` took the error for no run: the cancel kept the bytes as
``failed/<id>.orig``, which the run's record, once it ended, would take for its
superseded record's original and remove: the bytes lost."""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import listing, submit

from spool.errors import UnreadableDrop
from spool.fsops import StrPath
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_cancel_of_no_job_whose_run_cannot_be_looked_up_is_refused(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x")
    claim = spool.claim("x")  # x runs
    assert claim is not None
    try:
        data = b'{"tool": "echo", "params": '
        pending = spool.layout.job(JobState.PENDING, "x")
        pending.write_bytes(data)  # a new drop of x, no job
        running = spool.layout.job_str(JobState.RUNNING, "x")
        real_lstat = os.lstat

        def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
            if os.fspath(path) == running:
                raise OSError(errno.EIO, os.strerror(errno.EIO), running)
            return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "lstat", lstat)
        with pytest.raises(UnreadableDrop, match="x is not cancelled: cannot look up running/"):
            spool.cancel_pending("x")
        monkeypatch.undo()
        assert pending.read_bytes() == data
        assert listing(spool.layout.folder(JobState.FAILED)) == []
        assert listing(spool.layout.stage) == [] and listing(spool.layout.tmp) == []
    finally:
        claim.close()
