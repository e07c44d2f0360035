"""Tools for ``bench/chaos.py``: every run leaves evidence of when it ran, and where.

Loaded by the processor under test through ``SPOOL_TOOLS=bench.chaos_tools``
(the repository root on ``PYTHONPATH``, so forkserver workers import it too).

Each run of ``chaos_fast`` (FAST) or ``chaos_compute`` (COMPUTE):

1. takes ``flock(LOCK_EX | LOCK_NB)`` on ``<locks>/<id>``.  The kernel drops
   the lock when the run's process dies, so a run that finds it held is
   running beside another live run of the same id (``lock=0`` in its marker);
2. appends ``start <id> <token> <processor pid> <run pid> <run pid start time>
   <t_ns> <lock>`` to ``<log>`` with ``O_APPEND`` (one ``write`` per line, so
   lines never interleave);
3. sleeps ``seconds`` (a ``timeout`` job sleeps past its deadline and is killed),
   reporting progress every ``progress_every_s`` if that is set, as the
   built-in tools do (a report is also how a worker learns that its processor
   has died: the send fails);
4. appends ``end <id> <token> <t_ns>`` and releases the lock;
5. returns an error when ``fail`` is set (a ``tool_error`` that is not retried).

``<t_ns>`` is ``CLOCK_MONOTONIC``, one clock for every process of the machine.
The run pid is the worker's for COMPUTE and the processor's for FAST; the
processor of a COMPUTE worker is its grandparent (worker -> forkserver ->
processor).  A run killed mid-way has no ``end``: it ended when its process
died, which ``bench/chaos.py`` watches for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class ChaosParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str
    locks: str
    seconds: float = Field(default=0.0, ge=0, le=3600)
    fail: bool = False
    progress_every_s: float = Field(default=0.0, ge=0)


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _sleep(params: ChaosParams, ctx: ToolContext) -> None:
    if not params.progress_every_s:
        time.sleep(params.seconds)
        return
    start = time.monotonic()
    while (left := start + params.seconds - time.monotonic()) > 0:
        time.sleep(min(left, params.progress_every_s))
        ctx.progress(min(1.0, (time.monotonic() - start) / params.seconds), "sleeping")


def run_with_markers(params: ChaosParams, ctx: ToolContext, processor_pid: int) -> ToolResult:
    """The body of both tools: lock, start marker, sleep, end marker, unlock."""
    job_id = ctx.job_id
    pid = os.getpid()
    token = os.urandom(6).hex()
    lock_fd = os.open(os.path.join(params.locks, job_id),
                      os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = 1
        except BlockingIOError:
            held = 0
        _append(params.log, f"start {job_id} {token} {processor_pid} {pid} "
                            f"{proc_start_time(pid)} {time.monotonic_ns()} {held}")
        try:
            _sleep(params, ctx)
        finally:
            _append(params.log, f"end {job_id} {token} {time.monotonic_ns()}")
    finally:
        with contextlib.suppress(OSError):
            os.close(lock_fd)
    if params.fail:
        return ToolResult.error("failed on purpose (chaos)")
    return ToolResult.ok({"pid": pid})


class ChaosFast(BaseTool):
    """A FAST run with start/end markers (runs in a processor thread)."""

    name: ClassVar[str] = "chaos_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = ChaosParams

    def execute(self, params: ChaosParams, ctx: ToolContext) -> ToolResult:
        return run_with_markers(params, ctx, os.getpid())


class ChaosCompute(BaseTool):
    """A COMPUTE run with start/end markers (runs in a pool worker)."""

    name: ClassVar[str] = "chaos_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 60.0
    Params: ClassVar[type[BaseModel]] = ChaosParams

    def execute(self, params: ChaosParams, ctx: ToolContext) -> ToolResult:
        return run_with_markers(params, ctx, _ppid(os.getppid()))
