"""The dashboard's task list in a real headless Chromium: what a row says, and where it is.

What an operator checks without a mouse: a failed row's error message and a running
row's progress message are on the row itself (a keyboard, a touch screen and a screen
reader have no hover), kept to two lines; a new row takes the place statusd gives it, as
a reload would.  The browser and page fixtures are test_statusd_dashboard's (a page with
a JavaScript error fails its test).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import test_statusd_dashboard as dashboard
from statusdkit import ServerThread, claim, finish, report, request, run_job, submit, wait_for

from spool.errors import ErrorType
from spool.transitions import Spool

sync_api = dashboard.sync_api
pytestmark = dashboard.pytestmark
browser = dashboard.browser
page = dashboard.page
expect = sync_api.expect


def test_a_rows_message_is_on_the_row_not_in_a_tooltip(server: ServerThread, spool: Spool,
                                                       page: sync_api.Page) -> None:
    """A failed row's error message and a running row's progress message were only in a
    title attribute, shown on a mouse's hover: a keyboard or touch user never saw them,
    and a screen reader did not read them.  They are on the row, two lines at most; the
    whole text is there for a screen reader (and in the task view)."""
    page.set_viewport_size({"width": 1280, "height": 800})
    # Under 1,000 characters: a brief row keeps it whole.
    long = "; ".join(f"symbol SYM{n:03d} has no close column" for n in range(24))
    run_job(spool, "timed-out", tool="sleep", error=(ErrorType.TIMEOUT, "killed after 2 s"))
    run_job(spool, "broken", tool="run_backtest", error=(ErrorType.TOOL_ERROR, long))
    submit(spool, "busy", tool="run_backtest")
    running = claim(spool, "busy")
    try:
        report(spool, running, 0.5, "backtested 50/100 symbols")
        page.goto(server.base + "/")
        cell = dashboard._row(page, "busy", "running").locator("td.progress-cell")
        expect(cell).to_have_text("50% backtested 50/100 symbols")
        expect(cell.get_by_text("backtested 50/100 symbols")).to_be_visible()
        expect(page.get_by_role("cell", name="killed after 2 s")).to_be_visible()
        # A screen reader reads the row's cells: the message is one of them.
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name="timed-out"))
        anything = re.compile(".*")  # its submitted time and duration
        expect(row.get_by_role("cell")).to_have_text(
            ["timed-out", "sleep", "failed timeout", "killed after 2 s", anything, anything])
        message = dashboard._row(page, "broken", "failed").locator(".message")
        expect(message).to_have_text(long)  # whole, for a screen reader
        lines = message.evaluate("m => m.getBoundingClientRect().height"
                                 " / parseFloat(getComputedStyle(m).lineHeight)")
        assert 0.9 < lines < 2.1, lines  # seen cut to two lines, not a 10-line row
        report(spool, running, 0.75, "backtested 75/100 symbols")
        expect(cell).to_have_text("75% backtested 75/100 symbols")
    finally:
        finish(spool, running, {"ok": 1})


def test_new_rows_take_statusds_order_within_a_millisecond(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """statusd lists newest first by submitted_at in microseconds (then id); the page put
    a new row by its millisecond (then id), so two jobs submitted within one millisecond
    could stand in the other order until a reload.  A new row goes where statusd's key
    puts it: whole microseconds as statusd reckons them, int(timestamp() * 1e6) of a
    double, under which two microseconds of 2040 are one key (then by id)."""
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#empty")).to_be_visible()  # the list has loaded: what comes is new
    when = {"job-a": datetime(2026, 3, 4, 5, 6, 7, 900, tzinfo=UTC),  # later, in one ms
            "job-b": datetime(2026, 3, 4, 5, 6, 7, 100, tzinfo=UTC),
            "r-late": datetime(2040, 2, 17, 11, 19, 11, 663386, tzinfo=UTC),  # one key
            "s-early": datetime(2040, 2, 17, 11, 19, 11, 663385, tzinfo=UTC)}
    for job_id, submitted_at in when.items():
        submit(spool, job_id, submitted_at=submitted_at)
    wait_for(lambda: len(request(server.base, "GET", "/api/v1/tasks").json()["tasks"]) == 4,
             what="statusd to list the four jobs")
    listed = [r["id"] for r in request(server.base, "GET", "/api/v1/tasks").json()["tasks"]]
    assert listed == ["s-early", "r-late", "job-a", "job-b"]
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(4)
    assert rows.evaluate_all("trs => trs.map((tr) => tr.dataset.id)") == listed
    page.reload()  # as a reload reads them
    expect(rows).to_have_count(4)
    assert rows.evaluate_all("trs => trs.map((tr) => tr.dataset.id)") == listed
