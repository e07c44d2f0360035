"""Benchmark of the dashboard's backtest table (statusd/static/results.js) in headless
Chromium: a run_backtest result of ``--symbols`` symbols (5,000: a ~14 MB record) shown,
and sorted by a column, to the first frame painted after it.

Run from the repository root: ``python -m bench.dashboard_table`` (``--help`` for sizes).
It needs Playwright and Chromium at /usr/bin/chromium, as the dashboard's tests do.

Set-up: the record is written straight to ``done/`` (twice, as two tasks) and served by
a real ``python -m statusd`` (bench.statusd's server); one Chromium page opens the first.
Each figure is the median of ``--runs`` runs, timed in the page with performance.now():

- *render*: showResultTables into the task view's own box (the record already parsed)
  until a requestAnimationFrame and the task after it, i.e. the frame painted: the
  table's JavaScript, style, layout and paint.
- *sort*: a click on a column's header button (total return, symbol, sharpe in turn) to
  the frame painted after it.
- *open*: another task's view from its hash (the two tasks in turn): the record's
  fetch, parse and every part of the page drawn, not only the table.

The baseline, measured in the same page and run: a plain table of every symbol's row
(the same ten columns as text, no buttons, no formatting) built and painted (*plain
render*), and every row's text rewritten in another order (*plain sort*): what the
browser's layout of all the rows costs, which a table that draws every row pays at
least (the dashboard did until the table kept only the rows near its view in the DOM;
docs/benchmarks.md has its figures before and after).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import orjson
from playwright.sync_api import sync_playwright

from bench.statusd import make_spool, running

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
COLUMNS = ("total_return", "annualized_return", "annualized_volatility", "sharpe",
           "max_drawdown", "num_trades", "num_closed_trades", "win_rate", "final_equity")
FRAME = "new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))"
RENDER = f"""async () => {{
  const box = $('task-tables');
  const draw = (curves) => {{ $('task-chart').hidden = !drawEquity($('equity'), curves); }};
  box.hidden = true;  // drawn anew, not kept as shown
  const t0 = performance.now();
  showResultTables(window.benchRecord, box, $('task-result'), draw);
  await {FRAME};
  return performance.now() - t0;
}}"""
SORT = f"""async (key) => {{
  const t0 = performance.now();
  document.querySelector(`#task-tables th[data-key=${{key}}] button`).click();
  await {FRAME};
  return performance.now() - t0;
}}"""
PLAIN_RENDER = f"""async (columns) => {{
  const rows = Object.entries(window.benchRecord.result.symbols);
  const box = document.createElement('div');
  document.body.appendChild(box);
  const t0 = performance.now();
  const table = document.createElement('table');
  const body = table.createTBody();
  for (const [symbol, m] of rows) {{
    const tr = body.insertRow();
    tr.insertCell().textContent = symbol;
    for (const key of columns) tr.insertCell().textContent = String(m[key]);
  }}
  box.appendChild(table);
  await {FRAME};
  const ms = performance.now() - t0;
  window.benchPlain = box;  // kept for the plain sort, then removed
  return ms;
}}"""
PLAIN_SORT = f"""async (columns) => {{
  const rows = Object.entries(window.benchRecord.result.symbols).reverse();
  const trs = window.benchPlain.querySelectorAll('tr');
  const t0 = performance.now();
  rows.forEach(([symbol, m], n) => {{
    const cells = trs[n].cells;
    cells[0].textContent = symbol;
    columns.forEach((key, k) => {{ cells[k + 1].textContent = String(m[key]); }});
  }});
  await {FRAME};
  const ms = performance.now() - t0;
  window.benchPlain.remove();
  return ms;
}}"""
OPEN = f"""async (id) => {{
  const before = document.querySelector('#task-tables table.symbols');
  const t0 = performance.now();
  location.hash = `#/tasks/${{id}}`;
  // Until the new task's table is in the box (the last one's may stay while it loads).
  const table = () => document.querySelector('#task-tables table.symbols');
  while (!table() || table() === before || !table().querySelector('tbody tr th')
         || $('task-tables').hidden || $('task-id').textContent !== id) {{
    await new Promise((r) => setTimeout(r, 2));
  }}
  await {FRAME};
  return performance.now() - t0;
}}"""


def backtest(count: int, bars: int) -> dict[str, Any]:
    """A run_backtest result (docs/QUANT.md) of count symbols, bars points of equity each."""
    symbols = {}
    for k in range(count):
        symbols[f"SYM{k:05d}"] = {
            "total_return": (k * 37 % 1000) / 500 - 1,
            "annualized_return": (k * 13 % 997) / 9970,
            "annualized_volatility": 0.1 + (k % 89) / 445, "sharpe": (k * 7919 % 4001) / 1000 - 2,
            "max_drawdown": -(k % 97) / 100, "num_trades": k % 300, "num_closed_trades": k % 299,
            "win_rate": (k % 101) / 100, "final_equity": 50_000 + (k * 104729 % 150_000) + 0.25,
            "bars": bars,
            "equity_curve": [[f"2010-{1 + d // 28 % 12:02d}-{1 + d % 28:02d}T00:00:00",
                              100_000.0 + k + d * 3.5] for d in range(bars)]}
    return {"strategy": "ma_crossover", "params": {"fast": 10, "slow": 50, "fee": 0.001},
            "symbols": symbols, "summary": {"symbols": count, "mean_sharpe": 0.1}}


def write_record(root: Path, job_id: str, result: dict[str, Any]) -> int:
    when = "2026-01-01T00:00:00Z"
    body = {"id": job_id, "tool": "run_backtest", "params": {}, "priority": 0, "attempts": 1,
            "state": "done", "submitted_at": when, "started_at": when, "finished_at": when,
            "duration_s": 1.0, "host": "bench", "pid": 1, "result": result}
    data = orjson.dumps(body)
    (root / "done" / f"{job_id}.json").write_bytes(data)
    return len(data)


def _ms(name: str, values: list[float], baseline: list[float] | None = None) -> str:
    ratio = ("" if not baseline else
             f"   {statistics.median(values) / statistics.median(baseline):.2f}x the plain "
             f"table's {statistics.median(baseline):.1f} ms")
    return (f"{name:>12}: median {statistics.median(values):7.1f} ms (min {min(values):.1f}, "
            f"max {max(values):.1f}, n={len(values)}){ratio}")


def measure(base: str, runs: int) -> dict[str, list[float]]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(base + "/#/tasks/bt-a")
            page.wait_for_selector("#task-tables table.symbols tbody tr", timeout=120_000)
            page.evaluate("fetch('/api/v1/tasks/bt-a').then((r) => r.json())"
                          ".then((r) => { window.benchRecord = r; })")
            out: dict[str, list[float]] = {"render": [], "sort": [], "open": [],
                                           "plain render": [], "plain sort": []}
            out["render"] = [page.evaluate(RENDER) for _ in range(runs)]
            for _ in range(runs):
                out["plain render"].append(page.evaluate(PLAIN_RENDER, list(COLUMNS)))
                out["plain sort"].append(page.evaluate(PLAIN_SORT, list(COLUMNS)))
            for _ in range(runs):
                for key in ("total_return", "symbol", "sharpe"):
                    out["sort"].append(page.evaluate(SORT, key))
            out["open"] = [page.evaluate(OPEN, f"bt-{'ba'[n % 2]}") for n in range(runs)]
            return out
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_table",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--bars", type=int, default=75, help="equity points per symbol")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        layout = make_spool(Path(tmp) / "spool")
        result = backtest(args.symbols, args.bars)
        size = write_record(layout.root, "bt-a", result)
        write_record(layout.root, "bt-b", result)
        print(f"dashboard table: {args.symbols} symbols, a record of {size / 1e6:.1f} MB, "
              f"Chromium {CHROMIUM}")
        with running(layout.root) as server:
            figures = measure(server.base, args.runs)
    print(_ms("render", figures["render"], figures["plain render"]))
    print(_ms("sort", figures["sort"], figures["plain sort"]))
    print(_ms("open", figures["open"]))
    print(_ms("plain render", figures["plain render"]))
    print(_ms("plain sort", figures["plain sort"]))
    print("render and sort: to the first frame painted after; open: fetch, parse and the "
          "whole task view; plain: every row of a plain table (the baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
