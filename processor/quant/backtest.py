"""``run_backtest``: the ``ma_crossover`` strategy, exactly as ``QUANT.md`` defines it.

All symbols of a chunk are one 2-D computation; there is no Python loop over
bars.  The 2-D run is :mod:`processor.quant.simulation`'s (the account in closed
form, and the metrics), its signal :mod:`processor.quant.crossover`'s (exact on the
closes' decimals); this module reads the symbols' bars chunk by chunk, reports
progress and assembles the result.  It is the tool's public surface: what tests,
benchmarks and :mod:`processor.quant.tools` import is importable from here
(``__all__``), and the forkserver preloads this module, which imports every other
module a backtest runs.

Progress: a chunk takes symbols until it holds ``CHUNK`` of them or
``CHUNK_CELLS`` bars, and runs down its rows in blocks of about
:data:`~processor.quant.blocks.BLOCK_CELLS` cells, reporting after each block, so
reports come steadily whatever the shape (one symbol of a million bars, or five
hundred of a few thousand).  Results do not depend on the block or chunk size, bit
for bit (:mod:`processor.quant.blocks`).  A symbol's bars are read when its chunk
comes up, with reports as that goes too (a large file's parse chunk by chunk, its
timestamps' ISO text part by part): reading takes its share of the bar as its
estimated seconds do against the simulation's (:class:`~processor.quant.pace.BacktestPace`).
Measured on 2 x 300,000 bars, reading was some 70% of a run whose files were not
parsed, and a third of one whose files were parsed but their ISO text not made; when
reading had no share, the bar stood at 0 for half a run.  A read estimated to cost
nothing (a cached file, its text made) says nothing.

Missing bars: **each symbol runs on its own bars**, the rows of its file
(within ``start``/``end``) whose open and close are both present.  A bar
missing from the file, or a row with an empty open or close, is skipped, not
held: SMA windows, the one-bar signal delay, ``T`` in the metrics and the
equity curve all count that symbol's own bars only.  So a symbol's result
never depends on which other symbols share the job.

Size: a job runs on at most :data:`MAX_BARS` (10,000,000) bars, all its symbols'
together; past that it is :class:`~spool.errors.InvalidParams` (its equity curves
would make a record of gigabytes, which the worker and the processor must hold).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from processor.quant.bars import F64, Bars
from processor.quant.crossover import crossover_signal
from processor.quant.data import DataStore
from processor.quant.jsonsafe import finite_or_none
from processor.quant.pace import BacktestPace
from processor.quant.params import MAX_BACKTEST_BARS, BacktestParams
from processor.quant.simulation import Simulation, metrics, simulate
from spool.errors import InvalidParams

__all__ = ["CHUNK", "CHUNK_CELLS", "MAX_BARS", "BacktestParams", "OwnBars", "Simulation",
           "crossover_signal", "metrics", "own_bars", "run_backtest", "simulate",
           "stack", "summarize"]

ProgressFn = Callable[[float, str], None]
CHUNK = 50
"""At most this many symbols share one 2-D computation."""
CHUNK_CELLS = 1 << 17
"""A chunk takes no more symbols once it holds this many bars (50 x 2520 fit)."""
MAX_BARS = MAX_BACKTEST_BARS
"""The bars of one job, all symbols together (:data:`~processor.quant.params.MAX_BACKTEST_BARS`)."""


@dataclass(frozen=True, slots=True)
class OwnBars:
    """The bars a symbol's backtest runs on, with their ISO timestamps."""

    symbol: str
    iso: list[str]
    open: F64
    close: F64


def own_bars(bars: Bars, on_iso: Callable[[float], None] | None = None) -> OwnBars:
    """A symbol's own bars: the rows where open and close are both present (``on_iso``
    hears how far the making of their ISO text has gone, if it must be made)."""
    keep = np.isfinite(bars.open) & np.isfinite(bars.close)
    if keep.all():
        return OwnBars(bars.symbol, bars.iso(on_iso), bars.open, bars.close)
    iso = [stamp for stamp, k in zip(bars.iso(on_iso), keep.tolist(), strict=True) if k]
    return OwnBars(bars.symbol, iso, bars.open[keep], bars.close[keep])


