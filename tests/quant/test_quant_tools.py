"""The four tool classes on the tool API, with a recording ToolContext (quantkit)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError
from quant_reference import read_rows, write_bars
from quantkit import Context

from processor.quant.data import DataStore
from processor.quant.jsonsafe import finite_or_none, jsonable
from processor.quant.kline import get_kline
from processor.quant.params import BacktestParams, FactorParams, KlineParams
from processor.quant.tools import QUANT_TOOLS, datastore
from processor.tools import BaseTool, ExecutionMode
from spool.errors import InvalidParams


def tool(name: str) -> BaseTool:
    return next(cls for cls in QUANT_TOOLS if cls.name == name)()


def run(name: str, params: dict[str, Any], ctx: Context) -> Any:
    instance = tool(name)
    result = instance.execute(instance.Params.model_validate(params), ctx)
    assert result.is_ok, result.error_message
    return orjson.loads(orjson.dumps(result.value))


def test_catalogue_of_tools() -> None:
    modes = {cls.name: cls.execution_mode for cls in QUANT_TOOLS}
    assert modes == {"list_factors": ExecutionMode.FAST, "get_kline": ExecutionMode.FAST,
                     "run_backtest": ExecutionMode.COMPUTE,
                     "analyze_factor": ExecutionMode.COMPUTE}
    for cls in QUANT_TOOLS:
        entry = cls.catalogue_entry()
        assert entry["description"] and entry["params_schema"]["type"] == "object"


def test_list_factors(tmp_path: Path) -> None:
    factors = run("list_factors", {}, Context(tmp_path))["factors"]
    momentum = next(f for f in factors if f["name"] == "momentum")
    assert momentum["params"][0]["name"] == "lookback"
    assert momentum["params"][0]["default"] == 20
    assert "C[t-lookback,a]" in momentum["formula"]


def test_get_kline_rows_in_time_order(synth_dir: Path) -> None:
    ctx = Context(synth_dir)
    rows = read_rows(synth_dir / "S0004.csv")
    out = run("get_kline", {"symbol": "S0004"}, ctx)
    assert out["columns"] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert len(out["rows"]) == 600
    assert [r[0] for r in out["rows"]] == [t.isoformat() for t in rows.timestamps]
    assert [r[4] for r in out["rows"]] == rows.close
    cut = run("get_kline", {"symbol": "S0004", "start": "2010-03-01", "end": "2010-03-31"}, ctx)
    assert [r[0][:10] for r in cut["rows"]][:2] == ["2010-03-01", "2010-03-02"]
    assert cut["rows"][-1][0] == "2010-03-31T00:00:00" and len(cut["rows"]) == 23
    last = run("get_kline", {"symbol": "S0004", "limit": 3}, ctx)["rows"]
    assert [r[0] for r in last] == [r[0] for r in out["rows"][-3:]]
    first = run("get_kline", {"symbol": "S0004", "start": "2010-03-01", "limit": 2}, ctx)
    assert [r[0][:10] for r in first["rows"]] == ["2010-03-01", "2010-03-02"]
    assert len(ctx.resources) == 1


def test_get_kline_missing_values_are_null(tmp_path: Path) -> None:
    write_bars(tmp_path, "HOLE", [1.0, float("nan"), 3.0])
    out = get_kline(DataStore(tmp_path), KlineParams(symbol="HOLE"))
    assert out["rows"][1][4] is None and out["rows"][2][4] == 3.0


def test_get_kline_refuses_start_after_end(tmp_path: Path) -> None:
    """``start`` after ``end`` answered an empty list of rows, as if the symbol had no
    bars then, where run_backtest and analyze_factor refuse the same params."""
    said = r"start \(2011-01-02T00:00:00\) is after end \(2011-01-01T00:00:00\)"
    with pytest.raises(ValidationError, match=said):
        KlineParams.model_validate({"symbol": "S0001", "start": "2011-01-02",
                                    "end": "2011-01-01"})
    same_day = KlineParams.model_validate({"symbol": "S0001", "start": "2011-01-01",
                                           "end": "2011-01-01"})
    assert same_day.start == same_day.end


def test_get_kline_without_limit_is_bounded(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With no ``limit``, get_kline answered every bar between start and end: a
    5,000,000-row file ran the FAST lane to its 10 s timeout and left an abandoned
    thread holding 700 MB in the processor.  Past MAX_KLINE_ROWS bars it is a params
    error that names the bound and the way out; within it, nothing changes."""
    monkeypatch.setattr("processor.quant.kline.MAX_KLINE_ROWS", 5, raising=False)
    write_bars(tmp_path, "LONG", np.arange(1.0, 9.0))
    ctx = Context(tmp_path)
    with pytest.raises(InvalidParams, match=r"'LONG' has 8 bars .*at most 5.*limit"):
        run("get_kline", {"symbol": "LONG"}, ctx)
    with pytest.raises(InvalidParams, match="at most 5"):
        run("get_kline", {"symbol": "LONG", "start": "2010-01-05"}, ctx)
    assert len(run("get_kline", {"symbol": "LONG", "limit": 5}, ctx)["rows"]) == 5
    assert len(run("get_kline", {"symbol": "LONG", "start": "2010-01-07"}, ctx)["rows"]) == 5
    assert len(run("get_kline", {"symbol": "LONG", "start": "2010-01-08",
                                 "end": "2010-01-08"}, ctx)["rows"]) == 1


