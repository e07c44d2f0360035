"""A COMPUTE tool may run its work in processes of its own (``multiprocessing.Pool``,
``ProcessPoolExecutor``), as it may in the FAST lane.

Workers are daemonic ``multiprocessing`` processes, which ``multiprocessing`` refuses
children: every such job failed ``tool_error`` "AssertionError: daemonic processes are
not allowed to have children".  And the forkserver a pool of the default start method
starts was killed with the job's other leftovers, while ``multiprocessing`` kept its
pid: the next such job on that worker failed ``ChildProcessError``.  Real daemon, one
worker, so each job after the first runs where the one before ran (see daemonkit).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]
LEFTOVERS = "processes the job left running were killed at its end"


@pytest.mark.parametrize("kind", ["pool", "fork_pool", "executor"])
def test_a_compute_tool_runs_its_own_process_pool_job_after_job(
        spool_root: Path, daemon: StartDaemon, kind: str) -> None:
    d = daemon(SPOOL_TOOLS="mptools", JOB_NUM="1")
    pids = set()
    for n in range(3):
        drop(spool_root, f"{kind}-{n}", {"tool": "m_pool", "params": {"kind": kind}})
        found = wait_record(spool_root, f"{kind}-{n}", 60)
        assert found["state"] == "done", found
        assert found["result"] == [0, 1, 4, 9, 16], found
        pids.add(found["pid"])
    assert len(pids) == 1, pids  # one worker ran them all, one after another
    assert d.stop(60) == 0, d.logs()
    assert os.listdir(spool_root / "running") == []
    # Its pool closed, the tool left nothing running: multiprocessing's forkserver, killed
    # at each job's end, was named as the job's leftover every job (h407).
    said = [e for e in d.events() if e.get("msg") == LEFTOVERS]
    assert said == [], said


def test_a_child_a_compute_tool_forks_ends_at_its_sigterm(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A worker leaves SIGTERM to the processor (a handler that does nothing, for the
    whole unit's ``systemctl kill``); a child it forks without exec must not inherit that:
    its ``terminate()`` did nothing, and a ``fork`` Pool's exit hung (a review)."""
    d = daemon(SPOOL_TOOLS="mptools", JOB_NUM="1")
    drop(spool_root, "term", {"tool": "m_terminate"})
    found = wait_record(spool_root, "term", 60)
    assert (found["state"], found["result"]) == ("done", -15), found
    assert d.stop(60) == 0, d.logs()
