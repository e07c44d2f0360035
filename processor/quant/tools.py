"""The four built-in quant tools, on the tool API of :mod:`processor.tools`.

* ``list_factors`` (FAST, query): the factor catalogue.
* ``get_kline`` (FAST, query): one symbol's bars, in time order.
* ``run_backtest`` (COMPUTE): :func:`processor.quant.backtest.run_backtest`.
* ``analyze_factor`` (COMPUTE): :func:`processor.quant.analysis.analyze_factor`.

Each tool gets its :class:`~processor.quant.data.DataStore` from
``ctx.resource`` (one per process and data directory), so a warm process
parses each file once.  Semantic errors (unknown symbol, unknown factor)
raise :class:`~spool.errors.InvalidParams`; malformed data files raise
:class:`~spool.errors.ToolError`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from processor.quant.analysis import FactorParams, analyze_factor
from processor.quant.backtest import BacktestParams, run_backtest
from processor.quant.data import FIELDS, Bars, DataStore, Symbol, check_order
from processor.quant.factors import CATALOGUE
from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

MAX_KLINE_ROWS = 1_000_000


def datastore(ctx: ToolContext) -> DataStore:
    """The process's DataStore for ``ctx.data_dir``."""
    return ctx.resource(f"quant.datastore:{ctx.data_dir}", lambda: DataStore(ctx.data_dir))


class KlineParams(BaseModel):
    """Parameters of ``get_kline``."""

    model_config = ConfigDict(extra="forbid")

    symbol: Symbol
    start: datetime | None = Field(None, description="first bar (inclusive)")
    end: datetime | None = Field(None, description="last bar (inclusive)")
    limit: int | None = Field(None, ge=1, le=MAX_KLINE_ROWS, description=(
        "at most this many bars: the first ones from start when only start is "
        "given, else the most recent ones"))

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_order(self.start, self.end)
        return self


def kline(bars: Bars, params: KlineParams) -> dict[str, Any]:
    """``columns`` and ``rows`` of ``bars`` (already cut to start/end), limited."""
    if params.limit is not None and params.limit < len(bars):
        keep = slice(0, params.limit) if params.start is not None and params.end is None \
            else slice(len(bars) - params.limit, len(bars))
    else:
        keep = slice(0, len(bars))
    columns = [getattr(bars, name)[keep] for name in FIELDS]
    lists: list[list[float | None]] = [c.tolist() for c in columns]
    for values, array in zip(lists, columns, strict=True):
        if not np.isfinite(array).all():
            for i in np.flatnonzero(~np.isfinite(array)).tolist():
                values[i] = None
    return {"symbol": bars.symbol, "columns": ["timestamp", *FIELDS],
            "rows": list(map(list, zip(bars.iso()[keep], *lists, strict=True)))}


def get_kline(store: DataStore, params: KlineParams) -> dict[str, Any]:
    """Bars of one symbol between ``start`` and ``end``, at most ``limit`` rows."""
    return kline(store.bars(params.symbol, params.start, params.end), params)


class ListFactors(BaseTool):
    """The factor catalogue: names, formulas, parameters with defaults."""

    name: ClassVar[str] = "list_factors"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"factors": [f.describe() for f in CATALOGUE.values()]})


class GetKline(BaseTool):
    """OHLCV bars of one symbol in time order, optionally cut by start, end, limit."""

    name: ClassVar[str] = "get_kline"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = KlineParams

    def execute(self, params: KlineParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(get_kline(datastore(ctx), params))


class RunBacktest(BaseTool):
    """Backtest ma_crossover on one or many symbols (one 2-D computation)."""

    name: ClassVar[str] = "run_backtest"
    category: ClassVar[str] = "mutation"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 3600.0
    Params: ClassVar[type[BaseModel]] = BacktestParams

    def execute(self, params: BacktestParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(run_backtest(params, datastore(ctx), ctx.progress))


class AnalyzeFactor(BaseTool):
    """Factor analysis: IC, rank IC, quantile returns, rank autocorrelation, turnover."""

    name: ClassVar[str] = "analyze_factor"
    category: ClassVar[str] = "mutation"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 3600.0
    Params: ClassVar[type[BaseModel]] = FactorParams

    def execute(self, params: FactorParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(analyze_factor(params, datastore(ctx), ctx.progress))


QUANT_TOOLS: list[type[BaseTool]] = [ListFactors, GetKline, RunBacktest, AnalyzeFactor]