def stack(columns: list[F64]) -> F64:
    """Columns of different lengths side by side, NaN below each (at least one row)."""
    out = np.full((max(1, *(len(c) for c in columns)), len(columns)), np.nan)
    for j, column in enumerate(columns):
        out[: len(column), j] = column
    return out


_COUNTS = ("num_trades", "num_closed_trades", "bars")


class _Bar:
    """A run's reports: each symbol's read, then each chunk's simulation block by block,
    placed by their estimated seconds (:class:`~processor.quant.pace.BacktestPace`).
    With no one to hear them, nothing is estimated."""

    def __init__(self, progress: ProgressFn | None, store: DataStore,
                 params: BacktestParams) -> None:
        self.progress, self.store, self.params = progress, store, params
        self.total = len(params.symbols)
        self.pace = None if progress is None else BacktestPace(
            store.to_read(params.symbols, params.start, params.end))

    def read(self, k: int) -> OwnBars:
        """Symbol ``k``'s own bars."""
        symbol, start, end = self.params.symbols[k], self.params.start, self.params.end
        if self.progress is None or self.pace is None or not self.pace.reading_s(k):
            return own_bars(self.store.bars(symbol, start, end))  # nothing to say
        report, pace = self.progress, self.pace
        what = f"reading {symbol} (symbol {k + 1} of {self.total})"
        report(pace.gauge.at(), what)
        bars = self.store.bars(symbol, start, end, lambda part: report(
            pace.parsing(k, part), f"{what}: {part:.0%} parsed"))
        iso_rows = bars.iso_to_make()
        pace.parsed(k, len(bars), iso_rows)
        own = own_bars(bars, lambda part: report(
            pace.formatting(k, part), f"{what}: {round(part * iso_rows)}/{iso_rows} timestamps"))
        pace.formatted(k)
        return own

    def simulating(self, first: int, chunk: list[OwnBars], stop: int, rows: int) -> None:
        """The chunk of symbols from ``first`` on has run its rows up to ``stop``."""
        if self.progress is None or self.pace is None:
            return
        size, last = len(chunk), chunk[-1].symbol
        what = (f"{chunk[0].symbol} (symbol {first + 1}" if size == 1 else
                f"{chunk[0].symbol} to {last} (symbols {first + 1}-{first + size}")
        self.progress(self.pace.simulating(first, size, stop / rows),
                      f"backtesting {what} of {self.total}): bar {stop}/{rows}")

    def simulated(self, first: int, size: int) -> None:
        if self.progress is None or self.pace is None:
            return
        done = first + size
        at = 1.0 if done == self.total else self.pace.simulated(first, size)
        self.progress(at, f"backtested {done}/{self.total} symbols")


def _chunks(params: BacktestParams, bar: _Bar) -> Iterator[list[OwnBars]]:
    """The symbols' own bars, read chunk by chunk: ``CHUNK`` symbols or ``CHUNK_CELLS`` bars."""
    chunk: list[OwnBars] = []
    cells = total = 0
    for k, symbol in enumerate(params.symbols):
        chunk.append(bar.read(k))
        cells += len(chunk[-1].close)
        total += len(chunk[-1].close)
        if total > MAX_BARS:
            raise InvalidParams(
                f"run_backtest takes at most {MAX_BARS} bars in one job (all symbols "
                f"together; the record holds an equity curve point for each), and "
                f"symbol {symbol!r} brings these symbols to {total}: split the symbols "
                f"over several jobs or give a narrower start and end")
        if len(chunk) == CHUNK or cells >= CHUNK_CELLS:
            yield chunk
            chunk, cells = [], 0
    if chunk:
        yield chunk


class _Curves:
    """A chunk's equity curves, extended block by block, with a report after each block
    but the last."""

    def __init__(self, chunk: list[OwnBars], bar: _Bar, first: int) -> None:
        self.chunk, self.bar, self.first = chunk, bar, first
        self.rows = max(len(s.close) for s in chunk)
        self.curves: list[list[tuple[str, float | None]]] = [[] for _ in chunk]

    def extend(self, start: int, stop: int, equity: F64) -> None:
        """Append rows ``start:stop`` (``equity``) to every curve and report."""
        for j, series in enumerate(self.chunk):
            end = min(stop, len(series.close))
            if end <= start:
                continue
            column = equity[: end - start, j]
            values: list[float | None] = column.tolist()
            if not np.isfinite(column).all():
                values = [finite_or_none(e) for e in values]
            iso = series.iso if end - start == len(series.iso) else series.iso[start:end]
            if self.curves[j]:
                self.curves[j] += zip(iso, values, strict=True)
            else:  # list() is faster than extending an empty list
                self.curves[j] = list(zip(iso, values, strict=True))
        if stop < self.rows:
            self.bar.simulating(self.first, self.chunk, stop, self.rows)


