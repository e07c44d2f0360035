"""Recycled job inodes (``Mover(recycle=True)``, what the processor uses).

A finished job file is kept in ``stage/`` as a spare and the next record is
written into it, so a claim-and-complete creates and frees no inode.  These
tests pin down when that may happen: only for a regular file of this user
with one link that no other process has open, never in a way a reader or a
late writer could see, and never leaving a spare behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import FakeClock, done_record, listing, make_spool, read_json, read_line, submit

from spool.fsops import FILE_MODE, SPARE_TAG, Mover
from spool.models import Job
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

D, R = JobState.DONE, JobState.RUNNING


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Spool:
    return make_spool(tmp_path / "spool", clock=clock, recycle=True)


def spares(spool: Spool) -> list[str]:
    return [n for n in listing(spool.layout.stage) if n.startswith(SPARE_TAG + ".")]


def finish(spool: Spool, job_id: str, result: object = None) -> int:
    """Claim and complete ``job_id``; the inode its job file had."""
    claim = spool.claim(job_id)
    assert claim is not None
    inode = os.fstat(claim.fd).st_ino
    spool.complete(claim, done_record(claim, result))
    return inode


def test_the_job_file_becomes_the_next_record(spool: Spool) -> None:
    submit(spool, "a", params={"pad": "x" * 3000})  # longer than the record that reuses it
    submit(spool, "b")
    os.chmod(spool.layout.job(JobState.PENDING, "b"), 0o600)
    first = finish(spool, "a", "A")
    assert len(spares(spool)) == 1
    assert os.stat(spool.layout.stage / spares(spool)[0]).st_ino == first
    second = finish(spool, "b", "B")
    record = spool.layout.job(D, "b")
    assert os.stat(record).st_ino == first, "b's record was written into a's job file"
    assert read_json(record)["result"] == "B" and read_json(record)["id"] == "b"
    assert read_json(spool.layout.job(D, "a"))["result"] == "A"
    assert os.stat(spool.layout.stage / spares(spool)[0]).st_ino == second
    assert oct(os.stat(spool.layout.stage / spares(spool)[0]).st_mode & 0o7777) == oct(FILE_MODE)
    assert listing(spool.layout.folder(R)) == []
    spool.mover.drop_spares()
    assert listing(spool.layout.stage) == []


def test_a_job_file_another_process_holds_open_is_never_rewritten(spool: Spool) -> None:
    submit(spool, "held")
    submit(spool, "next")
    path = spool.layout.job(JobState.PENDING, "held")
    with subprocess.Popen(
            [sys.executable, "-c", "import os, sys\n"
             "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
             "print('open', flush=True)\n"
             "sys.stdin.readline()\n"
             "os.pwrite(fd, b'LATE WRITE', 0)\n", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as writer:
        assert writer.stdout is not None and writer.stdin is not None
        try:
            assert read_line(writer) == "open\n"
            finish(spool, "held", 1)
            assert spares(spool) == [], "a file open elsewhere must not be kept for reuse"
            finish(spool, "next", 2)
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert writer.wait(timeout=30) == 0
        finally:
            writer.kill()
    assert read_json(spool.layout.job(D, "held"))["result"] == 1
    assert read_json(spool.layout.job(D, "next"))["result"] == 2
    spool.mover.drop_spares()


def test_a_hard_linked_job_file_is_not_recycled(spool: Spool, tmp_path: Path) -> None:
    submit(spool, "linked")
    claim = spool.claim("linked")
    assert claim is not None
    outside = tmp_path / "outside-link"
    os.link(spool.layout.job(R, "linked"), outside)
    before = outside.read_bytes()
    spool.complete(claim, done_record(claim, "r"))
    assert spares(spool) == []
    assert outside.read_bytes() == before, "the other name still shows the job, untouched"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_a_job_file_of_another_user_is_not_recycled(spool: Spool) -> None:
    submit(spool, "foreign")
    os.chown(spool.layout.job(JobState.PENDING, "foreign"), 65534, 65534)
    finish(spool, "foreign")
    assert spares(spool) == [], "its owner could still write to it: never a record"


def test_a_spare_that_vanished_is_replaced_by_a_fresh_file(spool: Spool) -> None:
    submit(spool, "x")
    submit(spool, "y")
    finish(spool, "x")
    (spare,) = spares(spool)
    os.unlink(spool.layout.stage / spare)
    finish(spool, "y", "still recorded")
    assert read_json(spool.layout.job(D, "y"))["result"] == "still recorded"
    spool.mover.drop_spares()
    assert listing(spool.layout.stage) == []


def test_a_refused_publish_keeps_the_spare(spool: Spool) -> None:
    submit(spool, "r")
    submit(spool, "s")
    finish(spool, "s")
    claim = spool.claim("r")
    assert claim is not None
    client = Spool(spool.layout, Mover(spool.layout, FsyncMode.NEVER))
    submit(client, "r")  # a newer drop: requeue must yield to it
    try:
        assert not spool.requeue(claim, Job.model_validate_json(claim.data))
        assert len(spares(spool)) == 1
        spool.fail(claim, done_record(claim, state=JobState.FAILED))
    finally:
        claim.close()
    spool.mover.drop_spares()
    assert listing(spool.layout.stage) == []


def test_recovery_keeps_a_live_spare_and_removes_a_dead_ones(spool: Spool,
                                                             clock: FakeClock) -> None:
    submit(spool, "old")
    finish(spool, "old")
    (spare,) = spares(spool)
    two_days_ago = clock.now().timestamp() - 2 * 86_400
    os.utime(spool.layout.stage / spare, (two_days_ago, two_days_ago))
    Recovery(spool, lambda job: 3).scan()
    assert spares(spool) == [spare], "a spare keeps its job's mtime; only its pid counts"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = spare.replace(f".{os.getpid()}.", f".{int(gone.stdout)}.")
    os.rename(spool.layout.stage / spare, spool.layout.stage / dead)
    Recovery(spool, lambda job: 3).scan()
    assert listing(spool.layout.stage) == []
    spool.mover.drop_spares()  # nothing left to drop: recovery took it


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file another group")
def test_a_recycled_file_takes_this_process_group(spool: Spool) -> None:
    """A submitter's group keeps no way back in (an O_PATH handle reopened via /proc)."""
    submit(spool, "grouped")
    os.chown(spool.layout.job(JobState.PENDING, "grouped"), -1, 65534)
    finish(spool, "grouped")
    (spare,) = spares(spool)
    assert os.stat(spool.layout.stage / spare).st_gid == os.getegid()
    spool.mover.drop_spares()


def test_recovery_removes_spares_an_earlier_process_with_this_pid_left(spool: Spool) -> None:
    """A restarted container often gets the same pid: those spares are not ours."""
    submit(spool, "kept")
    finish(spool, "kept")
    (ours,) = spares(spool)
    earlier = ours.replace(ours.rsplit(".", 2)[1], "0" * 12)
    (spool.layout.stage / earlier).write_bytes(b'{"tool": "echo"}')
    Recovery(spool, lambda job: 3).scan()
    assert spares(spool) == [ours]
    spool.mover.drop_spares()
