"""``spoolq retry`` of an id whose failed record is an earlier run's while a newer drop of
the id runs: it answered exit 0 and made the old job pending beside the running one,
which then ran after it and whose record replaced the new run's result (a review).  The
id is running: only failed jobs can be retried."""

from __future__ import annotations

from pathlib import Path

from spoolkit import listing, make_spool, read_json, run_to_end, spoolq

from spool.models import Job
from spool.states import JobState


def test_a_retry_of_an_id_a_newer_drop_of_which_runs_is_refused(
        env: dict[str, str], root: Path) -> None:
    spool = make_spool(root)
    layout = spool.layout
    spool.submit(Job(tool="echo", params={"v": "old"}), "x")
    run_to_end(spool, "x", JobState.FAILED)
    failed = layout.job(JobState.FAILED, "x").read_bytes()
    spool.submit(Job(tool="echo", params={"v": "new"}), "x")
    claim = spool.claim("x")
    assert claim is not None  # the newer drop runs

    proc = spoolq(env, "retry", "x")
    assert proc.returncode == 1, proc
    assert proc.stderr.strip() == ("spoolq: error: job x is running (a newer drop of the "
                                   "id); only failed jobs can be retried"), proc.stderr
    assert listing(layout.folder(JobState.PENDING)) == []
    assert layout.job(JobState.FAILED, "x").read_bytes() == failed  # back as it was
    assert read_json(layout.job(JobState.RUNNING, "x"))["params"] == {"v": "new"}
    assert listing(layout.stage) == [] and listing(layout.tmp) == []
    claim.close()
