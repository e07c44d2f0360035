"""A COMPUTE tool that waits on a child process of its own, as a tool that runs a
program (``subprocess.run``) does, and returns the child's exit status."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WaitsOnChild(BaseTool):
    name: ClassVar[str] = "t_waits_on_child"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        child = subprocess.run([sys.executable, "-c", "import time; time.sleep(60)"],
                               check=False)
        return ToolResult.ok({"returncode": child.returncode})
