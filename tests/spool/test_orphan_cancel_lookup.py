"""An orphan (its processor died mid-run) whose cancel request the disk cannot look up
(EIO) is left in ``running/`` and said, settled at a later pass: ``os.path.lexists``
took the error for no request, the job was requeued, and the request, naming the run
that ended, was then dropped by the processor: the job ran again, the cancel lost."""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import locate, read_json, submit

from spool.errors import ErrorType
from spool.fsops import StrPath
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_an_orphans_cancel_request_not_looked_up_leaves_it_for_later(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x", max_attempts=3)
    claim = spool.claim("x")
    assert claim is not None
    claim.close()  # its processor died: an orphan
    inode = os.lstat(spool.layout.job_str(JobState.RUNNING, "x")).st_ino
    request = spool.layout.cancel_str("x")
    with open(request, "wb") as out:
        out.write(b'{"run_inode": %d}' % inode)  # as Client.cancel writes it
    real_lstat = os.lstat
    looks = [0]

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == request and not looks[0]:  # the bad sector's one failure
            looks[0] += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO), request)
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    report = Recovery(spool).scan()
    monkeypatch.undo()
    assert report.requeued == [] and report.unread_orphans == ["x"]
    assert any("cancel request of x" in said for said in report.unreadable), report.unreadable
    # said with what it holds: the job itself, and its id (said once by the processor)
    assert any("running/x.json is left there" in said for said in report.unreadable)
    assert locate(spool.layout, "x") == [JobState.RUNNING]
    assert os.path.exists(request)
    assert Recovery(spool).scan().cancelled == ["x"]  # the disk reads again
    record = read_json(spool.layout.job(JobState.FAILED, "x"))
    assert record["error"]["type"] == ErrorType.CANCELLED.value
