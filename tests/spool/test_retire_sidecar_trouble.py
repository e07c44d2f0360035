"""A run whose transition landed (its record published, or its requeue written, and its
``running/`` file gone) but whose sidecar's removal the disk then refused (an EIO on the
unlink of ``progress/<id>.json``: :class:`~spool.errors.SpoolIOError`) is finished: the
sidecar is left for recovery's pass, as :meth:`Spool.release` leaves them, the lease
closed.  Raised, the processor kept the run and did the whole transition again after its
pause: a requeue was by then the job pending (or another processor's claim of it in
``running/``), so the retry found no requeue of its own and failed the run, its
``failed/`` record beside the job queued or running again, and retired that running
file from under its claimant; a record replaced whatever another run of the id had
recorded since.  The claim's descriptor stayed open meanwhile."""

from __future__ import annotations

import errno
import os

import pytest
from spoolkit import done_record, listing, locate, submit

from spool.errors import SpoolIOError
from spool.fsops import StrPath
from spool.models import Job
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _progress_unlink_failing(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> str:
    progress = spool.layout.progress_str("x")
    with open(progress, "wb") as out:
        out.write(b'{"fraction": 0.5}')
    real_unlink = spool.mover.unlink

    def unlink(path: StrPath, **kw: bool) -> bool:
        if os.fspath(path) == progress:
            raise SpoolIOError("cannot remove x.json: Input/output error") from OSError(
                errno.EIO, os.strerror(errno.EIO), progress)
        return real_unlink(path, **kw)

    monkeypatch.setattr(spool.mover, "unlink", unlink)
    return progress


def test_a_requeue_whose_progress_file_cannot_be_removed_is_done(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x", max_attempts=3)
    claim = spool.claim("x")
    assert claim is not None
    progress = _progress_unlink_failing(spool, monkeypatch)
    job = Job.model_validate_json(claim.data).model_copy(update={"attempts": 1})
    assert spool.requeue(claim, job)
    monkeypatch.undo()
    assert claim.closed
    assert locate(spool.layout, "x") == [JobState.PENDING]
    assert listing(spool.layout.folder(JobState.FAILED)) == []
    assert os.path.exists(progress)  # left for recovery's pass


def test_a_completion_whose_progress_file_cannot_be_removed_is_done(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    _progress_unlink_failing(spool, monkeypatch)
    spool.complete(claim, done_record(claim, "ok"))
    monkeypatch.undo()
    assert claim.closed
    assert locate(spool.layout, "x") == [JobState.DONE]

