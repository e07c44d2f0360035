"""The crossover signal against exact decimal arithmetic on the closes' shortest reprs.

QUANT.md: ``signal[t] = SMA_fast[t] > SMA_slow[t]``, equality false.  The closes a
CSV holds are decimals; the reference here sums ``Decimal(repr(close))`` exactly, so
a tie is a tie and a one-tick difference is a difference, at any price or window.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

import numpy as np
import numpy.typing as npt
import pytest

from processor.quant.backtest import crossover_signal
from processor.quant.crossover import Crossover

Bools = npt.NDArray[np.bool_]
EXACT = Context(prec=1000, Emin=-9999, Emax=9999)


def exact_signal(close: npt.NDArray[np.float64], fast: int, slow: int) -> Bools:
    """``slow * sum_fast > fast * sum_slow`` on the closes' reprs, every bar."""
    with localcontext(EXACT):
        decimals = np.array([Decimal(repr(c)) for c in close.tolist()], dtype=object)
        sums = np.concatenate([np.array([Decimal(0)], dtype=object), np.cumsum(decimals)])
        t = np.arange(slow - 1, len(close))
        out = np.zeros(len(close), dtype=bool)
        out[t] = ((sums[t + 1] - sums[t + 1 - fast]) * slow
                  > (sums[t + 1] - sums[t + 1 - slow]) * fast)
    return out


def window_sum(close: npt.NDArray[np.float64], t: int, window: int) -> Decimal:
    """The exact sum of the reprs of ``close[t - window + 1 : t + 1]``, by distinct value."""
    values, counts = np.unique(close[t - window + 1: t + 1], return_counts=True)
    with localcontext(EXACT):
        return sum((Decimal(repr(v)) * int(n) for v, n in
                    zip(values.tolist(), counts.tolist(), strict=True)), Decimal(0))


@pytest.mark.parametrize(("price", "tick", "fast", "slow"), [
    ("1000000000", "0.01", 60, 61), ("1000000000", "0.01", 10, 11),
    ("0.0001", "0.00000001", 200_000, 200_001), ("200", "0.0001", 999_999, 1_000_000),
    ("1000000000", "0.01", 99_999, 100_000),  # sums past int64: Python ints
])
def test_a_one_tick_difference_is_not_a_tie(price: str, tick: str, fast: int,
                                            slow: int) -> None:
    """Flat at ``price``, then one tick up on the last bar: SMA_fast - SMA_slow =
    tick / fast - tick / slow = tick / (fast * slow), a real difference however far
    below float noise (at 1e9 with 60/61 it is 2.7e-6, 3.6e-15 of the SMAs' sum), so
    the last bar's signal is true.  Every bar before is a tie, so false."""
    bars = slow + 3
    close = np.full(bars, float(price))
    close[-1] = float(Decimal(price) + Decimal(tick))
    assert Decimal(repr(float(close[-1]))) == Decimal(price) + Decimal(tick)
    with localcontext(EXACT):
        numerator = (slow * window_sum(close, bars - 1, fast)
                     - fast * window_sum(close, bars - 1, slow))
    assert numerator == Decimal(tick)  # one tick, exactly
    signal = crossover_signal(close[:, None], fast, slow)[:, 0]
    assert signal[-1] and not signal[:-1].any()


def test_tiny_prices_keep_their_signal() -> None:
    """Closes scaled by 1e-300 made the window sums' unit overflow to inf (and the
    signal all false, with RuntimeWarnings, which the tests turn into errors)."""
    rng = np.random.default_rng(5)
    cents = np.round(50 + np.cumsum(rng.integers(-3, 4, 400)) * 0.01, 2)
    for scale in (1e-300, 1e-305):
        close = cents * scale
        want = exact_signal(close, 2, 4)
        assert want.sum() > 100
        np.testing.assert_array_equal(crossover_signal(close[:, None], 2, 4)[:, 0], want)


