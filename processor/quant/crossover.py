"""The ``ma_crossover`` signal: ``SMA_fast > SMA_slow`` per bar, exact on the closes'
quoted decimals, computed block of rows by block (:mod:`processor.quant.blocks`).

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

import numpy as np

from processor.quant.bars import F64
from processor.quant.blocks import Bools, accumulate
from processor.quant.exact_crossover import NearTies

EPS = float(np.finfo(np.float64).eps)
MIN_UNIT_BITS = -1022 + 51
"""The high parts' unit, ``2**(bits - 51)``, is at least the smallest normal float."""
TIE_ULPS = 8
"""``|SMA_fast - SMA_slow| <= TIE_ULPS * EPS * (SMA_fast + SMA_slow)`` is near (some 16
ulps of either SMA), decided exactly: SMAs equal in the file's decimals come out
within 3 EPS of that sum.  Outside it the float comparison is right."""


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


class Crossover:
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
            accumulate(np.add, part, csum[start - 1] if start else None,
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
    """The whole signal of ``close`` at once (see :class:`Crossover`)."""
    return Crossover(close, fast, slow).rows(0, len(close))
