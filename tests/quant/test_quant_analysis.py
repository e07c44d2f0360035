"""analyze_factor and the factor catalogue against per-date pandas/scipy references."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from quant_reference import close_panel, factor_analysis, read_rows, write_bars
from scipy import stats

import processor.quant.analysis as analysis_module
from processor.quant.analysis import (
    LAG_COST,
    PREPARE_COST,
    SAMPLE_COST,
    FactorParams,
    analyze_factor,
    quantile_edges,
)
from processor.quant.data import DataStore
from processor.quant.factors import CATALOGUE, compute_factor, resolve
from spool.errors import InvalidParams

RTOL = 1e-12


def assert_tree_close(got: Any, want: Any, path: str = "") -> None:
    """Equal structure; counts exact; floats within RTOL relative."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            assert_tree_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_tree_close(g, w, f"{path}[{i}]")
    elif want is None or isinstance(want, int):
        assert got == want, f"{path}: {got!r} != {want!r}"
    else:
        assert got is not None, path
        assert abs(got - want) <= RTOL * abs(want), f"{path}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def gappy_dir(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> Path:
    """The synthetic symbols, three of them with missing days (outer join leaves NaN)."""
    directory = tmp_path_factory.mktemp("gappy")
    rng = np.random.default_rng(11)
    for path in sorted(synth_dir.glob("*.csv")):
        lines = path.read_text().splitlines()
        if path.stem in ("S0001", "S0010", "S0020"):
            body = lines[1:]
            drop = set(rng.choice(len(body), size=60, replace=False).tolist())
            lines = lines[:1] + [line for i, line in enumerate(body) if i not in drop]
        (directory / path.name).write_text("\n".join(lines) + "\n")
    return directory


def expected(data_dir: Path, params: FactorParams, factor: pd.DataFrame | None = None
             ) -> dict[str, Any]:
    symbols = params.symbols or sorted(p.stem for p in data_dir.glob("*.csv"))
    close = close_panel(data_dir, symbols)
    lookback = params.lookback or 20
    f = factor if factor is not None else close / close.shift(lookback) - 1
    lags = params.turnover_lags or params.horizons
    return factor_analysis(f, close, params.horizons, params.quantiles, lags)


def test_momentum_matches_the_per_date_reference(gappy_dir: Path) -> None:
    params = FactorParams(factor="momentum", lookback=20, horizons=[1, 5, 10], quantiles=5)
    result = analyze_factor(params, DataStore(gappy_dir))
    want = expected(gappy_dir, params)
    assert result["factor"] == "momentum" and result["params"] == {"lookback": 20}
    assert result["symbols"] == 30
    assert result["dates"] == want["dates"] == 600 - 20 - 10
    assert_tree_close(result["horizons"], want["horizons"], "horizons")
    assert_tree_close(result["rank_autocorrelation"], want["rank_autocorrelation"], "autocorr")
    assert_tree_close(result["turnover"], want["turnover"], "turnover")
    assert result["horizons"]["1"]["ic"]["n"] == want["dates"]


def test_other_quantiles_lags_and_a_subset(synth_dir: Path) -> None:
    params = FactorParams(factor="momentum", factor_params={"lookback": 7}, horizons=[3, 2],
                          quantiles=3, turnover_lags=[1, 4],
                          symbols=["S0001", "S0002", "S0003", "S0004", "S0005", "S0006"])
    result = analyze_factor(params, DataStore(synth_dir))
    want = expected(synth_dir, params.model_copy(update={"lookback": 7}))
    assert list(result["horizons"]) == ["3", "2"]
    assert list(result["turnover"]) == ["1", "4"]
    for key in ("dates", "horizons", "rank_autocorrelation", "turnover"):
        assert_tree_close(result[key], want[key], key)


def test_tied_factor_values_drop_dates_like_qcut(tmp_path: Path, synth_dir: Path) -> None:
    """Four identical series among eight make tied factor values; depending on where
    the tie sorts, quartile edges repeat and pd.qcut refuses that date too."""
    sources = ["S0001"] * 4 + ["S0002", "S0003", "S0004", "S0005"]
    for i, source in enumerate(sources):
        (tmp_path / f"T{i}.csv").write_bytes((synth_dir / f"{source}.csv").read_bytes())
    params = FactorParams(lookback=5, quantiles=4, horizons=[1, 2])
    result = analyze_factor(params, DataStore(tmp_path))
    want = expected(tmp_path, params)
    assert 0 < result["dates"] == want["dates"] < 600 - 5 - 2
    for key in ("horizons", "rank_autocorrelation", "turnover"):
        assert_tree_close(result[key], want[key], key)