def sticky_walk(price: str, tick: str, bars: int, *, move: float, spike: float,
                seed: int) -> npt.NDArray[np.float64]:
    """A walk in whole ticks that moves a tick on a fraction ``move`` of bars, plus
    one-bar spikes of a tick on a fraction ``spike``: long flat stretches, so many
    ties and many differences of a tick or two (quoted prices, as a CSV holds them)."""
    rng = np.random.default_rng(seed)
    ticks = (np.cumsum(rng.choice([-1, 0, 1], size=bars, p=[move / 2, 1 - move, move / 2]))
             + rng.choice([-1, 0, 1], size=bars, p=[spike / 2, 1 - spike, spike / 2]))
    with localcontext(EXACT):
        base, step = Decimal(price), Decimal(tick)
        return np.array([float(base + step * int(n)) for n in ticks.tolist()])


@pytest.mark.parametrize(("price", "tick", "windows", "walk"), [
    ("0.0001", "0.00000001", (7, 30), (20_000, 0.1, 0.0)),
    ("0.5", "0.0001", (10, 50), (20_000, 0.1, 0.0)),
    ("50", "0.01", (10, 50), (20_000, 0.05, 0.0)),
    ("1000000", "0.01", (300, 301), (20_000, 0.01, 0.01)),
    ("1000000", "0.01", (3000, 3001), (20_000, 0.001, 0.01)),
    ("1000000000", "0.01", (60, 61), (20_000, 0.05, 0.0)),
    ("1000000000", "0.01", (3, 4), (20_000, 0.3, 0.0)),
    ("1000000000", "0.01", (1000, 1500), (20_000, 0.001, 0.0)),
    ("200", "0.0001", (99_999, 100_000), (110_000, 0.0, 0.001)),
    ("0.0001", "0.00000001", (20_000, 20_001), (40_000, 1e-4, 0.001)),
])
def test_signal_is_exact_decimal_arithmetic_on_every_bar(
        price: str, tick: str, windows: tuple[int, int],
        walk: tuple[int, float, float]) -> None:
    """Random walks from 1e-4 to 1e9, ticks of 1e-8 to 0.01, windows 3/4 to
    99,999/100,000: the signal is the exact comparison on every bar, ties false."""
    (fast, slow), (bars, move, spike) = windows, walk
    close = sticky_walk(price, tick, bars, move=move, spike=spike, seed=fast + slow)
    want = exact_signal(close, fast, slow)
    assert want.any() and not want[slow - 1:].all()
    # Several symbols of one job: the columns must not disturb each other.
    both = np.column_stack([close, close[::-1]])
    got = crossover_signal(both, fast, slow)
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], exact_signal(close[::-1].copy(), fast, slow))


def test_closes_without_a_short_decimal_are_summed_as_their_reprs() -> None:
    """0.1 + 0.2 is 0.30000000000000004, seventeen digits: flat there, then one ulp
    up, the last bar's SMA_2 is above SMA_3 by a third of an ulp (exact in the reprs),
    and the flat bars are ties."""
    low = 0.1 + 0.2
    close = np.array([low] * 6 + [np.nextafter(low, 1.0)])
    signal = crossover_signal(close[:, None], 2, 3)[:, 0]
    np.testing.assert_array_equal(signal, exact_signal(close, 2, 3))
    assert signal.tolist() == [False] * 6 + [True]


def test_blocks_of_a_few_rows_give_the_same_signal() -> None:
    """The run computes the signal block of rows by block; a near cell's windows
    reach back into earlier blocks."""
    close = sticky_walk("1000000000", "0.01", 3_000, move=0.05, spike=0.0, seed=4)
    want = exact_signal(close, 60, 61)
    crossover = Crossover(np.column_stack([close, close[::-1]]), 60, 61)
    got = np.concatenate([crossover.rows(lo, min(lo + 7, len(close)))
                          for lo in range(0, len(close), 7)])
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], exact_signal(close[::-1].copy(), 60, 61))