def _run_chunk(chunk: list[OwnBars], params: BacktestParams,
               curves: _Curves) -> dict[str, dict[str, Any]]:
    lengths = np.array([len(s.close) for s in chunk], dtype=np.int64)
    sim = simulate(stack([s.open for s in chunk]), stack([s.close for s in chunk]),
                   lengths, params, curves.extend)
    values = metrics(sim, params.init_cash, params.periods_per_year)
    out: dict[str, dict[str, Any]] = {}
    for j, (series, curve) in enumerate(zip(chunk, curves.curves, strict=True)):
        entry: dict[str, Any] = {k: finite_or_none(v[j]) for k, v in values.items()}
        entry.update({k: int(values[k][j]) for k in _COUNTS})
        entry["equity_curve"] = curve
        out[series.symbol] = entry
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Across symbols: means and medians over the symbols where a metric is defined."""
    def defined(key: str) -> list[float]:
        return [m[key] for m in results.values() if m[key] is not None]

    totals = {s: m["total_return"] for s, m in results.items() if m["total_return"] is not None}
    best = max(totals, key=totals.__getitem__) if totals else None
    worst = min(totals, key=totals.__getitem__) if totals else None
    return {
        "symbols": len(results),
        "mean_sharpe": _mean(defined("sharpe")),
        "median_sharpe": float(np.median(defined("sharpe"))) if defined("sharpe") else None,
        "mean_total_return": _mean(list(totals.values())),
        "median_total_return": float(np.median(list(totals.values()))) if totals else None,
        "mean_annualized_return": _mean(defined("annualized_return")),
        "mean_max_drawdown": _mean(defined("max_drawdown")),
        "worst_max_drawdown": min(defined("max_drawdown"), default=None),
        "best_symbol": best,
        "best_total_return": totals[best] if best is not None else None,
        "worst_symbol": worst,
        "worst_total_return": totals[worst] if worst is not None else None,
        "total_trades": sum(m["num_trades"] for m in results.values()),
        "total_closed_trades": sum(m["num_closed_trades"] for m in results.values()),
        "mean_win_rate": _mean(defined("win_rate")),
    }


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The equity curves out of Python's cyclic garbage collector's way.

    They are a million and more (time, equity) tuples in lists, none in a cycle, and
    the collections their allocations set off walked them over and over (a 500-symbol
    run: 240 ms of CPU, 165 without, on a heap frozen as a worker's is).  The collector
    is off while they are built and then frozen with them (``gc.freeze``: the collector
    leaves what exists now alone; each object is still freed when its last reference
    goes).  Garbage in cycles made before is collected first, so none is frozen with
    them; a run makes none (measured: 0 unreachable objects after each run).  A run that
    raises freezes nothing: its traceback's frames, in a cycle, hold what it built, which
    frozen would stay for the worker's life (a review: 40 MiB a failed run).
    """
    was_on = gc.isenabled()
    if was_on:
        gc.collect()
    gc.disable()
    try:
        yield
    except BaseException:
        if was_on:
            gc.enable()
        raise
    gc.freeze()
    if was_on:
        gc.enable()


def run_backtest(params: BacktestParams, store: DataStore,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run ``params`` on ``store``'s data; the result shape is ``QUANT.md``'s."""
    results: dict[str, dict[str, Any]] = {}
    bar, done = _Bar(progress, store, params), 0
    with _collector_paused():
        for chunk in _chunks(params, bar):
            results.update(_run_chunk(chunk, params, _Curves(chunk, bar, done)))
            bar.simulated(done, len(chunk))
            done += len(chunk)
    # The summary before the symbols' curves: a reader of a large record's first bytes
    # alone (``spoolq show``, spool/large.py) finds it there.
    return {
        "strategy": params.strategy,
        "params": params.model_dump(mode="json", exclude={"symbols", "strategy"}),
        "summary": summarize(results),
        "symbols": results,
    }