def test_get_kline_formats_only_the_bars_it_answers(tmp_path: Path) -> None:
    """``limit: 5`` on a 5,000,000-row file formatted the ISO text of every bar in
    the file (and cached it, some 400 MB) to answer five: past the FAST timeout.  A
    few bars of a long file are formatted alone, in the file's own format (here with
    microseconds, which one bar of the file needs), and nothing is cached for them."""
    days = [f"2020-01-{d:02d}T00:00:00" for d in range(1, 29)]
    days[0] = "2020-01-01T00:00:00.5"
    write_bars(tmp_path, "MANY", np.arange(1.0, 29.0), days=days)
    ctx = Context(tmp_path)
    last = run("get_kline", {"symbol": "MANY", "limit": 2}, ctx)["rows"]
    assert [r[0] for r in last] == ["2020-01-27T00:00:00.000000", "2020-01-28T00:00:00.000000"]
    cached = datastore(ctx).bars("MANY")
    assert not cached.calendar.made()
    first = run("get_kline", {"symbol": "MANY", "start": "2020-01-01", "limit": 1}, ctx)
    assert first["rows"][0][0] == "2020-01-01T00:00:00.500000"
    whole = run("get_kline", {"symbol": "MANY"}, ctx)["rows"]
    assert [r[0] for r in whole[-2:]] == [r[0] for r in last]
    assert cached.calendar.made()
    assert run("get_kline", {"symbol": "MANY", "limit": 2}, ctx)["rows"] == last


def test_get_kline_unknown_symbol(tmp_path: Path) -> None:
    with pytest.raises(InvalidParams, match="'NOPE'"):
        run("get_kline", {"symbol": "NOPE"}, Context(tmp_path))


def test_run_backtest_tool_reports_progress(synth_dir: Path) -> None:
    ctx = Context(synth_dir)
    out = run("run_backtest", {"symbols": ["S0001", "S0002"], "fast": 5, "slow": 20}, ctx)
    assert set(out["symbols"]) == {"S0001", "S0002"}
    assert out["summary"]["symbols"] == 2
    assert [m for _, m in ctx.updates] == [
        "reading S0001 (symbol 1 of 2)", "reading S0002 (symbol 2 of 2)",
        "backtested 2/2 symbols"]
    # Parsing a file costs more than its backtest: reading S0001 is most of its half.
    assert [f for f, _ in ctx.updates][:1] == [0.0] and 0.25 < ctx.updates[1][0] < 0.5
    assert ctx.updates[-1][0] == 1.0


