"""A SPOOL_TOOLS module whose import in the processor waits until the file
``GATED_START`` names exists (a minute at most): a tools module slow to import (a model
file, torch), held for as long as a test needs.  Its tool, ``g_started``, says nothing
but that the module loaded."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

GATE = os.environ.get("GATED_START")
if GATE and multiprocessing.parent_process() is None:  # the processor's own import
    deadline = time.monotonic() + 60.0
    while not Path(GATE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class Started(BaseTool):
    name: ClassVar[str] = "g_started"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok()
