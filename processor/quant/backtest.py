"""``run_backtest``: the ``ma_crossover`` strategy, exactly as ``QUANT.md`` defines it.

All symbols of a chunk are one 2-D computation; there is no Python loop over
bars.  The sequential cash/share recurrence is solved in closed form: all cash
goes in at an entry and comes out at an exit, so the cash after the k-th exit
is ``init_cash`` times the product of the first k trade growth factors
``S_exit(1-fee) / (B_entry(1+fee))`` (a ``cumprod`` over the exit bars), and
while a trade is open the equity is ``cash / (B_entry(1+fee)) * C_t``.

Progress: a chunk takes symbols until it holds ``CHUNK`` of them or
``CHUNK_CELLS`` bars, and runs down its rows in blocks of about ``BLOCK_CELLS``
cells, reporting after each block, so reports come steadily whatever the shape
(one symbol of a million bars, or five hundred of a few thousand).  A block
continues every running sum, product and maximum from the row before it, in
the same order as one pass over all rows: results do not depend on the block
or chunk size, bit for bit.  The fraction counts symbols, and within a chunk
its rows (a symbol's bars are read only when its chunk comes up).

Missing bars: **each symbol runs on its own bars**, the rows of its file
(within ``start``/``end``) whose open and close are both present.  A bar
missing from the file, or a row with an empty open or close, is skipped, not
held: SMA windows, the one-bar signal delay, ``T`` in the metrics and the
equity curve all count that symbol's own bars only.  So a symbol's result
never depends on which other symbols share the job.

A signal compares window sums, ``slow * sum_fast > fast * sum_slow`` (the SMAs
compared without a division).  The sums are exact but for the last digits:
each close splits into a high part, a whole multiple of a power-of-two unit
chosen per symbol so that running sums of high parts are exact, and a low
part under half that unit, whose running sums stay tiny; a window's sum is a
difference of running sums of each.  A price is quoted in decimals that
binary floats only approximate, so two SMAs equal in those decimals
(``(49.99 + 50.00) / 2`` and ``(50.01 + 49.98 + 49.99 + 50.00) / 4``) come out
a few ulps apart, either way.  So a difference beyond ``TIE_ULPS`` eps of the SMAs'
sum decides the cell, and a cell within it is near: a tie, or a real difference
below float noise (SMAs of prices quoted to a tick differ by as little as
``tick / lcm(fast, slow)``: one cent at 1e9 with windows 60/61).  Near cells are
decided exactly on the closes' quoted decimals by :mod:`exact_crossover`, so the
signal is exact decimal arithmetic on every cell, and ``QUANT.md`` has a tie false.
(Running sums of the closes alone, as before, put ties an ulp or more apart, bought
on about half of them, and their noise grows with the series' length.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from processor.quant.data import F64, Bars, DataStore
from processor.quant.exact_crossover import NearTies
from processor.quant.jsonsafe import finite_or_none
from processor.quant.params import BacktestParams

ProgressFn = Callable[[float, str], None]
BlockFn = Callable[[int, int, F64], None]
"""Called with ``(start, stop, equity)`` once rows ``start:stop`` are simulated."""
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
CHUNK = 50
"""At most this many symbols share one 2-D computation."""
CHUNK_CELLS = 1 << 17
"""A chunk takes no more symbols once it holds this many bars (50 x 2520 fit)."""
BLOCK_CELLS = 1 << 17
"""Rows x symbols computed between two progress reports (some 20-30 ms of work)."""
EPS = float(np.finfo(np.float64).eps)
MIN_UNIT_BITS = -1022 + 51
"""The high parts' unit, ``2**(bits - 51)``, is at least the smallest normal float."""
TIE_ULPS = 8
"""``|SMA_fast - SMA_slow| <= TIE_ULPS * EPS * (SMA_fast + SMA_slow)`` is near (some 16
ulps of either SMA), decided exactly: SMAs equal in the file's decimals come out
within 3 EPS of that sum.  Outside it the float comparison is right."""


@dataclass(frozen=True, slots=True)
class Simulation:
    """Per-bar equity and bar returns of one 2-D run (rows past a symbol's length are
    NaN and 0), and the per-symbol sums the metrics need."""

    equity: F64
    returns: F64
    lengths: Ints
    return_sum: F64
    drawdown: F64
    entries: Ints
    exits: Ints
    wins: Ints


