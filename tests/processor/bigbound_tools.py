"""A tool whose params bound a seed to the unsigned 64-bit range the Python way
(``lt=2**64``): its JSON Schema holds 18446744073709551616, one past what orjson (the
status file's writer) writes.  Loaded via ``SPOOL_TOOLS=bigbound_tools``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from processor.tools import BaseTool, ToolContext, ToolResult


class SeedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, lt=2**64)


class Seeded(BaseTool):
    name: ClassVar[str] = "b_seeded"
    Params: ClassVar[type[BaseModel]] = SeedParams

    def execute(self, params: SeedParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"seed": params.seed})
