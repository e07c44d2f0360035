"""Benchmark of the built-in quant tools, with data in memory (cache warm).

Run from the repository root: ``python -m bench.quant`` (``--help`` for sizes).
Writes seeded synthetic data to a temporary directory, then prints medians of
several runs: cold load of every CSV file, ``run_backtest`` on all symbols in
one call (the 2-D computation alone, and the full result with equity curves),
``analyze_factor`` on the same panel, and ``get_kline`` p50 for one cached
symbol.  When vectorbt / alphalens-reloaded are importable (the ``bench``
extra) it measures them on the same data in the same run, checks that they
agree with spoolq, and prints the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import pandas as pd

from processor.quant.analysis import analyze_factor
from processor.quant.backtest import (
    BacktestParams,
    metrics,
    own_bars,
    run_backtest,
    simulate,
    stack,
)
from processor.quant.data import DataStore, Panel
from processor.quant.kline import get_kline
from processor.quant.params import FactorParams, KlineParams
from processor.quant.synth import generate, write_synthetic


def optional(name: str) -> ModuleType | None:
    """An installed optional module (the ``bench`` extra), or None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(label: str, seconds: float, target: str = "") -> None:
    print(f"  {label:<52} {seconds * 1e3:10.2f} ms  {target}")


def backtest_compute(store: DataStore, params: BacktestParams) -> None:
    """The 2-D computation alone: simulation and metrics, chunk by chunk."""
    series = [own_bars(store.bars(s)) for s in params.symbols]
    for lo in range(0, len(series), 50):
        chunk = series[lo: lo + 50]
        lengths = np.array([len(s.close) for s in chunk], dtype=np.int64)
        sim = simulate(stack([s.open for s in chunk]), stack([s.close for s in chunk]),
                       lengths, params)
        metrics(sim, params.init_cash, params.periods_per_year)


def minute_bars(bars: int, params: BacktestParams) -> Callable[[], Any]:
    arrays = generate(1, bars, seed=3)
    lengths = np.array([bars], dtype=np.int64)

    def run() -> Any:
        sim = simulate(arrays["open"], arrays["close"], lengths, params)
        return metrics(sim, params.init_cash, params.periods_per_year), sim
    return run


def vectorbt_backtest(vbt: Any, panel: Panel, params: BacktestParams) -> Callable[[], Any]:
    index = pd.DatetimeIndex(panel.timestamps)
    close = pd.DataFrame(panel.close, index=index, columns=list(panel.symbols))
    open_ = pd.DataFrame(panel.open, index=index, columns=list(panel.symbols))

    def run() -> Any:
        fast = vbt.MA.run(close, params.fast).ma.to_numpy()
        slow = vbt.MA.run(close, params.slow).ma.to_numpy()
        signal = np.nan_to_num(fast) > np.nan_to_num(slow)
        signal &= np.isfinite(fast) & np.isfinite(slow)
        pos = np.zeros_like(signal)
        pos[1:] = signal[:-1]
        held = np.zeros_like(pos)
        held[1:] = pos[:-1]
        pf = vbt.Portfolio.from_signals(close, pos & ~held, held & ~pos, price=open_,
                                        fees=params.fee, init_cash=params.init_cash,
                                        freq="1D")
        pf.total_return()
        pf.sharpe_ratio()
        pf.max_drawdown()
        return pf.value().to_numpy()
    return run


def alphalens_analysis(al: Any, panel: Panel, lookback: int) -> Callable[[], Any]:
    index = pd.DatetimeIndex(panel.timestamps, name="date")
    prices = pd.DataFrame(panel.close, index=index, columns=list(panel.symbols))
    factor = cast(pd.Series, (prices / prices.shift(lookback) - 1).stack())
    factor.index.names = ["date", "asset"]

    def run() -> Any:
        data = al.utils.get_clean_factor_and_forward_returns(
            factor, prices, quantiles=5, periods=(1, 5, 10), max_loss=1.0)
        ic = al.performance.factor_information_coefficient(data)
        al.performance.mean_return_by_quantile(data, demeaned=False)
        for period in (1, 5, 10):
            al.performance.factor_rank_autocorrelation(data, period)
            al.performance.quantile_turnover(data["factor_quantile"], 5, period)
        return ic
    return run


