"""run_backtest against a plain bar-by-bar account loop (tests/quant/quant_reference.py)."""

from __future__ import annotations

import gc
import math
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError
from quant_reference import backtest, own_bars, read_rows, write_bars

import processor.quant.backtest as backtest_module
from processor.quant.backtest import BacktestParams, run_backtest
from processor.quant.data import DataStore
from spool.errors import InvalidParams

RTOL = 1e-12
COUNTS = ("num_trades", "num_closed_trades", "bars")
RATIOS = ("total_return", "annualized_return", "annualized_volatility", "sharpe",
          "max_drawdown", "win_rate", "final_equity")


# ``x = ratio - 1`` metrics: compared as the ratio ``1 + x`` (the subtraction cancels
# digits when x is near 0, so a relative bound on x itself would test rounding noise).
MINUS_ONE = ("total_return", "annualized_return", "max_drawdown")


def assert_close(got: float | None, want: float | None, what: str, *,
                 plus_one: bool = False) -> None:
    if want is None:
        assert got is None, what
        return
    assert got is not None, what
    scale = abs(1.0 + want) if plus_one else abs(want)
    assert abs(got - want) <= RTOL * scale, f"{what}: {got!r} != {want!r}"


def assert_matches(got: dict[str, Any], want: dict[str, Any], symbol: str) -> None:
    for key in COUNTS:
        assert got[key] == want[key], f"{symbol} {key}"
    for key in RATIOS:
        assert_close(got[key], want[key], f"{symbol} {key}", plus_one=key in MINUS_ONE)
    assert [t for t, _ in got["equity_curve"]] == [t for t, _ in want["equity_curve"]]
    mine = np.array([e for _, e in got["equity_curve"]])
    theirs = np.array([e for _, e in want["equity_curve"]])
    np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=0, err_msg=symbol)


def reference(data_dir: Path, symbol: str, params: BacktestParams) -> dict[str, Any]:
    rows = own_bars(read_rows(data_dir / f"{symbol}.csv"), params.start, params.end)
    return backtest(rows, fast=params.fast, slow=params.slow, fee=params.fee,
                    slippage=params.slippage, init_cash=params.init_cash,
                    periods_per_year=params.periods_per_year)


@pytest.mark.parametrize(("fast", "slow", "fee", "slippage"),
                         [(10, 50, 0.001, 0.0), (3, 12, 0.002, 0.0005), (1, 2, 0.0, 0.0)])
def test_many_symbols_match_the_account_loop(synth_dir: Path, fast: int, slow: int,
                                             fee: float, slippage: float) -> None:
    store = DataStore(synth_dir)
    symbols = store.list_symbols()
    params = BacktestParams(symbols=symbols, fast=fast, slow=slow, fee=fee, slippage=slippage)
    result = run_backtest(params, store)
    assert list(result["symbols"]) == symbols
    trades = 0
    for symbol in symbols:
        assert_matches(result["symbols"][symbol], reference(synth_dir, symbol, params), symbol)
        trades += result["symbols"][symbol]["num_trades"]
    assert trades > 5 * len(symbols)
    assert result["summary"]["symbols"] == 30
    assert result["summary"]["total_trades"] == trades


def test_start_end_cut_the_bars(synth_dir: Path) -> None:
    params = BacktestParams(symbols=["S0003", "S0004"], fast=5, slow=20,
                            start=datetime(2010, 6, 1), end=datetime(2011, 3, 31))
    result = run_backtest(params, DataStore(synth_dir))
    for symbol in params.symbols:
        got = result["symbols"][symbol]
        assert got["equity_curve"][0][0] == "2010-06-01T00:00:00"
        assert got["equity_curve"][-1][0] == "2011-03-31T00:00:00"
        assert_matches(got, reference(synth_dir, symbol, params), symbol)


