"""The task view's tables of a backtest and a factor analysis, in a real headless Chromium.

What a researcher checks: a backtest's summary and its symbols sorted by sharpe (a
null last), a click on a header sorting by that column, cells formatted as
`spoolq demo` prints them, a factor analysis's figures per horizon and per lag,
the raw JSON still there (collapsed), any other shape shown as JSON, and a
symbol's name shown as text, never run as HTML.  The browser and page fixtures
are test_statusd_dashboard's (a page with a JavaScript error fails its test).
"""

from __future__ import annotations

from typing import Any

import test_statusd_dashboard as dashboard
from statusdkit import ServerThread, run_job

from spool.transitions import Spool

sync_api = dashboard.sync_api
pytestmark = dashboard.pytestmark
browser = dashboard.browser
page = dashboard.page

ROWS = "#task-tables table.symbols tbody tr"
# How a null, "top minus bottom" and "symbols by dates" are written on the page.
NONE, MINUS, TIMES = "\u2013", "\u2212", "\u00d7"


def _metrics(total: float | None, sharpe: float | None, **more: Any) -> dict[str, Any]:
    metrics = {"total_return": total, "annualized_return": 0.011,
               "annualized_volatility": 0.2, "sharpe": sharpe, "max_drawdown": -0.3,
               "num_trades": 32, "num_closed_trades": 31, "win_rate": 0.19,
               "final_equity": 112_300.0, "bars": 3,
               "equity_curve": [["2020-01-01T00:00:00", 100_000.0],
                                ["2020-01-02T00:00:00", 101_000.0],
                                ["2020-01-03T00:00:00", 112_300.0]]}
    return {**metrics, **more}