def _accumulate(op: np.ufunc, values: npt.NDArray[Any], carry: npt.NDArray[Any] | None,
                out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    """``op.accumulate`` down the columns of ``values``, continuing from ``carry``, the
    running value of the row above (None: the first row).  The first row is
    ``carry op values[0]``, the very step one pass over all rows takes, so a running
    sum keeps its row order (``ndarray.sum`` would sum pairwise, and a symbol's last
    digits would depend on the block size and on the symbols sharing its job)."""
    if carry is None:
        result: npt.NDArray[Any] = op.accumulate(values, axis=0, out=out)
        return result
    if out is None:
        out = np.empty_like(values)
    out[0] = op(carry, values[0])
    out[1:] = values[1:]
    result = op.accumulate(out, axis=0, out=out)
    return result


def _window_sum(parts: tuple[F64, F64], start: int, stop: int, window: int) -> F64:
    """Rows ``start:stop`` of the window sums, NaN before the window fills: a difference
    of running sums of each part (holding every row before ``stop``), the two added."""
    out = np.full((stop - start, parts[0].shape[1]), np.nan)
    lo = max(start, window - 1)
    if lo == window - 1 and lo < stop:
        out[lo - start] = parts[0][lo] + parts[1][lo]
        lo += 1
    if lo < stop:
        rest = out[lo - start:]
        np.subtract(parts[0][lo:stop], parts[0][lo - window: stop - window], out=rest)
        rest += parts[1][lo:stop]
        rest -= parts[1][lo - window: stop - window]
    return out


class _Crossover:
    """``SMA_fast > SMA_slow`` per cell, block of rows by block; False while either
    window is incomplete, and on a tie (near cells, see ``TIE_ULPS``, are exact)."""

    def __init__(self, close: F64, fast: int, slow: int) -> None:
        self.close, self.fast, self.slow = close, fast, slow
        # A power of two with every running sum of the high parts below 2**52 units.
        with np.errstate(invalid="ignore"):
            top = np.fmax.reduce(close, axis=0)
        top = np.where(np.isfinite(top), top, 1.0)
        bits = np.ceil(np.log2(top) + np.log2(max(1, len(close)))).astype(np.int64)
        # Tiny prices: a unit below the smallest normal float would make high parts
        # inexact and 2**(51 - bits) overflow; a larger unit only leaves more in the
        # (still exact) low parts.
        np.maximum(bits, MIN_UNIT_BITS, out=bits)
        self.unit = np.ldexp(1.0, bits - 51)
        self.per_unit = np.ldexp(1.0, 51 - bits)
        self.sums = (np.empty_like(close), np.empty_like(close))  # of high and low parts
        self.near_ties = NearTies(close, fast, slow)

    def rows(self, start: int, stop: int) -> Bools:
        """The signal of rows ``start:stop``, the rows after the last call's."""
        close = self.close[start:stop]
        high = np.rint(close * self.per_unit)  # exact: power-of-two scalings
        high *= self.unit
        low = np.subtract(close, high)
        for part, csum in zip((high, low), self.sums, strict=True):
            _accumulate(np.add, part, csum[start - 1] if start else None,
                        out=csum[start:stop])
        # slow * sum_fast against fast * sum_slow: the SMAs compared without a division.
        scaled_fast = _window_sum(self.sums, start, stop, self.fast)
        scaled_fast *= self.slow
        scaled_slow = _window_sum(self.sums, start, stop, self.slow)
        scaled_slow *= self.fast
        tie = np.add(scaled_fast, scaled_slow)
        tie *= TIE_ULPS * EPS
        scaled_fast -= scaled_slow
        with np.errstate(invalid="ignore"):
            above: Bools = scaled_fast > tie
            near: Bools = np.abs(scaled_fast, out=scaled_fast) <= tie
        if near.any():  # ties, or differences below float noise: decided exactly
            self.near_ties.settle(above, near, tie, start)
        return above


def crossover_signal(close: F64, fast: int, slow: int) -> Bools:
    """The whole signal of ``close`` at once (see :class:`_Crossover`)."""
    return _Crossover(close, fast, slow).rows(0, len(close))


class _Run:
    """One 2-D run, block of rows by block: the account of every column at the row
    boundary reached so far, and the per-row arrays later blocks and the metrics read."""

    def __init__(self, open_: F64, close: F64, lengths: Ints, params: BacktestParams) -> None:
        self.open, self.close, self.lengths, self.params = open_, close, lengths, params
        self.crossover = _Crossover(close, params.fast, params.slow)
        self.equity = np.empty_like(close)
        self.returns = np.empty_like(close)
        width = close.shape[1]
        # The running values at the row above the next block (copies of the last row:
        # a view would keep a whole block's array alive).
        self.signal = np.zeros(width, dtype=bool)
        self.pos = np.zeros(width, dtype=bool)
        self.entry_buy: F64 = open_[0] * (1 + params.slippage)
        self.growth: F64 | None = None
        self.return_sum: F64 | None = None
        self.peak: F64 | None = None
        self.drawdown = np.zeros(width)
        self.entries = np.zeros(width, dtype=np.int64)
        self.exits = np.zeros(width, dtype=np.int64)
        self.wins = np.zeros(width, dtype=np.int64)

    def step(self, start: int, stop: int) -> None:
        """Simulate rows ``start:stop``, the rows after the last block."""
        past = _past_end(start, stop, self.lengths)
        signal = self.crossover.rows(start, stop)
        pos = np.empty_like(signal)  # held during the bar: the signal of the bar before
        pos[0], pos[1:] = self.signal, signal[:-1]
        if past is not None:
            pos &= ~past
        held = np.empty_like(pos)  # held during the bar before
        held[0], held[1:] = self.pos, pos[:-1]
        self.signal, self.pos = signal[-1].copy(), pos[-1].copy()
        entries = pos & ~held
        exits = held & ~pos
        if past is not None:
            exits &= ~past
        self.entries += entries.sum(axis=0)
        self.exits += exits.sum(axis=0)
        # Overflow (an equity or an annualised growth past the largest float) gives inf,
        # which the result reports as null: not a warning.
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            self._account(start, stop, pos, entries, exits)
            if past is not None:
                self.equity[start:stop][past] = np.nan
            self._returns(start, stop, past)

    def _account(self, start: int, stop: int, pos: Bools, entries: Bools, exits: Bools) -> None:
        """Equity of rows ``start:stop``: all cash in at an entry's open, out at an exit's."""
        p = self.params
        open_, close = self.open[start:stop], self.close[start:stop]
        buy = np.empty((stop - start + 1, open_.shape[1]))  # row 0: the open entry's price
        buy[0] = self.entry_buy
        np.multiply(open_, 1 + p.slippage, out=buy[1:])
        marks = np.where(entries, np.arange(1, stop - start + 1)[:, None], 0)
        entry_buy = np.take_along_axis(buy, np.maximum.accumulate(marks, axis=0), axis=0)
        self.entry_buy = entry_buy[-1].copy()
        cost = entry_buy * (1 + p.fee)
        proceeds = open_ * (1 - p.slippage) * (1 - p.fee)
        growth = np.where(exits, proceeds / cost, 1.0)
        self.wins += (exits & (growth - 1.0 > 0)).sum(axis=0)
        product = _accumulate(np.multiply, growth, self.growth)
        self.growth = product[-1].copy()
        equity = self.equity[start:stop]
        np.multiply(p.init_cash, product, out=equity)  # the cash
        np.copyto(equity, equity / cost * close, where=pos)

    def _returns(self, start: int, stop: int, past: Bools | None) -> None:
        """Bar returns of rows ``start:stop`` and the running sums the metrics need."""
        init_cash = self.params.init_cash
        equity, returns = self.equity[start:stop], self.returns[start:stop]
        previous = np.empty_like(equity)
        previous[0] = self.equity[start - 1] if start else init_cash
        previous[1:] = equity[:-1]
        np.divide(equity, previous, out=returns)
        returns -= 1.0
        running = _accumulate(np.fmax, equity, self.peak)
        self.peak = running[-1].copy()
        drawdown = equity / np.maximum(running, init_cash) - 1.0
        if past is not None:
            returns[past] = 0.0
            drawdown[past] = 0.0
        self.return_sum = _accumulate(np.add, returns, self.return_sum)[-1].copy()
        self.drawdown = np.minimum(self.drawdown, drawdown.min(axis=0, initial=0.0))

    def result(self) -> Simulation:
        assert self.return_sum is not None, "no rows simulated"
        return Simulation(self.equity, self.returns, self.lengths, self.return_sum,
                          self.drawdown, self.entries, self.exits, self.wins)


def _past_end(start: int, stop: int, lengths: Ints) -> Bools | None:
    """The cells of rows ``start:stop`` past their column's bars; None when there are
    none (the usual case: symbols of one calendar), which spares the masking."""
    if stop <= lengths.min():
        return None
    past: Bools = np.arange(start, stop)[:, None] >= lengths[None, :]
    return past


def _blocks(rows: int, width: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row blocks of about ``BLOCK_CELLS`` cells."""
    size = max(1, BLOCK_CELLS // max(1, width))
    for start in range(0, rows, size):
        yield start, min(rows, start + size)


def simulate(open_: F64, close: F64, lengths: Ints, params: BacktestParams,
             on_block: BlockFn | None = None) -> Simulation:
    """Run the strategy on columns holding ``lengths[j]`` bars each (then NaN)."""
    run = _Run(open_, close, lengths, params)
    for start, stop in _blocks(*close.shape):
        run.step(start, stop)
        if on_block is not None:
            on_block(start, stop, run.equity[start:stop])
    return run.result()


def _squared_deviations(sim: Simulation, mean: F64) -> F64:
    """Per column, the sum of ``(r - mean)^2`` over its bars, in row order."""
    total: F64 | None = None
    for start, stop in _blocks(*sim.returns.shape):
        dev = sim.returns[start:stop] - mean
        past = _past_end(start, stop, sim.lengths)
        if past is not None:
            dev[past] = 0.0
        total = _accumulate(np.add, dev * dev, total)[-1].copy()
    assert total is not None
    return total


def metrics(sim: Simulation, init_cash: float, periods_per_year: float) -> dict[str, F64]:
    """Per-symbol metrics as arrays (NaN where undefined)."""
    lengths = sim.lengths
    n = lengths.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = sim.return_sum / n
        std = np.where(n >= 2, np.sqrt(_squared_deviations(sim, mean) / (n - 1)), np.nan)
        final = np.where(lengths > 0,
                         sim.equity[np.maximum(lengths - 1, 0), np.arange(n.size)], np.nan)
        total = final / init_cash - 1.0
        closed = sim.exits.astype(np.float64)
        return {
            "total_return": total,
            "annualized_return": (1.0 + total) ** (periods_per_year / n) - 1.0,
            "annualized_volatility": std * np.sqrt(periods_per_year),
            "sharpe": np.where(std > 0, mean / std * np.sqrt(periods_per_year), np.nan),
            "max_drawdown": np.where(lengths > 0, sim.drawdown, np.nan),
            "num_trades": sim.entries.astype(np.float64),
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


def _chunks(params: BacktestParams, store: DataStore) -> Iterator[list[OwnBars]]:
    """The symbols' own bars, read chunk by chunk: ``CHUNK`` symbols or ``CHUNK_CELLS`` bars."""
    chunk: list[OwnBars] = []
    cells = 0
    for symbol in params.symbols:
        chunk.append(own_bars(store.bars(symbol, params.start, params.end)))
        cells += len(chunk[-1].close)
        if len(chunk) == CHUNK or cells >= CHUNK_CELLS:
            yield chunk
            chunk, cells = [], 0
    if chunk:
        yield chunk


class _Curves:
    """A chunk's equity curves, extended block by block, and its progress reports: the
    fraction counts the symbols done before the chunk plus the chunk's rows done."""

    def __init__(self, chunk: list[OwnBars], progress: ProgressFn | None,
                 done: int, total: int) -> None:
        self.chunk, self.progress, self.done, self.total = chunk, progress, done, total
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
        if self.progress is not None and stop < self.rows:
            size, first, last = len(self.chunk), self.chunk[0].symbol, self.chunk[-1].symbol
            what = (f"{first} (symbol {self.done + 1}" if size == 1 else
                    f"{first} to {last} (symbols {self.done + 1}-{self.done + size}")
            self.progress((self.done + size * stop / self.rows) / self.total,
                          f"backtesting {what} of {self.total}): bar {stop}/{self.rows}")


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


def run_backtest(params: BacktestParams, store: DataStore,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run ``params`` on ``store``'s data; the result shape is ``QUANT.md``'s."""
    results: dict[str, dict[str, Any]] = {}
    total, done = len(params.symbols), 0
    for chunk in _chunks(params, store):
        results.update(_run_chunk(chunk, params, _Curves(chunk, progress, done, total)))
        done += len(chunk)
        if progress is not None:
            progress(done / total, f"backtested {done}/{total} symbols")
    return {
        "strategy": params.strategy,
        "params": params.model_dump(mode="json", exclude={"symbols", "strategy"}),
        "symbols": results,
        "summary": summarize(results),
    }
