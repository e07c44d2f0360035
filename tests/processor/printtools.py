"""Tools that print, for the log-line tests (``SPOOL_TOOLS=ptools,printtools``): a FAST
one (``p_fast``) and a COMPUTE one (``p_compute``)."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word: str = "hello"


def chatter(params: Params, ctx: ToolContext) -> ToolResult:
    print(f"{params.word} from {ctx.job_id}")
    print(f"{params.word} on stderr", "in two words", file=sys.stderr)
    sys.stdout.write("a line in two")
    sys.stdout.write(" writes\nand a last one without a newline")
    return ToolResult.ok()


class Fast(BaseTool):
    name: ClassVar[str] = "p_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return chatter(params, ctx)


class Compute(BaseTool):
    name: ClassVar[str] = "p_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return chatter(params, ctx)


class BytesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pieces: int = 100_000


class Dots(BaseTool):
    """Writes ``pieces`` runs of 20 dots one at a time, never a newline (a hand-made
    progress bar)."""

    name: ClassVar[str] = "p_dots"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 30.0
    Params: ClassVar[type[BaseModel]] = BytesParams

    def execute(self, params: BytesParams, ctx: ToolContext) -> ToolResult:
        for _ in range(params.pieces):
            print("." * 20, end="")
        return ToolResult.ok({"written": params.pieces})


class Binary(BaseTool):
    """Writes bytes to ``sys.stdout.buffer``, as a tool streaming a CSV or a file does."""

    name: ClassVar[str] = "p_binary"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        sys.stdout.buffer.write(f"{params.word} in bytes \xe9\n".encode())
        sys.stdout.buffer.write(b"not utf-8: \xff\n")
        sys.stdout.buffer.flush()
        return ToolResult.ok()


class LongParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = 40_000


class LongLine(BaseTool):
    """Writes one line of ``size`` characters, newline included, in a single write (as
    a tool printing a wide table or a JSON document does)."""

    name: ClassVar[str] = "p_long_line"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = LongParams

    def execute(self, params: LongParams, ctx: ToolContext) -> ToolResult:
        sys.stdout.write("y" * params.size + "\nafter it\n")
        return ToolResult.ok()


class Silencer(BaseTool):
    """Silences a noisy library the quick way, and leaves it so: ``sys.stdout`` and
    ``sys.stderr`` replaced for good (a FAST tool's are the processor's)."""

    name: ClassVar[str] = "p_silencer"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        sys.stdout = sys.stderr = io.StringIO()
        return ToolResult.ok()


class CloseStdio(BaseTool):
    """Closes descriptors 0, 1 and 2 (as daemonising code does); a FAST tool's are the
    processor's."""

    name: ClassVar[str] = "p_close_stdio"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        for fd in (0, 1, 2):
            os.close(fd)
        return ToolResult.ok()


class PathParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str


KEPT: list[int] = []  # the descriptor p_keep_file opened, for p_write_kept


class KeepFile(BaseTool):
    """Closes descriptors 0 to 2, then opens ``path`` (which so takes descriptor 0) and
    keeps it open past its job, as a tool's cached log file or connection would be."""

    name: ClassVar[str] = "p_keep_file"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = PathParams

    def execute(self, params: PathParams, ctx: ToolContext) -> ToolResult:
        for fd in (0, 1, 2):
            os.close(fd)
        KEPT.append(os.open(params.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        return ToolResult.ok(KEPT[-1])


class WriteKept(BaseTool):
    name: ClassVar[str] = "p_write_kept"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        os.write(KEPT[-1], f"{params.word}\n".encode())
        return ToolResult.ok()


class StdioToDevnull(BaseTool):
    """Points descriptors 0 to 2 at /dev/null, as daemonising code does."""

    name: ClassVar[str] = "p_stdio_devnull"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        return ToolResult.ok()


class LoggingOff(BaseTool):
    """Turns logging off the ways a library or a script does, for good: ``logging.disable``,
    the root logger's handlers cleared, its level raised (a FAST tool's logging is the
    processor's)."""

    name: ClassVar[str] = "p_logging_off"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        logging.disable(logging.CRITICAL)
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.CRITICAL)
        return ToolResult.ok()


class StrayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: str
    """The thread prints until this file exists."""


class StrayThread(BaseTool):
    """Leaves a thread behind that prints ``stray <n>`` every 20 ms (until ``until``
    exists), and returns at once."""

    name: ClassVar[str] = "p_stray_thread"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = StrayParams

    def execute(self, params: StrayParams, ctx: ToolContext) -> ToolResult:
        def chatter() -> None:
            n = 0
            while not os.path.exists(params.until):
                print(f"stray {n}")
                logging.getLogger("printtools.stray").info("logged stray %d", n)
                n += 1
                time.sleep(0.02)

        threading.Thread(target=chatter, daemon=True).start()
        return ToolResult.ok()


class LoggingOffCompute(LoggingOff):
    name: ClassVar[str] = "p_logging_off_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE


class StrayTimer(BaseTool):
    """Leaves a ``threading.Timer`` behind that prints and logs ``timer <n>`` and arms the
    next Timer, every 20 ms (until ``until`` exists), and returns at once."""

    name: ClassVar[str] = "p_stray_timer"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = StrayParams

    def execute(self, params: StrayParams, ctx: ToolContext) -> ToolResult:
        def tick(n: int) -> None:
            if os.path.exists(params.until):
                return
            print(f"timer {n}")
            logging.getLogger("printtools.timer").info("logged timer %d", n)
            arm(n + 1)

        def arm(n: int) -> None:
            timer = threading.Timer(0.02, tick, args=(n,))
            timer.daemon = True
            timer.start()

        arm(0)
        return ToolResult.ok()
