"""A researcher watching a long job in the dashboard, in a real headless Chromium.

What the page must say while a backtest runs for minutes: its progress, and the
header's figures read as `spoolq stats` says them, on a phone too.  The browser and
page fixtures are test_statusd_dashboard's (a page with a JavaScript error fails its
test).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import test_statusd_dashboard as dashboard
from statusdkit import ServerThread, claim, finish, report, submit

from spool.transitions import Spool

sync_api = dashboard.sync_api
pytestmark = dashboard.pytestmark
browser = dashboard.browser
page = dashboard.page
expect = sync_api.expect


def test_progress_reads_100_percent_only_when_it_is(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """0.996 was rounded to "100%" while the backtest still ran (and 0.29 must not read
    28%)."""
    submit(spool, "nearly", tool="run_backtest")
    running = claim(spool, "nearly")
    try:
        report(spool, running, 0.996, "backtested 996/1000 symbols")
        page.goto(server.base + "/")
        expect(dashboard._row(page, "nearly", "running").locator(".progress-cell")).to_have_text(
            " 99%")
        page.goto(server.base + "/#/tasks/nearly")
        text = page.locator("#task-progress .text")
        expect(text).to_have_text("99% backtested 996/1000 symbols")
        report(spool, running, 0.29, "backtested 290/1000 symbols")
        expect(text).to_have_text("29% backtested 290/1000 symbols")
    finally:
        finish(spool, running, {"ok": 1})


def test_jobs_waiting_for_their_not_before_are_not_shown_as_late(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Jobs due tonight (or in a retry's backoff) made the header say "oldest pending
    2 h 0 min" beside idle workers, as if the queue were stuck; `spoolq stats` says
    "none due yet"."""
    later = datetime.now(UTC) + timedelta(hours=2)
    submit(spool, "tonight", tool="run_backtest", not_before=later)
    page.goto(server.base + "/")
    expect(page.locator("#oldest")).to_contain_text("oldest pending ")
    expect(page.locator("#oldest")).to_contain_text(", none due yet")


def _many(route: sync_api.Route) -> None:
    stats = route.fetch().json()
    stats["counts"] = {"pending": 1234, "running": 2, "done": 1_234_567, "failed": 12_000}
    stats["oldest_pending_age_s"], stats["oldest_due_pending_age_s"] = 7_254.0, 3_599.0
    route.fulfill(json=stats)


def test_large_counts_are_grouped_and_the_header_fits_a_phone(
        server: ServerThread, page: sync_api.Page) -> None:
    """"done 1234567" had to be counted digit by digit.  Grouped, at 360 pixels the
    counts and "oldest pending 2 h 0 min, oldest due for 59 min 59 s" wrap between their
    items, within the screen."""
    width = 360
    page.set_viewport_size({"width": width, "height": 740})
    page.route("**/api/v1/stats", _many)
    page.goto(server.base + "/")
    expect(page.locator("#count-done")).to_have_text("1,234,567")
    expect(page.locator("#count-pending")).to_have_text("1,234")
    expect(page.locator("#count-failed")).to_have_text("12,000")
    expect(page.locator("#count-running")).to_have_text("2")
    expect(page.locator("#oldest")).to_have_text("oldest pending 2 h 0 min, "
                                                 "oldest due for 59 min 59 s")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