def _shared_tails(directory: Path) -> list[str]:
    """Symbols whose last 200 bars are the same prices (and volumes) after 100 bars of
    histories far apart (prices near 500,000, 5 and 50): the same windows, reached by
    rolling sums that carried different totals."""
    rng = np.random.default_rng(7)
    tail = np.round(rng.uniform(10, 30, 200), 2)
    volume = np.round(rng.uniform(1000, 5000, 200), 3)
    symbols = []
    for symbol, (lo, hi) in {"A": (1e5, 1e6), "B": (1, 10), "C": (40, 60)}.items():
        history = np.round(rng.uniform(lo, hi, 100), 2)
        write_bars(directory, symbol, np.concatenate([history, tail]), volume=np.concatenate(
            [np.round(rng.uniform(1, 1e7, 100), 3), volume]))
        symbols.append(symbol)
    return symbols


@pytest.mark.parametrize("name", ["volatility", "volume_ratio", "ma_distance"])
def test_the_same_window_gives_the_same_value(tmp_path: Path, name: str) -> None:
    """QUANT.md's statistics are of the window: equal windows tie (rules 3 and 4).  pandas'
    rolling sums carry a running total, so the last digits of a window's volatility
    depended on the rows before it: three symbols with the same 200 bars got 188 of 188
    dates apart, which broke their ties in the ranks and the quantile edges."""
    symbols = _shared_tails(tmp_path)
    store = DataStore(tmp_path)
    got = compute_factor(name, {"lookback": 10}, store.panel(symbols))
    tail = got[100 + 12:]
    assert np.isfinite(tail).all()
    assert (tail[:, 0] == tail[:, 1]).all() and (tail[:, 1] == tail[:, 2]).all()
    if name == "volatility":  # the ties decide the sample: all three in one quantile
        params = FactorParams(factor=name, lookback=10, quantiles=2, horizons=[1],
                              symbols=symbols)
        close = close_panel(tmp_path, symbols)
        exact = (close / close.shift(1) - 1).rolling(10).apply(
            lambda window: np.sort(window).std(ddof=1), raw=True)
        ref = factor_analysis(exact, close, [1], 2, [1])
        assert analyze_factor(params, store)["dates"] == ref["dates"]


@pytest.mark.parametrize("name", ["reversal", "volatility", "volume_ratio", "ma_distance"])
def test_other_factors_match_pandas_formulas(gappy_dir: Path, name: str) -> None:
    store = DataStore(gappy_dir)
    symbols = store.list_symbols()
    panel = store.panel(symbols)
    close = close_panel(gappy_dir, symbols)
    volume = pd.concat({s: pd.Series(read_rows(gappy_dir / f"{s}.csv").volume,
                                     index=pd.DatetimeIndex(read_rows(
                                         gappy_dir / f"{s}.csv").timestamps))
                        for s in symbols}, axis=1).sort_index()
    lb = 6
    want = {
        "reversal": -(close / close.shift(lb) - 1),
        "volatility": (close / close.shift(1) - 1).rolling(lb).std(),
        "volume_ratio": volume / volume.rolling(lb).mean().shift(1),
        "ma_distance": close / close.rolling(lb).mean() - 1,
    }[name]
    got = compute_factor(name, {"lookback": lb}, panel)
    np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-12, atol=1e-15)
    assert np.isfinite(got).sum() > 0.8 * got.size
    subset = symbols[:15]  # includes two gappy symbols; the union of days is unchanged
    params = FactorParams(factor=name, lookback=lb, horizons=[1, 3], symbols=subset)
    result = analyze_factor(params, store)
    ref = factor_analysis(want[subset], close[subset], [1, 3], 5, [1, 3])
    for key in ("dates", "horizons", "rank_autocorrelation", "turnover"):
        assert_tree_close(result[key], ref[key], key)


def test_no_dates_in_range(synth_dir: Path) -> None:
    result = analyze_factor(FactorParams(symbols=["S0001", "S0002"], end="2010-01-20"),
                            DataStore(synth_dir))
    assert result["dates"] == 0
    assert result["horizons"]["5"]["ic"] == {"mean": None, "std": None, "ir": None,
                                             "t_stat": None, "n": 0}
    assert result["horizons"]["5"]["quantile_mean_return"] == [None] * 5
    assert result["rank_autocorrelation"]["1"] is None
    assert result["turnover"]["10"] == {"top": None, "bottom": None}


