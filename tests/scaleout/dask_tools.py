"""Tools for the scale-out tests, loaded with SPOOL_TOOLS=dask_tools (tests/scaleout on the path).

Every tool leaves traces a test can check from outside: lines appended with
O_APPEND (safe across processes), a heartbeat file that grows while the tool
runs, its pid.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    seconds: float = 0.0
    steps: int = 10
    until: str | None = None  # d_append: held until this file exists, ``seconds`` at most


def append_line(path: str | None, line: str) -> None:
    """One write(2) with O_APPEND: lines from many processes never interleave."""
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Heartbeat(BaseTool):
    """Appends '<job id> <pid> <n>' every 50 ms for ``seconds``."""

    name: ClassVar[str] = "d_heartbeat"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 600.0
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        end = time.monotonic() + params.seconds
        n = 0
        while True:
            append_line(params.path, f"{ctx.job_id} {os.getpid()} {n}")
            n += 1
            if time.monotonic() >= end:
                return ToolResult.ok({"beats": n, "pid": os.getpid()})
            time.sleep(0.05)


class Fail(BaseTool):
    name: ClassVar[str] = "d_fail"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return ToolResult.error("failed on purpose")


class Raise(BaseTool):
    name: ClassVar[str] = "d_raise"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        raise ValueError("boom from a Dask worker")


class Exit(BaseTool):
    """Writes 'start <id> <pid>', then ends its process with os._exit(3)."""

    name: ClassVar[str] = "d_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        append_line(params.path, f"start {ctx.job_id} {os.getpid()}")
        os._exit(3)


class SpawnAndExit(BaseTool):
    """Starts ``sleep 1000`` in a session of its own, writes its pid to ``path``, then
    ends its process with os._exit(3)."""

    name: ClassVar[str] = "d_spawn_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        append_line(params.path, str(child.pid))
        os._exit(3)


class Progressive(BaseTool):
    name: ClassVar[str] = "d_progress"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        for i in range(1, params.steps + 1):
            time.sleep(params.seconds / params.steps)
            ctx.progress(i / params.steps, f"step {i}")
        return ToolResult.ok({"steps": params.steps})


class ProgressBurst(BaseTool):
    """Two reports in quick succession, then ``seconds`` of silent work."""

    name: ClassVar[str] = "d_progress_burst"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        ctx.progress(0.1, "loading")
        ctx.progress(0.5, "computing")
        time.sleep(params.seconds)
        return ToolResult.ok()


class Append(BaseTool):
    """Appends its job id to ``path``: a job run twice shows up twice.  It then sleeps
    ``seconds``; with ``until``, only until that file exists (a test's gate), checked
    every 50 ms."""

    name: ClassVar[str] = "d_append"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        append_line(params.path, ctx.job_id)
        if params.until:
            end = time.monotonic() + params.seconds
            while not os.path.exists(params.until) and time.monotonic() < end:
                time.sleep(0.05)
        elif params.seconds:
            time.sleep(params.seconds)
        return ToolResult.ok({"pid": os.getpid()})


class FastAppend(Append):
    name: ClassVar[str] = "d_append_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class RetriedAppend(Append):
    """:class:`Append` whose tool allows three runs (a job that sets no ``max_attempts``)."""

    name: ClassVar[str] = "d_append_retried"
    max_attempts: ClassVar[int] = 3


class Talk(BaseTool):
    """Prints a line, writes one to fd 2 below Python, and logs one, each naming its job."""

    name: ClassVar[str] = "d_talk"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        print(f"printed by {ctx.job_id}")
        os.write(2, f"written by {ctx.job_id}\n".encode())
        logging.getLogger("dask_tools").warning("logged by %s", ctx.job_id)
        return ToolResult.ok()


class Partial(BaseTool):
    """Prints text with no newline and a child's line, then works for ``seconds``."""

    name: ClassVar[str] = "d_partial"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        subprocess.run(["echo", f"child of {ctx.job_id}"], check=True)
        print(f"unfinished line of {ctx.job_id}", end="", flush=True)
        time.sleep(params.seconds)
        return ToolResult.ok()


class IgnoreTerm(BaseTool):
    """Ignores SIGTERM in its process (which stays, idle, for the next job), and returns."""

    name: ClassVar[str] = "d_ignore_term"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return ToolResult.ok({"pid": os.getpid()})
