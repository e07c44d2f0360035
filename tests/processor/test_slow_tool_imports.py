"""Tool modules are imported once, by the COMPUTE forkserver, not by each worker.

Imported in each worker, a module that takes long to import counted against the
worker's first job, whose time limit starts as it is sent: a module of 8 s under a
tool of 5 s failed every COMPUTE job ``timeout``, for ever (QA), each timeout's kill
taking the worker, and its import, with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_tool_module_slow_to_import_does_not_time_its_jobs_out(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon(SPOOL_TOOLS="ptools,slow_import_tools", SLOW_IMPORT_S="3", JOB_NUM="1")
    for n in range(3):
        drop(spool_root, f"quick-{n}", {"tool": "t_after_slow_import"})
    records = [wait_record(spool_root, f"quick-{n}", 60) for n in range(3)]
    assert [r["state"] for r in records] == ["done"] * 3, records
    # Imported before the fork: the module's load is the forkserver's, not the worker's.
    for record in records:
        assert record["result"]["loaded_by"] != record["result"]["runs_in"], record
    assert d.stop() == 0
