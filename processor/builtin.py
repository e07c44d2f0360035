"""Small built-in tools for tests and ops: ``echo`` (FAST) and ``sleep`` (COMPUTE)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

MAX_SLEEP_S = 86_400.0


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Any = None


class Echo(BaseTool):
    """Return the message it was given (checks the FAST lane end to end)."""

    name: ClassVar[str] = "echo"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = EchoParams

    def execute(self, params: EchoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"message": params.message})


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: lax validation took true as 1 s and "2" as 2 s, where the schema says number.
    seconds: float = Field(ge=0, le=MAX_SLEEP_S, allow_inf_nan=False, strict=True)


class Sleep(BaseTool):
    """Sleep in a worker, reporting progress about ten times (checks the COMPUTE lane)."""

    name: ClassVar[str] = "sleep"
    category: ClassVar[str] = "mutation"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 3600.0
    Params: ClassVar[type[BaseModel]] = SleepParams

    def execute(self, params: SleepParams, ctx: ToolContext) -> ToolResult:
        steps = max(1, min(10, int(params.seconds / 0.05)))
        start = time.monotonic()
        for step in range(1, steps + 1):
            time.sleep(max(0.0, start + params.seconds * step / steps - time.monotonic()))
            ctx.progress(step / steps, f"slept {params.seconds * step / steps:.2f} s")
        return ToolResult.ok({"slept_s": round(time.monotonic() - start, 6)})


BUILTIN_TOOLS: list[type[BaseTool]] = [Echo, Sleep]
