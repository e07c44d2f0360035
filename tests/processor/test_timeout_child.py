"""A COMPUTE job killed at its time limit fails ``timeout``, also when its tool waits on a
child process: the kill takes the worker's children first (a real daemon, daemonkit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]
JOBS = 4


def test_a_tool_waiting_on_its_child_at_its_deadline_fails_timeout(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The pool's kill at the deadline SIGKILLs the worker's children before the worker:
    the tool's ``subprocess.run`` returned -9, the tool returned it, and its result came
    in before the worker's death, winning over the deadline: 3 of 4 such jobs were
    ``done`` with ``{"returncode": -9}`` after their 1.5 s (QA h395)."""
    daemon(tools="ptools,childtimeout_tools", JOB_NUM="2")
    for n in range(JOBS):
        drop(spool_root, f"child{n}", {"tool": "t_waits_on_child", "timeout": 1})
    records = [wait_record(spool_root, f"child{n}", 60) for n in range(JOBS)]
    assert [(r["state"], (r.get("error") or {}).get("type"), r.get("result"))
            for r in records] == [("failed", "timeout", None)] * JOBS
