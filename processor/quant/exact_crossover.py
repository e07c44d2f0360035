"""Exact decisions of the crossover signal's near ties, on the closes' quoted decimals.

``crossover.Crossover`` compares float window sums.  Where the two scaled SMAs come
within its tolerance it cannot tell a tie from a real difference: SMAs of prices
quoted to a tick differ, unless equal, by as little as ``tick / lcm(fast, slow)``,
which at large prices or long windows is below float noise.  Those few cells are
decided here, on the decimals the floats stand for: each close's shortest repr (what
the CSV held), exactly as sums of ``Decimal(repr(close))`` would decide them.

How: the closes of the cells' windows are written as whole multiples of ``10**-K``,
``K`` the fewest decimals that give back every close, with at most ``2**51`` units
each (then that multiple is the only ``K``-decimal rounding to the close, so it is
the close's shortest repr).  Their sums are exact in int64, or in Python ints where
int64 could overflow.  Closes with no such form (``1e-300``, ``0.1 + 0.2``) are read
as ``Decimal(repr(close))`` in a context that traps any rounding.  A column's cells
cost ``O(slow)`` each, or ``O(span)`` for the rows from the first cell's window to
the last cell when that is less (a flat stretch where every cell ties).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from processor.quant.bars import F64

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
MAX_DECIMALS = 22
"""``10.0 ** k`` is exact up to here."""
MAX_UNITS = float(1 << 51)
"""A close's whole units of ``10**-K``: beyond this a float spans more than one."""
INT64_SAFE = float(1 << 62)
TIE_MARGIN = 4.0
"""A column's near cells are all ties when ``10**-K`` exceeds this many tolerances: a
float difference is within one of the exact one, or the vectorised signal is wrong."""
FITS_PIECE = 1 << 16
BATCH_CELLS = 1 << 20
"""Window closes gathered at once (cells x slow)."""
EXACT = decimal.Context(prec=1000, Emin=-2000, Emax=2000, traps=[decimal.Inexact])
"""Sums and products of reprs of floats, over windows below 2**64, are exact here;
any rounding would raise rather than decide a cell wrongly."""


def _fits(values: F64, k: int) -> bool | None:
    """Whether every value is a whole number of ``10**-k`` units (None: one is past
    ``MAX_UNITS`` units, or NaN, so no larger ``k`` fits either).  Read in pieces
    that stay in cache (a third faster on a million closes)."""
    scale = 10.0 ** k
    flat = values.reshape(-1)
    whole = np.empty(min(FITS_PIECE, flat.size))
    same = np.empty(whole.size, dtype=bool)
    for lo in range(0, flat.size, FITS_PIECE):
        part = flat[lo: lo + FITS_PIECE]
        units = np.multiply(part, scale, out=whole[: part.size])
        np.rint(units, out=units)
        if not -MAX_UNITS <= units.min() <= units.max() <= MAX_UNITS:
            return None
        units /= scale
        if not np.equal(units, part, out=same[: part.size]).all():
            return False
    return True


