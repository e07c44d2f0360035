"""Tools that report the garbage collector's state where they run (SPOOL_TOOLS)."""

from __future__ import annotations

import gc
from typing import ClassVar

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult


def _state() -> ToolResult:
    return ToolResult.ok({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()})


class GcInWorker(BaseTool):
    """The collector of the COMPUTE worker this runs in."""

    name: ClassVar[str] = "gc_in_worker"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return _state()


class GcInProcessor(BaseTool):
    """The collector of the processor (FAST tools run in it)."""

    name: ClassVar[str] = "gc_in_processor"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return _state()
