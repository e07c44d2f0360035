"""statusd when the wall clock steps: its stats count no record from the future."""

from __future__ import annotations

import time

from statusdkit import ServerThread, request, run_job, wait_for

from spool.transitions import Spool


def test_throughput_after_a_step_back_counts_no_record_from_the_future(
        server: ServerThread, spool: Spool) -> None:
    """After a step back of an hour, every record of the hour before it counted as done
    in the last minute, for that hour (``spoolq stats`` too: tests/spool/test_clock_steps.py)."""
    run_job(spool, "a")
    run_job(spool, "b")
    wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["throughput"]
             == {"done_last_60s": 2, "failed_last_60s": 0}, what="both counted")
    stats = server.in_loop(lambda: server.services.stats(now=time.time() - 3600))
    assert stats["throughput"] == {"done_last_60s": 0, "failed_last_60s": 0}