def test_summary_and_json(synth_dir: Path) -> None:
    params = BacktestParams(symbols=["S0000", "S0001", "S0002"])
    result = run_backtest(params, DataStore(synth_dir))
    per = result["symbols"]
    totals = {s: m["total_return"] for s, m in per.items()}
    summary = result["summary"]
    assert summary["best_symbol"] == max(totals, key=totals.__getitem__)
    assert summary["worst_symbol"] == min(totals, key=totals.__getitem__)
    assert_close(summary["median_total_return"], float(np.median(list(totals.values()))),
                 "median", plus_one=True)
    assert_close(summary["mean_sharpe"], float(np.mean([m["sharpe"] for m in per.values()])),
                 "mean sharpe")
    assert result["strategy"] == "ma_crossover"
    assert result["params"]["fast"] == 10 and result["params"]["slow"] == 50
    decoded = orjson.loads(orjson.dumps(result))
    assert decoded["symbols"]["S0000"]["equity_curve"][0] == ["2010-01-04T00:00:00", 100000.0]
    # The summary before the curves: what `spoolq show` reads of a large record's head.
    assert list(decoded) == ["strategy", "params", "summary", "symbols"]


def test_every_summary_field_aggregates_the_account_loops_metrics(tmp_path: Path,
                                                                   synth_dir: Path) -> None:
    """Each summary field against the reference account loop's per-symbol metrics,
    aggregated with plain numpy over the symbols where the metric is defined (FLAT never
    trades: no sharpe, no win rate).  Only a few fields were checked; a summary giving
    the best drawdown for the worst, or entries for closed trades, passed."""
    symbols = ["S0000", "S0001", "S0002", "S0003", "FLAT"]
    for symbol in symbols[:-1]:
        (tmp_path / f"{symbol}.csv").write_bytes((synth_dir / f"{symbol}.csv").read_bytes())
    write_bars(tmp_path, "FLAT", [50.0] * 200)
    params = BacktestParams(symbols=symbols, fast=5, slow=20)
    summary = run_backtest(params, DataStore(tmp_path))["summary"]
    want = {s: reference(tmp_path, s, params) for s in symbols}

    def defined(key: str) -> list[float]:
        return [m[key] for m in want.values() if m[key] is not None]

    assert len(defined("sharpe")) == len(defined("win_rate")) == 4  # FLAT left out
    totals = {s: m["total_return"] for s, m in want.items()}
    assert summary["symbols"] == 5
    assert summary["best_symbol"] == max(totals, key=totals.__getitem__)
    assert summary["worst_symbol"] == min(totals, key=totals.__getitem__)
    assert summary["total_trades"] == sum(m["num_trades"] for m in want.values())
    assert summary["total_closed_trades"] == sum(m["num_closed_trades"] for m in want.values())
    assert summary["total_trades"] != summary["total_closed_trades"]  # one left open
    plus_one = {
        "mean_total_return": float(np.mean(list(totals.values()))),
        "median_total_return": float(np.median(list(totals.values()))),
        "best_total_return": max(totals.values()),
        "worst_total_return": min(totals.values()),
        "mean_annualized_return": float(np.mean(defined("annualized_return"))),
        "mean_max_drawdown": float(np.mean(defined("max_drawdown"))),
        "worst_max_drawdown": min(defined("max_drawdown")),
    }
    plain = {
        "mean_sharpe": float(np.mean(defined("sharpe"))),
        "median_sharpe": float(np.median(defined("sharpe"))),
        "mean_win_rate": float(np.mean(defined("win_rate"))),
    }
    for key, value in plus_one.items():
        assert_close(summary[key], value, key, plus_one=True)
    for key, value in plain.items():
        assert_close(summary[key], value, key)


