"""Independent reference implementations for the quant tests.

Written from QUANT.md without looking at the vectorised code: files are read
with the ``csv`` module, the backtest is a plain bar-by-bar account loop per
symbol, and the factor analysis loops over dates with ``pd.qcut``, average ranks
from ``scipy.stats.rankdata`` and the textbook Pearson formula (scipy's
``pearsonr`` computes the same, to a few ulps, as test_quant_reference checks, but
spends ~0.3 ms per call on argument handling: 3,600 calls per analysis).
Missing-bar rule for the backtest (the one the tool documents): each symbol runs
on its own rows whose open and close are present.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats


@dataclass
class Rows:
    timestamps: list[datetime]
    open: list[float]
    close: list[float]
    volume: list[float]


def read_rows(path: Path) -> Rows:
    """Every row of a CSV file; an empty cell is NaN."""
    rows = Rows([], [], [], [])
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            rows.timestamps.append(datetime.fromisoformat(record["timestamp"]))
            for name in ("open", "close", "volume"):
                text = record[name]
                getattr(rows, name).append(float(text) if text else math.nan)
    return rows


def own_bars(rows: Rows, start: datetime | None = None, end: datetime | None = None) -> Rows:
    out = Rows([], [], [], [])
    for ts, o, c, v in zip(rows.timestamps, rows.open, rows.close, rows.volume, strict=True):
        if (start is None or ts >= start) and (end is None or ts <= end) \
                and not math.isnan(o) and not math.isnan(c):
            out.timestamps.append(ts)
            out.open.append(o)
            out.close.append(c)
            out.volume.append(v)
    return out


def _sma(values: list[float], t: int, window: int) -> Decimal:
    """The mean of the closes as the file quotes them (the shortest decimal of each
    float), in exact decimal arithmetic: an SMA tie is a tie, not a float's last digit."""
    total = Decimal(0)
    for k in range(t - window + 1, t + 1):
        total += Decimal(repr(values[k]))
    return total / window


def backtest(rows: Rows, *, fast: int, slow: int, fee: float, slippage: float,
             init_cash: float, periods_per_year: float) -> dict[str, Any]:
    """The bar-by-bar account of QUANT.md for one symbol."""
    closes, n = rows.close, len(rows.close)
    signal = [t >= slow - 1 and _sma(closes, t, fast) > _sma(closes, t, slow) for t in range(n)]
    cash, shares, holding, entry_price = init_cash, 0.0, False, 0.0
    entries = exits = wins = 0
    equity: list[float] = []
    for t in range(n):
        want = signal[t - 1] if t > 0 else False
        if want and not holding:
            entry_price = rows.open[t] * (1 + slippage)
            shares = cash / (entry_price * (1 + fee))
            cash = 0.0
            entries += 1
        elif holding and not want:
            sell = rows.open[t] * (1 - slippage)
            cash = shares * sell * (1 - fee)
            shares = 0.0
            exits += 1
            wins += sell * (1 - fee) / (entry_price * (1 + fee)) - 1 > 0
        holding = want
        equity.append(cash + shares * closes[t])
    return _metrics(rows, equity, init_cash, periods_per_year) | {
        "num_trades": entries, "num_closed_trades": exits,
        "win_rate": wins / exits if exits else None, "bars": n}


def _metrics(rows: Rows, equity: list[float], init_cash: float, p: float) -> dict[str, Any]:
    n = len(equity)
    returns = [e / prev - 1 for prev, e in zip([init_cash, *equity[:-1]], equity, strict=True)]
    std = statistics.stdev(returns) if n >= 2 else None
    mean = statistics.fmean(returns) if n else None
    peak, drawdown = init_cash, 0.0
    for e in equity:
        peak = max(peak, e)
        drawdown = min(drawdown, e / peak - 1)
    total = equity[-1] / init_cash - 1 if n else None
    return {
        "total_return": total,
        "annualized_return": (1 + total) ** (p / n) - 1 if total is not None else None,
        "annualized_volatility": std * math.sqrt(p) if std is not None else None,
        "sharpe": mean / std * math.sqrt(p) if std and mean is not None else None,
        "max_drawdown": drawdown if n else None,
        "final_equity": equity[-1] if n else None,
        "equity_curve": [[ts.isoformat(), e] for ts, e in zip(rows.timestamps, equity,
                                                              strict=True)],
    }