def compare_vectorbt(store: DataStore, params: BacktestParams, ours: tuple[float, float],
                     repeat: int) -> None:
    vectorbt = optional("vectorbt")
    if vectorbt is None:
        print("  vectorbt: not installed (pip install 'spoolq[bench]')")
        return
    run = vectorbt_backtest(vectorbt, store.panel(params.symbols), params)
    run()  # numba compilation
    seconds, equity = timed(run, repeat)
    result = run_backtest(params, store)["symbols"]
    mine = np.array([[e for _, e in result[s]["equity_curve"]] for s in params.symbols]).T
    worst = float(np.max(np.abs(mine / equity - 1)))
    report(f"vectorbt {vectorbt.__version__} same backtest", seconds,
           f"vectorbt/spoolq {seconds / ours[0]:.1f}x (computation), "
           f"{seconds / ours[1]:.1f}x (full); equity max rel diff {worst:.1e}")


def compare_alphalens(store: DataStore, symbols: list[str], ours_s: float,
                      ours: dict[str, Any]) -> None:
    alphalens = optional("alphalens")
    if alphalens is None:
        print("  alphalens-reloaded: not installed (pip install 'spoolq[bench]')")
        return
    run = alphalens_analysis(alphalens, store.panel(symbols), 20)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        seconds, ic = timed(run, 1)
    # alphalens' "IC" is the Spearman one: spoolq's rank_ic.
    diff = abs(float(ic["1D"].mean()) - ours["horizons"]["1"]["rank_ic"]["mean"])
    report(f"alphalens-reloaded {alphalens.__version__} (1 run)", seconds,
           f"ratio alphalens/spoolq {seconds / ours_s:5.1f}x; "
           f"rank IC(1) mean abs diff {diff:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quant", description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs per median")
    parser.add_argument("--minute-bars", type=int, default=1_000_000)
    parser.add_argument("--no-reference", action="store_true", help="skip vectorbt/alphalens")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-") as tmp:
        data_dir = Path(tmp)
        start = time.perf_counter()
        symbols = write_synthetic(data_dir, args.symbols, args.bars, args.seed)
        print(f"data: {args.symbols} symbols x {args.bars} bars, seed {args.seed} "
              f"(written in {time.perf_counter() - start:.2f} s)")
        run_all(data_dir, symbols, args)
    return 0


def run_all(data_dir: Path, symbols: list[str], args: argparse.Namespace) -> None:
    def cold() -> DataStore:
        store = DataStore(data_dir)
        for s in symbols:
            store.bars(s)
        return store
    cold_s, store = timed(cold, 3)
    report(f"cold load of {len(symbols)} CSV files (page cache warm)", cold_s)
    for s in symbols:
        store.bars(s).iso()
    params = BacktestParams(symbols=symbols)
    compute_s, _ = timed(lambda: backtest_compute(store, params), args.repeat)
    report(f"run_backtest {len(symbols)} x {args.bars}: 2-D computation", compute_s,
           "(target <= 250 ms)")
    full_s, _ = timed(lambda: run_backtest(params, store), args.repeat)
    report("run_backtest, full result with equity curves", full_s)
    one = BacktestParams(symbols=symbols[:1])
    report(f"run_backtest 1 x {args.bars}, full result",
           timed(lambda: run_backtest(one, store), 20)[0])
    minute_s, _ = timed(minute_bars(args.minute_bars, one), args.repeat)
    report(f"backtest 1 x {args.minute_bars} bars: computation", minute_s)
    fparams = FactorParams(symbols=symbols)
    factor_s, analysis = timed(lambda: analyze_factor(fparams, store), 3)
    report(f"analyze_factor {len(symbols)} x {args.bars} (momentum 20, h=1,5,10)", factor_s,
           "(target <= 2000 ms)")
    kline_s, _ = timed(lambda: get_kline(store, KlineParams(symbol=symbols[0])), 200)
    report(f"get_kline one cached symbol ({args.bars} rows), p50", kline_s, "(target < 5 ms)")
    if not args.no_reference:
        compare_vectorbt(store, params, (compute_s, full_s), 3)
        compare_alphalens(store, symbols, factor_s, analysis)


if __name__ == "__main__":
    raise SystemExit(main())
