"""A cancel of a pending job, SIGKILLed (strace) once it staged the job, settled by
recovery after a record of the id was written meanwhile.

Recovery took any record of the id newer than the staged file for the cancel's own and
removed the staged job: with a run of the id going on when a client dropped it again and
cancelled that drop, the run's record, once it ended, made the new drop vanish from every
folder with no record (a review).  Now only the cancel's own ``cancelled`` record counts
as the cancel done; another record leaves the drop kept, bytes and all, under an id of
its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from spoolkit import done_record, kill_in_actor, listing, make_spool, read_json, strace_path

from spool.models import Job
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED
RENAMES = "rename,renameat,renameat2"


@pytest.fixture(autouse=True)
def _needs_strace() -> None:
    if strace_path() is None:
        pytest.skip("needs strace, allowed to trace")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return make_spool(tmp_path / "spool", FsyncMode.ALWAYS)


def _staged(spool: Spool) -> list[str]:
    return [n for n in listing(spool.layout.stage) if n.startswith("cancel-x.")]


def test_a_cut_short_cancel_of_a_redrop_survives_the_record_of_the_run_before_it(
        spool: Spool) -> None:
    layout = spool.layout
    spool.submit(Job(tool="echo", params={"run": 1}), "x")
    claim = spool.claim("x")
    assert claim is not None  # run 1 goes on
    spool.submit(Job(tool="echo", params={"run": 2, "important": True}), "x")
    kept_bytes = layout.job(P, "x").read_bytes()
    # spoolq cancel x, killed before its second rename (the record's): the drop staged.
    kill_in_actor(layout.root, "cancel", "x", syscalls=RENAMES, nth=2)
    assert len(_staged(spool)) == 1 and listing(layout.folder(P)) == []
    spool.complete(claim, done_record(claim, {"message": "run 1"}))  # run 1 ends

    Recovery(spool).scan()
    assert _staged(spool) == []
    assert read_json(layout.job(D, "x"))["params"] == {"run": 1}  # run 1's record stands
    [orig] = [n for n in listing(layout.folder(F)) if n.endswith(".orig")]
    assert (layout.folder(F) / orig).read_bytes() == kept_bytes, "the re-drop was lost"
    record = read_json(layout.folder(F) / orig.replace(".orig", ".json"))
    assert record["error"]["type"] == "invalid_job"
    assert "its cancel was cut short" in record["error"]["message"], record
    assert record["source"]["name"] == "x.json"
    assert not Recovery(spool).scan().changed


def test_a_cancel_killed_after_its_record_is_completed_by_recovery(spool: Spool) -> None:
    layout = spool.layout
    spool.submit(Job(tool="echo", params={"run": 1}), "x")
    # Killed at its first unlink: the staged job's, once its record was placed.
    kill_in_actor(layout.root, "cancel", "x", syscalls="unlink,unlinkat", nth=1)
    assert len(_staged(spool)) == 1
    cancelled = layout.job(F, "x").read_bytes()
    assert read_json(layout.job(F, "x"))["error"]["type"] == "cancelled"

    report = Recovery(spool).scan()
    assert _staged(spool) == [] and listing(layout.folder(P)) == []
    assert layout.job(F, "x").read_bytes() == cancelled  # the cancel stands, once
    assert listing(layout.folder(F)) == ["x.json"] and report.restored == ["x"]