def close_panel(data_dir: Path, symbols: list[str]) -> pd.DataFrame:
    """Closes outer-joined on timestamp, NaN where a symbol has no row."""
    series = {}
    for symbol in symbols:
        rows = read_rows(data_dir / f"{symbol}.csv")
        series[symbol] = pd.Series(rows.close, index=pd.DatetimeIndex(rows.timestamps))
    return pd.concat(series, axis=1, join="outer").sort_index()


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two samples: the centred vectors' cosine, clipped to [-1, 1]; two
    points are perfectly correlated (as ``scipy.stats.pearsonr`` has it)."""
    if len(x) == 2:
        return float(np.sign(x[1] - x[0]) * np.sign(y[1] - y[0]))
    xm, ym = x - x.mean(), y - y.mean()
    r = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return min(max(r, -1.0), 1.0)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    return pearson(stats.rankdata(x), stats.rankdata(y))


def _corr(x: np.ndarray, y: np.ndarray, fn: Any) -> float | None:
    if len(x) < 2 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return None
    return float(fn(x, y))


@dataclass
class _Date:
    names: np.ndarray  # column numbers in the sample
    bucket: np.ndarray  # 1 … Q


def factor_analysis(factor: pd.DataFrame, close: pd.DataFrame, horizons: list[int],
                    quantiles: int, lags: list[int]) -> dict[str, Any]:
    """QUANT.md steps 2-9, one date at a time."""
    c = close.to_numpy()
    f = factor.to_numpy()
    fwd = {h: (close.shift(-h) / close - 1).to_numpy() for h in horizons}
    ok = np.isfinite(f)
    for r in fwd.values():
        ok &= np.isfinite(r)
    dates: dict[int, _Date] = {}
    for t in range(len(c)):
        names = np.flatnonzero(ok[t])
        if len(names) == 0:
            continue
        try:
            cut = pd.qcut(f[t, names], quantiles, labels=False)
        except ValueError:
            continue
        dates[t] = _Date(names, np.asarray(cut, dtype=int) + 1)
    out: dict[str, Any] = {"dates": len(dates), "horizons": {}}
    for h in horizons:
        out["horizons"][str(h)] = _horizon(f, fwd[h], dates, quantiles)
    ranks = {t: (d.names, stats.rankdata(f[t, d.names])) for t, d in dates.items()}
    out["rank_autocorrelation"] = {str(lag): _autocorr(ranks, lag) for lag in lags}
    out["turnover"] = {str(lag): {"top": _turnover(dates, quantiles, lag),
                                  "bottom": _turnover(dates, 1, lag)} for lag in lags}
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    n = len(values)
    mean = float(np.mean(values)) if n else None
    std = float(np.std(values, ddof=1)) if n >= 2 else None
    ir = mean / std if std and mean is not None else None
    return {"mean": mean, "std": std, "ir": ir,
            "t_stat": ir * math.sqrt(n) if ir is not None else None, "n": n}


def _horizon(f: np.ndarray, fwd: np.ndarray, dates: dict[int, _Date],
             quantiles: int) -> dict[str, Any]:
    ics, rank_ics = [], []
    per_bucket: dict[int, list[float]] = {q: [] for q in range(1, quantiles + 1)}
    for t, d in dates.items():
        x, r = f[t, d.names], fwd[t, d.names]
        ic, ric = _corr(x, r, pearson), _corr(x, r, spearman)
        if ic is not None:
            ics.append(ic)
        if ric is not None:
            rank_ics.append(ric)
        for q, means in per_bucket.items():
            inside = r[d.bucket == q]
            if inside.size:
                means.append(float(np.mean(inside)))
    qmeans = [float(np.mean(v)) if v else None for v in per_bucket.values()]
    top, bottom = qmeans[-1], qmeans[0]
    return {"ic": _stats(ics), "rank_ic": _stats(rank_ics), "quantile_mean_return": qmeans,
            "top_minus_bottom": top - bottom if top is not None and bottom is not None
            else None}


def _autocorr(ranks: dict[int, tuple[np.ndarray, np.ndarray]], lag: int) -> float | None:
    values = []
    for t, (names, now) in ranks.items():
        if t - lag not in ranks:
            continue
        old_names, old = ranks[t - lag]
        _, i, j = np.intersect1d(names, old_names, return_indices=True)
        value = _corr(now[i], old[j], pearson)
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else None


def _turnover(dates: dict[int, _Date], label: int, lag: int) -> float | None:
    values = []
    for t, d in dates.items():
        if t - lag not in dates:
            continue
        names = set(d.names[d.bucket == label].tolist())
        before = dates[t - lag]
        if names:
            old = set(before.names[before.bucket == label].tolist())
            values.append(len(names - old) / len(names))
    return float(np.mean(values)) if values else None


def write_bars(directory: Path, symbol: str, close: npt.ArrayLike, *,
               days: Sequence[str] | None = None, open_: npt.ArrayLike | None = None,
               volume: npt.ArrayLike | None = None) -> Path:
    """A CSV with the given closes; open defaults to the previous close."""
    closes = np.asarray(close, dtype=np.float64)
    if days is None:
        days = pd.bdate_range("2010-01-04", periods=len(closes)).strftime("%Y-%m-%d").tolist()
    opens = np.asarray(open_, dtype=np.float64) if open_ is not None \
        else np.concatenate([closes[:1], closes[:-1]])
    vols = np.asarray(volume, dtype=np.float64) if volume is not None \
        else np.full(len(closes), 1000.0)
    high = np.fmax(opens, closes) * 1.01
    low = np.fmin(opens, closes) * 0.99
    path = directory / f"{symbol}.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    for row in zip(days, opens, high, low, closes, vols, strict=True):
        lines.append(",".join([row[0], *("" if np.isnan(x) else repr(float(x)) for x in row[1:])]))
    path.write_text("\n".join(lines) + "\n")
    return path
