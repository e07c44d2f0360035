"""``run_backtest``: the ``ma_crossover`` strategy, exactly as ``QUANT.md`` defines it.

All symbols of a chunk (``CHUNK`` columns) are one 2-D computation; there is no
Python loop over bars.  The sequential cash/share recurrence is solved in
closed form: all cash goes in at an entry and comes out at an exit, so the
cash after the k-th exit is ``init_cash`` times the product of the first k
trade growth factors ``S_exit(1-fee) / (B_entry(1+fee))`` (a ``cumprod`` over
the exit bars), and while a trade is open the equity is
``cash / (B_entry(1+fee)) * C_t``.

Missing bars: **each symbol runs on its own bars**, the rows of its file
(within ``start``/``end``) whose open and close are both present.  A bar
missing from the file, or a row with an empty open or close, is skipped, not
held: SMA windows, the one-bar signal delay, ``T`` in the metrics and the
equity curve all count that symbol's own bars only.  So a symbol's result
never depends on which other symbols share the job.

A signal compares window means of ``C - C[0]`` (the symbol's first close),
which equals comparing the SMAs.  Differences of running sums carry rounding
noise, so where the slow window is flat (every close in it equal) the two SMAs
are equal by definition and the signal is False, as ``QUANT.md`` has it for a
tie, whatever the last digits of the two means say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from processor.quant.data import F64, Bars, DataStore
from processor.quant.jsonsafe import finite_or_none
from processor.quant.params import BacktestParams

ProgressFn = Callable[[float, str], None]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
CHUNK = 50


@dataclass(frozen=True, slots=True)
class Simulation:
    """Per-bar and per-symbol outcome of one 2-D run; rows past a symbol's length are NaN."""

    equity: F64
    valid: Bools
    entries: Bools
    exits: Bools
    wins: Ints


def crossover_signal(close: F64, fast: int, slow: int) -> Bools:
    """``SMA_fast > SMA_slow`` per cell; False while either window is incomplete, and
    where the slow window is flat (a tie, however the running sums round)."""
    csum = np.cumsum(close - close[:1], axis=0)
    with np.errstate(invalid="ignore"):
        above = _window_mean(csum, fast) > _window_mean(csum, slow)
    return above & ~_flat_for(close, slow)


def _flat_for(close: F64, window: int) -> Bools:
    """Cells that end a run of at least ``window`` equal closes down their column."""
    rows = np.arange(len(close))[:, None]
    changed = np.ones(close.shape, dtype=bool)
    changed[1:] = close[1:] != close[:-1]  # NaN never equals: padding ends every run
    run_start = np.maximum.accumulate(np.where(changed, rows, 0), axis=0)
    return rows - run_start >= window - 1


def _window_mean(csum: F64, window: int) -> F64:
    out = np.full_like(csum, np.nan)
    if window <= len(csum):
        out[window - 1] = csum[window - 1]
        out[window:] = csum[window:] - csum[:-window]
    return out / window


def simulate(open_: F64, close: F64, lengths: Ints, params: BacktestParams) -> Simulation:
    """Run the strategy on columns holding ``lengths[j]`` bars each (then NaN)."""
    rows = np.arange(close.shape[0])[:, None]
    valid = rows < lengths[None, :]
    signal = crossover_signal(close, params.fast, params.slow)
    pos = np.zeros_like(valid)
    pos[1:] = signal[:-1]
    pos &= valid
    held = np.zeros_like(pos)
    held[1:] = pos[:-1]
    entries = pos & ~held
    exits = held & ~pos & valid
    entry_row = np.maximum.accumulate(np.where(entries, rows, 0), axis=0)
    buy = open_ * (1 + params.slippage)
    cost = np.take_along_axis(buy, entry_row, axis=0) * (1 + params.fee)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        proceeds = open_ * (1 - params.slippage) * (1 - params.fee)
        growth = np.where(exits, proceeds / cost, 1.0)
        cash = params.init_cash * np.cumprod(growth, axis=0)
        equity = np.where(pos, cash / cost * close, cash)
    equity[~valid] = np.nan
    wins = (exits & (growth - 1.0 > 0)).sum(axis=0)
    return Simulation(equity, valid, entries, exits, wins)


def column_sum(values: F64) -> F64:
    """Sums down each column, always in row order (``ndarray.sum`` switches to pairwise
    summation for a contiguous column, which would make a symbol's last digits depend
    on how many symbols share its job)."""
    sums: F64 = np.cumsum(values, axis=0)[-1]
    return sums


