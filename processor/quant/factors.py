"""The factor catalogue: what ``list_factors`` shows and ``analyze_factor`` computes.

Every factor is a vectorised function of a (T, N) :class:`~processor.quant.data.Panel`
returning a (T, N) float array; a cell whose inputs are missing is NaN (and so
leaves the analysis sample).  Shifts are rows of the panel, as in ``QUANT.md``.
Rolling windows need every value in the window (no partial windows).

Guarantees: :func:`resolve` accepts only catalogue names and declared integer
parameters within their bounds; anything else raises
:class:`~spool.errors.InvalidParams`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from processor.quant.bars import F64
from processor.quant.data import Panel
from spool.errors import InvalidParams

MAX_LOOKBACK = 10_000


@dataclass(frozen=True, slots=True)
class FactorParam:
    """An integer parameter of a factor."""

    name: str
    default: int
    minimum: int
    description: str


@dataclass(frozen=True, slots=True)
class Factor:
    """A catalogue entry: documentation plus the vectorised computation."""

    name: str
    description: str
    formula: str
    params: tuple[FactorParam, ...]
    compute: Callable[[Panel, Mapping[str, int]], F64]

    def describe(self) -> dict[str, Any]:
        """The entry as ``list_factors`` returns it."""
        return {
            "name": self.name,
            "description": self.description,
            "formula": self.formula,
            "params": [{"name": p.name, "type": "integer", "default": p.default,
                        "minimum": p.minimum, "maximum": MAX_LOOKBACK,
                        "description": p.description} for p in self.params],
        }


def shift_rows(values: F64, periods: int) -> F64:
    """``out[t] = values[t - periods]`` (NaN where ``t - periods`` is outside)."""
    out = np.full_like(values, np.nan)
    if periods < len(values):
        out[periods:] = values[: len(values) - periods]
    return out


def rolling_mean(values: F64, window: int) -> F64:
    """Mean of rows ``t - window + 1 … t``; NaN unless all are present."""
    return pd.DataFrame(values).rolling(window, min_periods=window).mean().to_numpy()


def _momentum(panel: Panel, p: Mapping[str, int]) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        return panel.close / shift_rows(panel.close, p["lookback"]) - 1.0


def _reversal(panel: Panel, p: Mapping[str, int]) -> F64:
    return -_momentum(panel, p)


def _volatility(panel: Panel, p: Mapping[str, int]) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = panel.close / shift_rows(panel.close, 1) - 1.0
    window = p["lookback"]
    frame = pd.DataFrame(returns).rolling(window, min_periods=window)
    spread = frame.std(ddof=1).to_numpy(copy=True)
    # pandas' running sums keep a residue of the returns that left the window (after a
    # missing bar it is not reset: 1.1e-9 for a flat window, QA), far above CLOSE_FLOOR:
    # a spread that small beside its date's returns is computed again from its window
    # alone, where a window of one value is exactly 0 (:func:`_std`).
    with np.errstate(invalid="ignore"):
        scale = np.nanmax(np.abs(returns), axis=1, initial=0.0)[:, None]
        limit = np.maximum(SMALL_SPREAD * scale, SPREAD_FLOOR)
        rows, cols = np.nonzero((spread > 0) & (spread <= limit))
    if len(rows):
        spread[rows, cols] = _std(windows_of(returns, rows, cols, window))
    return exact_where_close(spread, window, lambda rows, cols: _std(
        windows_of(returns, rows, cols, window)))


def _volume_ratio(panel: Panel, p: Mapping[str, int]) -> F64:
    return _over_mean(panel.volume, p["lookback"], lag=1, less=0.0)


def _ma_distance(panel: Panel, p: Mapping[str, int]) -> F64:
    return _over_mean(panel.close, p["lookback"], lag=0, less=1.0)


def _over_mean(values: F64, window: int, *, lag: int, less: float) -> F64:
    """``values[t] / mean(values[t-lag-window+1 … t-lag]) - less`` (the window ``lag``
    rows back), its near ties computed again from their windows (:func:`exact_where_close`)."""
    average = shift_rows(rolling_mean(values, window), lag)

    def exact(rows: Ints, cols: Ints) -> F64:
        mean = _mean(windows_of(values, rows - lag, cols, window))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio: F64 = values[rows, cols] / mean - less
        return ratio

    with np.errstate(divide="ignore", invalid="ignore"):
        return exact_where_close(values / average - less, window, exact)


# -- ties -------------------------------------------------------------------------------

CLOSE = 1e-9
"""Factor values of a date this close, relative to its largest value, or within
:data:`CLOSE_FLOOR`, may be ties the rolling sums hide: they are computed again from
their windows alone."""
CLOSE_FLOOR = 1e-12
"""A distance from the moving average near zero (``C / mean - 1``, every symbol of a
date near its mean) carries the mean's rounding at the scale of 1: close to each other
at that scale.  (A flat window's volatility under the rolling sums' residue, up to 1e-9,
is recomputed before: :data:`SMALL_SPREAD`.)"""
SMALL_SPREAD = 1e-6
"""A volatility this small relative to its date's largest return is computed again from
its window: it may be a flat window's 0 under the rolling sums' residue."""
SPREAD_FLOOR = 1e-7
"""And one this small whatever the date's returns: the residue comes of returns that left
the window long before (1.1e-9 of a 2 %-a-day stock), so a date of flat or quiet symbols
alone (its largest return 0, or 1e-4) recomputed none (the session's own review)."""
WINDOW_CELLS = 1 << 22
"""Window values gathered at a time when recomputing (32 MiB of float64)."""

Ints = npt.NDArray[np.intp]


def exact_where_close(values: F64, window: int, exact: Callable[[Ints, Ints], F64]) -> F64:
    """``values`` (a statistic of rolling windows of ``window`` rows, date by symbol) with
    each value that is close to another of its date replaced by ``exact(rows, cols)``:
    its window's alone.

    pandas' rolling sums carry a running total, so a window's statistic depends in its
    last digits on the rows before it: two symbols with the same window (the same
    returns in any order: whole-number prices, a flat stretch) got values a bit apart,
    which broke their tie in the ranks and the quantile edges (QUANT.md's rules 3 and
    4: the date stayed in the sample where the edges tie).  Computed from the window
    alone, sorted, equal windows give equal values; only values near another one of
    their date are, so the cost is the rolling one's where nothing ties.
    """
    order = np.argsort(values, axis=1)  # NaN last
    ranked = np.take_along_axis(values, order, axis=1)
    with np.errstate(invalid="ignore"):
        scale = np.nanmax(np.abs(values), axis=1, initial=0.0)[:, None]
        gap = np.abs(np.diff(ranked, axis=1))
        near = gap <= CLOSE * scale + CLOSE_FLOOR
    if not near.any():
        return values
    marked = np.zeros(values.shape, dtype=bool)
    marked[:, 1:] |= near
    marked[:, :-1] |= near
    close = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(close, order, marked, axis=1)
    rows, cols = np.nonzero(close)
    out = values.copy()
    step = max(1, WINDOW_CELLS // window)
    for lo in range(0, len(rows), step):
        out[rows[lo:lo + step], cols[lo:lo + step]] = exact(rows[lo:lo + step],
                                                            cols[lo:lo + step])
    return out


def windows_of(values: F64, rows: Ints, cols: Ints, window: int) -> F64:
    """The ``window`` values of column ``cols[k]`` ending at row ``rows[k]``, each row of
    the result sorted (so a window's statistic depends on its values alone, not their
    order); the rows must have a whole window above them."""
    taken: F64 = values[rows[:, None] + np.arange(1 - window, 1), cols[:, None]]
    taken.sort(axis=1)
    return taken


def _mean(windows: F64) -> F64:
    """Each row's mean, taken about its first value: a window of one value is that value
    exactly (a float mean of seven 49.73 is 49.730000000000004)."""
    first = windows[:, :1]
    mean: F64 = first[:, 0] + (windows - first).mean(axis=1)
    return mean


def _std(windows: F64) -> F64:
    spread: F64 = (windows - windows[:, :1]).std(axis=1, ddof=1)
    return spread


def _lookback(default: int, minimum: int, what: str) -> tuple[FactorParam, ...]:
    return (FactorParam("lookback", default, minimum, what),)


CATALOGUE: Mapping[str, Factor] = {f.name: f for f in (
    Factor("momentum", "Price change over the lookback window.",
           "F[t,a] = C[t,a] / C[t-lookback,a] - 1",
           _lookback(20, 1, "bars back"), _momentum),
    Factor("reversal", "Short-term reversal: the negated recent price change.",
           "F[t,a] = -(C[t,a] / C[t-lookback,a] - 1)",
           _lookback(5, 1, "bars back"), _reversal),
    Factor("volatility", "Standard deviation (ddof=1) of close-to-close returns.",
           "r[t,a] = C[t,a] / C[t-1,a] - 1; F[t,a] = std(r[t-lookback+1 … t, a], ddof=1)",
           _lookback(20, 2, "returns in the window"), _volatility),
    Factor("volume_ratio", "Volume relative to its average over the preceding bars.",
           "F[t,a] = V[t,a] / mean(V[t-lookback … t-1, a])",
           _lookback(20, 1, "preceding bars averaged"), _volume_ratio),
    Factor("ma_distance", "Distance of the close from its simple moving average.",
           "F[t,a] = C[t,a] / mean(C[t-lookback+1 … t, a]) - 1",
           _lookback(20, 1, "bars in the moving average"), _ma_distance),
)}


def resolve(name: str, given: Mapping[str, Any]) -> tuple[Factor, dict[str, int]]:
    """The factor called ``name`` and its full parameters (defaults filled in)."""
    factor = CATALOGUE.get(name)
    if factor is None:
        raise InvalidParams(f"unknown factor {name!r}; known: {', '.join(CATALOGUE)}")
    declared = {p.name: p for p in factor.params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidParams(f"factor {name!r} has no parameter {unknown[0]!r}; "
                            f"parameters: {', '.join(declared) or 'none'}")
    values: dict[str, int] = {}
    for pname, spec in declared.items():
        value = given.get(pname, spec.default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParams(f"factor parameter {pname!r} must be an integer")
        if not spec.minimum <= value <= MAX_LOOKBACK:
            raise InvalidParams(f"factor parameter {pname!r} must be between "
                                f"{spec.minimum} and {MAX_LOOKBACK}, got {value}")
        values[pname] = value
    return factor, values


def compute_factor(name: str, given: Mapping[str, Any], panel: Panel) -> F64:
    """Resolve ``name`` with ``given`` parameters and compute it on ``panel``."""
    factor, params = resolve(name, given)
    return factor.compute(panel, params)