def test_quantile_edges_equal_numpy() -> None:
    rng = np.random.default_rng(2)
    values = np.round(rng.standard_normal((400, 23)), 2)
    sample = rng.random(values.shape) > 0.3
    sample[:5, 1:] = False
    for q in (2, 3, 5, 10):
        edges, increasing = quantile_edges(values, sample, q)
        for t in range(len(values)):
            inside = values[t][sample[t]]
            want = np.quantile(inside, np.arange(q + 1) / q)
            np.testing.assert_array_equal(edges[t], want)
            assert increasing[t] == bool(np.all(np.diff(want) > 0))


def test_progress_weighs_reading_by_what_it_costs(synth_dir: Path) -> None:
    """Reading files not yet parsed is most of a run's time (measured: 68-80% of one of
    500 x 2520, see processor.quant.pace), and a file in the cache is read in
    microseconds: a fixed first 10% of the bar for reading kept a cold run's bar at 10%
    for three quarters of its time (and the time left drawn from it far too short), and
    put a warm run's bar a tenth on its way before its work began."""
    store = DataStore(synth_dir)
    runs: list[list[tuple[float, str]]] = [[], []]
    for calls in runs:  # cold, then warm: the same store has the files parsed
        analyze_factor(FactorParams(horizons=[1, 2, 3]), store,
                       lambda f, m, calls=calls: calls.append((f, m)))
    cold, warm = runs
    for calls in runs:
        assert [m for _, m in calls[:30]] == [f"read {i}/30 symbols" for i in range(1, 31)]
        fractions = [f for f, _ in calls]
        assert fractions == sorted(fractions) and calls[-1] == (1.0, "done")
        assert fractions.count(1.0) == 1
    read_end = cold[29][0]
    assert read_end > 0.5, cold[:30]  # 30 x 600: reading is estimated at 90% of the time
    reads = steps([f for f, _ in cold[:30]])
    assert min(reads) > 0 and max(reads) < 1.1 * min(reads), reads  # files of one size
    assert [f for f, _ in warm[:30]] == [0.0] * 30
    # 30 x 600 is one block per pass: a report at the end of each.
    total = PREPARE_COST + SAMPLE_COST + 3 + 3 * LAG_COST
    for calls, start in ((cold, read_end), (warm, 0.0)):
        at = {m: f for f, m in calls}
        assert at["30 symbols joined"] == start
        for h in (1, 2, 3):
            assert at[f"horizon {h}: 600/600 dates"] == pytest.approx(
                start + (1 - start) * (PREPARE_COST + SAMPLE_COST + h) / total)


def steps(fractions: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(fractions)]


def test_fewer_than_two_symbols_is_invalid_params(tmp_path: Path, synth_dir: Path) -> None:
    with pytest.raises(InvalidParams, match="at least 2 symbols"):
        analyze_factor(FactorParams(symbols=["S0001"]), DataStore(synth_dir))
    write_bars(tmp_path, "ONLY", np.linspace(1, 2, 50))
    with pytest.raises(InvalidParams, match=f"at least 2 symbols, got 1 \\(the data "
                                            f"directory {tmp_path} holds 1\\)"):
        analyze_factor(FactorParams(), DataStore(tmp_path))


def test_a_data_directory_that_does_not_exist_is_named(tmp_path: Path) -> None:
    """"got 0" and "no data file" sent users to their symbols: the directory is missing."""
    store = DataStore(tmp_path / "data")
    with pytest.raises(InvalidParams, match=f"got 0 \\(the data directory {tmp_path}/data "
                                            "does not exist: set the processor's SPOOL_DATA_DIR"):
        analyze_factor(FactorParams(), store)
    with pytest.raises(InvalidParams, match=r"unknown symbol 'S0000': no data file \(the "
                                            r"data directory .* does not exist"):
        store.bars("S0000")
    (tmp_path / "data").mkdir()
    with pytest.raises(InvalidParams, match=f"no data file \\(S0000.csv in {tmp_path}/data\\)"):
        store.bars("S0000")


