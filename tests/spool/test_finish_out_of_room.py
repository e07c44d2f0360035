"""A run's record refused for want of room (ENOSPC, EDQUOT): the run's progress file is
dropped and the record written again, as the inode it holds may be the one the record
needs (QA h315: the processor paused for good, the inode that would free it its own).
Any other error (EIO) is raised as it came, the progress file left where it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from spoolkit import done_record, locate, submit

from spool.claim import Claim
from spool.errors import SpoolIOError
from spool.fsops import StrPath
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _refuse_records_while(spool: Spool, monkeypatch: pytest.MonkeyPatch, err: int,
                          progress: Path) -> list[str]:
    """The done record's publish fails with ``err`` while ``progress`` is there (the
    inode it needs); every other publish, and that one once it has gone, goes through."""
    publish = spool.mover.publish
    refused: list[str] = []
    done = os.fspath(spool.layout.job(JobState.DONE, "x"))

    def publish_unless_full(dest: StrPath, data: bytes, **kw: object) -> bool:
        if os.fspath(dest) == done and progress.exists():
            refused.append(os.fspath(dest))
            raise SpoolIOError("cannot publish x.json: " + os.strerror(err)) from OSError(
                err, os.strerror(err), os.fspath(dest))
        return publish(dest, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(spool.mover, "publish", publish_unless_full)
    return refused


def _running_with_progress(spool: Spool) -> tuple[Claim, Path]:
    """Job x claimed, its run's progress file written."""
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    progress = Path(spool.layout.progress_str("x"))
    progress.write_bytes(b'{"fraction": 0.5}')
    return claim, progress


def test_a_record_refused_for_want_of_room_is_written_once_the_progress_file_goes(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    claim, progress = _running_with_progress(spool)
    refused = _refuse_records_while(spool, monkeypatch, errno.ENOSPC, progress)
    spool.complete(claim, done_record(claim, result=1))
    assert len(refused) == 1, "refused once, then written"
    assert locate(spool.layout, "x") == [JobState.DONE]
    assert not progress.exists()


def test_a_record_refused_by_a_failing_disk_is_raised_and_the_progress_file_stays(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    claim, progress = _running_with_progress(spool)
    _refuse_records_while(spool, monkeypatch, errno.EIO, progress)
    try:
        with pytest.raises(SpoolIOError, match="Input/output error"):
            spool.complete(claim, done_record(claim, result=1))
    finally:
        claim.close()
    assert locate(spool.layout, "x") == [JobState.RUNNING]
    assert progress.read_bytes() == b'{"fraction": 0.5}'
