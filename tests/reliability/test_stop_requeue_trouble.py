"""A stop whose requeue of one run the disk fails (EIO on the rename, or the link where
the filesystem has no ``RENAME_NOREPLACE``, into ``pending/`` and on the look for what
landed there): strace, attached to a real processor, fails every ``renameat2``,
``linkat`` and ``newfstatat`` naming ``pending/first.json``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, drop, locations, strace_usable, wait_for

from spool.layout import Layout


def test_one_run_the_stop_cannot_requeue_leaves_the_others_requeued(
        spool_root: Path, tmp_path: Path) -> None:
    """The grace period over, the stop requeues each run without counting its attempt.
    A requeue the disk failed was raised out of the stop: the runs after it in the
    loop were never requeued, left in ``running/`` with their attempts to be counted by
    the next start's recovery (a job of one attempt failed ``abandoned`` for another
    job's bad sector), and the clean stop exited 75.  The run the disk failed is left
    to recovery, its lease let go; the others are requeued as ever, and the stop
    exits 0."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    layout = Layout(spool_root)
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_GRACE_S="0", JOB_NUM="2")
    tracer: subprocess.Popen[bytes] | None = None
    try:
        d.start()
        for job_id in ("first", "second"):  # claimed in this order: the stop's order
            drop(spool_root, job_id, {"tool": "sleep", "params": {"seconds": 120}})
            wait_for(lambda job_id=job_id: locations(spool_root).get(job_id) == ["running"],
                     30, f"{job_id} to run")
        err = tmp_path / "strace.err"
        with open(err, "wb") as out:
            tracer = subprocess.Popen(
                [strace, "-f", "-o", "/dev/null", "-p", str(d.pid), "-P",
                 str(layout.root / "pending" / "first.json"),
                 "-e", "trace=renameat2,linkat,newfstatat",
                 "-e", "inject=renameat2,linkat,newfstatat:error=EIO"],
                stdout=subprocess.DEVNULL, stderr=out)
        wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
        assert d.stop(60) == 0, d.logs()[-3000:]
        tracer.wait(20)
        where = locations(spool_root)
        assert (where["first"], where["second"]) == (["running"], ["pending"]), (
            d.logs()[-3000:])
        requeued = orjson.loads((layout.root / "pending" / "second.json").read_bytes())
        assert requeued.get("attempts", 0) == 0, requeued  # the cut-short run not counted
        left = [e for e in d.events() if e.get("id") == "first" and e["level"] == "error"]
        assert left and "pending/first.json" in left[-1]["error"], d.logs()[-3000:]
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(20)
        d.abort()
