"""The ``ma_crossover`` account of a 2-D run, and its per-symbol metrics (``QUANT.md``
steps 3-6): positions from the signal (:mod:`processor.quant.crossover`), fills at
the next bar's open, equity marked at the close, block of rows by block
(:mod:`processor.quant.blocks`).

The sequential cash/share recurrence is solved in closed form: all cash
goes in at an entry and comes out at an exit, so the cash after the k-th exit
is ``init_cash`` times the product of the first k trade growth factors
``S_exit(1-fee) / (B_entry(1+fee))`` (a ``cumprod`` over the exit bars), and
while a trade is open the equity is ``cash / (B_entry(1+fee)) * C_t``.

Columns hold ``lengths[j]`` bars each, then NaN: a cell past its column's bars holds
no position and no fill, its equity is NaN and its return 0, and no metric counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from processor.quant.bars import F64
from processor.quant.blocks import Bools, Ints, accumulate, past_end, row_blocks
from processor.quant.crossover import Crossover
from processor.quant.params import BacktestParams

BlockFn = Callable[[int, int, F64], None]
"""Called with ``(start, stop, equity)`` once rows ``start:stop`` are simulated."""


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


class _Run:
    """One 2-D run, block of rows by block: the account of every column at the row
    boundary reached so far, and the per-row arrays later blocks and the metrics read."""

    def __init__(self, open_: F64, close: F64, lengths: Ints, params: BacktestParams) -> None:
        self.open, self.close, self.lengths, self.params = open_, close, lengths, params
        self.crossover = Crossover(close, params.fast, params.slow)
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
        past = past_end(start, stop, self.lengths)
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
        product = accumulate(np.multiply, growth, self.growth)
        self.growth = product[-1].copy()
        equity = self.equity[start:stop]
        np.multiply(p.init_cash, product, out=equity)  # the cash
        # Shares (cash / cost) times the close, as the ratio close / cost: cash / cost
        # alone overflows when prices are far below the cash (1e-305 against 1e5).
        np.copyto(equity, equity * (close / cost), where=pos)

    def _returns(self, start: int, stop: int, past: Bools | None) -> None:
        """Bar returns of rows ``start:stop`` and the running sums the metrics need."""
        init_cash = self.params.init_cash
        equity, returns = self.equity[start:stop], self.returns[start:stop]
        previous = np.empty_like(equity)
        previous[0] = self.equity[start - 1] if start else init_cash
        previous[1:] = equity[:-1]
        np.divide(equity, previous, out=returns)
        returns -= 1.0
        running = accumulate(np.fmax, equity, self.peak)
        self.peak = running[-1].copy()
        drawdown = equity / np.maximum(running, init_cash) - 1.0
        if past is not None:
            returns[past] = 0.0
            drawdown[past] = 0.0
        self.return_sum = accumulate(np.add, returns, self.return_sum)[-1].copy()
        self.drawdown = np.minimum(self.drawdown, drawdown.min(axis=0, initial=0.0))

    def result(self) -> Simulation:
        assert self.return_sum is not None, "no rows simulated"
        return Simulation(self.equity, self.returns, self.lengths, self.return_sum,
                          self.drawdown, self.entries, self.exits, self.wins)


def simulate(open_: F64, close: F64, lengths: Ints, params: BacktestParams,
             on_block: BlockFn | None = None) -> Simulation:
    """Run the strategy on columns holding ``lengths[j]`` bars each (then NaN)."""
    run = _Run(open_, close, lengths, params)
    for start, stop in row_blocks(*close.shape):
        run.step(start, stop)
        if on_block is not None:
            on_block(start, stop, run.equity[start:stop])
    return run.result()


def _squared_deviations(sim: Simulation, mean: F64) -> F64:
    """Per column, the sum of ``(r - mean)^2`` over its bars, in row order."""
    total: F64 | None = None
    for start, stop in row_blocks(*sim.returns.shape):
        dev = sim.returns[start:stop] - mean
        past = past_end(start, stop, sim.lengths)
        if past is not None:
            dev[past] = 0.0
        total = accumulate(np.add, dev * dev, total)[-1].copy()
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