def _decimals(values: F64, least: int = 0) -> int | None:
    """The fewest decimals ``K >= least`` that quote every value (see :func:`_fits`),
    or None.  Tried on a sample first, so the whole array is seldom read twice."""
    sample = values.ravel()[:: max(1, values.size // 64)]
    for data in (sample, values):
        for k in range(least, MAX_DECIMALS + 1):
            fits = _fits(data, k)
            if fits is None:
                return None
            if fits:
                break
            least = k + 1
    return least if least <= MAX_DECIMALS else None


def _whole_units(values: F64) -> Ints | None:
    """``values`` in whole units of ``10**-K`` (see :func:`_decimals`), or None."""
    k = _decimals(values)
    if k is None:
        return None
    units: Ints = np.rint(values * 10.0 ** k).astype(np.int64)
    return units


def _exact(values: F64, terms: int) -> npt.NDArray[Any]:
    """``values`` as numbers whose sums of up to ``terms`` values, times up to
    ``terms``, are exact (one common scale): int64, Python ints or Decimals."""
    units = _whole_units(values)
    if units is None:
        with decimal.localcontext(EXACT):
            flat = [Decimal(repr(v)) for v in values.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(values.shape)
    top = float(np.abs(units).max(initial=0))
    if top * terms < INT64_SAFE:
        return units
    return units.astype(object)


def _compare(fast_sum: npt.NDArray[Any], slow_sum: npt.NDArray[Any], fast: int,
             slow: int) -> Bools:
    """``SMA_fast > SMA_slow`` from exact window sums: ``slow * sum_f > fast * sum_s``."""
    with decimal.localcontext(EXACT):
        above: Bools = np.asarray(fast_sum * slow > slow_sum * fast, dtype=bool)
    return above


def decide(close: F64, rows: Ints, fast: int, slow: int) -> Bools:
    """``SMA_fast > SMA_slow`` exactly at ``rows`` (ascending, each at least
    ``slow - 1``) of the one column ``close``."""
    first, last = int(rows[0]), int(rows[-1])
    if len(rows) * slow > last - first + slow:  # running sums over the span cost less
        lo = first - slow + 1
        values = _exact(close[lo: last + 1], max(last + 1 - lo, fast * slow))
        with decimal.localcontext(EXACT):
            sums = np.concatenate([np.zeros(1, dtype=values.dtype), np.cumsum(values)])
            # Row t's windows end at sums[t - lo + 1], for t = first ... last.
            ends = sums[slow:]
            above = _compare(ends - sums[slow - fast: len(sums) - fast],
                             ends - sums[: len(sums) - slow], fast, slow)
        return above[rows - first]
    out = np.empty(len(rows), dtype=bool)
    step = max(1, BATCH_CELLS // slow)
    back = np.arange(slow - 1, -1, -1)
    for i in range(0, len(rows), step):
        cells = rows[i: i + step]
        windows = _exact(close[cells[:, None] - back], fast * slow)  # oldest first
        with decimal.localcontext(EXACT):
            out[i: i + step] = _compare(windows[:, slow - fast:].sum(axis=1),
                                        windows.sum(axis=1), fast, slow)
    return out


class NearTies:
    """Sets the near cells of a crossover signal exactly, block of rows by block.

    A column whose closes are all quoted in ``K`` decimals has window sums that are
    whole multiples of ``10**-K``, so ``slow * sum_f - fast * sum_s`` is 0 or at least
    ``10**-K``: when that is well above the float tolerance, its near cells are ties
    (already false) and nothing is summed.  ``K`` is checked on the near cells'
    windows when they are few, else on each of the column's rows once (up to its
    last near cell, as blocks reach them)."""

    def __init__(self, close: F64, fast: int, slow: int) -> None:
        self.close, self.fast, self.slow = close, fast, slow
        self.decimals = np.zeros(close.shape[1], dtype=np.int64)  # -1: none fits
        self.checked = np.zeros(close.shape[1], dtype=np.int64)  # rows K holds for

    def settle(self, above: Bools, near: Bools, tolerance: F64, start: int) -> None:
        """Set ``above`` (rows ``start:`` of the closes) exactly on the ``near`` cells,
        where the float difference was within ``tolerance``."""
        cols = [0] if near.shape[1] == 1 else np.flatnonzero(near.any(axis=0)).tolist()
        for col in cols:
            column = near[:, col]
            rows: Ints | None = None
            if np.count_nonzero(column) * self.slow < len(column):
                # Few cells: K of their windows alone.
                rows = np.flatnonzero(column)
                back = np.arange(self.slow - 1, -1, -1)
                k = _decimals(self.close[(rows + start)[:, None] - back, col])
                widest = float(tolerance[rows, col].max())
            else:
                first = int(np.argmax(column))
                last = len(column) - 1 - int(np.argmax(column[::-1]))
                span = self.close[start + first - self.slow + 1: start + last + 1, col]
                if span.min() == span.max():
                    continue  # flat (a price at its floor): every window ties
                k = self._column_decimals(col, start + last + 1)
                widest = float(np.fmax.reduce(tolerance[first: last + 1, col]))
            if k is not None and 10.0 ** -k > TIE_MARGIN * widest:
                continue
            if rows is None:
                rows = np.flatnonzero(column)
            above[rows, col] = decide(self.close[:, col], rows + start, self.fast, self.slow)

    def _column_decimals(self, col: int, stop: int) -> int | None:
        """Column ``col``'s decimals over its rows below ``stop`` (all finite)."""
        k, done = int(self.decimals[col]), int(self.checked[col])
        if k >= 0 and stop > done:
            if done == 0:  # the first near cell: find K (mostly on a sample)
                found = _decimals(self.close[:stop, col])
                k = -1 if found is None else found
                self.decimals[col] = k
            elif not _fits(self.close[done:stop, col], k):
                found = _decimals(self.close[:stop, col], k + 1)
                k = -1 if found is None else found
                self.decimals[col] = k
            self.checked[col] = stop
        return k if k >= 0 else None
