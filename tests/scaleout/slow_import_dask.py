"""A SPOOL_TOOLS module 11 s to import in a Dask worker's job process (a model file,
torch), at once in the processor, with a COMPUTE tool of a 0.5 s limit that returns at
once: past its limit and the processor's backstop (the limit and 10 s), should the
import count as the job's time."""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

IMPORT_S = 11.0
if multiprocessing.parent_process() is not None:  # not the processor's own import
    time.sleep(IMPORT_S)


class NoParams(BaseModel):
    pass


class AfterSlowImport(BaseTool):
    name: ClassVar[str] = "d_after_slow_import"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 0.5
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(os.getpid())


class SleepsPastItsLimit(AfterSlowImport):
    """Sleeps 5 s under its 0.5 s limit: a timeout, timed from the import's end."""

    name: ClassVar[str] = "d_late_after_slow_import"

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        time.sleep(5.0)
        return ToolResult.ok(os.getpid())