@pytest.mark.parametrize(("params", "match"), [
    ({"factor": "alpha42"}, "unknown factor 'alpha42'"),
    ({"factor_params": {"window": 3}}, "no parameter 'window'"),
    ({"factor": "volatility", "lookback": 1}, "between 2 and"),
    ({"lookback": 5, "factor_params": {"lookback": 6}}, "disagree"),
    ({"symbols": ["S0001", "NOPE"]}, "'NOPE'"),
])
def test_semantic_errors_are_invalid_params(synth_dir: Path, params: dict[str, Any],
                                            match: str) -> None:
    with pytest.raises(InvalidParams, match=match):
        analyze_factor(FactorParams.model_validate(params), DataStore(synth_dir))


@pytest.mark.parametrize("params", [
    {"quantiles": 1}, {"horizons": []}, {"horizons": [0]}, {"horizons": [1, 1]},
    {"turnover_lags": [0]}, {"symbols": ["../etc/passwd", "S0001"]}, {"lookback": 0},
    {"unknown": True}, {"lookback": True}, {"factor_params": {"lookback": True}},
    {"quantiles": True}, {"horizons": [True]},
])
def test_invalid_params_are_rejected_by_the_model(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FactorParams.model_validate(params)


def test_the_panel_of_one_job_is_bounded(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The panel outer-joins the symbols' timestamps, and nothing bounded its size: with
    the default symbols (every file), a data dir of 500 daily symbols and one of
    1,000,000 minute bars made a panel of 500 million cells, at some 110 bytes a cell
    (measured) 55 GB in the worker.  Past MAX_CELLS the job is invalid_params naming
    the bound and the shape; up to it, nothing changes."""
    monkeypatch.setattr(analysis_module, "MAX_CELLS", 10, raising=False)
    write_bars(tmp_path, "A", [1.0, 2.0, 3.0], days=["2020-01-01", "2020-01-02", "2020-01-03"])
    write_bars(tmp_path, "B", [1.0, 3.0, 2.0], days=["2020-01-04", "2020-01-05", "2020-01-06"])
    write_bars(tmp_path, "C", [2.0, 1.0, 3.0], days=["2020-01-01", "2020-01-02", "2020-01-03"])
    store = DataStore(tmp_path)
    with pytest.raises(InvalidParams, match=r"at most 10 cells.* 6 dates x 2 symbols"):
        analyze_factor(FactorParams(symbols=["A", "B"], horizons=[1]), store)
    same = analyze_factor(FactorParams(symbols=["A", "C"], horizons=[1], lookback=1), store)
    assert same["symbols"] == 2
    cut = FactorParams(symbols=["A", "B"], horizons=[1], end="2020-01-04")
    assert analyze_factor(cut, store)["symbols"] == 2



def test_a_panel_past_its_bound_fails_before_the_other_symbols_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The panel's bound was checked once every symbol was read, each symbol's bars held
    until then: 500 files of 1,000,000 bars held some 20 GB in the worker before the job
    failed.  A symbol whose bars alone make the panel too large (its dates x the symbols)
    fails the job at once, the symbols after it unread."""
    monkeypatch.setattr(analysis_module, "MAX_CELLS", 10, raising=False)
    days = [f"2020-01-{day:02d}" for day in range(1, 7)]
    write_bars(tmp_path, "A", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], days=days)
    write_bars(tmp_path, "B", [1.0, 3.0, 2.0], days=days[:3])
    write_bars(tmp_path, "C", [2.0, 1.0, 3.0], days=days[:3])
    store = DataStore(tmp_path)
    read: list[str] = []
    bars = store.bars

    def counted(symbol: str, *args: Any, **kwargs: Any) -> Any:
        read.append(symbol)
        return bars(symbol, *args, **kwargs)

    monkeypatch.setattr(store, "bars", counted)
    with pytest.raises(InvalidParams, match=r"at most 10 cells") as raised:
        analyze_factor(FactorParams(symbols=["A", "B", "C"], horizons=[1]), store)
    assert read == ["A"]
    assert "at least 6 dates (symbol 'A') x 3 symbols = 18" in str(raised.value)


def test_catalogue_entries_are_documented() -> None:
    assert {"momentum", "reversal", "volatility", "volume_ratio", "ma_distance"} <= set(CATALOGUE)
    for factor in CATALOGUE.values():
        entry = factor.describe()
        assert entry["description"] and entry["formula"]
        assert [p["name"] for p in entry["params"]] == ["lookback"]
    assert resolve("momentum", {})[1] == {"lookback": 20}
    with pytest.raises(InvalidParams):
        resolve("momentum", {"lookback": True})


def test_perfect_correlations_are_exactly_one(tmp_path: Path) -> None:
    """Six symbols growing at fixed, distinct rates: every date ranks the factor and
    the forward return alike, so each daily rank IC is exactly 1, its std is 0 and
    the IR undefined.  One symbol misses every third day, so dates hold 5 or 6 names,
    whose rank correlations round differently (0.9999999999999998 and 1.0): the IR
    must not come out as that rounding noise divided by itself (about 1e16)."""
    days = pd.bdate_range("2010-01-04", periods=60).strftime("%Y-%m-%d").tolist()
    for j, rate in enumerate((-0.02, -0.01, 0.0, 0.01, 0.02, 0.03)):
        close = 100 * (1 + rate) ** np.arange(60)
        keep = [i for i in range(60) if j != 5 or i % 3]
        write_bars(tmp_path, f"G{j}", close[keep], days=[days[i] for i in keep])
    params = FactorParams(lookback=1, horizons=[1], quantiles=2, symbols=None)
    got = analyze_factor(params, DataStore(tmp_path))["horizons"]["1"]["rank_ic"]
    assert got == {"mean": 1.0, "std": 0.0, "ir": None, "t_stat": None, "n": got["n"]}
    assert got["n"] > 30
    # Two names: every daily IC is +1 or -1 by definition.
    pair = analyze_factor(params.model_copy(update={"symbols": ["G0", "G4"]}),
                          DataStore(tmp_path))["horizons"]["1"]
    for key in ("ic", "rank_ic"):
        assert pair[key]["mean"] == 1.0 and pair[key]["std"] == 0.0 and pair[key]["ir"] is None


def test_ic_of_values_past_1e154_is_pearsons(tmp_path: Path) -> None:
    """A symbol whose close swings between 1e-100 and 1e100 makes factor values and
    forward returns near 1e200, whose squares overflow: the IC came out 0.0 on every
    date (a finite sum over an infinite norm) with std 0.0, where Pearson's r is
    about -1.  A correlation does not depend on the values' scale: those rows are
    computed on values scaled to at most 1, and every daily IC is scipy's."""
    rng = np.random.default_rng(1)
    write_bars(tmp_path, "A", [1e-100, 1e100] * 6)
    for symbol in "BCD":
        write_bars(tmp_path, symbol, 100 * np.exp(np.cumsum(rng.normal(0, 0.05, 12))))
    result = analyze_factor(FactorParams(lookback=1, horizons=[1], quantiles=2),
                            DataStore(tmp_path))
    close = close_panel(tmp_path, ["A", "B", "C", "D"]).to_numpy()
    factor, ahead = close[1:-1] / close[:-2] - 1, close[2:] / close[1:-1] - 1
    daily = [stats.pearsonr(f, r)[0] for f, r in zip(factor, ahead, strict=True)]
    ic = result["horizons"]["1"]["ic"]
    assert result["dates"] == ic["n"] == len(daily) == 10
    assert ic["mean"] == pytest.approx(np.mean(daily), rel=1e-12)
    assert ic["std"] == pytest.approx(np.std(daily, ddof=1), rel=1e-9)


def test_a_quantile_mean_past_the_largest_float_is_null(tmp_path: Path) -> None:
    """Forward returns near 1e308 overflow a quantile's mean.  Two symbols jumping from
    1e-154 to 1e154 on one date, both in the bottom bucket, made that date's bucket
    sum infinite and the date was skipped: the bottom mean came out 0.008, the mean
    of the other dates, where QUANT.md's mean over dates is about 1e307.  One such
    symbol alone made the mean over dates infinite, and the result held inf and -inf
    (NaN or Infinity never stands in a result).  A mean that overflows is null, as
    the backtest's overflowing metrics are."""
    write_bars(tmp_path, "A", np.where(np.arange(12) < 6, 1e-154, 1e154))
    write_bars(tmp_path, "B", np.where(np.arange(12) < 6, 1.5e-154, 1.5e154))
    write_bars(tmp_path, "C", np.linspace(1, 2, 12))
    write_bars(tmp_path, "D", np.linspace(1, 3, 12))
    params = FactorParams(lookback=1, horizons=[1], quantiles=2)
    jumped = analyze_factor(params, DataStore(tmp_path))["horizons"]["1"]
    assert jumped["quantile_mean_return"][0] is None
    assert jumped["quantile_mean_return"][1] is not None
    assert jumped["top_minus_bottom"] is None
    swinging = tmp_path / "swinging"
    swinging.mkdir()
    write_bars(swinging, "A", [1e-154, 1e154] * 6)
    write_bars(swinging, "C", np.linspace(1, 2, 12))
    write_bars(swinging, "E", np.linspace(2, 1, 12))
    result = analyze_factor(params.model_copy(update={"lookback": 2}), DataStore(swinging))
    assert result["horizons"]["1"]["quantile_mean_return"][0] is None
    assert result["horizons"]["1"]["top_minus_bottom"] is None
    json.dumps(result, allow_nan=False)


def test_a_data_directory_that_is_a_file_is_said_so(tmp_path: Path) -> None:
    """SPOOL_DATA_DIR=/etc/passwd said "the data directory /etc/passwd does not exist"."""
    (tmp_path / "data").write_text("not a folder\n")
    with pytest.raises(InvalidParams, match=r"unknown symbol 'S0000': no data file \(the "
                                            r"data directory .*/data is no directory"):
        DataStore(tmp_path / "data").bars("S0000")


def test_a_flat_window_is_exactly_flat_after_a_missing_bar(tmp_path: Path) -> None:
    """After a missing bar pandas' rolling sums keep a residue of the returns that left
    the window: a flat window's volatility came out 1.1e-9, not 0, far above the tie
    test's floor, so it did not tie with another flat symbol's 0 and 4 dates stayed in
    the sample that rule 3 takes out (QA: dates 11, the formula's 7)."""
    days = pd.bdate_range("2021-03-01", periods=17).strftime("%Y-%m-%d").tolist()
    va = [19.0, 21.6, 19.8, 21.5, np.nan, 21.1, 20.0] + [19.9] * 10
    keep = [n for n, close in enumerate(va) if not np.isnan(close)]
    write_bars(tmp_path, "VA", [va[n] for n in keep], days=[days[n] for n in keep])
    write_bars(tmp_path, "VB", [10.0] * 17, days=days)
    write_bars(tmp_path, "VC", [10, 11, 10, 12, 10, 13, 10, 11, 12, 11, 10, 12, 11, 13, 12,
                                11, 12], days=days)
    store = DataStore(tmp_path)
    got = compute_factor("volatility", {"lookback": 5}, store.panel(["VA", "VB", "VC"]))
    flat = got[-5:]  # VA's last windows are flat, as VB's always are
    assert (flat[:, 0] == 0.0).all() and (flat[:, 1] == 0.0).all(), flat
    params = FactorParams(factor="volatility", lookback=5, quantiles=2, horizons=[1],
                          symbols=["VA", "VB", "VC"])
    assert analyze_factor(params, store)["dates"] == 7
    # A date whose symbols are all flat, or quiet, has no large return to scale by: the
    # residue is of returns long gone (the session's own review).
    for tail in ([12.0] * 8, [12.0, 12.001, 12.002] * 3):
        write_bars(tmp_path, "VC", [10, 11, 10, 12, 10, 13, 10, 11, 12, *tail][:17], days=days)
        got = compute_factor("volatility", {"lookback": 5},
                             DataStore(tmp_path).panel(["VA", "VB", "VC"]))
        assert (got[-5:, 0] == 0.0).all(), got[-5:]


@pytest.mark.parametrize("name", ["ma_distance", "volume_ratio"])
def test_a_constant_window_is_its_value_exactly(tmp_path: Path, name: str) -> None:
    """Recomputed from its window, a constant window's mean was a float's sum over its
    length (seven 49.73 average 49.730000000000004), so two flat symbols, both 0 by the
    formula, were -1.1e-16 and 0 and their tie was broken (QA)."""
    days = pd.bdate_range("2021-03-01", periods=8).strftime("%Y-%m-%d").tolist()
    flat = [49.73] * 8
    write_bars(tmp_path, "MA", flat, days=days, volume=flat)
    write_bars(tmp_path, "MB", [10.0] * 8, days=days, volume=[10.0] * 8)
    moving = [10, 11, 10, 12, 10, 13, 14, 12]
    write_bars(tmp_path, "MC", moving, days=days, volume=moving)
    got = compute_factor(name, {"lookback": 7}, DataStore(tmp_path).panel(["MA", "MB", "MC"]))
    want = 0.0 if name == "ma_distance" else 1.0
    assert got[-1, 0] == got[-1, 1] == want, got[-1]
