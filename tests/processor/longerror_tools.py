"""A tool that fails, retryably, with a message far longer than any record keeps."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class LongErrorParams(BaseModel):
    chars: int = 1_000_000


class LongError(BaseTool):
    name: ClassVar[str] = "t_long_error"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = LongErrorParams

    def execute(self, params: LongErrorParams, ctx: ToolContext) -> ToolResult:
        # Control characters: 6 bytes each in JSON, the longest a character gets.
        return ToolResult.error("\x01" * params.chars, retryable=True)
