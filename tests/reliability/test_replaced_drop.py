"""A drop replaced after intake judged it, while it waited for a worker.

The claim read the replacement and, finding it no job, ran the job intake had judged
from memory: the replacement (what the client left in ``pending/``) vanished under
that job's record, with no record and no original of its own. It goes back to
``pending/`` for intake, which quarantines it with its bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from relkit import Daemon, drop, quarantined, record, wait_for

StartDaemon = Callable[..., Daemon]


def test_a_replacement_that_is_no_job_is_quarantined_not_lost(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon(JOB_NUM="1", SPOOL_SETTLE_S="3")
    drop(spool_root, "blocker", {"tool": "sleep", "params": {"seconds": 1.0}})
    wait_for((spool_root / "running" / "blocker.json").exists, 10, "the blocker")
    drop(spool_root, "X", {"tool": "sleep", "params": {"seconds": 0.01}, "meta": {"v": "old"}})
    time.sleep(0.3)  # judged ready by intake: it waits for the worker
    new = b'{"tool": "sleep", "meta": {"v": "new"'  # cut short: settles for 3 s
    staged = spool_root / "tmp" / "X.new"
    staged.write_bytes(new)
    os.rename(staged, spool_root / "pending" / "X.json")
    assert (spool_root / "running" / "blocker.json").exists(), "the blocker ended too soon"
    rec = wait_for(lambda: record(spool_root, "X"), 20, "a record of X")
    assert rec["state"] == "failed", f"the replaced job ran: {rec}"
    assert quarantined(spool_root)["X.json"]["error"]["type"] == "invalid_job"
    assert "malformed JSON" in rec["error"]["message"], rec
    assert (spool_root / "failed" / "X.orig").read_bytes() == new, "its bytes are kept"
    assert not (spool_root / "done" / "X.json").exists()
    assert d.stop() == 0


def test_a_drop_rewritten_in_place_is_judged_again_not_run_as_it_is(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Rewritten through a descriptor held open (no event: the writer has not closed it)
    into a job the model takes but intake does not (its ``id`` is another's): the claim
    validated the new bytes by the model alone and ran them as job X."""
    d = daemon(JOB_NUM="1", SPOOL_SCAN_S="30")  # no rescan sees the rewrite
    drop(spool_root, "blocker", {"tool": "sleep", "params": {"seconds": 1.0}})
    wait_for((spool_root / "running" / "blocker.json").exists, 10, "the blocker")
    drop(spool_root, "X", {"tool": "sleep", "params": {"seconds": 0.01}})
    time.sleep(0.3)  # judged ready by intake: it waits for the worker
    fd = os.open(spool_root / "pending" / "X.json", os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b'{"tool": "sleep", "params": {"seconds": 0.01}, "id": "other"}', 0)
        assert (spool_root / "running" / "blocker.json").exists(), "the blocker ended too soon"
        rec = wait_for(lambda: record(spool_root, "X"), 20, "a record of X")
    finally:
        os.close(fd)
    assert rec["state"] == "failed", f"the rewritten job ran: {rec}"
    assert "id mismatch" in rec["error"]["message"], rec
    assert not (spool_root / "done" / "X.json").exists()
    assert d.stop() == 0
