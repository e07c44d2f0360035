"""``analyze_factor``: information coefficients, quantile returns, rank autocorrelation
and turnover, exactly as ``QUANT.md`` steps 1-9 define them.

Everything is vectorised over dates: per-date quantile edges come from one
row-wise sort with numpy's linear interpolation (``np.quantile``'s, at levels
``k/Q``), per-date correlations from masked row sums (one within
``PERFECT_TOLERANCE`` of +-1 is exactly +-1: a perfect correlation, rounded),
average ranks equal to ``DataFrame.rank(axis=1)``.  Lags and horizons are
rows of the panel (the outer join of the symbols on timestamp, missing bars NaN).

Progress: reading the symbols' files, one report per symbol, and the passes over
the panel's dates (joining and the factor, the sample, each horizon, each lag) share
the bar as their estimated seconds do (:mod:`processor.quant.pace`: reading a file not
yet parsed costs more than the analysis of its bars, a cached one next to nothing;
measured, reading was 68-80% of a cold run of 500 x 2520, 1% of a warm one, where a
fixed first 10% kept the bar at 10% for three quarters of a cold run).  The passes are
weighted by their measured cost and each run in blocks of about ``BLOCK_CELLS`` cells
with a report after every block, so reports come steadily whatever the shape.  Every per-date value
depends on its own row only, and the means over dates are taken once over the
whole series: results do not depend on the block size, bit for bit.

Size: the panel (the symbols' timestamps outer-joined, dates x symbols) holds at
most :data:`MAX_CELLS` (25,000,000) cells, at some 110 bytes a cell while the
analysis runs; past that the job is :class:`~spool.errors.InvalidParams`.

Undefined values are ``None``: an IC series with no defined date, a standard
deviation of fewer than two dates, an IR or t-stat with a zero or undefined
standard deviation, and a quantile mean past the largest float (returns near
1e308: an overflow is null, as in the backtest, never inf).  For ``h > 1`` the
daily ICs overlap, so the t-stat overstates significance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from processor.quant.bars import F64
from processor.quant.data import DataStore, Panel, build_panel
from processor.quant.factors import resolve
from processor.quant.jsonsafe import finite_or_none
from processor.quant.pace import Plan, horizon_s, read_costs
from processor.quant.params import MAX_FACTOR_CELLS, FactorParams
from spool.errors import InvalidParams

ProgressFn = Callable[[float, str], None]
Bools = npt.NDArray[np.bool_]
# Distance from +-1 within which a correlation is exactly +-1 (measured: at most
# 2.5 ulps for perfectly correlated rows of 2 to 100,000 names).
PERFECT_TOLERANCE = 16 * float(np.finfo(np.float64).eps)
BLOCK_CELLS = 1 << 16
"""Dates x symbols computed between two progress reports."""
MAX_CELLS = MAX_FACTOR_CELLS
"""The panel of one job, dates x symbols (:data:`~processor.quant.params.MAX_FACTOR_CELLS`)."""
# Cost of a pass over the dates relative to a horizon's (measured: 500 x 2520 daily
# bars and 10 x 300,000): the sample's sorts and ranks, a lag's autocorrelation with
# its turnover, and the panel's join with the factor and forward returns.
SAMPLE_COST, LAG_COST, PREPARE_COST = 1.3, 0.35, 1.0


def forward_return(close: F64, horizon: int) -> F64:
    """``R[t] = C[t+h] / C[t] - 1`` (NaN where ``t+h`` is past the end)."""
    out = np.full_like(close, np.nan)
    if horizon < len(close):
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def quantile_edges(values: F64, sample: Bools, quantiles: int) -> tuple[F64, Bools]:
    """Per row, the k/Q quantiles over the sample (numpy's linear method) and
    whether they are strictly increasing."""
    ordered = np.sort(np.where(sample, values, np.nan), axis=1)
    counts = sample.sum(axis=1)
    last = np.maximum(counts - 1, 0)[:, None]
    virtual = (counts[:, None] - 1) * (np.arange(quantiles + 1) / quantiles)[None, :]
    below = np.floor(virtual)
    above_end = virtual >= last
    lo = np.where(above_end, last, np.maximum(below, 0)).astype(np.intp)
    hi = np.where(above_end, last, below + 1).astype(np.intp)
    gamma = virtual - below
    a = np.take_along_axis(ordered, lo, axis=1)
    b = np.take_along_axis(ordered, hi, axis=1)
    diff = b - a
    edges = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    edges[counts == 0] = np.nan
    with np.errstate(invalid="ignore"):
        increasing = (counts > 0) & np.all(np.diff(edges, axis=1) > 0, axis=1)
    return edges, increasing


def assign_buckets(values: F64, sample: Bools, edges: F64) -> npt.NDArray[np.int16]:
    """``1 + #{k = 1 … Q-1 : F > e_k}`` in the sample, 0 outside."""
    bucket = np.ones(values.shape, dtype=np.int16)
    with np.errstate(invalid="ignore"):
        for k in range(1, edges.shape[1] - 1):
            bucket += values > edges[:, k : k + 1]
    bucket[~sample] = 0
    return bucket


def row_ranks(values: F64, sample: Bools) -> F64:
    """Average ranks (1-based, ties share their mean rank) within each row's sample;
    NaN outside.  Equal to ``DataFrame.rank(axis=1)`` on the masked values."""
    masked = np.where(sample, values, np.nan)
    order = np.argsort(masked, axis=1)
    ordered = np.take_along_axis(masked, order, axis=1)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1
    positions = np.tile(np.arange(1, ordered.shape[1] + 1, dtype=np.float64), len(ordered))
    average = np.bincount(group, weights=positions) / np.bincount(group)
    ranks = np.empty_like(masked)
    np.put_along_axis(ranks, order, average[group].reshape(ordered.shape), axis=1)
    ranks[~sample] = np.nan
    return ranks


def _cosine(x: F64, y: F64, mask: Bools, n: npt.NDArray[np.intp]) -> tuple[F64, Bools]:
    """Per row, the cosine of x and y centred over ``mask``, and whether both sums of
    squares are finite (values past about 1e154 overflow them)."""
    parts, finite = [], np.ones(len(n), dtype=bool)
    for v in (x, y):
        mean = np.where(mask, v, 0.0).sum(axis=1) / n
        parts.append(np.where(mask, v - mean[:, None], 0.0))
        squares = (parts[-1] * parts[-1]).sum(axis=1)
        finite &= np.isfinite(squares)
        parts.append(np.sqrt(squares))
    dx, norm_x, dy, norm_y = parts
    return (dx * dy).sum(axis=1) / (norm_x * norm_y), finite


def row_pearson(x: F64, y: F64, mask: Bools) -> F64:
    """Per row, Pearson of x and y over ``mask``; NaN with < 2 cells or a constant side."""
    n = mask.sum(axis=1)
    defined = n >= 2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for v in (x, y):
            masked = np.where(mask, v, np.nan)
            defined &= np.fmin.reduce(masked, axis=1) < np.fmax.reduce(masked, axis=1)
        r, finite = _cosine(x, y, mask, n)
        # Overflowed sums made r 0 or NaN: a correlation does not depend on the values'
        # scale, so those rows again on values scaled to at most 1.
        redo = defined & ~finite
        if redo.any():
            sx, sy = (v[redo] / np.fmax.reduce(np.abs(np.where(mask[redo], v[redo], np.nan)),
                                               axis=1)[:, None] for v in (x, y))
            r[redo] = _cosine(sx, sy, mask[redo], n[redo])[0]
    # A perfect correlation computes as +-1 give or take a few ulps (ranks 1..5 give
    # 0.9999999999999998, ranks 1..6 give 1.0); left so, a series of them has a std of
    # pure rounding noise and an IR near 1e16 where the exact std is 0 and the IR null.
    r = np.clip(r, -1.0, 1.0)
    r = np.where(np.abs(r) >= 1.0 - PERFECT_TOLERANCE, np.sign(r), r)
    return np.where(defined, r, np.nan)


def series_stats(daily: F64) -> dict[str, Any]:
    """``mean``, ``std`` (ddof=1), ``ir = mean/std``, ``t_stat = ir·√n`` and ``n``."""
    values = daily[np.isfinite(daily)]
    n = int(values.size)
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n >= 2 else float("nan")
    ir = mean / std if std > 0 else float("nan")
    return {"mean": finite_or_none(mean), "std": finite_or_none(std),
            "ir": finite_or_none(ir), "t_stat": finite_or_none(ir * np.sqrt(n)), "n": n}


def _mean_or_none(values: F64) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


class _Progress:
    """The fraction done: a stretch of the bar for each symbol's read, then one for the
    weighted passes, each as long as its estimated seconds (:mod:`processor.quant.pace`)."""

    def __init__(self, progress: ProgressFn | None, store: DataStore, symbols: list[str],
                 passes: float) -> None:
        self.progress, self.symbols = progress, len(symbols)
        parse, bars = read_costs(store, symbols)
        cells = sum(bars)
        self.bar = Plan([*parse, passes * horizon_s(cells, cells / len(symbols))])
        self.total = self.done = 0.0
        self.blocks = 1

    def read(self, count: int) -> None:
        if self.progress is not None:
            self.progress(self.bar.at(count - 1), f"read {count}/{self.symbols} symbols")

    def plan(self, passes: float, blocks: int) -> None:
        """``passes`` (weighted by cost) of ``blocks`` blocks each are to come."""
        self.total, self.blocks = passes, blocks
        self.note(f"{self.symbols} symbols joined")

    def note(self, message: str, cost: float = 0.0) -> None:
        """A report at the fraction done so far, ``cost`` of the passes more (none once all
        is done: "done" says so)."""
        self.done += cost
        if self.progress is not None and self.done < self.total * (1 - 1e-9):
            self.progress(self.bar.at(self.symbols, self.done / self.total), message)

    def block(self, cost: float, message: str) -> None:
        """One block of a pass of ``cost`` is done."""
        self.note(message, cost / self.blocks)


def row_blocks(rows: int, width: int) -> list[slice]:
    """Consecutive row slices of about ``BLOCK_CELLS`` cells (at least one)."""
    size = max(1, BLOCK_CELLS // max(1, width))
    return [slice(lo, min(rows, lo + size)) for lo in range(0, max(rows, 1), size)]


class _Sample:
    """The analysis sample S: cells, buckets and factor ranks; and the row blocks every
    pass over the dates takes, with the progress they report to."""

    def __init__(self, factor: F64, returns: list[F64], quantiles: int,
                 blocks: list[slice], report: _Progress) -> None:
        self.blocks, self.report = blocks, report
        sample = np.isfinite(factor)
        for r in returns:
            sample &= np.isfinite(r)
        self.bucket = np.zeros(factor.shape, dtype=np.int16)
        self.ranks = np.empty_like(factor)
        for rows in blocks:
            edges, increasing = quantile_edges(factor[rows], sample[rows], quantiles)
            sample[rows] &= increasing[:, None]
            self.bucket[rows] = assign_buckets(factor[rows], sample[rows], edges)
            self.ranks[rows] = row_ranks(factor[rows], sample[rows])
            report.block(SAMPLE_COST, f"quantiles and ranks: {rows.stop}/{len(factor)} dates")
        self.quantiles = quantiles
        self.mask = sample
        self.dates: Bools = np.asarray(sample.any(axis=1))
        positions = np.nonzero(sample)[0]
        self._keys = positions * quantiles + self.bucket[sample] - 1

    def quantile_means(self, returns: F64) -> list[float | None]:
        """Mean over dates of each bucket's mean return (dates where it is non-empty);
        null when it overflows (returns near 1e308), not a mean of the other dates."""
        size = self.mask.shape[0] * self.quantiles
        sums = np.bincount(self._keys, weights=returns[self.mask], minlength=size)
        counts = np.bincount(self._keys, minlength=size).reshape(-1, self.quantiles)
        means: list[float | None] = []
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            per_date = sums.reshape(-1, self.quantiles) / counts
            for q in range(self.quantiles):
                dated = per_date[counts[:, q] > 0, q]
                means.append(finite_or_none(dated.mean()) if dated.size else None)
        return means

    def autocorrelation(self, lag: int) -> float | None:
        """Mean over dates t of the rank correlation with date t - lag."""
        daily = np.full(max(len(self.mask) - lag, 0), np.nan)
        for rows in self.blocks:
            lo, hi = max(rows.start, lag), rows.stop
            if lo < hi:
                both = self.mask[lo:hi] & self.mask[lo - lag: hi - lag]
                daily[lo - lag: hi - lag] = row_pearson(
                    self.ranks[lo:hi], self.ranks[lo - lag: hi - lag], both)
            self.report.block(LAG_COST, f"lag {lag}: {rows.stop}/{len(self.mask)} dates")
        return _mean_or_none(daily) if daily.size else None

    def turnover(self, label: int, lag: int) -> float | None:
        if lag >= len(self.mask):
            return None
        now, before = self.bucket[lag:] == label, self.bucket[:-lag] == label
        size = now.sum(axis=1)
        use = self.dates[lag:] & self.dates[:-lag] & (size > 0)
        new = (now & ~before).sum(axis=1)
        return _mean_or_none(new[use] / size[use])


def _horizon(factor: F64, sample: _Sample, returns: F64, label: str) -> dict[str, Any]:
    ic, rank_ic = np.empty(len(factor)), np.empty(len(factor))
    for rows in sample.blocks:
        mask = sample.mask[rows]
        ic[rows] = row_pearson(factor[rows], returns[rows], mask)
        rank_ic[rows] = row_pearson(sample.ranks[rows], row_ranks(returns[rows], mask), mask)
        sample.report.block(1.0, f"horizon {label}: {rows.stop}/{len(factor)} dates")
    means = sample.quantile_means(returns)
    top, bottom = means[-1], means[0]
    return {"ic": series_stats(ic), "rank_ic": series_stats(rank_ic),
            "quantile_mean_return": means,
            "top_minus_bottom": None if top is None or bottom is None
            else finite_or_none(top - bottom)}


def _read(store: DataStore, symbols: list[str], params: FactorParams,
          report: _Progress) -> Panel:
    """The panel of ``symbols``, read one symbol at a time.  A panel past :data:`MAX_CELLS`
    fails as soon as one symbol's bars make it so (the dates are at least its bars): read
    to the end first, every symbol's bars were held (500 files of 1,000,000 bars, some
    20 GB in the worker) before the panel's own check."""
    series = []
    longest = 0
    for symbol in symbols:
        series.append(store.bars(symbol, params.start, params.end))
        longest = max(longest, len(series[-1].timestamps))
        if longest * len(symbols) > MAX_CELLS:
            raise InvalidParams(
                f"at most {MAX_CELLS} cells (dates x symbols, the symbols' timestamps "
                f"outer-joined) fit in one job, and these make at least {longest} dates "
                f"(symbol {symbol!r}) x {len(symbols)} symbols = {longest * len(symbols)}: "
                "give fewer symbols or a narrower start and end")
        report.read(len(series))
    return build_panel(series, MAX_CELLS)


def analyze_factor(params: FactorParams, store: DataStore,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the analysis on ``store``'s data; the result shape is ``QUANT.md``'s."""
    symbols = params.symbols if params.symbols is not None else store.list_symbols()
    if len(symbols) < 2:
        where = ""
        if params.symbols is None:  # every symbol of the data directory: say where
            held = f"the data directory {store.data_dir} holds {len(symbols)}"
            where = f" ({store.no_directory() or held})"
        raise InvalidParams(f"analyze_factor needs at least 2 symbols, got "
                            f"{len(symbols)}{where}")
    factor, fparams = resolve(params.factor, params.given_factor_params())
    lags = params.turnover_lags or params.horizons
    passes = PREPARE_COST + SAMPLE_COST + len(params.horizons) + LAG_COST * len(lags)
    report = _Progress(progress, store, symbols, passes)
    panel = _read(store, symbols, params, report)
    blocks = row_blocks(*panel.shape)
    report.plan(passes, len(blocks))
    values = factor.compute(panel, fparams)
    report.note(f"{factor.name} computed", PREPARE_COST / 2)
    returns = [forward_return(panel.close, h) for h in params.horizons]
    report.note("forward returns computed", PREPARE_COST / 2)
    sample = _Sample(values, returns, params.quantiles, blocks, report)
    horizons = {str(h): _horizon(values, sample, r, str(h))
                for h, r in zip(params.horizons, returns, strict=True)}
    autocorrelation: dict[str, float | None] = {}
    turnover: dict[str, dict[str, float | None]] = {}
    for lag in lags:
        autocorrelation[str(lag)] = sample.autocorrelation(lag)
        turnover[str(lag)] = {"top": sample.turnover(params.quantiles, lag),
                              "bottom": sample.turnover(1, lag)}
        report.note(f"lag {lag} done")
    result = {
        "factor": factor.name, "params": fparams, "symbols": len(symbols),
        "dates": int(sample.dates.sum()), "horizons": horizons,
        "rank_autocorrelation": autocorrelation, "turnover": turnover,
    }
    if progress is not None:
        progress(1.0, "done")
    return result
