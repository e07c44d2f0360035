"""A cancel request names the run it is for (``run_inode``), and a processor acts on it
only for that job file.

A client that saw run R1 running wrote its request as R1 ended.  When the drop of the
id that waited behind R1 was claimed at once, the processor cancelled that run instead
(test_daemon_lanes.py); when the drop still waited in the processor's ready queue (its
lane full, its ``not_before`` ahead, an I/O pause), the processor cancelled it there,
pending.  A request naming another file is dropped; one naming none (an older client's,
a pending job's) is for whatever the id holds, as before.
"""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path

import orjson
import pytest
from spoolkit import done_record, listing, make_spool, submit

from processor.cancel_requests import CancelRequests
from processor.queues import Queues
from processor.tools import ExecutionMode
from spool.client import Client
from spool.clock import SystemClock
from spool.errors import ConflictError
from spool.intake import Intake
from spool.models import Record
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def _handle(spool: Spool, job_id: str) -> None:
    """What a processor with ``job_id``'s drop ready in its queue does with its request."""
    queues = Queues(lambda tool: ExecutionMode.FAST)
    candidate = Intake(spool, max_job_bytes=1 << 20, settle_s=0,
                       clock=SystemClock()).inspect(f"{job_id}.json").candidate
    assert candidate is not None
    queues.add(candidate)
    CancelRequests(spool, types.SimpleNamespace(cancels={job_id}), queues,  # type: ignore[arg-type]
                   runs={}, fast=None, executor=None,  # type: ignore[arg-type]
                   finish=lambda *args: None, io_trouble=lambda exc: None).handle()


@pytest.mark.parametrize("named", ["the run that ended", "no run"])
def test_a_request_for_a_run_that_ended_spares_the_drop_waiting_behind_it(
        tmp_path: Path, named: str) -> None:
    spool = make_spool(tmp_path / "spool")
    submit(spool, "x")
    first = spool.claim("x")
    assert first is not None
    submit(spool, "x", params={"drop": 2})
    inode = os.lstat(spool.layout.job_str(R, "x")).st_ino  # as Client.cancel reads it
    spool.complete(first, done_record(first, "the first run"))  # it ends meanwhile
    request = b'{"run_inode": %d}' % inode if named == "the run that ended" else b"{}"
    spool.layout.cancel_request("x").write_bytes(request)

    _handle(spool, "x")

    if named == "the run that ended":
        assert orjson.loads(spool.layout.job(P, "x").read_bytes())["params"] == {"drop": 2}
        assert listing(spool.layout.cancel) == []
    else:  # an older client's request: for whatever the id holds, as before
        assert listing(spool.layout.folder(P)) == []
        assert orjson.loads(spool.layout.job(F, "x").read_bytes())["error"]["type"] == (
            "cancelled")


def test_a_cancel_as_the_run_ends_names_no_other_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client read the job running, and the run ended before it looked at the file
    in ``running/``: it wrote a request naming no run, which the processor then applied
    to whatever the id held next.  It looks again: the job finished, a conflict."""
    spool = make_spool(tmp_path / "spool")
    client = Client(spool.layout, spool.mover)
    submit(spool, "x")
    first = spool.claim("x")
    assert first is not None
    real_peek = Client.peek
    ended: list[bool] = []

    def peek_then_end(self: Client, job_id: str) -> Record:
        record = real_peek(self, job_id)
        if not ended:  # the run ends right after its state was read
            ended.append(True)
            spool.complete(first, done_record(first, "the first run"))
        return record

    monkeypatch.setattr(Client, "peek", peek_then_end)
    with pytest.raises(ConflictError, match="already finished"):
        client.cancel("x", wait_s=0)
    assert listing(spool.layout.cancel) == []


def test_a_request_that_cannot_be_read_cancels_nothing_yet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of descriptors, the request naming the run that ended could not be opened:
    read as naming none, it cancelled the drop waiting behind that run.  It is now the I/O
    pause's trouble: nothing is cancelled, and the request is looked at again after."""
    from spool import entries  # noqa: PLC0415 - only this test
    from spool.errors import SpoolIOError  # noqa: PLC0415
    from spool.lease import open_nofollow  # noqa: PLC0415

    spool = make_spool(tmp_path / "spool")
    submit(spool, "x")
    first = spool.claim("x")
    assert first is not None
    submit(spool, "x", params={"drop": 2})
    inode = os.lstat(spool.layout.job_str(R, "x")).st_ino
    spool.complete(first, done_record(first, "the first run"))
    request = spool.layout.cancel_request("x")
    request.write_bytes(b'{"run_inode": %d}' % inode)

    def short(target: str | os.PathLike[str]) -> int:
        if os.fspath(target) == os.fspath(request):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(target))
        return open_nofollow(target)

    monkeypatch.setattr(entries, "open_nofollow", short)
    queues = Queues(lambda tool: ExecutionMode.FAST)
    candidate = Intake(spool, max_job_bytes=1 << 20, settle_s=0,
                       clock=SystemClock()).inspect("x.json").candidate
    assert candidate is not None
    queues.add(candidate)
    troubles: list[SpoolIOError] = []
    cancels = {"x"}
    CancelRequests(spool, types.SimpleNamespace(cancels=cancels), queues,  # type: ignore[arg-type]
                   runs={}, fast=None, executor=None,  # type: ignore[arg-type]
                   finish=lambda *args: None, io_trouble=troubles.append).handle()

    assert orjson.loads(spool.layout.job(P, "x").read_bytes())["params"] == {"drop": 2}
    assert listing(spool.layout.folder(F)) == []
    assert [str(t) for t in troubles] == [
        "cannot read the cancel request of x: Too many open files"]
    assert cancels == {"x"} and request.exists()
