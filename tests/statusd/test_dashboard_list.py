"""The dashboard's task list in a real headless Chromium: what a row says, and where it is.

What an operator checks without a mouse: a failed row's error message and a running
row's progress message are on the row itself (a keyboard, a touch screen and a screen
reader have no hover), kept to two lines, as text (never HTML); a running row's bar is
filled as far as its percent; a new row takes the place statusd gives it, as a reload
would; a filtered list keeps to its filter as jobs move, and drops a list answer a filter
change overtook; the counts follow a move at once; the events socket is tried again with a
growing wait; the tool filter offers the tools statusd names now, not every one it ever
named.  The browser and page fixtures are test_statusd_dashboard's (a page with a
JavaScript error fails its test).
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime

import test_statusd_dashboard as dashboard
from statusd_browserkit import goto_with_clock_paused, held_back
from statusdkit import (
    ServerThread,
    claim,
    finish,
    report,
    request,
    run_job,
    submit,
    wait_for,
    wait_in_page,
)

from spool.client import Client
from spool.errors import ErrorType
from spool.states import JobState
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


def test_a_filtered_list_keeps_to_its_filter_as_jobs_move(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The list of running sleep jobs, watched while jobs move: one that ends leaves it, a
    new pending one does not join it, nor does a job of another tool that starts running.
    Only the page applies the filter to what the events stream tells (statusd filters the
    pages it lists, not the stream)."""
    submit(spool, "busy", tool="sleep")
    submit(spool, "other", tool="echo")
    running = [claim(spool, "busy")]
    try:
        page.goto(server.base + "/#/?state=running&tool=sleep")
        expect(page.locator("#live")).to_have_text("live")
        rows = page.locator("#tasks tbody tr")
        expect(rows).to_have_count(1)
        expect(dashboard._row(page, "busy", "running")).to_be_visible()
        submit(spool, "newcomer", tool="sleep")
        running.append(claim(spool, "other"))
        # Counted after the page has had both moves (the counts are read after each).
        expect(page.locator("#count-running")).to_have_text("2")
        expect(page.locator("#count-pending")).to_have_text("1")
        expect(rows).to_have_count(1)
    finally:
        for claimed in running:
            finish(spool, claimed, {"ok": 1})
    expect(page.locator("#count-done")).to_have_text("2")  # every move told by now
    expect(page.locator("#empty")).to_be_visible()
    expect(rows).to_have_count(0)


