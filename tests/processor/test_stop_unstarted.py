"""A stop while a COMPUTE task waits for a worker that cannot start (out of processes,
its tools not importable in the workers): the task never started, so nothing runs that
the grace period could let finish.  Before, the stop waited out the whole
``SPOOL_GRACE_S`` for it (30 s by default, a stop timeout under systemd); it is
requeued at once now, without counting the attempt, as at the end of the grace."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from daemonkit import Daemon, drop, locations, wait_for

# Imports in the processor, never in the forkserver (its argv is ['-c']) nor in a worker
# (a child process): every worker says it cannot start, before it reads its task.
_TOOLS = '''
import multiprocessing
import sys
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

if sys.argv[:1] == ["-c"] or multiprocessing.parent_process() is not None:
    raise ImportError("not in a worker")


class Params(BaseModel):
    pass


class Nap(BaseTool):
    name: ClassVar[str] = "u_nap"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({})
'''


def test_a_stop_does_not_wait_the_grace_period_for_a_task_no_worker_took(
        spool_root: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "unstarted_tools.py").write_text(_TOOLS)
    d = Daemon(spool_root, tmp_path / "p.log", tools="unstarted_tools", tools_dir=tools,
               JOB_NUM="1", SPOOL_GRACE_S="60")
    try:
        d.start()
        drop(spool_root, "u1", {"tool": "u_nap"})
        wait_for(lambda: any(e.get("msg", "").startswith("worker cannot start")
                             for e in d.events()), 20, "a worker that cannot start")
        wait_for(lambda: d.status().get("busy_workers") == 1, 10, "the task waiting")
        began = time.monotonic()
        assert d.stop(timeout=20) == 0
        assert time.monotonic() - began < 15
        assert locations(spool_root) == {"u1": ["pending"]}
        job = orjson.loads((spool_root / "pending" / "u1.json").read_bytes())
        assert job.get("attempts", 0) == 0  # the attempt is not counted
    finally:
        d.abort()