def test_a_trade_that_breaks_even_is_no_win(tmp_path: Path) -> None:
    """QUANT.md: a win is a closed trade whose return is > 0.  With fast=1, slow=2 the
    signal is "this close above the last", so each up close buys at the next open and
    the down close after it sells at the open after that: three round trips, filled at
    opens chosen by hand (no fee, no slippage): 10.5 -> 10.5 (0 exactly), 10 -> 12
    (+20 %), 12 -> 11 (-8.3 %).  One win in three; counting a return of 0 as a win
    (>= 0) gave 2/3 and no test saw it."""
    close = [10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 10.0, 10.0]
    open_ = [10.0, 10.0, 10.5, 10.5, 10.0, 12.0, 12.0, 11.0]
    write_bars(tmp_path, "EVEN", close, open_=open_)
    params = BacktestParams(symbols=["EVEN"], fast=1, slow=2, fee=0.0, slippage=0.0)
    got = run_backtest(params, DataStore(tmp_path))["symbols"]["EVEN"]
    trades = [open_[exit_] / open_[entry] - 1 for entry, exit_ in ((2, 3), (4, 5), (6, 7))]
    assert trades[0] == 0.0 and trades[1] > 0 > trades[2]
    assert (got["num_trades"], got["num_closed_trades"]) == (3, 3)
    assert got["win_rate"] == sum(r > 0 for r in trades) / 3 == 1 / 3
    assert_close(got["total_return"], float(np.prod([1 + r for r in trades])) - 1,
                 "three round trips", plus_one=True)


def test_a_row_with_an_empty_open_is_skipped_like_one_with_an_empty_close(
        tmp_path: Path, synth_dir: Path) -> None:
    """The missing-bar rule: a row runs only when its open and its close are both there.
    The gappy test emptied closes only; kept, a row with an empty open was a fill at NaN
    and every later equity point null."""
    full = read_rows(synth_dir / "S0007.csv")
    opens = np.array(full.open)
    opens[[60, 61, 250]] = np.nan
    write_bars(tmp_path, "NOOPEN", full.close, open_=opens,
               days=[t.strftime("%Y-%m-%d") for t in full.timestamps])
    params = BacktestParams(symbols=["NOOPEN"], fast=4, slow=15)
    got = run_backtest(params, DataStore(tmp_path))["symbols"]["NOOPEN"]
    assert got["bars"] == len(full.close) - 3 and got["num_trades"] > 5
    assert full.timestamps[60].isoformat() not in {t for t, _ in got["equity_curve"]}
    assert_matches(got, reference(tmp_path, "NOOPEN", params), "NOOPEN")


def test_the_defaults_are_quant_mds(synth_dir: Path) -> None:
    """A job that gives only its symbols runs QUANT.md's defaults, written out here (the
    other tests pass the model's own defaults to the reference, so a default of 365
    periods a year, say, annualised every such job wrongly and passed)."""
    result = run_backtest(BacktestParams(symbols=["S0008"]), DataStore(synth_dir))
    rows = own_bars(read_rows(synth_dir / "S0008.csv"))
    want = backtest(rows, fast=10, slow=50, fee=0.001, slippage=0.0, init_cash=100_000.0,
                    periods_per_year=252)
    assert_matches(result["symbols"]["S0008"], want, "S0008")
    assert result["params"] == {"fast": 10, "slow": 50, "fee": 0.001, "slippage": 0.0,
                                "init_cash": 100_000.0, "periods_per_year": 252,
                                "start": None, "end": None}


def test_flat_prices_never_trade(tmp_path: Path) -> None:
    write_bars(tmp_path, "FLAT", [100.0] * 300)
    write_bars(tmp_path, "FLAT2", [10.1] * 300)
    params = BacktestParams(symbols=["FLAT", "FLAT2"])
    result = run_backtest(params, DataStore(tmp_path))
    for symbol in params.symbols:
        got = result["symbols"][symbol]
        assert (got["num_trades"], got["num_closed_trades"], got["bars"]) == (0, 0, 300)
        assert got["sharpe"] is None and got["win_rate"] is None
        assert got["annualized_volatility"] == 0.0 and got["max_drawdown"] == 0.0
        assert got["total_return"] == 0.0 and got["final_equity"] == 100000.0
        assert {e for _, e in got["equity_curve"]} == {100000.0}
    assert_matches(result["symbols"]["FLAT"], reference(tmp_path, "FLAT", params), "FLAT")


