"""Tools whose params model is strict, as a careful tool author writes one (the quant
tools' windows and fees are strict fields): loaded via ``SPOOL_TOOLS=stricttools``.

``s_fast`` (FAST) and ``s_compute`` (COMPUTE) return their params as pydantic dumps
them to JSON, so a test sees what the tool got.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class StrictParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    when: datetime
    window: tuple[int, int]
    side: Side
    order: UUID
    size: int = 1


class StrictFast(BaseTool):
    """Orders at a time, a window of bars, a side \N{EN DASH} strict all of them."""

    name: ClassVar[str] = "s_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = StrictParams

    def execute(self, params: StrictParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(params.model_dump(mode="json"))


class StrictCompute(StrictFast):
    name: ClassVar[str] = "s_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
