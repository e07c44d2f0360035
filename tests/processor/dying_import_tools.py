"""A tool module whose import ends a worker at once (``os._exit``, as a segfault in an
extension's init would), each time noted in ``DYING_IMPORT_LOG``; the processor's own
import of it, for the catalogue, passes."""

from __future__ import annotations

import multiprocessing
import os
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

if multiprocessing.parent_process() is not None:  # a worker, not the processor
    with open(os.environ["DYING_IMPORT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    os._exit(3)


class NoParams(BaseModel):
    pass


class Never(BaseTool):
    name: ClassVar[str] = "t_never_loaded"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(None)
