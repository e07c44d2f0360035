"""Tools for the operability tests: text that is not UTF-8, warnings, errors in threads.

Loaded by the daemon under test via ``SPOOL_TOOLS=ptools,optools``.  Each tool does
what its ``what`` parameter names, as a FAST tool (``o_fast``) or a COMPUTE one
(``o_compute``).
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

NOT_UTF8 = "name \udcff\udcfe of a file, a lone \ud800 half\nand a second line"
"""What a tool gets from ``os.listdir`` or a ``surrogateescape`` decode of bytes that
are not UTF-8, plus a surrogate half no codec can write."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    what: Literal["error", "raise", "progress", "warn", "thread"]


def act(what: str, ctx: ToolContext) -> ToolResult:
    if what == "error":
        return ToolResult.error(f"cannot read {NOT_UTF8}")
    if what == "raise":
        raise ValueError(f"cannot read {NOT_UTF8}")
    if what == "progress":
        ctx.progress(0.5, f"reading {NOT_UTF8}")
        time.sleep(0.3)  # the report is written while the run goes on
        return ToolResult.ok()
    if what == "warn":
        warnings.warn(f"{ctx.job_id}: a warning from a tool", UserWarning, stacklevel=1)
        return ToolResult.ok()
    thread = threading.Thread(target=_fail, args=(ctx.job_id,))
    thread.start()
    thread.join()
    return ToolResult.ok()


def _fail(job_id: str) -> None:
    raise RuntimeError(f"{job_id}: an error in a thread the tool started")


class Fast(BaseTool):
    name: ClassVar[str] = "o_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return act(params.what, ctx)


class Compute(BaseTool):
    name: ClassVar[str] = "o_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return act(params.what, ctx)
