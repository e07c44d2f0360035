"""Progress of the COMPUTE quant tools: reports come steadily whatever the shape of
the job (few symbols of many bars included), and the results do not depend on how
the work is cut into chunks and blocks to report it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from quant_reference import read_rows, write_bars
from quantkit import Context

import processor.quant.analysis as analysis_module
import processor.quant.backtest as backtest_module
import processor.quant.blocks as blocks_module
from processor.quant.data import DataStore
from processor.quant.params import BacktestParams, FactorParams
from processor.quant.synth import write_synthetic
from processor.quant.tools import QUANT_TOOLS

LONG_BARS = 300_000


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 symbols x 300,000 bars: the shape whose backtest reported once, at the end."""
    directory = tmp_path_factory.mktemp("long")
    write_synthetic(directory, symbols=2, bars=LONG_BARS, seed=11)
    return directory


def execute(name: str, params: dict[str, Any], ctx: Context) -> Any:
    tool = next(cls for cls in QUANT_TOOLS if cls.name == name)()
    result = tool.execute(tool.Params.model_validate(params), ctx)
    assert result.is_ok, result.error_message
    return orjson.loads(orjson.dumps(result.value))


def steps(fractions: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *fractions], fractions, strict=False)]


def test_backtest_of_few_long_symbols_reports_as_it_runs(long_dir: Path) -> None:
    ctx = Context(long_dir)
    out = execute("run_backtest", {"symbols": ["S0000", "S0001"]}, ctx)
    assert [out["symbols"][s]["bars"] for s in ("S0000", "S0001")] == [LONG_BARS, LONG_BARS]
    assert ctx.updates[-1] == (1.0, "backtested 2/2 symbols")
    fractions = [f for f, _ in ctx.updates]
    assert len(fractions) >= 5, ctx.updates  # one report per chunk of 50 gave one, at 1.0
    assert all(step >= 0 for step in steps(fractions)), fractions
    assert fractions.count(1.0) == 1
    assert max(steps(fractions)) <= 0.3, fractions
    messages = [m for _, m in ctx.updates]
    first = messages[: messages.index("backtested 1/2 symbols")]
    assert first[0] == "reading S0000 (symbol 1 of 2)"
    assert all(re.fullmatch(r"reading S0000 \(symbol 1 of 2\)(: \d+% parsed|: "
                            rf"\d+/{LONG_BARS} timestamps)?|backtesting S0000 \(symbol 1 "
                            rf"of 2\): bar \d+/{LONG_BARS}", m) for m in first), first


