"""A FAST tool whose resource factory hangs while a file exists, for
test_context_resource.py (``SPOOL_TOOLS=resourcetools``)."""

from __future__ import annotations

import os
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hang_while: str
    """The factory hangs while this file exists (a connect with no timeout)."""


class Connects(BaseTool):
    """Returns the connection ``ctx.resource("conn", ...)`` gives."""

    name: ClassVar[str] = "rs_connect"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 1.0
    max_attempts: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        def connect() -> str:
            while os.path.exists(params.hang_while):
                time.sleep(0.05)
            return f"conn made by {ctx.job_id}"

        return ToolResult.ok(ctx.resource("conn", connect))