def test_analyze_factor_tool_reports_progress(synth_dir: Path) -> None:
    ctx = Context(synth_dir)
    out = run("analyze_factor", {"factor": "momentum", "lookback": 10, "horizons": [1, 5]}, ctx)
    assert out["symbols"] == 30 and out["dates"] == 600 - 10 - 5
    assert set(out["horizons"]) == {"1", "5"} and set(out["turnover"]) == {"1", "5"}
    fractions = [f for f, _ in ctx.updates]
    assert fractions == sorted(fractions) and ctx.updates[-1] == (1.0, "done")
    messages = [m for _, m in ctx.updates]
    assert messages[0] == "read 1/30 symbols"
    assert {"horizon 1: 600/600 dates", "horizon 5: 600/600 dates"} <= set(messages)


def test_jsonsafe() -> None:
    assert finite_or_none(float("nan")) is None and finite_or_none(np.float64(2.5)) == 2.5
    assert jsonable({"a": [np.float64("inf"), np.int64(3), (np.bool_(True), 1.5)]}) == \
        {"a": [None, 3, [True, 1.5]]}


def test_analyze_factor_schema_warns_of_overlapping_ics() -> None:
    """QUANT.md: for h > 1 the daily ICs overlap, so the t-stat overstates
    significance, and the docs say so where a user picks the horizons."""
    schema = tool("analyze_factor").catalogue_entry()["params_schema"]
    assert "overstates significance" in schema["properties"]["horizons"]["description"]


@pytest.mark.parametrize("limit", [True, "5", 2.0])
def test_get_kline_limit_is_a_whole_number(limit: object) -> None:
    """``{"limit": true}`` answered one bar, and "5" five."""
    with pytest.raises(ValidationError, match="valid integer"):
        KlineParams.model_validate({"symbol": "S0001", "limit": limit})


@pytest.mark.parametrize("value", [2020, "2020", "20200101", 1577836800, 1.5e9, "1577836800.5"])
def test_a_bound_is_an_iso_date_not_a_count_of_seconds(value: object) -> None:
    """QUANT.md's timestamps are ISO 8601; pydantic took a number, or a string of
    digits, as seconds since 1970: start=2020 (as ``spoolq submit -p start=2020``
    sends it) meant 1970-01-01T00:33:40 and quietly kept every bar."""
    for model, base in ((KlineParams, {"symbol": "S0001"}),
                        (BacktestParams, {"symbols": ["S0001"]}), (FactorParams, {})):
        for bound in ("start", "end"):
            with pytest.raises(ValidationError, match="ISO 8601"):
                model.model_validate(base | {bound: value})


def test_iso_bounds_still_parse() -> None:
    params = KlineParams.model_validate({"symbol": "S0001", "start": "2020-01-31",
                                         "end": "2020-02-01T09:30:00+01:00"})
    assert params.start is not None and params.start.isoformat() == "2020-01-31T00:00:00"
    assert params.end is not None and params.end.isoformat() == "2020-02-01T09:30:00+01:00"
    assert BacktestParams(symbols=["A"], start=datetime(2020, 1, 31)).start == \
        datetime(2020, 1, 31)


def test_a_backtest_takes_one_symbol_by_its_name() -> None:
    """QUANT.md: ``symbols`` is "one or many"; ``spoolq submit run_backtest -p
    symbols=S0000`` failed "symbols: Input should be a valid array" (QA)."""
    assert BacktestParams.model_validate({"symbols": "S0000"}).symbols == ["S0000"]
    with pytest.raises(ValidationError, match="symbols"):
        BacktestParams.model_validate({"symbols": 5})


def test_symbols_between_commas_are_several() -> None:
    """``-p symbols=HFULL0,HFULL1`` failed "symbols.0: String should match pattern ...",
    naming neither the value nor how to give a list (QA): no symbol holds a comma, so
    one between names parts them, for both tools."""
    assert BacktestParams.model_validate({"symbols": "A0, B0"}).symbols == ["A0", "B0"]
    assert FactorParams.model_validate({"symbols": "A0,B0"}).symbols == ["A0", "B0"]
    with pytest.raises(ValidationError, match="symbols must not repeat"):
        FactorParams.model_validate({"symbols": "A0,A0"})
