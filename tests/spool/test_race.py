"""The claim race: 4 real processes claim from one ``pending/`` of 2,000 jobs at
once, each completing what it claims; every job is claimed exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from spoolkit import actor, await_line, listing, make_spool, read_json

from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")

JOBS = 2_000
PROCESSES = 4


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [FsyncMode.NEVER, FsyncMode.BATCH])
def test_each_job_claimed_exactly_once(tmp_path: Path, mode: FsyncMode) -> None:
    spool = make_spool(tmp_path / "spool", mode)
    ids = {f"job-{n:05d}" for n in range(JOBS)}
    for job_id in sorted(ids):
        spool.submit(Job(tool="echo", params={"n": job_id}), job_id)
    spool.mover.flush()
    go = tmp_path / "go"
    outs = [tmp_path / f"claimed-{n}.json" for n in range(PROCESSES)]
    # two walk pending/ in the same order (head-on collisions), two in random order
    procs = [actor(spool.layout.root, "race",
                   {"go": str(go), "out": str(out), "shuffle": n % 2 == 1}, mode)
             for n, out in enumerate(outs)]
    try:
        for proc in procs:
            await_line(proc, "READY")
        go.touch()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=100) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    claimed = [orjson.loads(out.read_bytes()) for out in outs]
    every = [job_id for per_process in claimed for job_id in per_process]
    assert len(every) == len(set(every)), "some job was claimed twice"
    assert set(every) == ids
    assert sum(1 for c in claimed if c) >= 2, "the processes never overlapped"

    layout = spool.layout
    assert listing(layout.folder(JobState.PENDING)) == []
    assert listing(layout.folder(JobState.RUNNING)) == []
    assert listing(layout.folder(JobState.FAILED)) == []
    assert listing(layout.tmp) == []
    done = listing(layout.folder(JobState.DONE))
    assert done == sorted(f"{job_id}.json" for job_id in ids)
    # each record was written by the process that claimed it, once
    claimant = {job_id: n for n, per_process in enumerate(claimed) for job_id in per_process}
    pids = [proc.pid for proc in procs]
    for job_id in sorted(ids)[:: JOBS // 100]:
        record = read_json(layout.job(JobState.DONE, job_id))
        assert record["result"] == {"by": pids[claimant[job_id]]}
        assert record["params"] == {"n": job_id} and record["attempts"] == 1
    assert os.listdir(layout.progress) == []