def backtest(symbols: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run_backtest result (QUANT.md): sharpe orders CCC, AAA, DDD, then BBB (null)."""
    symbols = symbols or {
        "AAA": _metrics(0.123, 0.4),
        "BBB": _metrics(0.05, None, win_rate=None, annualized_volatility=0.0),
        "CCC": _metrics(-0.2, 1.25),
        "DDD": _metrics(None, -0.3),
    }
    return {"strategy": "ma_crossover", "params": {"fast": 10, "slow": 50, "fee": 0.001},
            "symbols": symbols,
            "summary": {"symbols": len(symbols), "mean_sharpe": 0.45, "median_sharpe": 0.4,
                        "median_total_return": 0.12, "worst_max_drawdown": -0.3,
                        "best_symbol": "AAA", "total_trades": 128, "mean_win_rate": None}}


def factor() -> dict[str, Any]:
    """An analyze_factor result (QUANT.md) over horizons 1, 5 and 10, three quantiles."""
    def horizon(k: int) -> dict[str, Any]:
        return {"ic": {"mean": 0.0021 * k, "std": 0.05, "ir": 0.0412 * k, "t_stat": 2.1 * k,
                       "n": 2490 - k},
                "rank_ic": {"mean": 0.0031 * k, "std": 0.05, "ir": 0.0623 * k,
                            "t_stat": 3.1, "n": 2490 - k},
                "quantile_mean_return": [1.2e-4 * k, None, 2.8e-4 * k],
                "top_minus_bottom": 1.6e-4 * k}
    return {"factor": "momentum", "params": {"lookback": 20}, "symbols": 500, "dates": 2490,
            "horizons": {"1": horizon(1), "5": horizon(5), "10": horizon(10)},
            "rank_autocorrelation": {"1": 0.94, "5": 0.73, "10": None},
            "turnover": {"1": {"top": 0.17, "bottom": 0.2}, "5": {"top": 0.4, "bottom": None},
                         "10": {"top": 0.55, "bottom": 0.6}}}


def _symbols_in_order(tab: sync_api.Page, *names: str) -> None:
    sync_api.expect(tab.locator(f"{ROWS} th")).to_have_text(list(names))


def test_a_backtest_shows_its_summary_and_symbols_by_sharpe(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """200 symbols of indented JSON were the view: a summary and a table sorted by sharpe,
    a null sharpe last, figures formatted as `spoolq demo` prints them."""
    expect = sync_api.expect
    run_job(spool, "bt", backtest(), tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt")
    expect(page.locator(ROWS)).to_have_count(4)
    _symbols_in_order(page, "CCC", "AAA", "DDD", "BBB")
    expect(page.locator("#task-tables th[data-key=sharpe]")).to_have_attribute(
        "aria-sort", "descending")
    expect(page.locator(f'{ROWS}[data-symbol="AAA"] td')).to_have_text(
        ["12.3%", "1.1%", "20.0%", "0.40", "-30.0%", "32", "31", "19%", "112,300.00"])
    expect(page.locator(f'{ROWS}[data-symbol="BBB"] td')).to_have_text(
        ["5.0%", "1.1%", "0.0%", NONE, "-30.0%", "32", "31", NONE, "112,300.00"])
    summary = page.locator("#task-tables dl.summary")
    expect(summary.locator("dt")).to_have_text(
        ["symbols", "mean sharpe", "median sharpe", "median total return",
         "worst max drawdown", "best symbol", "total trades", "mean win rate"])
    expect(summary.locator("dd")).to_have_text(
        ["4", "0.45", "0.40", "12.0%", "-30.0%", "AAA", "128", NONE])
    expect(page.locator("#task-tables h3")).to_have_text(
        "backtest: ma_crossover fast=10 slow=50 fee=0.001 on 4 symbols")
    expect(page.locator("#equity svg path.equity")).to_have_count(4)
    # The raw JSON is still there, collapsed; a click on its summary shows it.
    raw = page.locator("details#task-result")
    expect(raw).not_to_have_attribute("open", "")
    expect(raw.locator("pre")).to_be_hidden()
    expect(raw.locator("pre")).to_contain_text('"mean_sharpe": 0.45')
    raw.locator("summary").click()
    expect(raw.locator("pre")).to_be_visible()


def test_a_click_on_a_header_sorts_by_its_column(server: ServerThread, spool: Spool,
                                                 page: sync_api.Page) -> None:
    """A metric sorts highest first, a second click reverses; nulls stay last both ways."""
    expect = sync_api.expect
    run_job(spool, "bt", backtest(), tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt")
    _symbols_in_order(page, "CCC", "AAA", "DDD", "BBB")
    total = page.locator("#task-tables th[data-key=total_return]")
    total.locator("button").click()
    _symbols_in_order(page, "AAA", "BBB", "CCC", "DDD")
    expect(total).to_have_attribute("aria-sort", "descending")
    expect(page.locator("#task-tables th[data-key=sharpe]")).to_have_attribute(
        "aria-sort", "none")
    total.locator("button").click()
    _symbols_in_order(page, "CCC", "BBB", "AAA", "DDD")
    expect(total).to_have_attribute("aria-sort", "ascending")
    page.locator("#task-tables th[data-key=sharpe] button").click()
    _symbols_in_order(page, "CCC", "AAA", "DDD", "BBB")
    page.locator("#task-tables th[data-key=sharpe] button").click()
    _symbols_in_order(page, "DDD", "AAA", "CCC", "BBB")
    page.locator("#task-tables th[data-key=symbol] button").click()
    _symbols_in_order(page, "AAA", "BBB", "CCC", "DDD")
    page.locator("#task-tables th[data-key=symbol] button").click()
    _symbols_in_order(page, "DDD", "CCC", "BBB", "AAA")


def test_a_factor_analysis_shows_its_figures_per_horizon_and_lag(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    expect = sync_api.expect
    run_job(spool, "fa", factor(), tool="analyze_factor")
    page.goto(server.base + "/#/tasks/fa")
    horizons = page.locator("#task-tables table.horizons")
    expect(horizons.locator("thead th")).to_have_text(
        ["horizon", "IC mean", "IC IR", "t", "n", "rank IC mean", "rank IC IR", f"top{MINUS}bottom",
         "Q1", "Q2", "Q3"])
    expect(horizons.locator("tbody th")).to_have_text(["1", "5", "10"])
    expect(horizons.locator('tr[data-key="1"] td')).to_have_text(
        ["0.0021", "0.041", "2.10", "2489", "0.0031", "0.062", "1.60e-04",
         "1.20e-04", NONE, "2.80e-04"])
    expect(horizons.locator('tr[data-key="5"] td')).to_have_text(
        ["0.0105", "0.206", "10.50", "2485", "0.0155", "0.311", "8.00e-04",
         "6.00e-04", NONE, "1.40e-03"])
    expect(horizons.locator('tr[data-key="10"] td').first).to_have_text("0.0210")
    lags = page.locator("#task-tables table.lags")
    expect(lags.locator("thead th")).to_have_text(
        ["lag", "rank autocorrelation", "turnover top", "turnover bottom"])
    expect(lags.locator("tbody tr")).to_have_count(3)
    expect(lags.locator('tr[data-key="1"] td')).to_have_text(["0.940", "17.0%", "20.0%"])
    expect(lags.locator('tr[data-key="5"] td')).to_have_text(["0.730", "40.0%", NONE])
    expect(lags.locator('tr[data-key="10"] td')).to_have_text([NONE, "55.0%", "60.0%"])
    expect(page.locator("#task-tables .note")).to_contain_text(
        "t for horizons over 1 day overstates significance")
    expect(page.locator("#task-tables h3")).to_have_text(
        f'factor analysis: momentum {{"lookback":20}} over 500 symbols {TIMES} 2490 dates')
    raw = page.locator("details#task-result")
    expect(raw).not_to_have_attribute("open", "")
    expect(raw.locator("pre")).to_contain_text('"rank_autocorrelation"')


def _malformed() -> dict[str, Any]:
    """Results that look like a quant tool's but are not its shape: JSON view for each."""
    no_win_rate = backtest()
    del no_win_rate["symbols"]["AAA"]["win_rate"]
    string_metric = backtest()
    string_metric["symbols"]["CCC"]["sharpe"] = "1.25"
    no_summary = backtest()
    del no_summary["summary"]
    nested_summary = backtest()
    nested_summary["summary"]["by_year"] = {"2020": 0.1}
    string_ic = factor()
    string_ic["horizons"]["5"]["ic"] = "0.01"
    no_turnover = factor()
    del no_turnover["turnover"]
    return {
        "symbols-list": {**backtest(), "symbols": [_metrics(0.1, 0.2)]},
        "no-win-rate": no_win_rate, "string-metric": string_metric,
        "no-summary": no_summary, "nested-summary": nested_summary,
        "string-ic": string_ic, "no-turnover": no_turnover,
        "horizons-list": {**factor(), "horizons": [factor()["horizons"]["1"]]},
    }


def test_a_result_of_another_shape_is_shown_as_json(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """A backtest's table, then results of almost its shape (or a factor analysis's): each
    shows as JSON, open, with no table left from the task before and no console error."""
    expect = sync_api.expect
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    run_job(spool, "bt", backtest(), tool="run_backtest")
    cases = _malformed()
    for name, result in cases.items():
        run_job(spool, name, {**result, "case": name}, tool="run_backtest")
    run_job(spool, "echo", {"message": "hello"}, tool="echo")
    page.goto(server.base + "/#/tasks/bt")
    expect(page.locator(ROWS)).to_have_count(4)
    for name in [*cases, "echo"]:
        page.evaluate("id => { location.hash = `#/tasks/${id}`; }", name)
        expect(page.locator("#task-id")).to_have_text(name)
        raw = page.locator("#task-result")
        expect(raw.locator("pre")).to_contain_text(
            f'"case": "{name}"' if name != "echo" else '"message": "hello"')
        expect(raw).to_have_attribute("open", "")
        expect(raw.locator("pre")).to_be_visible()
        expect(page.locator("#task-tables")).to_be_hidden()
        expect(page.locator("#task-tables table")).to_have_count(0)
    # Back to the backtest: its table again, the JSON collapsed.
    page.evaluate("location.hash = '#/tasks/bt'")
    expect(page.locator(ROWS)).to_have_count(4)
    expect(page.locator("#task-result")).not_to_have_attribute("open", "")
    assert not console, f"console errors: {console}"


def test_html_in_a_symbol_is_shown_as_text(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    expect = sync_api.expect
    evil = '<img src=x onerror="window.__xss = 1">'
    result = backtest({evil: _metrics(0.1, 2.0), "AAA": _metrics(0.2, 1.0)})
    result["summary"]["best_symbol"] = evil
    result["strategy"] = "<b>bold</b>"
    run_job(spool, "bt-evil", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-evil")
    _symbols_in_order(page, evil, "AAA")
    expect(page.locator("#task-tables dd[data-field=best_symbol]")).to_have_text(evil)
    expect(page.locator("#task-tables h3")).to_contain_text("<b>bold</b>")
    expect(page.locator("#task-tables img")).to_have_count(0)
    expect(page.locator("#task-tables b")).to_have_count(0)
    assert page.evaluate("window.__xss") is None