def backtest_reports(store: DataStore) -> list[tuple[float, str]]:
    calls: list[tuple[float, str]] = []
    backtest_module.run_backtest(BacktestParams(symbols=["S0000", "S0001"]), store,
                                 lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and calls[-1] == (1.0, "backtested 2/2 symbols")
    assert fractions.count(1.0) == 1
    return calls


def reading(calls: list[tuple[float, str]], symbol: str) -> list[float]:
    return [f for f, m in calls if m.startswith(f"reading {symbol} ")]


def test_backtest_reading_takes_its_share_of_the_bar_whatever_is_cached(long_dir: Path) -> None:
    """Reading was no part of a backtest's bar: on 2 x 300,000 bars it stood at 0 for
    about half a run whose files were not parsed, and for a third of one whose files
    were parsed but whose timestamps' ISO text was not made yet (the first backtest of
    a parsed file makes it; an estimate that took it for free left the bar 0.46 behind
    the time).  The read reports as it goes (the parse chunk by chunk, the text part by
    part), each placed by its estimated cost; once the text is made, reading is next
    to free and the simulation has the bar."""
    store = DataStore(long_dir)
    cold = backtest_reports(store)
    made = backtest_reports(store)  # the same store: parsed, the text made
    parsed_store = DataStore(long_dir)
    for symbol in ("S0000", "S0001"):
        parsed_store.bars(symbol)
    parsed = backtest_reports(parsed_store)
    # Not parsed: each file's parse moves the bar, and S0000's text (both files are on
    # one calendar, so they share it: S0001's is made by then).
    first, second = reading(cold, "S0000"), reading(cold, "S0001")
    assert first[0] == 0.0 and len(set(first)) >= 6 and first[-1] > 0.2, cold
    assert len(set(second)) >= 3 and second[-1] - second[0] > 0.15, cold
    # Parsed: the text is S0000's read, a third or more of the run; S0001's is free
    # (nothing to say of it).
    first, second = reading(parsed, "S0000"), reading(parsed, "S0001")
    assert len(set(first)) >= 4 and first[-1] > 0.25, parsed
    assert second == [], parsed
    # Parsed and made: the bar is the simulation's, a block of 131,072 bars of 600,000.
    assert [m for _, m in made if m.startswith("reading ")] == [], made
    assert made[0] == (pytest.approx(131_072 / 600_000),
                       f"backtesting S0000 (symbol 1 of 2): bar 131072/{LONG_BARS}")


def test_factor_analysis_of_few_long_symbols_reports_as_it_runs(long_dir: Path) -> None:
    ctx = Context(long_dir)
    out = execute("analyze_factor", {"factor": "momentum", "horizons": [1, 5]}, ctx)
    assert out["symbols"] == 2 and out["dates"] == LONG_BARS - 20 - 5
    assert ctx.updates[-1] == (1.0, "done")
    fractions = [f for f, _ in ctx.updates]
    assert all(step >= 0 for step in steps(fractions)), fractions
    assert fractions.count(1.0) == 1
    # One report per horizon gave 1/3, 2/3, 1.0: nothing while the files were read and
    # the sample built, nothing while each horizon ran.
    assert len(set(fractions)) >= 20, ctx.updates
    # A file's read is one report, its step the file's estimated share of the time.
    assert max(steps(fractions)[2:]) <= 0.1, fractions
    messages = [m for _, m in ctx.updates]
    assert messages[:2] == ["read 1/2 symbols", "read 2/2 symbols"]
    assert any(m.startswith("horizon 5: ") for m in messages)


def odd_symbols(directory: Path, synth_dir: Path) -> list[str]:
    """Symbols of different lengths, with gaps and flat stretches, next to normal ones."""
    full = read_rows(synth_dir / "S0005.csv")
    close = np.array(full.close)
    opens = np.array(full.open)
    opens[[30, 31, 300]] = np.nan  # rows a backtest skips
    days = [t.strftime("%Y-%m-%d") for t in full.timestamps]
    write_bars(directory, "GAPPY", close, days=days, open_=opens)
    flat = close[:400].copy()
    flat[100:250] = flat[100]
    write_bars(directory, "FLATTISH", flat, days=days[:400])
    write_bars(directory, "SHORT", close[50:80], days=days[50:80])
    for name in ("S0001", "S0002", "S0003"):
        (directory / f"{name}.csv").write_bytes((synth_dir / f"{name}.csv").read_bytes())
    return ["S0001", "GAPPY", "SHORT", "S0002", "FLATTISH", "S0003"]


@pytest.mark.parametrize(("block_cells", "chunk_cells"), [(1, 1), (7, 700), (500, 10**9)])
def test_backtest_results_do_not_depend_on_blocks_or_chunks(
        tmp_path: Path, synth_dir: Path, block_cells: int, chunk_cells: int) -> None:
    symbols = odd_symbols(tmp_path, synth_dir)
    store = DataStore(tmp_path)
    for fast, slow in ((10, 50), (3, 12)):
        params = BacktestParams(symbols=symbols, fast=fast, slow=slow, slippage=0.0005)
        want = orjson.dumps(backtest_module.run_backtest(params, store))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(blocks_module, "BLOCK_CELLS", block_cells)
            patch.setattr(backtest_module, "CHUNK_CELLS", chunk_cells)
            got = orjson.dumps(backtest_module.run_backtest(params, store))
        assert got == want


@pytest.mark.parametrize("block_cells", [1, 45, 10**9])
def test_factor_analysis_results_do_not_depend_on_blocks(
        tmp_path: Path, synth_dir: Path, block_cells: int) -> None:
    odd_symbols(tmp_path, synth_dir)
    store = DataStore(tmp_path)
    params = FactorParams(factor="reversal", lookback=3, horizons=[1, 4],
                          turnover_lags=[1, 2, 700], quantiles=3)
    want = orjson.dumps(analysis_module.analyze_factor(params, store))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(analysis_module, "BLOCK_CELLS", block_cells)
        got = orjson.dumps(analysis_module.analyze_factor(params, store))
    assert got == want
