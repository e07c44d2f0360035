"""A backtest's table of 5,000 symbols in a real headless Chromium: only the rows near the
view are in the DOM (results.js), and a reader cannot tell.

What a researcher checks: the right rows at the top, in the middle and at the end of the
table's box, no gap between them however tall each row is; a sort re-orders the rows in
view; a pin made on a row is there when the row is scrolled away and back, its curve
drawn all the while, its button keeping the focus; a screen reader is told how many rows
there are and where each is.  The browser and page fixtures are test_statusd_dashboard's
(a page with a JavaScript error fails its test).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import test_dashboard_results as results
from statusdkit import ServerThread, run_job, wait_for

from spool.states import JobState
from spool.transitions import Spool

if TYPE_CHECKING:
    from playwright import sync_api
else:
    sync_api = results.sync_api
pytestmark = results.pytestmark
browser = results.browser
page = results.page
COUNT = 5000
BOX, CURVES, NOTE = results.BOX, results.CURVES, results.NOTE
# The rows a reader sees in the table's box (below its sticky header), in the DOM's order:
# symbol, aria-rowindex, top and bottom (px).
IN_VIEW = """box => {
  const top = box.querySelector('thead th').getBoundingClientRect().bottom;  // sticky
  const bottom = box.getBoundingClientRect().bottom - box.clientTop;
  return [...box.querySelectorAll('tbody tr[data-symbol]')]
    .map((tr) => [tr, tr.getBoundingClientRect()])
    .filter(([, r]) => r.bottom > top + 1 && r.top < bottom - 1)
    .map(([tr, r]) => [tr.dataset.symbol, Number(tr.getAttribute('aria-rowindex')),
                       r.top, r.bottom]);
}"""
# The box scrolled to a fraction of its height (0: the top, 1: the end), a frame drawn.
SCROLL = f"""async (box, fraction) => {{
  box.scrollTop = (box.scrollHeight - box.clientHeight) * fraction;
  await ({results.FRAME})();
  await ({results.FRAME})();
}}"""
WIDTHS = "b => [...b.querySelectorAll('thead th')].map((th) => th.getBoundingClientRect().width)"


def big(count: int = COUNT, long_every: int = 0) -> dict[str, Any]:
    """A backtest of S0000, S0001, ...: total return rises with the name, sharpe in another
    order (7k mod count, a permutation).  Every long_every-th symbol has a long name that
    wraps onto lines of its own (a taller row)."""
    symbols = {}
    for k in range(count):
        name = f"S{k:04d}" + ("-" + "LONG" * 12 if long_every and k % long_every == 0 else "")
        symbols[name] = results._metrics(k / 1000, (7 * k) % count / 100)
    return results.backtest(symbols)


def _open(tab: sync_api.Page, server: ServerThread, job_id: str) -> sync_api.Locator:
    # Once the index holds it done: a view opened sooner starts from the index's older
    # state, and the move to done that follows draws the table again (a focus lost).
    wait_for(lambda: server.indexed_state(job_id) is JobState.DONE,
             what=f"statusd's index to hold {job_id} done")
    tab.goto(server.base + f"/#/tasks/{job_id}")
    sync_api.expect(tab.locator(NOTE)).to_have_text(
        f"top 12 of {COUNT} by sharpe (highest first)")
    return tab.locator(BOX)


def _in_view(box: sync_api.Locator, order: list[str]) -> tuple[int, list[str]]:
    """The place of the first row in view and the symbols in view: one after the other in
    the table's order, each row's aria-rowindex its place (the header is row 1), no gap
    between two rows."""
    rows = box.evaluate(IN_VIEW)
    assert len(rows) >= 3, rows
    start = rows[0][1] - 2
    assert [r[1] for r in rows] == list(range(start + 2, start + 2 + len(rows))), rows
    assert [r[0] for r in rows] == order[start:start + len(rows)], (start, rows)
    assert all(abs(a[3] - b[2]) < 1.5 for a, b in itertools.pairwise(rows)), rows
    return start, [r[0] for r in rows]


def _pin(tab: sync_api.Page, symbol: str) -> sync_api.Locator:
    return tab.locator(f'{results.ROWS}[data-symbol="{symbol}"] button.pin')


def _sharpe_order(result: dict[str, Any]) -> list[str]:
    return results._by(result, "sharpe")


def test_the_rows_in_view_are_the_right_ones_at_the_top_middle_and_end(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """5,000 rows laid out took over a second to show: a few dozen near the view are in the
    DOM, the rest stood for by spacers, and the reader sees the same rows where they are
    (and the columns keep their widths).  A screen reader is told there are 5,001 rows
    (the header's one of them) and each row's place."""
    expect = sync_api.expect
    result = big()
    order = _sharpe_order(result)
    run_job(spool, "bt-big", result, tool="run_backtest")
    box = _open(page, server, "bt-big")
    table = page.locator("#task-tables table.symbols")
    expect(table).to_have_attribute("aria-rowcount", str(COUNT + 1))
    expect(page.locator("#task-tables h3")).to_contain_text(f"on {COUNT} symbols")
    assert page.locator(results.SYMBOL_ROWS).count() < 200
    widths = box.evaluate(WIDTHS)
    start, _ = _in_view(box, order)
    assert start == 0
    box.evaluate(SCROLL, 0.5)
    start, shown = _in_view(box, order)
    assert abs(start + len(shown) / 2 - COUNT / 2) < 20, start
    assert box.evaluate(WIDTHS) == widths
    box.evaluate(SCROLL, 1)
    start, shown = _in_view(box, order)
    assert start + len(shown) == COUNT and shown[-1] == order[-1]
    assert box.evaluate(WIDTHS) == widths
    assert page.locator(results.SYMBOL_ROWS).count() < 200
    expect(page.get_by_role("row", name=order[-1])).to_have_attribute(
        "aria-rowindex", str(COUNT + 1))


def test_a_sort_reorders_the_rows_in_view(server: ServerThread, spool: Spool,
                                          page: sync_api.Page) -> None:
    """Scrolled to the middle, a sort shows the rows of the new order at that place; back
    at the top, its first rows."""
    result = big()
    run_job(spool, "bt-big", result, tool="run_backtest")
    box = _open(page, server, "bt-big")
    box.evaluate(SCROLL, 0.5)
    start, _ = _in_view(box, _sharpe_order(result))
    results._sort(page, "total_return")
    sync_api.expect(page.locator(NOTE)).to_have_text(
        f"top 12 of {COUNT} by total return (highest first)")
    assert _in_view(box, results._by(result, "total_return"))[0] == start
    results._sort(page, "symbol")
    sync_api.expect(page.locator(NOTE)).to_have_text(f"first 12 of {COUNT} by symbol (A to Z)")
    assert _in_view(box, sorted(result["symbols"]))[0] == start
    box.evaluate(SCROLL, 0)
    assert _in_view(box, sorted(result["symbols"]))[1][:3] == ["S0000", "S0001", "S0002"]


def test_a_pin_stays_while_its_row_is_scrolled_away_and_back(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A pin from the keyboard on a row near the top, the table scrolled to its end: the
    curve stays drawn, the pin keeps the focus; back at the top the row is pinned and in
    its curve's colour, and Space unpins it.  A pin clicked at the end is there when the
    end is scrolled to again."""
    expect = sync_api.expect
    result = big()
    order = _sharpe_order(result)
    run_job(spool, "bt-big", result, tool="run_backtest")
    box = _open(page, server, "bt-big")
    near, far = order[20], order[-3]  # neither among the 12 best drawn
    pin = _pin(page, near)
    pin.focus()
    page.keyboard.press("Enter")
    curve = page.locator(f'{CURVES}[data-symbol="{near}"]')
    expect(curve).to_have_attribute("data-pinned", "")
    focused = "() => document.activeElement.getAttribute('aria-label')"
    for fraction in (0.5, 1, 0):
        box.evaluate(SCROLL, fraction)
        assert page.evaluate(focused) == f"pin {near} on the equity chart", fraction
        expect(curve).to_have_attribute("data-pinned", "")
    expect(_pin(page, near)).to_have_attribute("aria-pressed", "true")
    expect(page.locator(f'{results.ROWS}[data-symbol="{near}"]')).to_have_class("pinned")
    assert pin.evaluate("b => getComputedStyle(b).color") == curve.evaluate(
        "p => getComputedStyle(p).stroke")
    page.keyboard.press("Space")
    expect(curve).to_have_count(0)
    expect(pin).to_have_attribute("aria-pressed", "false")
    # A pin clicked at the end, the table scrolled to the top and back.
    box.evaluate(SCROLL, 1)
    _pin(page, far).click()
    box.evaluate(SCROLL, 0)
    expect(page.locator(f'{CURVES}[data-symbol="{far}"]')).to_have_attribute("data-pinned", "")
    box.evaluate(SCROLL, 1)
    expect(page.locator(f'{results.ROWS}[data-symbol="{far}"]')).to_have_class("pinned")
    expect(_pin(page, far)).to_have_attribute("aria-pressed", "true")


def test_rows_of_many_heights_leave_no_gap(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    """Every seventh symbol's long name wraps onto more lines: the rows in view are still
    the right ones, one after the other with no gap, in the middle and at the end, and a
    reader scrolling through the box meets every row once, in order."""
    page.set_viewport_size({"width": 800, "height": 900})
    result = big(long_every=7)
    order = _sharpe_order(result)
    run_job(spool, "bt-tall", result, tool="run_backtest")
    box = _open(page, server, "bt-tall")
    heights = box.evaluate("b => [...b.querySelectorAll('tbody tr[data-symbol]')]"
                           ".map((tr) => Math.round(tr.getBoundingClientRect().height))")
    assert len(set(heights)) > 1, heights  # the long names do wrap
    for fraction in (0.25, 0.5, 0.75, 1):
        box.evaluate(SCROLL, fraction)
        start, shown = _in_view(box, order)
        assert abs(start - fraction * COUNT) < 40, (fraction, start)
    assert shown[-1] == order[-1]
    assert [row[0] for row in results.shown_rows(page)] == order


def test_tab_walks_the_pins_past_the_rows_first_shown(server: ServerThread, spool: Spool,
                                                      page: sync_api.Page) -> None:
    """From the first row's pin, Tab goes to each next row's pin in the table's order, on
    past the rows first in the DOM, the box scrolling along; Shift+Tab back."""
    result = big()
    order = _sharpe_order(result)
    run_job(spool, "bt-big", result, tool="run_backtest")
    box = _open(page, server, "bt-big")
    _pin(page, order[0]).focus()
    focused = "() => document.activeElement.getAttribute('aria-label')"
    for k in range(1, 80):  # about 30 rows are in the DOM at first
        page.keyboard.press("Tab")
        assert page.evaluate(focused) == f"pin {order[k]} on the equity chart", k
    for k in range(78, 68, -1):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(focused) == f"pin {order[k]} on the equity chart", k
    assert box.evaluate("b => b.scrollTop") > 0