def test_a_price_that_goes_flat_after_moving_ties_and_never_trades_on_noise(
        tmp_path: Path) -> None:
    """Once the slow window is flat, both SMAs equal its price: a tie, so no signal,
    though the running sums behind the means differ in their last digits."""
    close = np.concatenate([np.round(np.linspace(100, 101.7, 20), 2), np.full(100, 101.7)])
    write_bars(tmp_path, "STEP", close)
    # Exactly: the fast SMA is above the slow one on bars 49-67; from bar 68 the slow
    # window holds only the flat closes (from bar 19 on).
    signal = backtest_module.crossover_signal(close[:, None], 10, 50)[:, 0]
    assert signal[49:68].all() and not signal[68:].any() and not signal[:49].any()
    got = run_backtest(BacktestParams(symbols=["STEP"]), DataStore(tmp_path))["symbols"]["STEP"]
    assert (got["num_trades"], got["num_closed_trades"]) == (1, 1)
    assert_close(got["total_return"], 0.999 / 1.001 - 1, "one round trip at 101.7")


def test_short_series_has_no_trades(tmp_path: Path) -> None:
    write_bars(tmp_path, "SHORT", np.linspace(10, 20, 30))
    write_bars(tmp_path, "ONE", [10.0])
    result = run_backtest(BacktestParams(symbols=["SHORT", "ONE"]), DataStore(tmp_path))
    short, one = result["symbols"]["SHORT"], result["symbols"]["ONE"]
    assert (short["bars"], short["num_trades"], short["total_return"]) == (30, 0, 0.0)
    assert short["sharpe"] is None and short["annualized_volatility"] == 0.0
    assert (one["bars"], one["num_trades"], one["total_return"]) == (1, 0, 0.0)
    assert one["sharpe"] is None and one["annualized_volatility"] is None
    assert one["equity_curve"] == [("2010-01-04T00:00:00", 100000.0)]


def test_no_bars_in_range_is_all_null(synth_dir: Path) -> None:
    params = BacktestParams(symbols=["S0001", "S0002"], start="2030-01-01T00:00:00Z",
                            end="2031-01-01")
    result = run_backtest(params, DataStore(synth_dir))
    got = result["symbols"]["S0001"]
    assert (got["bars"], got["num_trades"], got["equity_curve"]) == (0, 0, [])
    assert all(got[key] is None for key in RATIOS)
    assert result["summary"]["best_symbol"] is None
    assert result["summary"]["mean_sharpe"] is None


def test_symbol_with_gaps_runs_on_its_own_bars(tmp_path: Path, synth_dir: Path) -> None:
    rng = np.random.default_rng(3)
    full = read_rows(synth_dir / "S0005.csv")
    keep = np.sort(rng.choice(len(full.close), size=450, replace=False))
    days = [full.timestamps[i].strftime("%Y-%m-%d") for i in keep]
    closes = np.array(full.close)[keep]
    closes[[40, 41, 200]] = np.nan
    write_bars(tmp_path, "GAPPY", closes, days=days, open_=np.array(full.open)[keep])
    (tmp_path / "FULL.csv").write_bytes((synth_dir / "S0006.csv").read_bytes())
    store = DataStore(tmp_path)
    params = BacktestParams(symbols=["FULL", "GAPPY"], fast=4, slow=15)
    together = run_backtest(params, store)
    gappy = together["symbols"]["GAPPY"]
    assert gappy["bars"] == 447 and gappy["num_trades"] > 5
    assert_matches(gappy, reference(tmp_path, "GAPPY", params), "GAPPY")
    assert_matches(together["symbols"]["FULL"], reference(tmp_path, "FULL", params), "FULL")
    alone = run_backtest(params.model_copy(update={"symbols": ["GAPPY"]}), store)
    assert alone["symbols"]["GAPPY"] == gappy