def test_a_filter_says_how_many_tasks_it_holds_on_every_page(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The list shows 50 rows at a time, and nothing said how many a filter held (h392):
    "60 tasks" under the filters, for a state, a tool and both, kept as jobs move; no
    line where the filter holds none (the list says "No tasks.")."""
    for n in range(60):
        run_job(spool, f"slept-{n:02d}", tool="sleep", error=(ErrorType.TIMEOUT, "killed"))
    for n in range(3):
        run_job(spool, f"woke-{n}", tool="sleep")
    for n in range(2):
        run_job(spool, f"echoed-{n}", tool="echo", error=(ErrorType.TOOL_ERROR, "boom"))
    page.goto(server.base + "/#/?state=failed&tool=sleep")
    expect(page.locator("#tasks tbody tr")).to_have_count(50)
    matched = page.locator("#matched")
    expect(matched).to_have_text("60 tasks")
    page.select_option("#tool-filter", "echo")
    expect(matched).to_have_text("2 tasks")
    page.select_option("#state-filter", "")
    expect(matched).to_have_text("2 tasks")
    page.select_option("#tool-filter", "sleep")
    expect(matched).to_have_text("63 tasks")
    submit(spool, "sleeper", tool="sleep")
    expect(matched).to_have_text("64 tasks")
    page.select_option("#tool-filter", "")
    expect(matched).to_have_text("66 tasks")
    page.select_option("#state-filter", "running")
    expect(page.locator("#empty")).to_be_visible()
    expect(matched).to_be_hidden()
    running = claim(spool, "sleeper")
    try:
        expect(matched).to_have_text("1 task")
    finally:
        finish(spool, running, {"ok": 1})
    expect(matched).to_be_hidden()
    # A tool the stats count nothing of (none of its jobs is listed, or it is past their
    # 256 names): not known, not said; never the whole spool's count (QA h397).
    page.goto(server.base + "/#/?tool=made_up")
    expect(page.locator("#count-done")).to_have_text("4")  # the stats are in
    expect(page.locator("#empty")).to_be_visible()
    expect(matched).to_be_hidden()


def test_a_rows_bar_is_filled_as_far_as_its_percent(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A running row's bar is filled to its fraction (a quarter: a quarter of the bar), not
    a sliver or the whole: a researcher reads the list's bars at a glance."""
    submit(spool, "busy", tool="run_backtest")
    running = claim(spool, "busy")
    try:
        report(spool, running, 0.25, "backtested 25/100 symbols")
        page.goto(server.base + "/")
        cell = dashboard._row(page, "busy", "running").locator("td.progress-cell")
        expect(cell).to_contain_text("25%")
        width = "e => e.getBoundingClientRect().width"
        bar = cell.locator(".bar").evaluate(width)
        assert bar > 20, bar
        assert abs(cell.locator(".fill").evaluate(width) - bar / 4) <= 1
    finally:
        finish(spool, running, {"ok": 1})


# Each wait the page asks its events socket's next try after (a timer whose callback calls
# connectEvents(); not reconnectEvents(), the try at once when statusd answers again), and
# how many of those timers have run out: a try not of one is a try straight after a close.
RECORD_RECONNECT_WAITS = """
window.__reconnectWaits = [];
window.__reconnectWaitsOver = 0;
window.setTimeout = ((pageSetTimeout) => function (callback, delay, ...rest) {
  if (typeof callback === "function" && /(^|[^\\w])connectEvents\\(\\)/.test(String(callback))) {
    window.__reconnectWaits.push(delay);
    const asked = callback;
    callback = (...args) => { window.__reconnectWaitsOver += 1; return asked(...args); };
  }
  return pageSetTimeout.call(this, callback, delay, ...rest);
})(window.setTimeout);
"""


def test_the_events_socket_is_tried_again_with_a_growing_wait(
        server: ServerThread, page: sync_api.Page) -> None:
    """A socket that cannot open (a proxy that passes no WebSocket, statusd away) is tried
    again after 0.5 s, then 1 s, 2 s...: each try also reads the list and the counts, so a
    tight loop of tries hammered statusd; and a try there must be.

    The waits are those the page asks its timers for, not the gaps between the tries seen
    from here: on a loaded host each timer ran late by about as much as the design's
    growth (gaps of 1.147 s then 1.022 s seen for 0.5 s then 1 s asked)."""
    tries: list[float] = []

    def refuse(ws: sync_api.WebSocketRoute) -> None:
        tries.append(time.monotonic())
        ws.close(code=1011)

    page.add_init_script(RECORD_RECONNECT_WAITS)
    page.route_web_socket("**/api/v1/ws/events**", refuse)
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("offline")
    wait_in_page(page, lambda: len(tries) >= 3, timeout=60,
                 what="the events socket tried again twice")
    page.wait_for_function("() => window.__reconnectWaits.length >= 3", timeout=60_000)
    seen = len(tries)  # before the page's count: a try comes only after its wait is over
    over, waits = page.evaluate("[window.__reconnectWaitsOver, window.__reconnectWaits]")
    # Every try after the first came when a wait asked for ran out: a try made straight
    # from the close (a tight loop, whatever the waits asked) is one too many.
    assert seen <= over + 1, (seen, over, waits)
    assert waits[:3] == [500, 1000, 2000], waits


def test_a_rows_message_is_text_never_html(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    """A job's error and progress messages are anyone's text (a tool echoes a param, an
    exception quotes a file): on the row they are shown as written, never run as HTML."""
    evil = dashboard.EVIL
    run_job(spool, "broken", tool="echo", error=(ErrorType.TOOL_ERROR, f"bad {evil}"))
    submit(spool, "busy", tool="run_backtest")
    running = claim(spool, "busy")
    try:
        report(spool, running, 0.5, f"<b>half</b> {evil}")
        page.goto(server.base + "/")
        failed = dashboard._row(page, "broken", "failed").locator(".message")
        expect(failed).to_have_text(f"bad {evil}")
        busy = dashboard._row(page, "busy", "running").locator(".message")
        expect(busy).to_have_text(f"<b>half</b> {evil}")
        report(spool, running, 0.75, f"<i>more</i> {evil}")  # as the events stream tells it
        expect(busy).to_have_text(f"<i>more</i> {evil}")
        dashboard._no_markup(page, "#tasks")
    finally:
        finish(spool, running, {"ok": 1})


def test_a_list_answer_overtaken_by_a_filter_change_is_dropped(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The list of done jobs asked for, then of failed ones before it came: the answer of
    the old filter, landing last, must not replace the list the selects say."""
    for n in range(3):
        run_job(spool, f"ok-{n}", tool="echo")
    run_job(spool, "bad", tool="echo", error=(ErrorType.TOOL_ERROR, "bad"))
    page.goto(server.base + "/")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(4)
    held = held_back(page, "**/api/v1/tasks?*state=done*")  # on its way until let go below
    page.select_option("#state-filter", "done")
    wait_in_page(page, lambda: held, what="the list of done jobs asked for")
    page.select_option("#state-filter", "failed")
    expect(rows).to_have_count(1)
    with page.expect_response("**/api/v1/tasks?*state=done*"):
        held[0].continue_()
    page.wait_for_timeout(200)
    expect(rows).to_have_count(1)
    expect(dashboard._row(page, "bad", "failed")).to_be_visible()


def test_the_counts_follow_a_transition_at_once(server: ServerThread, spool: Spool,
                                                page: sync_api.Page) -> None:
    """A job that moves has the counts read again at once, not at the next refresh (5 s
    on): the header said "pending 0" beside the new pending row.  The page's clock stands
    still here, so only a read after the transition can bring the new count."""
    goto_with_clock_paused(page, server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#count-pending")).to_have_text("0")
    submit(spool, "new", tool="sleep")
    expect(dashboard._row(page, "new", "pending")).to_be_visible()
    page.clock.run_for(300)  # far short of the refresh's 5 s
    expect(page.locator("#count-pending")).to_have_text("1")


def test_the_keyboard_stays_in_the_list_when_the_last_older_page_comes(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Enter on "older tasks" brought the last page and hid the button under the focus:
    the keyboard was sent to the page's top, a Tab walk through every row to get back to
    the rows it asked for (QA h392).  It goes on at the first of them."""
    for n in range(70):
        submit(spool, f"old-{n:05d}")
    dashboard._wait_indexed(server, 70)
    page.goto(server.base + "/")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(50)
    page.focus("#more")
    page.keyboard.press("Enter")
    expect(rows).to_have_count(70)
    expect(page.locator("#more")).to_be_hidden()
    expect(page.get_by_role("link", name="old-00019")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="old-00018")).to_be_focused()


def test_a_tool_name_is_not_broken_inside_on_a_laptops_screen(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """1280 px wide, a list of failed factor analyses (an error message beside each):
    every row's tool read "analyze_facto" over "r", the column squeezed below its name's
    width by a character, and its time "UTC" on a line of its own (QA h392).  A built-in
    tool's name and a time keep to one line."""
    page.set_viewport_size({"width": 1280, "height": 800})
    long = "unknown factor 'momentm'; known: " + ", ".join(f"factor_{n}" for n in range(40))
    for n in range(3):
        run_job(spool, f"20261207T101838-ebfe9086123{n}", tool="analyze_factor",
                error=(ErrorType.INVALID_PARAMS, long))
        run_job(spool, f"20261207T101839-9a8cb2cd6e9{n}", tool="run_backtest",
                error=(ErrorType.INVALID_PARAMS, long))
    page.goto(server.base + "/")
    expect(page.locator("#tasks tbody tr")).to_have_count(6)
    for column in ("tool", "submitted"):  # a time's "UTC" went to a second line as well
        lines = page.evaluate("""(column) => [...document.querySelectorAll(`#tasks td.${column}`)]
            .map(td => {
                const range = document.createRange();
                range.selectNodeContents(td);
                return [td.textContent, range.getClientRects().length];
            })""", column)
        assert all(n == 1 for _, n in lines), lines


def test_the_tool_filter_offers_the_tools_named_now_not_every_one_seen(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A page open for days: its tool filter offered every tool the stats had ever named,
    long after their jobs were purged (options were only added).  The stats name at most
    256 tools of jobs in the spool; a page that saw made-up names come and be purged all
    day offered thousands (QA h409: 400 after four rounds of 100, statusd naming none).
    The tool filtered on keeps its option while it is the filter."""
    options = page.locator("#tool-filter option")
    purge = functools.partial(Client.from_settings(server.settings).purge, 0.0,
                              [JobState.DONE])
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    per_round = 15
    for round_ in range(3):
        for k in range(per_round):
            run_job(spool, f"r{round_}-{k}", tool=f"made_up_{round_}_{k}")
        # "all" and this round's tools (the stats its transitions bring name no purged
        # one), and from round 2 the tool filtered on, purged with round 1.
        expect(page.locator(f"#tool-filter option[value='made_up_{round_}_0']")).to_have_count(1)
        expect(options).to_have_count(1 + per_round + (round_ == 2))
        if round_ == 1:
            page.select_option("#tool-filter", "made_up_1_0")
            expect(page.locator("#tasks tbody tr")).to_have_count(1)
        purge()
    run_job(spool, "last", tool="echo")
    expect(page.locator("#tool-filter option[value='echo']")).to_have_count(1)
    expect(page.locator("#tool-filter")).to_have_value("made_up_1_0")
    expect(options).to_have_count(3)  # "all", echo, the filter in force
    page.select_option("#tool-filter", "")  # no longer the filter: its option goes
    expect(options).to_have_count(2)