def metrics(sim: Simulation, init_cash: float, periods_per_year: float) -> dict[str, F64]:
    """Per-symbol metrics as arrays (NaN where undefined)."""
    lengths = sim.valid.sum(axis=0)
    n = lengths.astype(np.float64)
    equity = sim.equity
    previous = np.empty_like(equity)
    previous[:1] = init_cash
    previous[1:] = equity[:-1]
    # Overflow (an equity or an annualised growth past the largest float) gives inf,
    # which the result reports as null: not a warning.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        returns = np.where(sim.valid, equity / previous - 1.0, 0.0)
        mean = column_sum(returns) / n
        dev = np.where(sim.valid, returns - mean, 0.0)
        std = np.where(n >= 2, np.sqrt(column_sum(dev * dev) / (n - 1)), np.nan)
        final = np.where(lengths > 0, equity[np.maximum(lengths - 1, 0), np.arange(n.size)],
                         np.nan)
        total = final / init_cash - 1.0
        peak = np.maximum(np.fmax.accumulate(equity, axis=0), init_cash)
        drawdown = np.where(sim.valid, equity / peak - 1.0, 0.0).min(axis=0, initial=0.0)
        closed = sim.exits.sum(axis=0).astype(np.float64)
        return {
            "total_return": total,
            "annualized_return": (1.0 + total) ** (periods_per_year / n) - 1.0,
            "annualized_volatility": std * np.sqrt(periods_per_year),
            "sharpe": np.where(std > 0, mean / std * np.sqrt(periods_per_year), np.nan),
            "max_drawdown": np.where(lengths > 0, drawdown, np.nan),
            "num_trades": sim.entries.sum(axis=0).astype(np.float64),
            "num_closed_trades": closed,
            "win_rate": sim.wins / closed,
            "final_equity": final,
            "bars": n,
        }


@dataclass(frozen=True, slots=True)
class OwnBars:
    """The bars a symbol's backtest runs on, with their ISO timestamps."""

    symbol: str
    iso: list[str]
    open: F64
    close: F64


def own_bars(bars: Bars) -> OwnBars:
    """A symbol's own bars: the rows where open and close are both present."""
    keep = np.isfinite(bars.open) & np.isfinite(bars.close)
    if keep.all():
        return OwnBars(bars.symbol, bars.iso(), bars.open, bars.close)
    iso = [stamp for stamp, k in zip(bars.iso(), keep.tolist(), strict=True) if k]
    return OwnBars(bars.symbol, iso, bars.open[keep], bars.close[keep])


def stack(columns: list[F64]) -> F64:
    """Columns of different lengths side by side, NaN below each (at least one row)."""
    out = np.full((max(1, *(len(c) for c in columns)), len(columns)), np.nan)
    for j, column in enumerate(columns):
        out[: len(column), j] = column
    return out


_COUNTS = ("num_trades", "num_closed_trades", "bars")


def _run_chunk(chunk: list[OwnBars], params: BacktestParams) -> dict[str, dict[str, Any]]:
    lengths = np.array([len(s.close) for s in chunk], dtype=np.int64)
    sim = simulate(stack([s.open for s in chunk]), stack([s.close for s in chunk]),
                   lengths, params)
    values = metrics(sim, params.init_cash, params.periods_per_year)
    out: dict[str, dict[str, Any]] = {}
    for j, series in enumerate(chunk):
        entry: dict[str, Any] = {k: finite_or_none(v[j]) for k, v in values.items()}
        entry.update({k: int(values[k][j]) for k in _COUNTS})
        column = sim.equity[: lengths[j], j]
        curve: list[float | None] = column.tolist()
        if not np.isfinite(column).all():
            curve = [finite_or_none(e) for e in curve]
        entry["equity_curve"] = list(zip(series.iso, curve, strict=True))
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


def run_backtest(params: BacktestParams, store: DataStore,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run ``params`` on ``store``'s data; the result shape is ``QUANT.md``'s."""
    results: dict[str, dict[str, Any]] = {}
    total = len(params.symbols)
    for lo in range(0, total, CHUNK):
        names = params.symbols[lo: lo + CHUNK]
        chunk = [own_bars(store.bars(s, params.start, params.end)) for s in names]
        results.update(_run_chunk(chunk, params))
        if progress is not None:
            done = lo + len(names)
            progress(done / total, f"backtested {done}/{total} symbols")
    return {
        "strategy": params.strategy,
        "params": params.model_dump(mode="json", exclude={"symbols", "strategy"}),
        "symbols": results,
        "summary": summarize(results),
    }