def test_progress_per_symbol_read_and_per_chunk(synth_dir: Path) -> None:
    calls: list[tuple[float, str]] = []
    symbols = DataStore(synth_dir).list_symbols()
    params = BacktestParams(symbols=symbols)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backtest_module, "CHUNK", 7)
        run_backtest(params, DataStore(synth_dir), lambda f, m: calls.append((f, m)))
    want = []
    for k, symbol in enumerate(symbols):
        want.append(f"reading {symbol} (symbol {k + 1} of 30)")
        if (k + 1) % 7 == 0 or k == 29:
            want.append(f"backtested {k + 1}/30 symbols")
    assert [m for _, m in calls] == want
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions.count(1.0) == 1
    # Files of about one size: reading and running 7 of them is about 7/30 of the bar.
    assert [f for f, m in calls if m.startswith("backtested")] == pytest.approx(
        [7 / 30, 14 / 30, 21 / 30, 28 / 30, 1.0], abs=0.02)


@pytest.mark.parametrize("update", [
    {"fast": 50, "slow": 50}, {"fast": 60, "slow": 50}, {"fast": 0}, {"fee": -0.1},
    {"slippage": 1.0}, {"init_cash": 0}, {"strategy": "buy_and_hold"}, {"symbols": []},
    {"symbols": ["AAA", "AAA"]}, {"symbols": ["../etc/passwd"]}, {"symbols": ["A\n"]},
    {"start": "2012-01-01", "end": "2011-01-01"}, {"bogus": 1},
    {"fast": True, "slow": 2}, {"slow": 10**30}, {"fast": 2.0},
])
def test_invalid_params_are_rejected_by_the_model(update: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BacktestParams.model_validate({"symbols": ["AAA"]} | update)


def test_unknown_symbol_is_invalid_params(synth_dir: Path) -> None:
    params = BacktestParams(symbols=["S0000", "NOPE"])
    with pytest.raises(InvalidParams, match="NOPE"):
        run_backtest(params, DataStore(synth_dir))


def test_the_bars_of_one_job_are_bounded(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing bounded a backtest's bars, all of which its record holds as equity
    curves: 1,000,000 bars cost the worker some 250 MB and the record 44 MB, which the
    processor holds too (5,000,000: a 229 MB record, the processor at 529 MB), so the
    10,000 symbols a job may name, of 10,000 bars each, would need tens of GB.  Past
    MAX_BARS bars in all (between start and end) the job is invalid_params, naming the
    bound, the symbol that passed it and the way out; up to it, nothing changes."""
    monkeypatch.setattr(backtest_module, "MAX_BARS", 25, raising=False)
    for name in ("A", "B", "C"):
        write_bars(tmp_path, name, np.linspace(10, 20, 10))
    store = DataStore(tmp_path)
    with pytest.raises(InvalidParams, match=r"at most 25 bars.*'C'.*start and end"):
        run_backtest(BacktestParams(symbols=["A", "B", "C"], fast=2, slow=3), store)
    two = run_backtest(BacktestParams(symbols=["A", "B"], fast=2, slow=3), store)
    assert [s["bars"] for s in two["symbols"].values()] == [10, 10]
    cut = BacktestParams(symbols=["A", "B", "C"], fast=2, slow=3, start=datetime(2010, 1, 6))
    assert sum(s["bars"] for s in run_backtest(cut, store)["symbols"].values()) == 24


def test_no_nan_in_metrics(tmp_path: Path) -> None:
    write_bars(tmp_path, "UP", np.linspace(10, 40, 120))
    result = run_backtest(BacktestParams(symbols=["UP"], fast=2, slow=5), DataStore(tmp_path))
    got = result["symbols"]["UP"]
    for key in RATIOS:
        assert got[key] is None or math.isfinite(got[key])
    assert got["num_trades"] == 1 and got["num_closed_trades"] == 0 and got["win_rate"] is None
    assert got["max_drawdown"] == pytest.approx(0.0, abs=0.02)


def test_overflowing_metrics_are_null_without_warnings(tmp_path: Path) -> None:
    """Second bars annualise with P = 31,536,000: a 48% gain over 400 bars is
    1.48^78840, past the largest float, so annualized_return is null (and numpy's
    overflow warning must not escape: the tests turn warnings into errors).  So is
    an equity past the largest float, in the metrics and in the equity curve."""
    write_bars(tmp_path, "SECS", 100 * 1.001 ** np.arange(400))
    params = BacktestParams(symbols=["SECS"], fast=2, slow=5, periods_per_year=31_536_000)
    got = run_backtest(params, DataStore(tmp_path))["symbols"]["SECS"]
    assert got["total_return"] == pytest.approx(1.001 ** 395 / 1.001 - 1, rel=1e-9)
    assert got["annualized_return"] is None
    assert got["sharpe"] is not None and got["annualized_volatility"] is not None
    rich = run_backtest(params.model_copy(update={"init_cash": 1.7e308}), DataStore(tmp_path))
    curve = rich["symbols"]["SECS"]["equity_curve"]
    assert curve[0][1] == 1.7e308 and curve[-1][1] is None
    assert rich["symbols"]["SECS"]["final_equity"] is None
    assert rich["symbols"]["SECS"]["total_return"] is None


@pytest.mark.parametrize(("scale", "cash"), [(1e-305, 100_000.0), (1e-10, 1e300)])
def test_a_position_far_below_the_cash_is_marked(tmp_path: Path, scale: float,
                                                 cash: float) -> None:
    """Shares are cash / cost: 1e5 / 1e-305, or 1e300 / 1e-10, overflow though the
    equity does not.  The equity marked its open positions null (all the metrics of a
    position open at the end); it is scale-free: the same as on prices times 1."""
    walk = 1.0 + 0.5 * np.sin(np.arange(300) / 7.0)
    write_bars(tmp_path, "TINY", walk * scale)
    write_bars(tmp_path, "ONE", walk)
    params = BacktestParams(symbols=["TINY", "ONE"], fast=3, slow=10, init_cash=cash)
    got = run_backtest(params, DataStore(tmp_path))["symbols"]
    assert got["TINY"]["num_trades"] == got["ONE"]["num_trades"] > 1
    for key in RATIOS:
        assert_close(got["TINY"][key], got["ONE"][key], key, plus_one=key in MINUS_ONE)
    assert all(e is not None for _, e in got["TINY"]["equity_curve"])


@pytest.mark.parametrize("field", ["fee", "slippage", "init_cash", "periods_per_year"])
def test_nan_is_rejected_as_not_a_number(field: str) -> None:
    """NaN fails every bound, but the error must say what is wrong with it
    ("fee: Input should be less than 1" sent the user looking at the wrong thing)."""
    with pytest.raises(ValidationError, match="finite number"):
        BacktestParams.model_validate({"symbols": ["AAA"], field: float("nan")})


def test_equal_smas_of_decimal_prices_are_a_tie(tmp_path: Path) -> None:
    """QUANT.md: equality is false.  On bar 5 SMA_2 = (49.99 + 50.00) / 2 = 49.995 and
    SMA_4 = (50.01 + 49.98 + 49.99 + 50.00) / 4 = 49.995: a tie, so no entry on bar 6.
    The running sums behind the means put SMA_2 an ulp above SMA_4 and bought.  (On the
    last bar SMA_2 = 50.01 is above SMA_4 = 49.9975, but that signal is never executed.)"""
    close = [50.03, 49.99, 50.01, 49.98, 49.99, 50.00, 50.02]
    write_bars(tmp_path, "TICK", close)
    signal = backtest_module.crossover_signal(np.array(close)[:, None], 2, 4)[:, 0]
    assert signal.tolist() == [False] * 6 + [True]
    params = BacktestParams(symbols=["TICK"], fast=2, slow=4)
    got = run_backtest(params, DataStore(tmp_path))["symbols"]["TICK"]
    assert (got["num_trades"], got["total_return"]) == (0, 0.0)


@pytest.mark.parametrize(("ticks", "fast", "slow"), [(100, 2, 4), (100, 1, 3), (100, 10, 50),
                                                     (10_000, 5, 20)])
def test_signal_is_the_exact_comparison_of_decimal_smas(ticks: int, fast: int,
                                                        slow: int) -> None:
    """Closes quoted to 1/ticks: in whole ticks the SMAs compare exactly
    (SMA_f > SMA_s <=> slow * sum_f > fast * sum_s), ties included, and the signal on
    the parsed floats must say the same on every bar of a long walk."""
    rng = np.random.default_rng(ticks + fast)
    whole = 50 * ticks + np.cumsum(rng.integers(-3, 4, 20_000))
    close = np.array([float(f"{w / ticks:.{len(str(ticks)) - 1}f}") for w in whole])
    sums = np.concatenate([[0], np.cumsum(whole)])
    t = np.arange(slow - 1, len(whole))
    exact = np.zeros(len(whole), dtype=bool)
    exact[t] = slow * (sums[t + 1] - sums[t + 1 - fast]) > fast * (sums[t + 1] - sums[t + 1 - slow])
    ties = np.zeros(len(whole), dtype=bool)
    ties[t] = slow * (sums[t + 1] - sums[t + 1 - fast]) == fast * (sums[t + 1] - sums[t + 1 - slow])
    assert ties.sum() > 20  # the walk does tie, often
    signal = backtest_module.crossover_signal(close[:, None], fast, slow)[:, 0]
    np.testing.assert_array_equal(signal, exact)


@pytest.mark.parametrize(("field", "value"), [
    ("init_cash", True), ("periods_per_year", True), ("fee", False), ("slippage", False),
    ("fee", "0.01"), ("init_cash", "1e5"),
])
def test_a_bool_or_a_string_is_not_a_number(field: str, value: object) -> None:
    """``{"init_cash": true}`` ran a backtest on 1.0 of cash and ``{"fee": false}``
    one without fees: a JSON bool or string is a params error, as for fast and slow."""
    with pytest.raises(ValidationError, match="valid number"):
        BacktestParams.model_validate({"symbols": ["AAA"], field: value})


def test_whole_numbers_are_still_numbers() -> None:
    params = BacktestParams.model_validate({"symbols": ["AAA"], "init_cash": 50_000,
                                            "periods_per_year": 365, "fee": 0})
    assert (params.init_cash, params.periods_per_year, params.fee) == (50_000, 365, 0)


@pytest.mark.parametrize("cash", [5e-324, 1e-320, 1e-310])
def test_subnormal_init_cash_is_refused(cash: float) -> None:
    """Below the smallest normal float the account has too few digits: init_cash 5e-324
    reported total_return 0.0 beside max_drawdown -1.0, and 1e-320 a total_return off
    in the third digit."""
    with pytest.raises(ValidationError, match=r"at least 2\.2250738585072014e-308"):
        BacktestParams.model_validate({"symbols": ["AAA"], "init_cash": cash})
    assert BacktestParams(symbols=["AAA"], init_cash=2.2250738585072014e-308).init_cash > 0


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was_and_no_earlier_garbage_is_frozen(
        synth_dir: Path, enabled: bool) -> None:
    """run_backtest keeps its equity curves out of the collector's way (off while they
    are built, frozen with them after): the collector ends as it began, and garbage in
    cycles made before the run is collected first, never frozen for the process's life
    (a worker runs many jobs)."""
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    del cycle
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        result = run_backtest(BacktestParams(symbols=["S0000", "S0001"]), DataStore(synth_dir))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert result["summary"]["symbols"] == 2
    if enabled:
        assert gone() is None, "a cycle made before the run was frozen, not collected"
    gc.unfreeze()  # leave the test process as it was
    gc.collect()


def test_a_run_that_raises_freezes_nothing(synth_dir: Path) -> None:
    """Its traceback's frames, in a cycle, hold what it built: frozen, that stayed for the
    worker's life (a review: 40 MiB a failed run)."""
    frozen = gc.get_freeze_count()
    with pytest.raises(InvalidParams):
        run_backtest(BacktestParams(symbols=["S0000", "NO_SUCH"]), DataStore(synth_dir))
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled()
