"""Many tools, so that ``spool-processor tools`` prints more than a stream's buffer
holds (8 KiB) in either format: loaded via ``SPOOL_TOOLS=widetools``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class WideParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = "AAA"


class Wide(BaseTool):
    """One of many alike, each with a description long enough to be cut in the table."""

    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = WideParams

    def execute(self, params: WideParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"symbol": params.symbol})


for _n in range(200):
    globals()[f"Wide{_n}"] = type(f"Wide{_n}", (Wide,), {
        "name": f"wide_{_n:03d}", "__module__": __name__, "__doc__": Wide.__doc__})
