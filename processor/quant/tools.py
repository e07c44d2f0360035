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

Importing this module costs no numpy or pandas: the registry needs only the
classes and their :mod:`~processor.quant.params`, and a processor loads the
registry before it starts (pandas alone is some 270 ms of a 490 ms start).  The
computations are imported where a tool runs, in ``execute``; the processor
imports :data:`FAST_MODULES` in the background as soon as it is ready (see
:class:`processor.startup.BackgroundImports`) and the COMPUTE forkservers
preload the rest (:data:`processor.startup.PRELOAD`), or, with ``SPOOL_PRELOAD_QUANT``
off, a worker imports them before its first run of one of :data:`COMPUTE_TOOLS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from processor.quant.params import BacktestParams, FactorParams, KlineParams
from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

if TYPE_CHECKING:
    from processor.quant.data import DataStore

FAST_MODULES = ("processor.quant.factors", "processor.quant.kline")
"""What the FAST tools' ``execute`` imports (with numpy and pandas)."""


def datastore(ctx: ToolContext) -> DataStore:
    """The process's DataStore for ``ctx.data_dir``."""
    from processor.quant.data import DataStore  # noqa: PLC0415 - see the module docstring

    return ctx.resource(f"quant.datastore:{ctx.data_dir}", lambda: DataStore(ctx.data_dir))


class ListFactors(BaseTool):
    """The factor catalogue: names, formulas, parameters with defaults."""

    name: ClassVar[str] = "list_factors"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        from processor.quant.factors import CATALOGUE  # noqa: PLC0415

        return ToolResult.ok({"factors": [f.describe() for f in CATALOGUE.values()]})


class GetKline(BaseTool):
    """OHLCV bars of one symbol in time order, optionally cut by start, end, limit."""

    name: ClassVar[str] = "get_kline"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 10.0
    Params: ClassVar[type[BaseModel]] = KlineParams

    def execute(self, params: KlineParams, ctx: ToolContext) -> ToolResult:
        from processor.quant.kline import get_kline  # noqa: PLC0415

        return ToolResult.ok(get_kline(datastore(ctx), params))


class RunBacktest(BaseTool):
    """Backtest ma_crossover on one or many symbols (one 2-D computation)."""

    name: ClassVar[str] = "run_backtest"
    category: ClassVar[str] = "mutation"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 3600.0
    Params: ClassVar[type[BaseModel]] = BacktestParams

    def execute(self, params: BacktestParams, ctx: ToolContext) -> ToolResult:
        from processor.quant.backtest import run_backtest  # noqa: PLC0415

        return ToolResult.ok(run_backtest(params, datastore(ctx), ctx.progress))


class AnalyzeFactor(BaseTool):
    """Factor analysis: IC, rank IC, quantile returns, rank autocorrelation, turnover."""

    name: ClassVar[str] = "analyze_factor"
    category: ClassVar[str] = "mutation"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 3600.0
    Params: ClassVar[type[BaseModel]] = FactorParams

    def execute(self, params: FactorParams, ctx: ToolContext) -> ToolResult:
        from processor.quant.analysis import analyze_factor  # noqa: PLC0415

        return ToolResult.ok(analyze_factor(params, datastore(ctx), ctx.progress))


QUANT_TOOLS: list[type[BaseTool]] = [ListFactors, GetKline, RunBacktest, AnalyzeFactor]


FAST_TOOLS = tuple(tool for tool in QUANT_TOOLS if tool.execution_mode is ExecutionMode.FAST)
"""The FAST tools whose runs import :data:`FAST_MODULES` (with ``SPOOL_PRELOAD_QUANT`` off,
the processor imports them in the background at the first such run, which waits)."""
COMPUTE_TOOLS = tuple(tool for tool in QUANT_TOOLS
                      if tool.execution_mode is ExecutionMode.COMPUTE)
"""The COMPUTE tools whose runs import :data:`processor.startup.QUANT_PRELOAD` (with
``SPOOL_PRELOAD_QUANT`` off, a worker imports them before such a run, outside its time:
see :func:`processor.worker.load_quant`)."""
