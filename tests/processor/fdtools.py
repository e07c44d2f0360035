"""COMPUTE tools that write below Python, straight to file descriptors 1 and 2, or leave
text without a newline when their worker dies, for the log-line tests
(``SPOOL_TOOLS=ptools,fdtools``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

FLOOD_LINE = 1000
"""Bytes per line of :class:`Flood`, its newline included."""
LONG_LINE = 40_000
"""Characters of the one line :class:`Flood` writes last, longer than a log line."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def flood_line(index: int) -> str:
    """Line ``index`` of :class:`Flood`, without its newline."""
    head = f"line {index:08d} "
    return head + "x" * (FLOOD_LINE - 1 - len(head))


class ChildEcho(BaseTool):
    """Its child processes write a line on each of the fds they inherited."""

    name: ClassVar[str] = "f_child_echo"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        subprocess.run(["echo", "hello from a child"], check=True)
        subprocess.run(["sh", "-c", "echo 'a child on stderr' >&2"], check=True)
        return ToolResult.ok()


class PartialThenHang(BaseTool):
    """``os.write(1, ...)`` of text with no newline, then sleeps past its 1 s timeout."""

    name: ClassVar[str] = "f_partial_hang"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 1.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        os.write(1, b"a whole line\nhalf a line, then ")
        os.write(1, "silence \u2026".encode())
        time.sleep(60)
        return ToolResult.ok()


class PrintThenHang(BaseTool):
    """``print`` with no newline (a progress indicator), then sleeps past its timeout."""

    name: ClassVar[str] = "f_print_hang"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 1.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        print("working on item 57...", end="", flush=True)
        time.sleep(60)
        return ToolResult.ok()


class PartialThenExit(BaseTool):
    """``os.write(2, ...)`` of text with no newline, then ends its worker (``os._exit``)."""

    name: ClassVar[str] = "f_partial_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        os.write(2, b"last words, no newline")
        os._exit(3)


class BadUtf8(BaseTool):
    """Bytes that are not UTF-8 on fd 2, the last character cut short at the job's end."""

    name: ClassVar[str] = "f_bad_utf8"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        os.write(2, b"not utf-8: \xff\xfe here\n")
        os.write(2, b"caf\xc3\xa9, then a cut \xe2\x82")
        return ToolResult.ok()


class Logs(BaseTool):
    """Logs a warning through ``logging`` (the worker's own JSON lines), and prints."""

    name: ClassVar[str] = "f_logs"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        logging.getLogger("fdtools").warning("a warning about %s", ctx.job_id)
        print("and a print")
        return ToolResult.ok()


class FloodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: int = 1000


class Flood(BaseTool):
    """``lines`` lines of :data:`FLOOD_LINE` bytes on fd 1 in 1 MiB writes, then one line
    of :data:`LONG_LINE` characters; returns how many bytes it wrote."""

    name: ClassVar[str] = "f_flood"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 120.0
    Params: ClassVar[type[BaseModel]] = FloodParams

    def execute(self, params: FloodParams, ctx: ToolContext) -> ToolResult:
        written = 0
        per_write = (1 << 20) // FLOOD_LINE
        for first in range(0, params.lines, per_write):
            last = min(first + per_write, params.lines)
            written += _write_all("".join(flood_line(i) + "\n" for i in range(first, last)))
        written += _write_all("y" * LONG_LINE + "\n")
        return ToolResult.ok({"written": written})


def _write_all(text: str) -> int:
    view = memoryview(text.encode())
    size = len(view)
    while view:
        view = view[os.write(1, view):]
    return size


class FloodUntilParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stop_file: str


class FloodUntil(BaseTool):
    """Short numbered lines (``<n>``) on fd 1, in 64 KiB writes, as fast as its pipe
    takes them, until ``stop_file`` exists (60 s at most); returns how many it wrote."""

    name: ClassVar[str] = "f_flood_until"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 120.0
    Params: ClassVar[type[BaseModel]] = FloodUntilParams

    def execute(self, params: FloodUntilParams, ctx: ToolContext) -> ToolResult:
        deadline = time.monotonic() + 60.0
        lines = 0
        while not os.path.exists(params.stop_file) and time.monotonic() < deadline:
            chunk = "".join(f"{n}\n" for n in range(lines, lines + 8192))
            _write_all(chunk)
            lines += 8192
        return ToolResult.ok({"lines": lines})


class LinesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: int = 50_000


class NonBlockingChild(BaseTool):
    """Says whether its fd 1 blocks, has a child make fds 1 and 2 non-blocking (the open
    file is shared: so they are for the tool too, as after a child such as node), then
    prints ``lines`` numbered lines, more than the pipe holds."""

    name: ClassVar[str] = "f_nonblocking_child"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 120.0
    Params: ClassVar[type[BaseModel]] = LinesParams

    def execute(self, params: LinesParams, ctx: ToolContext) -> ToolResult:
        blocking = os.get_blocking(1)
        subprocess.run([sys.executable, "-c",
                        "import os; os.set_blocking(1, False); os.set_blocking(2, False)"],
                       check=True)
        for n in range(params.lines):
            print(f"line {n} of a tool whose stdout a child made non-blocking")
        return ToolResult.ok({"blocking_at_start": blocking})


class NonBlockingChildFast(NonBlockingChild):
    """The same as a FAST tool: its child makes the processor's own fds 1 and 2 (the
    log's pipe or socket) non-blocking."""

    name: ClassVar[str] = "f_nonblocking_child_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class ReadsStdin(BaseTool):
    """Reads fd 0, itself and through a child (``cat``): returns what each got."""

    name: ClassVar[str] = "f_reads_stdin"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        child = subprocess.run(["cat"], capture_output=True, check=True)
        return ToolResult.ok({"read": os.read(0, 100).decode(errors="replace"),
                              "child_read": child.stdout.decode(errors="replace")})


class ReadsStdinFast(ReadsStdin):
    """The same as a FAST tool, which runs in the processor itself."""

    name: ClassVar[str] = "f_reads_stdin_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
