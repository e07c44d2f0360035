"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

What a person would check: the counts, a job submitted while the page is open
appears and reaches done without a reload, the state filter, live progress in
the task view, and a backtest's equity curve drawn as an SVG path.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psutil
import pytest
from statusd_browserkit import (
    BROWSER_MARKS,
    REREAD_MS,
    RETRY_MS,
    STATIC_DIR,
    STATS_EVERY_MS,
    TICK_MS,
    TIMEOUT_MS,
    chromium,
    goto_with_clock_paused,
    held_back,
    held_heads,
    own_page,
    refuse,
    sync_api,
    watched,
)
from statusdkit import (
    STATS_URL,
    TOKEN,
    FakeOwner,
    ServerThread,
    claim,
    equity_result,
    finish,
    report,
    request,
    run_job,
    settings_for,
    submit,
    wait_for,
    wait_in_page,
)

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType
from spool.models import ErrorInfo, OwnerStatus
from spool.states import JobState
from spool.transitions import Spool

pytestmark = BROWSER_MARKS
NO_PROCESSOR_PENDING = "no processor is running: this job waits until one starts"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    """One Chromium for the module (its start was ~2 s of every test); each test still
    gets a page in a context of its own (``page``), so no cookie, storage, cache or
    route of one test reaches the next."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(server: ServerThread, browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    try:
        with own_page(browser) as tab:
            yield tab
    finally:
        # Unlike closing the whole browser, closing a context leaves Chromium to drop its
        # connections a moment later: the server stopping meanwhile was seen to leave a
        # socket it had just accepted open (no_leaks).  Stop it once they are gone.
        wait_for(lambda: not _browser_connections(server.port),
                 what="the page's connections to statusd to close")


def _browser_connections(port: int) -> list[Any]:
    """statusd's sockets on ``port`` whose other end is not in this process (the browser)."""
    conns = psutil.Process().net_connections(kind="tcp")
    ours = {c.laddr for c in conns}
    return [c for c in conns if c.laddr and c.laddr.port == port and c.raddr
            and c.raddr not in ours]


def _wait_served_with_traceback(server: ServerThread, job_id: str) -> None:
    """Until statusd serves the record that replaced ``job_id``'s first one, and its
    index holds it: a GET made while the index applies a batch reads the disk, and the
    page's list and task stream are the index's (a row still titled with the first
    record's error was seen when the index applied the new one late)."""
    def served() -> Any:
        record = request(server.base, "GET", f"/api/v1/tasks/{job_id}").json()
        return (record.get("error") or {}).get("traceback")

    def listed() -> Any:
        rows = request(server.base, "GET", "/api/v1/tasks?state=failed").json()["tasks"]
        row = next((r for r in rows if r["id"] == job_id), {})
        return (row.get("error") or {}).get("traceback")

    wait_for(served, what=f"statusd to serve the new record of {job_id}")
    wait_for(listed, what=f"statusd's index to hold the new record of {job_id}")


def _wait_indexed(server: ServerThread, total: int) -> None:
    """Until statusd counts ``total`` jobs: jobs it sees only after the page has read its
    list come by the events stream as new rows (a loaded CI: 893 rows where the test
    counted a page of 100)."""
    def counted() -> bool:
        counts = request(server.base, "GET", "/api/v1/stats").json()["counts"]
        return sum(counts.values()) >= total
    wait_for(counted, timeout=60.0, what=f"statusd to count {total} jobs")


EVIL = '<img src=x onerror="window.__xss = 1">'
"""Markup a job's message may hold: shown as text, never run (see :func:`_no_markup`)."""


def _no_markup(page: sync_api.Page, scope: str) -> None:
    """Nothing of :data:`EVIL` or other tags in a message became markup under ``scope``,
    and its script never ran."""
    assert page.locator(f"{scope} img, {scope} b, {scope} i").count() == 0
    assert page.evaluate("window.__xss") is None


def _row(page: sync_api.Page, job_id: str, state: str | None = None) -> sync_api.Locator:
    selector = f'#tasks tr[data-id="{job_id}"]'
    return page.locator(selector + (f'[data-state="{state}"]' if state else ""))


def test_a_tests_context_starts_no_browser_ui_page(page: sync_api.Page) -> None:
    """A test's context opens only its page: no omnibox popup WebUI in a renderer of its
    own (~0.5 CPU-s a test, more than the dashboard's page; see statusd_browserkit)."""
    page.goto("about:blank")
    session = page.context.browser.new_browser_cdp_session()
    try:
        targets = session.send("Target.getTargets", {"filter": [{}]})["targetInfos"]
    finally:
        session.detach()
    assert [t["url"] for t in targets if t["type"] == "browser_ui"] == []


@pytest.mark.parametrize("scale", [1_500, 2e24], ids=["past 100 million", "past 1e29"])
def test_equity_axis_labels_fit_however_large_the_equity(server: ServerThread, spool: Spool,
                                                         page: sync_api.Page,
                                                         scale: float) -> None:
    """A curve past 100 million: the labels, at most 70 px left of the axis, began left of
    the chart's edge (151,245,126 showed as 51,245,126).  Compact notation stops at
    trillions: a 300,000-bar backtest that ended at 2.2e29 was labelled
    "220,000,000,000,000T", cut to "00,000,000T"."""
    result = equity_result(("AAA",), bars=50)
    for point in result["symbols"]["AAA"]["equity_curve"]:
        point[1] *= scale
    run_job(spool, "bt-big", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-big")
    labels = page.locator("#equity svg text[x=\"64\"]")  # at CHART.left - 6
    sync_api.expect(labels).to_have_count(3)  # the y axis: low, middle, high
    lefts = labels.evaluate_all("nodes => nodes.map((n) => n.getBBox().x)")
    assert min(lefts) >= 0, (lefts, labels.all_text_contents())


def _path_span(page: sync_api.Page, symbol: str, at_least: float) -> float:
    """How many pixels the drawn curve of ``symbol`` spans up and down, once it spans
    ``at_least`` (within 5 s, as ``expect`` waits: under load the chart may be drawn
    again as the record's stream catches up, its path briefly gone)."""
    path = page.locator(f'#equity svg path.equity[data-symbol="{symbol}"]')
    deadline = time.monotonic() + 5.0
    while True:
        box = path.bounding_box() if path.count() == 1 else None
        span = 0.0 if box is None else float(box["height"])
        if span >= at_least or time.monotonic() > deadline:
            return span
        time.sleep(0.05)


def test_curves_orders_of_magnitude_apart_are_drawn_on_a_log_scale(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A symbol that grew 10,000-fold flattened the others into the chart's base line (a
    symbol that doubled spanned 0.03 px).  Past a 100-fold span of positive values the
    axis is logarithmic and says so; a usual backtest's stays linear."""
    expect = sync_api.expect
    result = equity_result(("AAA", "BBB"), bars=200)
    for t, point in enumerate(result["symbols"]["AAA"]["equity_curve"]):
        point[1] = 100_000.0 * (1 + t / 199)  # doubles
    for t, point in enumerate(result["symbols"]["BBB"]["equity_curve"]):
        point[1] = 100_000.0 * 10 ** (4 * t / 199)  # 10,000-fold
    run_job(spool, "bt-wide", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-wide")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#equity svg text.scale")).to_have_text("log scale")
    assert _path_span(page, "AAA", at_least=10) >= 10
    run_job(spool, "bt-usual", equity_result(("AAA", "BBB"), bars=200), tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-usual")
    expect(page.locator("#task-id")).to_have_text("bt-usual")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#equity svg text.scale")).to_have_count(0)


def test_the_equity_axis_labels_tell_a_small_range_apart(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Labels were whole numbers below a million: a backtest normalised to an init_cash of
    1 (equity 0.87 to 1.09) read "1 / 1 / 1", and its spoken name "from 1 to 1" (QA)."""
    expect = sync_api.expect
    result = equity_result(("AAA", "BBB"), bars=100)
    for symbol, end in (("AAA", 1.09), ("BBB", 0.87)):
        for t, point in enumerate(result["symbols"][symbol]["equity_curve"]):
            point[1] = 1.0 + (end - 1.0) * t / 99
    run_job(spool, "bt-one", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-one")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    labels = page.locator("#equity svg > text[text-anchor='end']")
    expect(labels.first).to_have_text("0.87")
    assert [labels.nth(i).text_content() for i in range(3)] == ["0.87", "0.98", "1.09"]
    expect(page.locator("#equity svg")).to_have_attribute("aria-label", re.compile(
        r"equity from 0\.87 to 1\.09$"))


def test_a_screen_reader_hears_what_the_chart_draws(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """The chart is an image to a screen reader, named "equity curve" and nothing more:
    its legend's text is inside the image, so which symbols were drawn, over which dates,
    on what scale, were not said.  Its name says them."""
    expect = sync_api.expect
    late = _curve(date(2020, 1, 1) + timedelta(days=300), 100, 0.002)
    for t, point in enumerate(late):
        point[1] = 100_000.0 * 10 ** (4 * t / 99)  # 10,000-fold: a log scale
    result = {"strategy": "ma_crossover", "symbols": {
        "AAA": {"equity_curve": _curve(date(2020, 1, 1), 400, 0.001)},
        "LATE": {"equity_curve": late},
    }}
    run_job(spool, "heard", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/heard")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    last = date(2020, 1, 1) + timedelta(days=399)
    expect(page.locator("#equity svg")).to_have_attribute("aria-label", re.compile(
        rf"^equity curve of AAA and LATE, 2020-01-01 to {last}, equity from [0-9.,]+K? to "
        r"1(,000,000,000|B)[^,;]*, log scale$"))


def test_the_dashboard_follows_the_spool_live(server: ServerThread, spool: Spool,
                                              page: sync_api.Page) -> None:
    expect = sync_api.expect
    run_job(spool, "bt-1", equity_result(("AAA", "BBB"), bars=400), tool="run_backtest")
    run_job(spool, "broken", tool="echo", error=(ErrorType.TOOL_ERROR, "it broke"))
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#count-done")).to_have_text("1")
    expect(page.locator("#count-failed")).to_have_text("1")
    expect(_row(page, "bt-1", "done")).to_be_visible()

    # A job submitted while the page is open appears, runs and finishes: no reload.
    reply = request(server.base, "POST", "/api/v1/tasks",
                    {"tool": "echo", "params": {"message": "from the test"}}, token=TOKEN)
    job_id = reply.json()["task_id"]
    expect(_row(page, job_id, "pending")).to_be_visible()
    expect(page.locator("#count-pending")).to_have_text("1")
    running = claim(spool, job_id)
    expect(_row(page, job_id, "running")).to_be_visible()
    report(spool, running, 0.5, "half way")
    expect(_row(page, job_id).locator(".progress-cell")).to_contain_text("50%")
    finish(spool, running, {"message": "from the test"})
    expect(_row(page, job_id, "done")).to_be_visible()
    expect(page.locator("#count-done")).to_have_text("2")
    expect(page.locator("#count-pending")).to_have_text("0")

    # Filters.
    page.select_option("#state-filter", "failed")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(_row(page, "broken", "failed")).to_be_visible()
    page.select_option("#state-filter", "")
    page.select_option("#tool-filter", "run_backtest")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(_row(page, "bt-1")).to_be_visible()
    page.select_option("#tool-filter", "")

    # The backtest's equity curves, drawn as SVG paths with data.
    _row(page, "bt-1").locator("a").click()
    expect(page.locator("#task-state")).to_have_text("done")
    paths = page.locator("#equity svg path.equity")
    expect(paths).to_have_count(2)
    d = paths.first.get_attribute("d") or ""
    assert d.startswith("M") and d.count("L") >= 300
    expect(page.locator("#task-result pre")).to_contain_text("400 points")

    # A failed task shows its error.
    page.goto(server.base + "/#/tasks/broken")
    expect(page.locator("#task-error .message")).to_have_text("tool_error: it broke")
    expect(page.locator("#task-error .traceback")).to_be_hidden()  # no empty box
    # ... and its traceback when it has one.
    crashed = run_job(spool, "crashed", tool="echo", error=(ErrorType.TOOL_ERROR, "boom"))
    spool.publish_terminal(crashed.model_copy(update={"error": ErrorInfo(
        type=ErrorType.TOOL_ERROR, message="boom", traceback="Traceback: line 1")}))
    _wait_served_with_traceback(server, "crashed")
    page.goto(server.base + "/#/tasks/crashed")
    expect(page.locator("#task-error .traceback")).to_have_text("Traceback: line 1")
    expect(page.locator("#task-error .traceback")).to_be_visible()


def test_the_task_view_shows_live_progress(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    expect = sync_api.expect
    submit(spool, "slow", tool="sleep")
    request(server.base, "GET", "/api/v1/tasks/slow")
    page.goto(server.base + "/#/tasks/slow")
    expect(page.locator("#task-state")).to_have_text("pending")
    running = claim(spool, "slow")
    expect(page.locator("#task-state")).to_have_text("running")
    report(spool, running, 0.25, "a quarter")
    expect(page.locator("#task-progress .text")).to_have_text("25% a quarter")
    report(spool, running, 0.75, "three quarters")
    expect(page.locator("#task-progress .text")).to_have_text("75% three quarters")
    finish(spool, running, {"slept": 1})
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-progress")).to_be_hidden()
    expect(page.locator("#task-result pre")).to_contain_text('"slept": 1')



def test_a_progress_message_is_text_in_the_task_view(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """A tool's progress message is its text (a symbol, a file name it quotes): the task
    view shows it as written, never runs it as HTML, read with the record or streamed."""
    expect = sync_api.expect
    evil = EVIL
    submit(spool, "wordy", tool="sleep")
    running = claim(spool, "wordy")
    try:
        report(spool, running, 0.25, f"<b>quarter</b> {evil}")
        page.goto(server.base + "/#/tasks/wordy")
        text = page.locator("#task-progress .text")
        expect(text).to_have_text(f"25% <b>quarter</b> {evil}")
        report(spool, running, 0.5, f"<i>half</i> {evil}")
        expect(text).to_have_text(f"50% <i>half</i> {evil}")
        _no_markup(page, "#task-progress")
    finally:
        finish(spool, running, {"slept": 1})

def test_the_tab_title_names_the_task_its_state_and_progress(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Every view was titled "spoolq": three backtests open in three tabs, and the
    browser's history, could not be told apart, nor a run's progress seen from another
    tab.  The title names the task, its state and its progress; the list says its filter."""
    expect = sync_api.expect
    submit(spool, "bt-7", tool="run_backtest")
    running = claim(spool, "bt-7")
    report(spool, running, 0.42, "backtesting")
    page.goto(server.base + "/#/tasks/bt-7")
    expect(page).to_have_title("bt-7 running 42% \u00b7 spoolq")
    report(spool, running, 0.5, "backtesting")
    expect(page).to_have_title("bt-7 running 50% \u00b7 spoolq")
    finish(spool, running, {"ok": 1})
    expect(page).to_have_title("bt-7 done \u00b7 spoolq")
    page.goto(server.base + "/#/tasks/nope")
    expect(page).to_have_title("nope not found \u00b7 spoolq")
    page.goto(server.base + "/#/?state=failed&tool=run_backtest")
    expect(page).to_have_title("failed run_backtest \u00b7 spoolq")
    page.goto(server.base + "/#/")
    expect(page).to_have_title("spoolq")


def test_a_large_result_shows_done_while_it_loads(server: ServerThread, spool: Spool,
                                                  page: sync_api.Page) -> None:
    """A backtest's record of 170 MB took 4 s to load after it finished: all that while
    the view said "running" with its last progress.  The state the stream told is shown
    at once, with word that the result is coming, and the result when it has come."""
    expect = sync_api.expect
    submit(spool, "big-bt", tool="run_backtest")
    running = claim(spool, "big-bt")
    report(spool, running, 0.85, "backtested 17/20 symbols")
    page.goto(server.base + "/#/tasks/big-bt")
    expect(page.locator("#task-progress .text")).to_have_text("85% backtested 17/20 symbols")
    held = held_back(page, "**/api/v1/tasks/big-bt")  # the whole record
    result = equity_result(("AAA", "BBB"), bars=2_000)  # past the 32 KiB a list row carries
    finish(spool, running, result)
    expect(page.locator("#task-state")).to_have_text("done", timeout=5_000)
    expect(page.locator("#task-progress")).to_be_hidden()
    expect(page.locator("#task-fields dd[data-field='duration']")).to_have_text("250 ms")
    expect(page.locator("#task-result .cut")).to_have_text("loading the result…")
    wait_in_page(page, lambda: held, what="the whole record asked for")
    for route in held:
        route.continue_()
    page.unroute("**/api/v1/tasks/big-bt")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#task-result pre")).to_contain_text('"equity_curve": "[2000 points]"')
    expect(page.locator("#task-result .cut")).to_be_hidden()


SMALL_RECORD_LIMIT = 64 * 1024
"""The page's limit on a record it loads whole, lowered for a test (see below)."""


def _lower_record_limit(page: sync_api.Page) -> None:
    """Serve app.js with its MAX_RECORD_BYTES lowered: a record over the real limit (256
    MiB) is too large for a test to write, one over 64 KiB is not."""
    def lowered(route: sync_api.Route) -> None:
        text = route.fetch().text()
        limit = r"const MAX_RECORD_BYTES = [^;]+;"
        route.fulfill(body=re.sub(limit, f"const MAX_RECORD_BYTES = {SMALL_RECORD_LIMIT};",
                                  text), content_type="application/javascript")
    page.route("**/static/app.js", lowered)


def test_a_record_too_large_to_load_says_so_once(server: ServerThread, spool: Spool,
                                                 page: sync_api.Page) -> None:
    """A record past what a page can parse (a 678 MB backtest: "Unexpected end of JSON
    input") showed "unavailable" with no state, and was fetched again, whole, every
    6 s for as long as the page stayed open.  It is not loaded: its state, times and
    a link to the whole record are shown, and nothing is fetched again."""
    expect = sync_api.expect
    _lower_record_limit(page)
    record = run_job(spool, "huge", equity_result(("AAA", "BBB", "CCC"), bars=2_000),
                     tool="run_backtest")
    size = len(request(server.base, "GET", "/api/v1/tasks/huge").body)
    assert size > SMALL_RECORD_LIMIT
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/tasks/huge") else None)
    page.clock.install()  # run on below past the page's retries, not waited out
    page.goto(server.base + "/#/tasks/huge")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-fields dd[data-field='duration']")).to_have_text("250 ms")
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("too large to show here")
    expect(note.locator("a")).to_have_js_property("href", f"{server.base}/api/v1/tasks/huge")
    expect(page.locator("#task-error")).to_be_hidden()
    assert record.state.value == "done"
    page.clock.fast_forward(RETRY_MS * 5)
    page.wait_for_timeout(300)
    assert len(asked) <= 2, asked  # the first look, and the one after its stream's snapshot


def test_a_record_too_large_opened_twice_as_it_loads_has_one_stream(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view left a task too large to load and opened it again before its first read
    came: each opening's read, found too large, opened the task's stream, the second over
    the first (two handshakes, two snapshots, the whole record asked for twice, h362)."""
    expect = sync_api.expect
    _lower_record_limit(page)
    run_job(spool, "large-twice", equity_result(("AAA", "BBB", "CCC"), bars=2_000),
            tool="run_backtest")
    streams: list[str] = []
    page.on("websocket", lambda ws: streams.append(ws.url) if "/ws/tasks/" in ws.url else None)
    reads = held_back(page, "**/api/v1/tasks/large-twice")
    page.goto(server.base + "/#/tasks/large-twice")
    wait_in_page(page, lambda: reads, what="the first opening's read")
    page.evaluate("() => { location.hash = '#/'; }")
    expect(page.locator("#list-view")).to_be_visible()
    page.evaluate("() => { location.hash = '#/tasks/large-twice'; }")
    wait_in_page(page, lambda: len(reads) > 1, what="the second opening's read")
    page.unroute("**/api/v1/tasks/large-twice")
    for route in reads:
        route.continue_()
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("too large to show here")
    expect(page.locator("#task-state")).to_have_text("done")
    page.wait_for_timeout(500)
    assert len(streams) == 1, streams


def test_a_record_too_large_to_load_is_not_fetched_again_when_its_end_is_told_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """As a record that is gone (404): the task stream told the end first and closed, the
    events stream's word of the same end came after, and the view fetched the record it
    had just found too large to load once more (its headers read, then cut off)."""
    expect = sync_api.expect
    _lower_record_limit(page)
    held, streams = _hold_the_events_end(page, "huge-late")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/tasks/huge-late")
            else None)
    running = _open_running(server, spool, page, "huge-late", "run_backtest")
    expect(page.locator("#live")).to_have_text("live")
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    finish(spool, running, equity_result(("AAA", "BBB", "CCC"), bars=2_000))
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("too large to show here")
    page.wait_for_function("() => ui.taskSocket === null")  # the task stream has ended
    fetched = len(asked)
    wait_in_page(page, lambda: held, what="the events stream's word of the end")
    streams[0].send(held[0])
    page.wait_for_function("() => ui.taskEvent && ui.taskEvent.state === 'done'")
    page.wait_for_timeout(500)
    assert len(asked) == fetched, asked
    expect(page.locator("#task-state")).to_have_text("done")
    expect(note).to_contain_text("too large to show here")


def test_a_running_record_too_large_to_load_is_followed_without_its_stream(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A running task whose record is too large to load, its stream refused (a proxy that
    passes no WebSocket): the view's read again over REST, found too large, was taken for
    no answer.  "statusd unreachable", "processor: ?", no state, and the whole record
    asked for again every second (its headers read, then cut off).  statusd answered: the
    view shows the task's list row, and does not fetch the record again while it runs."""
    expect = sync_api.expect
    _lower_record_limit(page)
    submit(spool, "huge-run", tool="echo", params={"message": "x" * 100_000})
    running = claim(spool, "huge-run")
    size = len(request(server.base, "GET", "/api/v1/tasks/huge-run").body)
    assert size > SMALL_RECORD_LIMIT
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.method)
            if r.url.endswith("/api/v1/tasks/huge-run") else None)
    try:
        page.route_web_socket("**/api/v1/ws/tasks/**", lambda ws: ws.close(code=1011))
        goto_with_clock_paused(page, server.base + "/#/tasks/huge-run")
        expect(page.locator("#live")).to_have_text("live")
        page.wait_for_function("() => ui.taskSocket === null")  # its stream tried, and refused
        page.clock.run_for(REREAD_MS)
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#task-fields dd[data-field='tool']")).to_have_text("echo")
        expect(page.locator("#task-result .cut")).to_contain_text("too large to show here")
        expect(page.locator("#processor")).not_to_have_text("processor: ?")
        expect(page.locator("#task-note")).not_to_contain_text("unreachable")
        fetched = reads.count("GET")
        for _ in range(5):
            page.clock.run_for(REREAD_MS)
            page.wait_for_timeout(100)
        assert reads.count("GET") == fetched, reads  # not fetched again whole
        assert reads.count("HEAD") >= 3, reads  # but followed
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#task-note")).not_to_contain_text("unreachable")
        finish(spool, running, {"echo": "done"})
        expect(page.locator("#task-state")).to_have_text("done")
    finally:
        running.close()


def test_a_running_record_too_large_and_not_in_the_list_shows_no_job_it_does_not_know(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The same task opened from a list that does not show it (the done filter): it has
    no row to draw, so its view says where the whole record is.  Its "job" box was shown
    with "{}", as if the job had no tool and no params (h368): nothing of the job is known
    there, and nothing of it is said."""
    expect = sync_api.expect
    _lower_record_limit(page)
    submit(spool, "huge-away", tool="echo", params={"message": "x" * 100_000})
    running = claim(spool, "huge-away")
    try:
        page.route_web_socket("**/api/v1/ws/tasks/**", lambda ws: ws.close(code=1011))
        goto_with_clock_paused(page, server.base + "/#/?state=done")
        expect(page.locator("#live")).to_have_text("live")
        page.evaluate("() => { location.hash = '#/tasks/huge-away'; }")
        page.wait_for_function("() => ui.taskSocket === null")  # its stream tried, and refused
        page.clock.run_for(REREAD_MS)
        expect(page.locator("#task-result .cut")).to_contain_text("too large to show here")
        expect(page.locator("#task-params")).to_be_hidden()
        finish(spool, running, {"echo": "done"})
        expect(page.locator("#task-state")).to_have_text("done")
    finally:
        running.close()


def test_a_task_is_cancelled_and_retried_from_its_view(server: ServerThread, spool: Spool,
                                                       page: sync_api.Page) -> None:
    """What `spoolq cancel` and `spoolq retry` do, from the task view: the token is asked
    for once (a wrong one is said so, and changes nothing), then kept for the tab."""
    expect = sync_api.expect
    submit(spool, "victim", tool="sleep")
    page.goto(server.base + "/#/tasks/victim")
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#retry-task")).to_be_hidden()
    page.locator("#cancel-task").click()
    expect(page.locator("#action-status")).to_contain_text("STATUSD_TOKEN")
    page.locator("#token").fill("not-the-token")
    page.locator("#token").press("Enter")
    expect(page.locator("#action-status")).to_contain_text("refused the token")
    expect(page.locator("#token-form")).to_be_visible()
    assert request(server.base, "GET", "/api/v1/tasks/victim").json()["state"] == "pending"
    page.locator("#token").fill(TOKEN)
    page.locator("#token").press("Enter")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#task-error .message")).to_have_text("cancelled: cancelled while pending")
    expect(page.locator("#cancel-task")).to_be_hidden()
    # It never ran: the pid is statusd's, which wrote the record, no "ran in pid" (h397).
    expect(page.locator("#task-fields dd[data-field='host']")).to_have_text(
        re.compile(r" \(written by pid \d+\)$"))
    record = request(server.base, "GET", "/api/v1/tasks/victim").json()
    assert (record["state"], record["error"]["type"]) == ("failed", "cancelled")
    page.locator("#retry-task").click()  # the token is kept: no second question
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#action-status")).to_have_text("victim is pending again")
    expect(page.locator("#token-form")).to_be_hidden()
    assert request(server.base, "GET", "/api/v1/tasks/victim").json()["state"] == "pending"
    expect(page.locator("#cancel-task")).to_be_visible()


def test_a_cancel_on_a_read_only_statusd_says_writes_are_off(spool: Spool,
                                                           browser: sync_api.Browser) -> None:
    """statusd without STATUSD_TOKEN (the default: writes off): a newcomer's click on
    cancel asked for "statusd's token (its STATUSD_TOKEN)", a token that does not exist,
    and only once one was made up said that writes are off (QA h410).  It says so at the
    first click now, with no token asked for, and the job is untouched."""
    expect = sync_api.expect
    srv = ServerThread(settings_for(spool.layout.root, statusd_token="")).start()
    try:
        submit(spool, "untouched", tool="sleep")
        with own_page(browser) as tab:
            tab.goto(srv.base + "/#/tasks/untouched")
            expect(tab.locator("#task-state")).to_have_text("pending")
            tab.locator("#cancel-task").click()
            expect(tab.locator("#action-status")).to_have_text(
                "cannot cancel untouched: writes are off: set STATUSD_TOKEN to enable them")
            expect(tab.locator("#token-form")).to_be_hidden()
        wait_for(lambda: not _browser_connections(srv.port),
                 what="the page's connections to statusd to close")
        assert request(srv.base, "GET", "/api/v1/tasks/untouched").json()["state"] == "pending"
    finally:
        srv.stop()


def test_the_keyboard_stays_on_the_actions_after_a_cancel_and_a_retry(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Keyboard only: the token typed and Enter, the form was hidden and the focus went
    to the page's top, as it did when a cancel hid its button (the job failed) and a
    retry its own: a second Tab walk from the top for each action.  The focus goes to
    the action the task has now (retry once cancelled, cancel once pending again)."""
    expect = sync_api.expect
    submit(spool, "keyed", tool="sleep")
    page.goto(server.base + "/#/tasks/keyed")
    expect(page.locator("#task-state")).to_have_text("pending")
    page.locator("#cancel-task").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#retry-task")).to_be_focused()
    # The retry's answer held back until the events stream has told the job pending: the
    # retry button goes while it waits for its answer (disabled), and the focus still ends
    # on cancel.
    # Sent on by the test, not in the route's handler: the wait for the request is not
    # also a wait for statusd's answer (a full run's failure, not traced, saw neither in
    # 10 s).
    held = held_back(page, "**/api/v1/tasks/keyed/retry")
    page.keyboard.press("Enter")
    route = wait_in_page(page, lambda: held and held[0], what="the retry sent")
    answer = route.fetch()
    expect(page.locator("#task-state")).to_have_text("pending")
    route.fulfill(response=answer)
    expect(page.locator("#action-status")).to_have_text("keyed is pending again")
    expect(page.locator("#cancel-task")).to_be_focused()


def _open_running(server: ServerThread, spool: Spool, page: sync_api.Page, job_id: str,
                  tool: str = "sleep", *, fake_clock: bool = False) -> Claim:
    """A job of ``tool`` claimed (its claim returned), its view open and showing it
    running; ``fake_clock``: on a page whose clock the test moves on."""
    submit(spool, job_id, tool=tool)
    running = claim(spool, job_id)
    if fake_clock:
        page.clock.install()
    page.goto(f"{server.base}/#/tasks/{job_id}")
    sync_api.expect(page.locator("#task-state")).to_have_text("running")
    return running


def test_a_refused_cancel_says_why(server: ServerThread, spool: Spool,
                                   page: sync_api.Page) -> None:
    """A task that finished while its view still offered the cancel: the API's 409 is
    said on the page, and the view shows the task as it is."""
    expect = sync_api.expect
    running = _open_running(server, spool, page, "quick")
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)

    def finish_first(route: sync_api.Route) -> None:  # the job ends as the cancel is sent
        finish(spool, running, {"slept": 0})
        route.continue_()

    page.route("**/api/v1/tasks/quick/cancel", finish_first)
    page.locator("#cancel-task").click()
    expect(page.locator("#action-status")).to_contain_text("cannot cancel quick")
    expect(page.locator("#action-status")).to_contain_text("already finished")
    expect(page.locator("#task-state")).to_have_text("done")


def test_a_cancel_the_processor_has_not_acted_on_yet_says_so(
        server: ServerThread, spool: Spool, page: sync_api.Page,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A running task's cancel answers with the task as it is after statusd's wait (5 s
    shipped, 1 s here: nothing acts on the request either way), still running when its
    processor has not stopped it yet (here: none runs); the page said "cancelled" beside
    "running"."""
    client = server.services.client
    monkeypatch.setattr(client, "cancel", functools.partial(client.cancel, wait_s=1.0))
    expect = sync_api.expect
    running = _open_running(server, spool, page, "stubborn")
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)
    page.locator("#cancel-task").click()
    status = page.locator("#action-status")
    expect(status).to_contain_text("still running", timeout=15_000)
    expect(status).not_to_contain_text("stubborn cancelled")
    expect(page.locator("#task-state")).to_have_text("running")
    finish(spool, running, {"slept": 0})  # its claim's lease goes with it


def test_a_large_result_that_is_gone_is_not_fetched_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The whole record of a finished task gone when the view fetched it (a purge: 404):
    the view retried every 2 s for as long as it stayed open, saying "trying again"."""
    expect = sync_api.expect
    running = _open_running(server, spool, page, "big-gone", "run_backtest", fake_clock=True)
    asked: list[str] = []

    def gone(route: sync_api.Route) -> None:
        asked.append(route.request.url)
        refuse(route, 404, "not_found", "no task big-gone")

    page.route("**/api/v1/tasks/big-gone", gone)
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("no task big-gone")
    expect(note).not_to_contain_text("trying again")
    fetched = len(asked)
    page.clock.fast_forward(RETRY_MS * 5)
    page.wait_for_timeout(300)
    assert len(asked) == fetched == 1, asked


def _hold_the_events_end(page: sync_api.Page, job_id: str
                         ) -> tuple[list[str | bytes], list[sync_api.WebSocketRoute]]:
    """The events stream's word of ``job_id``'s end held back, the rest passed on: the list
    it is held in (the test lets it go with ``streams[0].send(held[0])``), and the routed
    streams."""
    held: list[str | bytes] = []
    streams: list[sync_api.WebSocketRoute] = []

    def hold_the_end(ws: sync_api.WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        streams.append(ws)

        def on_message(message: str | bytes) -> None:
            if '"state":"done"' in str(message) and job_id in str(message):
                held.append(message)
            else:
                ws.send(message)
        upstream.on_message(on_message)

    page.route_web_socket("**/api/v1/ws/events**", hold_the_end)
    return held, streams


def test_a_large_result_that_is_gone_is_not_fetched_again_when_its_end_is_told_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The task stream told the end first and closed; the events stream's word of the same
    end came after (under load: once in a full run), and the view fetched the whole record
    it had just been told was gone (404) a second time: once for each telling of the run."""
    expect = sync_api.expect
    held, streams = _hold_the_events_end(page, "gone-late")
    asked: list[str] = []

    def gone(route: sync_api.Route) -> None:
        asked.append(route.request.url)
        refuse(route, 404, "not_found", "no task gone-late")

    running = _open_running(server, spool, page, "gone-late", "run_backtest")
    expect(page.locator("#live")).to_have_text("live")
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    page.route("**/api/v1/tasks/gone-late", gone)
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("no task gone-late")
    page.wait_for_function("() => ui.taskSocket === null")  # the task stream has ended
    wait_in_page(page, lambda: held, what="the events stream's word of the end")
    streams[0].send(held[0])
    page.wait_for_function("() => ui.taskEvent && ui.taskEvent.state === 'done'")
    page.wait_for_timeout(500)
    assert asked == [server.base + "/api/v1/tasks/gone-late"], asked
    expect(page.locator("#task-state")).to_have_text("done")
    expect(note).to_contain_text("no task gone-late")


def test_a_large_result_told_again_while_it_loads_is_fetched_once(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The events stream's word of the end came while the whole record the task stream's
    word had asked for was still on its way (CI's load: the 404 of a purged record came
    after both): the view asked for it a second time, once for each telling of the run."""
    expect = sync_api.expect
    held, streams = _hold_the_events_end(page, "told-twice")

    running = _open_running(server, spool, page, "told-twice", "run_backtest")
    expect(page.locator("#live")).to_have_text("live")
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    fetches = held_back(page, "**/api/v1/tasks/told-twice")  # answered below
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    wait_in_page(page, lambda: fetches, what="the fetch of the whole record")
    wait_in_page(page, lambda: held, what="the events stream's word of the end")
    streams[0].send(held[0])
    page.wait_for_function("() => ui.taskEvent && ui.taskEvent.state === 'done'")
    page.wait_for_timeout(500)
    assert len(fetches) == 1, [route.request.url for route in fetches]
    refuse(fetches[0], 404, "not_found", "no task told-twice")
    note = page.locator("#task-result .cut")
    expect(note).to_contain_text("no task told-twice")
    expect(note).not_to_contain_text("trying again")
    page.wait_for_timeout(300)
    assert len(fetches) == 1, [route.request.url for route in fetches]


def test_a_large_result_that_ends_as_its_view_opens_is_shown(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The job ended while its view's first read of it was out: the events stream's word
    of the end asked for the whole record, then the first read's answer (the job running)
    was drawn over it, which left that fetch's answer unused.  The task stream's word of
    the same end, taken for a run whose whole record was still on its way, fetched
    nothing: the view said "done" with no result, for good (h360).  Then it fetched the
    whole record a second time.  The first read's answer is older than the end drawn
    since: not drawn, and the one fetch of the whole record is used."""
    expect = sync_api.expect
    submit(spool, "ends-early", tool="run_backtest")
    running = claim(spool, "ends-early")
    fetches: list[sync_api.Route] = []  # held back while holding, answered below
    holding = True

    def hold(route: sync_api.Route) -> None:
        if holding:
            fetches.append(route)
        else:
            route.continue_()

    page.route("**/api/v1/tasks/ends-early", hold)
    page.goto(server.base + "/#/tasks/ends-early")
    wait_in_page(page, lambda: fetches, what="the view's first read of the task")
    expect(page.locator("#live")).to_have_text("live")  # the events stream tells the end
    first = fetches[0].fetch()  # the job as it is now: running
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")  # the events stream's word
    wait_in_page(page, lambda: len(fetches) > 1, what="the fetch of the whole record")
    heads = page.evaluate("() => ui.heads")
    fetches[0].fulfill(response=first)
    # The task stream's word of the end, after the first read's answer.
    page.wait_for_function("(heads) => ui.heads > heads && ui.taskEvent === null"
                           " && document.querySelector('#task-state').textContent === 'done'",
                           arg=heads)
    page.wait_for_timeout(300)  # a fetch it would start
    holding = False
    for route in fetches[1:]:
        route.continue_()
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#task-result pre")).to_contain_text('"equity_curve": "[2000 points]"')
    expect(page.locator("#task-result .cut")).to_be_hidden()
    assert len(fetches) == 2, [route.request.url for route in fetches]  # the read, the whole


def test_a_large_result_that_fails_to_load_says_so_and_tries_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The whole record of a finished task fetched while statusd refused for a moment
    (a 503): the view said "loading the result…" for good.  It says why, and tries
    again."""
    expect = sync_api.expect
    running = _open_running(server, spool, page, "big-flaky", "run_backtest",
                            fake_clock=True)
    failures: list[str] = []
    page.route("**/api/v1/tasks/big-flaky", _unavailable_once(failures))
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result .cut")).to_contain_text("cannot load the result")
    expect(page.locator("#task-result .cut")).to_contain_text("try again")
    page.clock.fast_forward(RETRY_MS)
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#task-result .cut")).to_be_hidden()
    assert len(failures) == 1


def test_a_first_read_refused_does_not_reopen_over_the_end_told_since(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view's first read refused (a 503: "unavailable", tried again in 2 s); the job
    ended meanwhile and the events stream's word drew it, its whole record fetched and
    shown.  The try again opened the view anew over it: the view blanked, the record was
    fetched a third time, and a second 503 said "unavailable" over the task done (h362)."""
    expect = sync_api.expect
    submit(spool, "refused-first", tool="run_backtest")
    running = claim(spool, "refused-first")
    asked: list[str] = []

    def flaky(route: sync_api.Route) -> None:  # only the fetch of the whole record passes
        asked.append(route.request.url)
        if len(asked) == 2:
            route.continue_()
        else:
            refuse(route, 503, "unavailable", "disk trouble")

    page.route("**/api/v1/tasks/refused-first", flaky)
    page.clock.install()
    page.goto(server.base + "/#/tasks/refused-first")
    expect(page.locator("#task-state")).to_have_text("unavailable")
    expect(page.locator("#live")).to_have_text("live")
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    page.clock.fast_forward(RETRY_MS * 2)
    page.wait_for_timeout(500)
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#task-error")).to_be_hidden()
    assert len(asked) == 2, asked  # the refused read, the whole record


def test_a_first_read_refused_says_nothing_of_it_once_the_task_is_drawn(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view's first read refused (a 503: "cannot load the task"), then the events
    stream's word of the job's end drawn, and its whole record gone by the time it was
    asked for (a purge: 404).  The refused read's error stood beside "done" for as long as
    the view was open: only a whole record's drawing puts the error box right (h362)."""
    expect = sync_api.expect
    submit(spool, "refused-gone", tool="run_backtest")
    running = claim(spool, "refused-gone")
    asked: list[str] = []

    def refused_then_gone(route: sync_api.Route) -> None:
        asked.append(route.request.url)
        status, kind = (503, "unavailable") if len(asked) == 1 else (404, "not_found")
        refuse(route, status, kind, f"{kind} here")

    page.route("**/api/v1/tasks/refused-gone", refused_then_gone)
    page.clock.install()  # its try again is not run on: the end comes first, as it may
    page.goto(server.base + "/#/tasks/refused-gone")
    expect(page.locator("#task-error .message")).to_contain_text("cannot load the task")
    expect(page.locator("#live")).to_have_text("live")
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result .cut")).to_contain_text("not_found here")
    expect(page.locator("#task-error")).to_be_hidden()
    assert len(asked) == 2, asked  # the refused read, the whole record


def test_a_whole_record_tried_again_is_not_fetched_for_the_view_opened_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The whole record of a task's end refused for a moment (a 503: tried again in 2 s);
    the view left for the list and opened the task again before the try came.  That try,
    of the view left, was taken in the new one: it fetched the whole record a second time,
    and the new opening's read (the whole record, come after) was dropped for it (h362)."""
    expect = sync_api.expect
    _hold_the_events_end(page, "reopened")  # only the task stream tells the end
    running = _open_running(server, spool, page, "reopened", "run_backtest",
                            fake_clock=True)
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    asked: list[sync_api.Route] = []

    def refuse_first(route: sync_api.Route) -> None:  # later ones held, answered below
        asked.append(route)
        if len(asked) == 1:
            refuse(route, 503, "unavailable", "disk trouble")

    page.route("**/api/v1/tasks/reopened", refuse_first)
    finish(spool, running, equity_result(("AAA", "BBB"), bars=2_000))
    expect(page.locator("#task-result .cut")).to_contain_text("trying again")
    page.evaluate("() => { location.hash = '#/'; }")
    expect(page.locator("#list-view")).to_be_visible()
    page.evaluate("() => { location.hash = '#/tasks/reopened'; }")
    wait_in_page(page, lambda: len(asked) > 1, what="the new opening's read")
    page.clock.fast_forward(RETRY_MS)
    page.wait_for_timeout(500)
    fetched = len(asked)
    for route in asked[1:]:
        route.continue_()
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    expect(page.locator("#task-state")).to_have_text("done")
    assert fetched == 2, [route.request.url for route in asked]  # the 503, the new read


def test_the_task_view_of_a_withdrawn_job_says_not_found(server: ServerThread, spool: Spool,
                                                         page: sync_api.Page) -> None:
    """A drop removed before it ran: its task stream ends (1008) and the view says so,
    instead of showing it pending for good."""
    expect = sync_api.expect
    submit(spool, "withdrawn", tool="sleep")
    request(server.base, "GET", "/api/v1/tasks/withdrawn")
    page.goto(server.base + "/#/tasks/withdrawn")
    expect(page.locator("#task-state")).to_have_text("pending")
    spool.layout.job(JobState.PENDING, "withdrawn").unlink()
    expect(page.locator("#task-state")).to_have_text("not found")


def test_a_job_withdrawn_before_its_stream_opened_says_not_found(server: ServerThread,
                                                                 spool: Spool,
                                                                 page: sync_api.Page) -> None:
    """A drop withdrawn between the view's read of it and its task stream's handshake (one
    that waited for a batch of the index): the handshake is refused (404, which the
    browser tells as a close 1006, not the stream's 1008), and the view, reading the task
    over REST, took that 404 for statusd away for a moment: it asked again every second
    and said "pending" for good."""
    expect = sync_api.expect
    submit(spool, "withdrawn", tool="sleep")
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks/withdrawn").status == 200,
             what="statusd to serve the drop")

    def withdrawn_as_it_is_answered(route: sync_api.Route) -> None:
        pending = route.fetch()  # what the view reads: the job, pending
        spool.layout.job(JobState.PENDING, "withdrawn").unlink()
        wait_for(lambda: request(server.base, "GET", "/api/v1/tasks/withdrawn").status == 404,
                 what="statusd to see the drop withdrawn")
        route.fulfill(response=pending)

    page.route("**/api/v1/tasks/withdrawn", withdrawn_as_it_is_answered, times=1)
    page.goto(server.base + "/#/tasks/withdrawn")
    expect(page.locator("#task-state")).to_have_text("not found")


def _curve(start: date, days: int, drift: float) -> list[list[Any]]:
    equity = 100_000.0
    out: list[list[Any]] = []
    for t in range(days):
        equity *= 1 + drift * ((t % 5) - 2)
        out.append([f"{start + timedelta(days=t)}T00:00:00", round(equity, 2)])
    return out


def _path_xs(d: str) -> list[float]:
    return [float(step[1:].split(",")[0]) for step in re.findall(r"[ML][-0-9.]+,[-0-9.]+", d)]


def test_equity_curves_of_different_spans_share_one_time_axis(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A symbol listed later has a shorter curve: it is drawn over the dates it covers
    (it was drawn from the left edge, as if it had started with the others)."""
    expect = sync_api.expect
    result = {"strategy": "ma_crossover", "symbols": {
        "AAA": {"equity_curve": _curve(date(2020, 1, 1), 400, 0.001)},
        "LATE": {"equity_curve": _curve(date(2020, 1, 1) + timedelta(days=300), 100, 0.002)},
    }}
    run_job(spool, "spans", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/spans")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    whole = _path_xs(page.locator('path.equity[data-symbol="AAA"]').get_attribute("d") or "")
    late = _path_xs(page.locator('path.equity[data-symbol="LATE"]').get_attribute("d") or "")
    assert len(whole) == 400 and len(late) == 100
    assert abs(late[0] - whole[300]) < 1.0, (late[0], whole[300])
    assert abs(late[-1] - whole[-1]) < 1.0



def test_the_time_axis_runs_from_the_earliest_start_to_the_latest_end(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Curves that end on different dates (a symbol delisted early): the axis's ends are
    labelled with the first bar of any and the last bar of any, as the paths are drawn."""
    expect = sync_api.expect
    result = {"strategy": "ma_crossover", "symbols": {
        "EARLY": {"equity_curve": _curve(date(2020, 1, 1), 10, 0.001)},
        "AAA": {"equity_curve": _curve(date(2020, 1, 5), 26, 0.001)},
    }}
    run_job(spool, "ends", result, tool="run_backtest")
    page.goto(server.base + "/#/tasks/ends")
    expect(page.locator("#equity svg path.equity")).to_have_count(2)
    texts = _axis_texts(page)
    assert "2020-01-01" in texts and "2020-01-30" in texts, texts
    assert "2020-01-10" not in texts and "2020-01-05" not in texts, texts

def _half_hours(start: datetime, count: int) -> list[list[Any]]:
    # Bars as run_backtest writes them: naive ISO text of UTC times (processor/quant/bars.py).
    return [[f"{start + timedelta(minutes=30 * k):%Y-%m-%dT%H:%M:%S}", 100_000.0 + k]
            for k in range(count)]


def test_curves_across_a_clock_change_keep_their_time_axis(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A backtest's times are UTC without an offset, which the browser read as its own
    local time: in New York, half-hour bars over 2024-03-10 (the clocks went forward)
    ran backwards at 02:30 -> 03:00, the chart fell back to an index axis, and a symbol
    with a shorter history was drawn from the left edge as if it had started with the
    others."""
    expect = sync_api.expect
    day = datetime(2024, 3, 10)
    result = {"strategy": "ma_crossover", "symbols": {
        "AAA": {"equity_curve": _half_hours(day, 48)},
        "LATE": {"equity_curve": _half_hours(day + timedelta(hours=12), 24)},
    }}
    run_job(spool, "dst", result, tool="run_backtest")
    assert page.context.browser is not None
    new_york = page.context.browser.new_context(timezone_id="America/New_York")
    try:
        tab = new_york.new_page()
        errors = watched(tab)
        tab.goto(server.base + "/#/tasks/dst")
        expect(tab.locator("#equity svg path.equity")).to_have_count(2)
        whole = _path_xs(tab.locator('path.equity[data-symbol="AAA"]').get_attribute("d") or "")
        late = _path_xs(tab.locator('path.equity[data-symbol="LATE"]').get_attribute("d") or "")
        assert len(whole) == 48 and len(late) == 24
        assert abs(late[0] - whole[24]) < 1.0, (late[0], whole[24])
        # Evenly spaced, as the bars are: no hour lost or doubled at the change.
        steps = [b - a for a, b in itertools.pairwise(whole)]
        assert max(steps) - min(steps) < 0.2, steps
        assert not errors, errors
    finally:
        new_york.close()


def _axis_texts(tab: sync_api.Page) -> list[str]:
    return tab.locator("#equity svg > text").all_text_contents()


def test_an_intraday_curve_says_the_time_of_its_first_and_last_bar(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A day of minute bars was labelled "2020-01-02" at both ends of its time axis (the
    labels were the first ten characters); they say the time, in UTC as the bars are.  A
    curve over days keeps its dates alone."""
    expect = sync_api.expect
    day = datetime(2020, 1, 2, 14, 30)
    minutes = [[f"{day + timedelta(minutes=k):%Y-%m-%dT%H:%M:%S}", 100_000.0 + k % 7]
               for k in range(390)]
    run_job(spool, "day", {"strategy": "ma_crossover",
                           "symbols": {"AAA": {"equity_curve": minutes}}}, tool="run_backtest")
    run_job(spool, "days", {"strategy": "ma_crossover", "symbols": {
        "AAA": {"equity_curve": _curve(date(2020, 1, 1), 30, 0.001)}}}, tool="run_backtest")
    page.goto(server.base + "/#/tasks/day")
    expect(page.locator("#equity svg path.equity")).to_have_count(1)
    texts = _axis_texts(page)
    assert "2020-01-02 14:30 UTC" in texts and "2020-01-02 20:59 UTC" in texts, texts
    page.goto(server.base + "/#/tasks/days")
    expect(page.locator('#equity svg > text[text-anchor="end"]').last).to_have_text("2020-01-30")
    texts = _axis_texts(page)
    assert "2020-01-01" in texts and "2020-01-30" in texts, texts


def test_every_curve_drawn_has_a_colour_and_a_label_of_its_own(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """14 symbols: 12 are drawn (the rest are said to be left out), no two in one
    colour, each named in a legend that fits in the chart and in the colour of its
    curve (six colours were reused, labels past the eighth were drawn outside the
    picture, and a style made every label grey)."""
    expect = sync_api.expect
    symbols = {f"SYM{n:02d}": {"equity_curve": _curve(date(2020, 1, 1), 60, 0.001 * (n + 1))}
               for n in range(14)}
    run_job(spool, "many", {"strategy": "ma_crossover", "symbols": symbols},
            tool="run_backtest")
    page.goto(server.base + "/#/tasks/many")
    paths = page.locator("#equity svg path.equity")
    expect(paths).to_have_count(12)
    strokes = {paths.nth(n).get_attribute("stroke") for n in range(12)}
    assert len(strokes) == 12, strokes
    width = float(page.locator("#equity svg").get_attribute("width") or 0)
    labels = page.locator("#equity svg .legend text")
    names = labels.all_text_contents()
    assert [n for n in names if n.startswith("SYM")] == [f"SYM{n:02d}" for n in range(12)]
    for n in range(labels.count()):
        box = labels.nth(n).evaluate("e => [e.getBBox().x, e.getBBox().width]")
        assert box[0] >= 0 and box[0] + box[1] <= width, (names[n], box, width)
    for n in range(12):  # each label in its curve's colour (a style had made them all grey)
        label = page.locator(f'#equity svg .legend text[data-symbol="SYM{n:02d}"]')
        curve = page.locator(f'#equity svg path.equity[data-symbol="SYM{n:02d}"]')
        shown = label.evaluate("e => getComputedStyle(e).fill")
        assert shown == curve.evaluate("e => getComputedStyle(e).stroke"), (n, shown)
    assert any("12 of 14" in name for name in names), names


def test_purged_jobs_leave_the_list(server: ServerThread, spool: Spool,
                                    page: sync_api.Page) -> None:
    """A purge announces nothing on the events stream: the page sees the total fall
    and reloads its list."""
    expect = sync_api.expect
    for job_id in ("old-1", "old-2"):
        run_job(spool, job_id, tool="echo")
    run_job(spool, "kept", tool="echo", error=(ErrorType.TOOL_ERROR, "kept"))
    page.clock.install()  # the page's clock, run on to its next stats refresh below
    page.goto(server.base + "/")
    expect(_row(page, "old-1", "done")).to_be_visible()
    Client.from_settings(server.settings).purge(0.0, [JobState.DONE])
    page.clock.fast_forward(STATS_EVERY_MS)  # not waited out (up to 5 s)
    expect(page.locator("#tasks tbody tr")).to_have_count(1, timeout=15_000)
    expect(_row(page, "kept", "failed")).to_be_visible()


def test_an_ended_task_purged_while_open_says_it_is_gone(server: ServerThread,
                                                         spool: Spool,
                                                         page: sync_api.Page) -> None:
    """An ended task's stream is closed and a purge announces nothing: its view went on
    showing it done, with a retry button for a failed one, after its record was purged."""
    expect = sync_api.expect
    run_job(spool, "old", tool="echo", error=(ErrorType.TOOL_ERROR, "old news"))
    run_job(spool, "kept", tool="echo")
    page.clock.install()
    page.goto(server.base + "/#/tasks/old")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#retry-task")).to_be_visible()
    expect(page.locator("#count-failed")).to_have_text("1")
    Client.from_settings(server.settings).purge(0.0, [JobState.FAILED])
    page.clock.fast_forward(STATS_EVERY_MS)
    expect(page.locator("#task-state")).to_have_text("not found", timeout=15_000)
    expect(page.locator("#task-note")).to_contain_text("its record was purged")
    # Shown here before it went: not "not submitted yet" (QA h409).
    expect(page.locator("#task-note")).not_to_contain_text("not submitted yet")
    expect(page.locator("#retry-task")).to_be_hidden()

    page.goto(server.base + "/#/tasks/kept")  # one still there stays as it is
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#count-done")).to_have_text("1")
    run_job(spool, "other", tool="echo", error=(ErrorType.TOOL_ERROR, "other"))
    expect(page.locator("#count-failed")).to_have_text("1")
    Client.from_settings(server.settings).purge(0.0, [JobState.FAILED])
    page.clock.fast_forward(STATS_EVERY_MS)
    expect(page.locator("#count-failed")).to_have_text("0", timeout=15_000)
    page.wait_for_timeout(300)  # the look at "kept" (a HEAD) has come back
    expect(page.locator("#task-state")).to_have_text("done")


def test_a_task_purged_as_others_arrive_says_it_is_gone(server: ServerThread,
                                                        spool: Spool,
                                                        page: sync_api.Page) -> None:
    """A purge is seen by the spool's total falling; one that came with as many new jobs
    (a nightly purge while a batch was dropped) left it as it was, and the purged task's
    view went on showing it failed, with its retry button.  What arrived since (a
    transition from no state) is counted against the total."""
    expect = sync_api.expect
    run_job(spool, "old", tool="echo", error=(ErrorType.TOOL_ERROR, "old news"))
    page.clock.install()
    page.goto(server.base + "/#/tasks/old")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#count-failed")).to_have_text("1")
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))  # no refresh until told
    Client.from_settings(server.settings).purge(0.0, [JobState.FAILED])
    submit(spool, "new")
    expect(_row(page, "new", "pending")).to_have_count(1)
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks/old").status == 404,
             what="statusd to see the purge")
    page.clock.run_for(STATS_EVERY_MS)
    expect(page.locator("#count-pending")).to_have_text("1")
    expect(page.locator("#count-failed")).to_have_text("0")
    expect(page.locator("#task-state")).to_have_text("not found")
    expect(page.locator("#retry-task")).to_be_hidden()


def test_rows_purged_as_as_many_jobs_arrive_leave_the_list(server: ServerThread,
                                                          spool: Spool,
                                                          page: sync_api.Page) -> None:
    """A nightly purge of two done jobs while two new ones were dropped, between two stats
    refreshes: the total stayed 2, the page saw no purge, and the purged rows stayed in
    the list for good (their links said "not found").  statusd's count of jobs removed
    tells the page."""
    expect = sync_api.expect
    for job_id in ("old-1", "old-2"):
        run_job(spool, job_id, tool="echo")
    page.clock.install()
    page.goto(server.base + "/")
    expect(_row(page, "old-2", "done")).to_be_visible()
    expect(page.locator("#count-done")).to_have_text("2")
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))  # no refresh until told
    Client.from_settings(server.settings).purge(0.0, [JobState.DONE])
    for job_id in ("new-1", "new-2"):
        submit(spool, job_id)
        expect(_row(page, job_id, "pending")).to_have_count(1)
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks/old-2").status == 404,
             what="statusd to see the purge")
    page.clock.run_for(STATS_EVERY_MS)
    expect(page.locator("#count-pending")).to_have_text("2")
    expect(page.locator("#count-done")).to_have_text("0")
    expect(page.locator("#tasks tbody tr")).to_have_count(2)
    expect(_row(page, "old-1")).to_have_count(0)


def test_a_task_submitted_as_its_view_opens_is_not_said_not_found(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A link to a task opened as it was submitted: statusd answered the view's read 404,
    the events stream told the new task, shown pending, before that answer came, and the
    404 put "not found" over it, which stayed while the task waited (its next move alone
    showed it again)."""
    expect = sync_api.expect
    held: list[sync_api.Route] = []

    def hold_get(route: sync_api.Route) -> None:
        if route.request.method == "GET" and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/v1/tasks/late", hold_get)
    page.goto(server.base + "/#/tasks/late")
    expect(page.locator("#live")).to_have_text("live")
    wait_in_page(page, lambda: held, what="the view's read of the task")
    submit(spool, "late")
    expect(page.locator("#task-state")).to_have_text("pending")
    held[0].fulfill(status=404, json={"error": {"code": "not_found",
                                                "message": "no task with id 'late'"}})
    page.wait_for_timeout(300)  # the read's answer has come back
    expect(page.locator("#task-state")).to_have_text("pending")
    # No "not found" note: the one a pending job gets while no processor runs.
    expect(page.locator("#task-note")).to_have_text(NO_PROCESSOR_PENDING)


def test_a_look_for_a_purged_task_that_comes_back_after_its_re_drop_is_dropped(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The look at a purged task (a HEAD) answered 404 after the id had been dropped again
    and run to done: the view said "not found" beside a task that was there, done."""
    expect = sync_api.expect
    run_job(spool, "old", tool="echo", error=(ErrorType.TOOL_ERROR, "old news"))
    held = held_heads(page, "**/api/v1/tasks/old")
    page.clock.install()
    page.goto(server.base + "/#/tasks/old")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#count-failed")).to_have_text("1")
    Client.from_settings(server.settings).purge(0.0, [JobState.FAILED])
    page.clock.fast_forward(STATS_EVERY_MS)
    expect(page.locator("#count-failed")).to_have_text("0", timeout=15_000)
    wait_in_page(page, lambda: held, what="the look at the purged task")
    run_job(spool, "old", tool="echo")  # dropped again, and run, while the look is out
    expect(page.locator("#task-state")).to_have_text("done")
    held[0].fulfill(status=404)
    page.wait_for_timeout(300)  # the look's answer has come back
    expect(page.locator("#task-state")).to_have_text("done")


def _refused_for_disk_trouble(route: sync_api.Route) -> None:
    """The stats' answer while the spool's disk fails (statusd's 503)."""
    refuse(route, 503, "unavailable", "spool trouble: [Errno 5] Input/output error")


def _task_with_stats_refused(page: sync_api.Page, server: ServerThread, job_id: str,
                             state: str) -> sync_api.Locator:
    """The task view of ``job_id`` (seen in ``state``), then the stats answering 503 at
    the next refresh (the page's clock is the test's): the task view's note."""
    page.clock.install()
    page.goto(server.base + f"/#/tasks/{job_id}")
    sync_api.expect(page.locator("#task-state")).to_have_text(state)
    page.route(STATS_URL, _refused_for_disk_trouble)
    page.clock.fast_forward(STATS_EVERY_MS)
    return page.locator("#task-note")


def test_statusd_answering_503_is_not_called_unreachable(server: ServerThread,
                                                         spool: Spool,
                                                         page: sync_api.Page) -> None:
    """A 503 (the spool's disk failing) is statusd answering and saying why: the page
    called it "statusd unreachable", sending an operator to look for a dead daemon."""
    expect = sync_api.expect
    run_job(spool, "seen", tool="echo")
    note = _task_with_stats_refused(page, server, "seen", "done")
    expect(note).to_contain_text("statusd unavailable since ")
    expect(note).to_contain_text("(HTTP 503: spool trouble: [Errno 5] Input/output error)")
    expect(note).not_to_contain_text("unreachable")
    expect(page.locator("#processor")).to_have_attribute(
        "title", re.compile(r"^statusd unavailable since .*HTTP 503: spool trouble"))
    page.unroute(STATS_URL, _refused_for_disk_trouble)
    page.clock.fast_forward(STATS_EVERY_MS)
    expect(note).to_be_hidden()


def test_a_task_streams_message_does_not_hide_a_503(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """The task's stream speaking proves statusd reachable, not the spool readable: its
    next message cleared the 503's "unavailable" note while stats still refused (what
    made the test above flaky: the first record's message came after the 503)."""
    expect = sync_api.expect
    submit(spool, "streamed", tool="sleep")
    running = claim(spool, "streamed")
    note = _task_with_stats_refused(page, server, "streamed", "running")
    expect(note).to_contain_text("(HTTP 503: spool trouble")
    report(spool, running, 0.5, "half way")
    expect(page.locator("#task-progress .text")).to_have_text("50% half way")
    expect(note).to_contain_text("(HTTP 503: spool trouble")
    page.unroute(STATS_URL, _refused_for_disk_trouble)
    page.clock.fast_forward(STATS_EVERY_MS)
    expect(note).not_to_contain_text("503")
    finish(spool, running, {"slept": 1})
    expect(page.locator("#task-state")).to_have_text("done")


def test_a_stats_answer_overtaken_by_a_later_503_does_not_hide_it(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Answers are taken in the order they were asked: a 200 asked before the spool's
    disk failed and arriving after the 503 asked since called statusd fine again (the
    dashboard test above failed in CI so: its page's first stats, asked at load, came
    back after the 503)."""
    expect = sync_api.expect
    run_job(spool, "seen", tool="echo")
    page.clock.install()
    page.goto(server.base + "/#/tasks/seen")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#count-done")).to_have_text("1")
    held: list[sync_api.Route] = []

    def hold_the_first(route: sync_api.Route) -> None:
        if held:
            _refused_for_disk_trouble(route)
        else:
            held.append(route)  # answered below, after the 503

    page.route(STATS_URL, hold_the_first)
    page.clock.fast_forward(STATS_EVERY_MS)
    page.clock.fast_forward(STATS_EVERY_MS)
    note = page.locator("#task-note")
    expect(note).to_contain_text("(HTTP 503: spool trouble")
    run_job(spool, "later", tool="echo")  # the held answer's counts differ from the page's
    with page.expect_response(lambda response: "api/v1/stats" in response.url):
        held[0].fulfill(response=held[0].fetch())
    time.sleep(0.5)  # the page's clock stands: no other ask, only the held answer's work
    assert "HTTP 503: spool trouble" in (note.text_content() or "")
    assert page.locator("#count-done").text_content() == "1"


def test_a_job_that_moves_while_the_list_loads_is_not_lost(server: ServerThread,
                                                           spool: Spool,
                                                           page: sync_api.Page) -> None:
    """The list page was read before the job existed and arrives after its event."""
    expect = sync_api.expect
    held: list[bool] = []

    def hold_first_list(route: sync_api.Route) -> None:
        response = route.fetch()  # the page as it is now, without the job below
        if not held:
            held.append(True)
            submit(spool, "during-load")
            time.sleep(1.0)  # its transition reaches the page before the page does
        route.fulfill(response=response)

    page.route("**/api/v1/tasks?*", hold_first_list)
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(_row(page, "during-load", "pending")).to_be_visible()


def test_normal_use_logs_no_console_errors(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    """A fresh load, the list and a task view: nothing in the console (the browser's
    request for /favicon.ico answered 404 and logged an error on every load)."""
    expect = sync_api.expect
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    run_job(spool, "bt-1", equity_result(("AAA",), bars=100), tool="run_backtest")
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    expect(_row(page, "bt-1", "done")).to_be_visible()
    _row(page, "bt-1").locator("a").click()
    expect(page.locator("#equity svg path.equity")).to_have_count(1)
    page.goto(server.base + "/")
    expect(_row(page, "bt-1", "done")).to_be_visible()
    page.wait_for_timeout(500)  # late requests (the icon) log after the load event
    assert not console, f"console messages in normal use: {console}"


def test_a_page_of_another_origin_cannot_frame_the_dashboard(
        server: ServerThread, spool: Spool, browser: sync_api.Browser,
        page: sync_api.Page) -> None:
    """The task view cancels and retries: framed by a page of another site, under a decoy,
    it would take the user's clicks.  The browser shows such a frame empty (statusd's
    frame-ancestors), and the page in a tab of its own runs as before."""
    expect = sync_api.expect
    run_job(spool, "framed", result={"message": "hi"})
    target = server.base + "/#/tasks/framed"
    # Not ``page``: the refusal is a console error of the framing page, which own_page
    # takes for the dashboard's own page breaking its policy.
    context = browser.new_context()
    try:
        decoy = context.new_page()
        # An about:blank page, so of no origin statusd names; its load waits for the frame.
        decoy.set_content(f'<iframe src="{target}" width="800" height="600"></iframe>')
        [framed] = decoy.main_frame.child_frames
        framed.wait_for_load_state("load")
        # Refused, Chromium puts its error page in the frame; let in, the dashboard.
        assert framed.url.startswith("chrome-error://"), \
            f"the dashboard loaded in another origin's frame: {framed.url}"
    finally:
        context.close()
    page.goto(target)
    expect(page.locator("#task-state")).to_have_text("done")



# Run before the page's scripts: the first task stream the page opens is left at once,
# from a microtask, so the page closes the socket while it is still connecting.
_LEAVE_AT_ONCE = """
(() => {
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const socket = new Native(url, protocols);
    if (!String(url).includes("/ws/tasks/")) return socket;
    (window.__taskSockets = window.__taskSockets || []).push(socket);
    if (window.__leaveAtOnce > 0) {
      window.__leaveAtOnce -= 1;
      queueMicrotask(() => { location.hash = "#/"; });
    }
    return socket;
  };
  Object.assign(window.WebSocket, Native);
  window.WebSocket.prototype = Native.prototype;
})();
"""


def test_a_task_opened_straight_from_another_running_one_is_followed(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """From a running task's view straight to another's (a link, the address bar): the
    first task's stream stays no longer than its view, and the second's end is shown.
    Kept open, it stood for the second's: the view never opened the second's stream, nor
    took the events stream's word of its end (a stream was open), "running" for good."""
    expect = sync_api.expect
    first, second = (_open_running(server, spool, page, job_id) for job_id in ("one", "two"))
    page.goto(server.base + "/#/tasks/one")
    expect(page.locator("#task-state")).to_have_text("running")
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    page.evaluate("() => { location.hash = '#/tasks/two'; }")
    expect(page.locator("#task-id")).to_have_text("two")
    expect(page.locator("#task-state")).to_have_text("running")
    finish(spool, second, {"slept": 0})
    expect(page.locator("#task-state")).to_have_text("done")
    finish(spool, first, {"slept": 0})


def test_leaving_a_task_before_its_stream_opens_logs_no_warning(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A task left (back to the list, another task) before its stream's socket was open
    closed the socket while connecting, and Chromium logged a warning for each ("WebSocket
    is closed before the connection is established"): quick switching filled the
    console.  The page closes such a socket once it opens instead."""
    expect = sync_api.expect
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    submit(spool, "long-1")
    taken = claim(spool, "long-1")
    page.add_init_script(_LEAVE_AT_ONCE)
    page.goto(server.base + "/")
    expect(_row(page, "long-1", "running")).to_be_visible()
    for _ in range(5):
        page.evaluate("window.__leaveAtOnce = 1; location.hash = '#/tasks/long-1'")
        expect(page.locator("#list-view")).to_be_visible()
        page.wait_for_function("() => window.__leaveAtOnce === 0")
    page.evaluate("location.hash = '#/tasks/long-1'")  # and once to stay
    expect(page.locator("#task-state")).to_have_text("running")
    page.wait_for_timeout(300)
    assert not console, f"console messages: {console}"
    # Each socket left is closed once it opened; the task shown keeps its own open, once
    # its handshake is over.  (A function: an expression is looked at again by an eval the
    # page's CSP refuses, and a loaded host's first look that found a socket still
    # connecting failed the test with an EvalError; a look at the sixth socket before its
    # handshake was over, as one, with readyState 0.)
    page.wait_for_function("() => window.__taskSockets.length === 6 && window.__taskSockets"
                           ".slice(0, 5).every(s => s.readyState === WebSocket.CLOSED)"
                           " && window.__taskSockets[5].readyState !== WebSocket.CONNECTING")
    assert page.evaluate("window.__taskSockets[5].readyState") == 1  # OPEN
    finish(spool, taken, {"message": "long-1"})
    expect(page.locator("#task-state")).to_have_text("done")

def test_a_burst_of_new_jobs_is_placed_without_rescanning_the_list(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Each new row found its place by reading every row's key: n²/2 reads for a burst
    of n jobs, which held the page for seconds at a few thousand.  Counted, not timed."""
    expect = sync_api.expect
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("""() => {
        window.keyReads = 0;
        const get = ui.rows.get.bind(ui.rows);
        ui.rows.get = (id) => { window.keyReads += 1; return get(id); };
    }""")
    jobs, kept = 1500, 1000  # the page keeps the newest 1,000 rows
    for n in range(jobs):
        submit(spool, f"burst-{n:05d}")
    expect(page.locator(f'#tasks tr[data-id="burst-{jobs - 1:05d}"]')).to_be_visible(
        timeout=60_000)
    expect(page.locator("#tasks tbody tr")).to_have_count(kept)
    ids = page.evaluate("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)")
    assert ids == [f"burst-{n:05d}" for n in reversed(range(jobs - kept, jobs))]
    reads = page.evaluate("window.keyReads")
    assert reads < jobs * 40, f"{reads} row key reads for {jobs} new rows"


COUNT_LOCALE_FORMATTERS = """
    window.formatters = 0;
    for (const name of ["toLocaleString", "toLocaleDateString", "toLocaleTimeString"]) {
      const original = Date.prototype[name];
      Date.prototype[name] = function (...args) {
        window.formatters += 1;
        return original.apply(this, args);
      };
    }
    Intl.DateTimeFormat = new Proxy(Intl.DateTimeFormat, {
      construct(target, args) { window.formatters += 1; return new target(...args); },
      apply(target, self, args) { window.formatters += 1; return target(...args); },
    });
"""


def test_a_burst_of_rows_formats_times_with_one_formatter(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Each row's time was formatted by Date.toLocaleString, which builds a locale
    formatter per call (0.18 ms in Chromium): a burst of 2,000 jobs, three transitions
    each, cost the page a second of script.  Counted, not timed; the text is unchanged."""
    expect = sync_api.expect
    page.add_init_script(COUNT_LOCALE_FORMATTERS)
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    jobs = 300
    for n in range(jobs):
        submit(spool, f"fmt-{n:04d}")
    expect(page.locator("#tasks tbody tr")).to_have_count(jobs, timeout=60_000)
    made = page.evaluate("window.formatters")
    assert made < 10, f"{made} locale formatters built for {jobs} rows"
    record = request(server.base, "GET", "/api/v1/tasks/fmt-0000").json()
    expected = page.evaluate("""(value) => new Date(value).toLocaleString(
        undefined, { timeZoneName: "short" })""", record["submitted_at"])
    expect(_row(page, "fmt-0000").locator("td.submitted")).to_have_text(expected)


def test_long_job_text_wraps_within_the_screen(server: ServerThread, spool: Spool,
                                               page: sync_api.Page) -> None:
    """A 128-character tool name widened the list past the screen (every row's state
    and progress off to the right); a 20,000-character error or progress message made
    the task view 277,000 pixels wide."""
    expect = sync_api.expect
    width = 1280
    page.set_viewport_size({"width": width, "height": 800})
    long_text = "W" * 20_000
    submit(spool, "long-tool", tool="T" * 128)
    run_job(spool, "long-error", tool="echo", error=(ErrorType.TOOL_ERROR, long_text))
    submit(spool, "long-progress", tool="sleep")
    running = claim(spool, "long-progress")
    try:
        report(spool, running, 0.5, long_text)
        page.goto(server.base + "/")
        cell = _row(page, "long-progress", "running").locator(".progress-cell")
        expect(cell).to_contain_text("50%")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        for job_id in ("long-tool", "long-error", "long-progress"):
            box = _row(page, job_id).locator("td.state").bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (job_id, box)
        page.goto(server.base + "/#/tasks/long-error")
        expect(page.locator("#task-error .message")).to_contain_text("tool_error: WWW")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.goto(server.base + "/#/tasks/long-progress")
        expect(page.locator("#task-progress .text")).to_contain_text("50% WWW")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        finish(spool, running, {"slept": 0})


def test_invisible_characters_in_job_text_are_shown(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """A right-to-left override made a tool or an error read backwards ("evil" as
    "live"), and a zero-width space made two tool names look the same."""
    expect = sync_api.expect
    submit(spool, "rtl-tool", tool="\u202eevil")
    submit(spool, "zw-tool", tool="run_backtest\u200b")
    run_job(spool, "rtl-error", tool="echo",
            error=(ErrorType.TOOL_ERROR, "<b>x</b>\u202eevil\u2066"))
    page.goto(server.base + "/")
    expect(_row(page, "rtl-tool").locator("td.tool")).to_have_text("\\u202eevil")
    expect(_row(page, "zw-tool").locator("td.tool")).to_have_text("run_backtest\\u200b")
    page.goto(server.base + "/#/tasks/rtl-error")
    expect(page.locator("#task-error .message")).to_have_text(
        "tool_error: <b>x</b>\\u202eevil\\u2066")
    page.goto(server.base + "/#/tasks/rtl-tool")
    expect(page.locator('#task-fields dd[data-field="tool"]')).to_have_text("\\u202eevil")


def test_a_malformed_task_link_says_invalid_id(server: ServerThread,
                                               page: sync_api.Page) -> None:
    """A cut-off escape in the link threw an uncaught URIError and showed nothing."""
    page.goto(server.base + "/#/tasks/%E0%A4%A")
    sync_api.expect(page.locator("#task-state")).to_have_text("invalid id")


def test_a_link_with_a_bidi_override_in_its_id_does_not_turn_the_heading(
        server: ServerThread, page: sync_api.Page) -> None:
    """An id in a link is anyone's text: "#/tasks/%E2%80%AE..." put a right-to-left
    override in the heading, which read "di dilavni cba", the state turned with it (a
    link's text could make it read as another task's).  It is shown as job text is."""
    expect = sync_api.expect
    page.goto(server.base + "/#/tasks/%E2%80%AEabc%E2%81%A6")
    expect(page.locator("#task-state")).to_have_text("invalid id")
    expect(page.locator("#task-id")).to_have_text("\\u202eabc\\u2066")


def test_the_task_view_follows_a_retry_of_the_task_it_shows(server: ServerThread,
                                                            spool: Spool,
                                                            page: sync_api.Page) -> None:
    """The task stream ends with the terminal state, and the view stopped listening
    there: a `spoolq retry` (or a re-drop of the id) ran the job again while the open
    view still showed the old failure."""
    expect = sync_api.expect
    run_job(spool, "again", tool="echo", error=(ErrorType.TOOL_ERROR, "first try"))
    page.goto(server.base + "/#/tasks/again")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#live")).to_have_text("live")
    Client.from_settings(server.settings).retry("again")
    expect(page.locator("#task-state")).to_have_text("pending")
    running = claim(spool, "again")
    expect(page.locator("#task-state")).to_have_text("running")
    report(spool, running, 0.5, "second try")
    expect(page.locator("#task-progress .text")).to_have_text("50% second try")
    finish(spool, running, {"message": "second try"})
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-error")).to_be_hidden()
    expect(page.locator("#task-result pre")).to_contain_text("second try")


def _unavailable_once(failures: list[str]) -> Callable[[sync_api.Route], None]:
    """A route handler that answers the first request 503 (noting its URL in
    ``failures``) and lets every later one through to statusd."""

    def handle(route: sync_api.Route) -> None:
        if failures:
            route.continue_()
            return
        failures.append(route.request.url)
        refuse(route, 503, "unavailable", "try again")

    return handle


def test_a_task_view_that_cannot_load_says_why_and_tries_again(server: ServerThread,
                                                               spool: Spool,
                                                               page: sync_api.Page) -> None:
    """Any failed fetch of the task (statusd restarting, a 503) said "not found", and
    the view stayed so after statusd answered again."""
    expect = sync_api.expect
    run_job(spool, "flaky", {"message": "here"}, tool="echo")
    failures: list[str] = []
    page.route("**/api/v1/tasks/flaky", _unavailable_once(failures))
    page.clock.install()
    page.goto(server.base + "/#/tasks/flaky")
    expect(page.locator("#task-error .message")).to_contain_text("try again")
    page.clock.fast_forward(RETRY_MS)
    expect(page.locator("#task-state")).not_to_have_text("not found")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-error")).to_be_hidden()
    expect(page.locator("#task-result pre")).to_contain_text('"message": "here"')
    assert len(failures) == 1


def test_a_task_opened_again_is_not_loaded_again_by_its_earlier_opening(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view of a task that could not load (a 503) was left for the list and opened
    again before its try again came: that try, still set, loaded the task a second time
    over its view shown (its result hidden and its state blank while the whole record, of
    a backtest maybe 170 MB, came again)."""
    expect = sync_api.expect
    run_job(spool, "reopened", {"message": "here"}, tool="echo")
    failures: list[str] = []
    asked: list[str] = []
    unavailable_once = _unavailable_once(failures)

    def counted(route: sync_api.Route) -> None:
        asked.append(route.request.url)
        unavailable_once(route)

    page.route("**/api/v1/tasks/reopened", counted)
    goto_with_clock_paused(page, server.base + "/#/tasks/reopened")  # no try again until told
    expect(page.locator("#task-error .message")).to_contain_text("try again")
    page.evaluate("() => { location.hash = '#/'; }")
    expect(page.locator("#list-view")).to_be_visible()
    page.evaluate("() => { location.hash = '#/tasks/reopened'; }")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result pre")).to_contain_text('"message": "here"')
    page.wait_for_function("() => ui.taskSocket === null")  # its stream told the end, closed
    loads = len(asked)
    assert loads == 2, asked
    page.clock.run_for(RETRY_MS * 2)
    page.wait_for_timeout(300)
    assert len(asked) == loads, asked
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result pre")).to_contain_text('"message": "here"')
    assert len(failures) == 1


def test_the_task_view_shows_what_spoolq_show_shows(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """A quarantined drop's original file name, a job's not-before time, timeout and
    attempt limit were not on the page (two quarantined files could not be told apart),
    and the failure a retry came from was headed 'error' on a job that was running."""
    expect = sync_api.expect
    name = "<img src=x onerror=alert(1)>\u202e.json"
    path = spool.layout.entry(JobState.PENDING, name)
    path.write_bytes(b"not json")
    st = path.stat()
    spool.quarantine(name, "bad file name", kind="file", size=st.st_size,
                     mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    quarantined = spool.layout.root / "failed"
    job_id = next(p.stem for p in quarantined.glob("*.json"))
    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    submit(spool, "later", tool="sleep", not_before=later, timeout=30, max_attempts=3,
           attempts=1, error={"type": "timeout", "message": "killed after 30 s"})

    page.goto(server.base + f"/#/tasks/{job_id}")
    field = page.locator("#task-fields dd[data-field='source']")
    expect(field).to_have_text("<img src=x onerror=alert(1)>\\u202e.json (file, 8 bytes)")
    assert page.locator("img").count() == 0
    link = spool.layout.entry(JobState.PENDING, "link.json")
    link.symlink_to("/etc/hostname")
    st = link.lstat()
    spool.quarantine("link.json", "symlink (never followed)", kind="symlink", size=None,
                     mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    page.goto(server.base + "/#/tasks/link")  # only a file's bytes are kept: no size
    expect(field).to_have_text("link.json (symlink)")
    page.goto(server.base + "/#/tasks/later")
    expect(page.locator("#task-state")).to_have_text("pending")
    fields = page.locator("#task-fields")
    expect(fields.locator("dd[data-field='attempts']")).to_have_text("1 of 3")
    expect(fields.locator("dd[data-field='timeout']")).to_have_text("30 s")
    expected = page.evaluate("t => new Date(t).toLocaleString(undefined, {timeZoneName: 'short'})",
                             later.isoformat())
    expect(fields.locator("dd[data-field='not before']")).to_have_text(expected)
    expect(page.locator("#task-error h3")).to_have_text("last error")
    expect(page.locator("#task-error .message")).to_have_text("timeout: killed after 30 s")


def test_the_task_view_lists_the_earlier_failures_of_a_retried_job(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A job done on its third run said nothing of why the first two failed; its record's
    earlier_errors are listed under the error box, one line each, as spoolq show does."""
    expect = sync_api.expect
    history = [{"attempt": n, "type": kind, "message": f"run {n} failed",
                "finished_at": f"2026-01-01T00:0{n}:00Z"}
               for n, kind in ((2, "timeout"), (3, "worker_crashed"))]
    submit(spool, "third", attempts=3, max_attempts=4, error={
        "type": "worker_crashed", "message": "run 3 failed", "earlier_errors": history,
        "earlier_errors_dropped": 1})
    finish(spool, claim(spool, "third"), {"ok": True})
    run_job(spool, "plain", {"ok": True})

    page.goto(server.base + "/#/tasks/third")
    expect(page.locator("#task-state")).to_have_text("done")
    box = page.locator("#task-earlier")
    expect(box).to_be_visible()
    expect(box.locator(".dropped")).to_have_text("1 older failure not kept")
    expect(box.locator("li")).to_have_count(2)
    expect(box.locator("li").first).to_contain_text("attempt 2 timeout at ")
    expect(box.locator("li").first).to_contain_text(": run 2 failed")
    expect(box.locator("li").last).to_contain_text("attempt 3 worker_crashed at ")
    page.goto(server.base + "/#/tasks/plain")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(box).to_be_hidden()  # none: no empty box, nothing left of the task before


def test_a_retry_told_by_the_events_stream_keeps_the_earlier_failures_listed(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A failed job's view, its task stream ended, learns of a retry from the events
    stream, whose brief row of a large record leaves ``earlier_errors`` out: the view
    fetches the whole record and lists them all the while.  (The pending row's error is
    cut too, which made the view fetch before ``earlier_errors_omitted`` did.)"""
    expect = sync_api.expect
    history = [{"attempt": n, "type": "timeout", "message": f"run {n} " + "x" * 290,
                "finished_at": f"2026-01-01T00:0{n}:00Z"} for n in range(1, 10)]
    submit(spool, "again", attempts=9, max_attempts=10, error={
        "type": "timeout", "message": "run 9", "earlier_errors": history})
    finish(spool, claim(spool, "again"), error=(ErrorType.TIMEOUT, "run 10 took too long"))
    page.goto(server.base + "/#/tasks/again")
    expect(page.locator("#task-state")).to_have_text("failed")
    box = page.locator("#task-earlier")
    expect(box.locator("li")).to_have_count(9)
    # Every list the view draws from now on: a brief row drawn as it came would empty it
    # until the task stream, opened again, sent the record.
    page.evaluate("""() => {
      window.earlierSeen = [];
      const box = document.getElementById("task-earlier");
      new MutationObserver(() => window.earlierSeen.push(
        box.hidden ? -1 : box.querySelectorAll("li").length))
        .observe(box, {attributes: true, childList: true, subtree: true});
    }""")
    spool.retry("again")
    expect(page.locator("#task-state")).to_have_text("pending")
    # The failure retried is the job's error now: the error box's "last error", not
    # listed again (it was, the newest of ten lines).
    expect(page.locator("#task-error .message")).to_have_text("timeout: run 10 took too long")
    expect(box.locator("li")).to_have_count(9)
    expect(box.locator("li").last).to_contain_text(": run 9 ")
    seen = page.evaluate("window.earlierSeen")
    assert seen and all(n >= 9 for n in seen), seen


def test_a_job_waiting_for_its_retry_says_its_last_failure_once(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A job waiting for its retry: its last failure is its error, which the error box
    shows as "last error"; the list of earlier failures ended with it too, so the view
    said it twice, where ``spoolq show`` says it once.  A message longer than the history
    keeps (300 characters) is matched by the start it keeps; a last entry that is not
    the error stays listed."""
    expect = sync_api.expect
    long = "y" * 400
    first = {"attempt": 1, "type": "timeout", "message": "run 1 failed",
             "finished_at": "2026-01-01T00:01:00Z"}
    kept = {"attempt": 2, "type": "tool_error", "message": "y" * 299 + "\u2026",
            "finished_at": "2026-01-01T00:02:00Z"}
    submit(spool, "waiting", attempts=2, max_attempts=4, error={
        "type": "tool_error", "message": long, "earlier_errors": [first, kept]})
    submit(spool, "other", attempts=2, max_attempts=4, error={
        "type": "tool_error", "message": "y" * 300, "earlier_errors": [first, kept]})
    box = page.locator("#task-earlier")
    page.goto(server.base + "/#/tasks/waiting")
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#task-error h3")).to_have_text("last error")
    expect(page.locator("#task-error .message")).to_have_text(f"tool_error: {long}")
    expect(box.locator("li")).to_have_count(1)
    expect(box.locator("li")).to_contain_text("attempt 1 timeout at ")
    # 300 characters are kept whole: the entry cut at 299 is another failure's.
    page.goto(server.base + "/#/tasks/other")
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(box.locator("li")).to_have_count(2)
    expect(box.locator("li").last).to_contain_text("attempt 2 tool_error at ")


def test_a_record_whose_earlier_failures_are_odd_still_shows(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A record statusd serves as written (one another writer left in done/, or edited)
    whose earlier_errors hold what is no failure: the task view lists the entries that
    are objects and says nothing of the rest.  An entry that was null stopped the task
    view with a page error (reading null's attempt) and left it half drawn."""
    expect = sync_api.expect
    record = {"id": "odd", "tool": "echo", "state": "done", "attempts": 2,
              "submitted_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z",
              "earlier_errors": [None, "text", 7, {"attempt": 1, "type": "timeout",
                                                   "message": "took too long"}],
              "result": {"ok": True}}
    spool.layout.job(JobState.DONE, "odd").write_bytes(orjson.dumps(record))
    page.goto(server.base + "/#/tasks/odd")
    expect(page.locator("#task-state")).to_have_text("done")
    box = page.locator("#task-earlier")
    expect(box.locator("li")).to_have_count(1)
    expect(box.locator("li")).to_contain_text(": took too long")
    expect(page.locator("#task-result")).to_be_visible()


def test_a_list_that_cannot_load_says_why_and_tries_again(server: ServerThread,
                                                          spool: Spool,
                                                          page: sync_api.Page) -> None:
    """A failed fetch of the task list was swallowed: the table stayed empty, without
    even "No tasks.", until the page was reloaded."""
    expect = sync_api.expect
    run_job(spool, "listed", tool="echo")
    failures: list[str] = []
    page.route("**/api/v1/tasks?*", _unavailable_once(failures))
    page.clock.install()
    page.goto(server.base + "/")
    expect(page.locator("#list-error")).to_contain_text("HTTP 503: try again")
    page.clock.fast_forward(RETRY_MS)
    expect(_row(page, "listed", "done")).to_be_visible()
    expect(page.locator("#list-error")).to_be_hidden()
    assert len(failures) == 1


def test_a_huge_error_message_scrolls_in_its_own_box(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """A 100 KB error message (a tool raising with its input in the text) wrapped into
    a 40,000-pixel paragraph: the traceback and the job were pages of scrolling below."""
    expect = sync_api.expect
    page.set_viewport_size({"width": 1280, "height": 800})
    crashed = run_job(spool, "huge-error", tool="echo", error=(ErrorType.TOOL_ERROR, "-"))
    spool.publish_terminal(crashed.model_copy(update={"error": ErrorInfo(
        type=ErrorType.TOOL_ERROR, message="<b>W</b> " * 12_500,
        traceback="Traceback: line 1")}))
    _wait_served_with_traceback(server, "huge-error")
    page.goto(server.base + "/#/tasks/huge-error")
    message = page.locator("#task-error .message")
    expect(message).to_contain_text("tool_error: <b>W</b>")
    assert message.evaluate("e => e.textContent.length") > 100_000  # all of it, scrollable
    box = message.bounding_box()
    assert box is not None and box["height"] <= 800, box
    traceback = page.locator("#task-error .traceback").bounding_box()
    assert traceback is not None and traceback["y"] < 2 * 800, traceback


def test_an_error_message_of_several_lines_keeps_them(server: ServerThread, spool: Spool,
                                                      page: sync_api.Page) -> None:
    """A tool's error of several lines (one per bad input file, as Python's own
    messages often are) ran together into one paragraph on the page, where `spoolq show`
    prints its lines."""
    expect = sync_api.expect
    message = "3 files unreadable:\n  AAA.csv: bad timestamp\n  BBB.csv: no close column"
    run_job(spool, "lines", tool="run_backtest", error=(ErrorType.TOOL_ERROR, message))
    page.goto(server.base + "/#/tasks/lines")
    shown = page.locator("#task-error .message")
    expect(shown).to_have_text(f"tool_error: {message}")
    assert shown.inner_text() == f"tool_error: {message}"  # as laid out, not run together


def test_a_failed_row_says_why(server: ServerThread, spool: Spool,
                               page: sync_api.Page) -> None:
    """`spoolq ls` has an error column; the page's list said only "failed", so telling a
    timeout from a tool's error or a cancel took opening every task."""
    expect = sync_api.expect
    run_job(spool, "timed-out", tool="sleep", error=(ErrorType.TIMEOUT, "killed after 2 s"))
    run_job(spool, "cancelled", tool="sleep", error=(ErrorType.CANCELLED, "<b>by me</b>"))
    run_job(spool, "fine", tool="echo")
    page.goto(server.base + "/")
    expect(_row(page, "timed-out").locator("td.state")).to_have_text("failed timeout")
    cell = _row(page, "cancelled").locator("td.state")
    expect(cell).to_have_text("failed cancelled")
    assert cell.get_attribute("title") == "cancelled: <b>by me</b>"
    expect(_row(page, "fine").locator("td.state")).to_have_text("done")


def test_times_say_their_zone_and_long_spans_read_in_hours(server: ServerThread,
                                                           spool: Spool,
                                                           page: sync_api.Page) -> None:
    """The page shows times in the browser's zone without naming it (spoolq prints
    UTC): in Tokyo a job submitted at 02:00Z read "11:00 AM", nine hours off the CLI
    for all a reader could tell.  A 90-minute backtest's duration read "5400.00 s", a
    job pending for two hours "oldest pending 7200 s"."""
    expect = sync_api.expect
    submitted = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    submit(spool, "waiting", tool="sleep", submitted_at=submitted)
    submit(spool, "long", tool="run_backtest")
    finish(spool, claim(spool, "long"), {"ok": 1}, duration_s=5_400.5)
    assert page.context.browser is not None
    tokyo = page.context.browser.new_context(timezone_id="Asia/Tokyo")
    try:
        tab = tokyo.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tab.route(STATS_URL, _two_hours_pending)  # pending/'s ctime can't be set
        tab.goto(server.base + "/")
        local = submitted + timedelta(hours=9)
        cell = tab.locator('#tasks tr[data-id="waiting"] td.submitted')
        expect(cell).to_contain_text(f"{local.hour % 12 or 12}:{local:%M:%S}")
        expect(cell).to_contain_text("GMT+9")
        duration = tab.locator('#tasks tr[data-id="long"] td.duration')
        expect(duration).to_have_text("1 h 30 min")
        expect(tab.locator("#oldest")).to_have_text(re.compile(r"^oldest pending 2 h 0 min$"))
    finally:
        tokyo.close()


def _two_hours_pending(route: sync_api.Route) -> None:
    stats = route.fetch().json()
    stats["oldest_pending_age_s"] = stats["oldest_due_pending_age_s"] = 7_200.4  # due all along
    route.fulfill(json=stats)


def test_a_reload_checks_the_page_scripts_with_the_server(server: ServerThread,
                                                          page: sync_api.Page) -> None:
    """/ was no-cache but its scripts and style had no Cache-Control: the browser kept
    them by heuristic (a tenth of their age), so after an upgrade even a reload ran
    the old app.js under the new page.  Each must be revalidated (a 304 is fine)."""
    expect = sync_api.expect
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    urls: dict[str, str] = {}
    unchecked: list[str] = []
    cdp.on("Network.requestWillBeSent",
           lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.requestServedFromCache", lambda e: unchecked.append(urls[e["requestId"]]))
    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    static = [u for u in urls.values() if "/static/" in u]
    page_assets = re.findall(r'"static/[^"]+"', (STATIC_DIR / "index.html").read_text())
    assert len(static) == len(page_assets) >= 4, urls
    assert not unchecked, f"taken from the cache without asking statusd: {unchecked}"


def test_an_older_page_that_lands_after_a_filter_change_is_dropped(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """"older tasks", then a filter change before that page came back: the page of the
    old filter was appended under the new one (done rows in a list filtered to failed),
    and its cursor replaced the new list's."""
    expect = sync_api.expect
    for n in range(60):
        run_job(spool, f"ok-{n:02d}", tool="echo")
    run_job(spool, "bad", tool="echo", error=(ErrorType.TOOL_ERROR, "bad"))
    _wait_indexed(server, 61)
    page.goto(server.base + "/")
    expect(page.locator("#tasks tbody tr")).to_have_count(50)

    held = held_back(page, "**/api/v1/tasks?*cursor=*")  # on its way until let go below
    page.click("#more")
    wait_in_page(page, lambda: held, what="the page of older tasks asked for")
    assert len(held) == 1
    page.select_option("#state-filter", "failed")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    with page.expect_response("**/api/v1/tasks?*cursor=*"):
        held[0].continue_()
    page.wait_for_timeout(200)
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(_row(page, "bad", "failed")).to_be_visible()
    expect(page.locator("#more")).to_be_hidden()


def test_the_list_filters_are_in_its_link(server: ServerThread, spool: Spool,
                                          page: sync_api.Page) -> None:
    """A filtered list could not be bookmarked, sent or reloaded, and a task opened from
    it went back to every task: the filters lived only in the selects.  They are in the
    link now ("#/?state=failed&tool=echo"), the way back from a task keeps them, the
    browser's Back brings an earlier filter back, and a count in the header links to
    its state's list."""
    expect = sync_api.expect
    run_job(spool, "broken", tool="echo", error=(ErrorType.TOOL_ERROR, "it broke"))
    run_job(spool, "bt-bad", tool="run_backtest", error=(ErrorType.TOOL_ERROR, "bad"))
    run_job(spool, "fine", tool="echo")
    rows = page.locator("#tasks tbody tr")

    page.goto(server.base + "/#/?state=failed")
    expect(page.locator("#state-filter")).to_have_value("failed")
    expect(rows).to_have_count(2)
    page.select_option("#tool-filter", "echo")
    expect(rows).to_have_count(1)
    expect(_row(page, "broken", "failed")).to_be_visible()
    assert page.evaluate("location.hash") == "#/?state=failed&tool=echo"

    _row(page, "broken").locator("a").click()
    expect(page.locator("#task-id")).to_have_text("broken")
    page.click("#back-to-list")
    expect(page.locator("#list-view")).to_be_visible()
    assert page.evaluate("location.hash") == "#/?state=failed&tool=echo"
    expect(rows).to_have_count(1)

    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#state-filter")).to_have_value("failed")
    expect(page.locator("#tool-filter")).to_have_value("echo")
    expect(rows).to_have_count(1)
    expect(_row(page, "broken", "failed")).to_be_visible()

    page.click("header .counts .done a")
    expect(page.locator("#state-filter")).to_have_value("done")
    expect(page.locator("#tool-filter")).to_have_value("")
    expect(rows).to_have_count(1)
    expect(_row(page, "fine", "done")).to_be_visible()
    page.go_back()
    expect(page.locator("#state-filter")).to_have_value("failed")
    expect(page.locator("#tool-filter")).to_have_value("echo")
    expect(rows).to_have_count(1)
    expect(_row(page, "broken", "failed")).to_be_visible()

    # A tool no job names now: the select says it (not "all"), and the list is empty.
    page.goto(server.base + "/#/?tool=no_such_tool")
    expect(page.locator("#tool-filter")).to_have_value("no_such_tool")
    expect(page.locator("#empty")).to_be_visible()
    expect(rows).to_have_count(0)


def test_a_task_opens_from_its_id_or_its_link(server: ServerThread, spool: Spool,
                                              page: sync_api.Page) -> None:
    """An id from a log line or a chat had to be typed into the address bar after "#/tasks/"
    (Flower and RQ's dashboards search by id).  "open task" takes an id or a whole link,
    without reloading the page."""
    expect = sync_api.expect
    run_job(spool, "bt-7", tool="run_backtest")
    page.goto(server.base + "/#/?state=done")
    expect(_row(page, "bt-7", "done")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    box = page.locator("#goto-id")
    for typed, shown_id, state in (
            ("  bt-7 ", "bt-7", "done"),
            ("http://elsewhere:8000/#/tasks/bt-7", "bt-7", "done"),
            ("bt-7).", "bt-7).", "invalid id"),
            ("bt-8", "bt-8", "not found")):
        box.fill(typed)
        box.press("Enter")
        expect(page.locator("#task-id")).to_have_text(shown_id)
        expect(page.locator("#task-state")).to_have_text(state)
        page.click("#back-to-list")
        expect(page.locator("#list-view")).to_be_visible()
        expect(box).to_have_value("")
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("location.hash") == "#/?state=done"


def _paged_to_the_end(server: ServerThread, spool: Spool, page: sync_api.Page,
                      jobs: int) -> sync_api.Locator:
    """``jobs`` jobs (``old-00000`` on) submitted, the list opened and paged back with
    "older tasks", 50 rows a page, until every one shows; the list's rows."""
    expect = sync_api.expect
    for n in range(jobs):
        submit(spool, f"old-{n:05d}")
    _wait_indexed(server, jobs)
    page.goto(server.base + "/")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(50)
    for shown in range(100, jobs, 50):
        page.click("#more")
        expect(rows).to_have_count(shown)
    page.click("#more")
    expect(rows).to_have_count(jobs)
    expect(page.locator("#more")).to_be_hidden()
    return rows


def test_older_tasks_paged_past_the_kept_rows_stay_as_new_jobs_arrive(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The list keeps its newest 1,000 rows as jobs arrive, and it cut to them at the next
    new job whatever "older tasks" had brought: a researcher who paged back to yesterday's
    jobs lost them as they read, and on a busy spool no click got past the 1,000th row.
    What was paged to stays (bar a page's end), and "older tasks" goes on with no gap."""
    expect = sync_api.expect
    jobs = 1_060
    rows = _paged_to_the_end(server, spool, page, jobs)
    for n in range(5):
        submit(spool, f"new-{n}")
    expect(rows.first).to_have_attribute("data-id", "new-4")
    assert rows.count() >= jobs - 50
    expect(page.locator("#more")).to_be_visible()
    page.click("#more")
    expect(rows).to_have_count(jobs + 5)
    ids = page.evaluate("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)")
    assert ids == [f"new-{n}" for n in reversed(range(5))] + [
        f"old-{n:05d}" for n in reversed(range(jobs))]


def test_older_tasks_paged_to_stay_when_the_events_stream_reconnects(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A researcher paged back with "older tasks" and read there; the events socket
    dropped (statusd restarted, the network blinked), and the list was read again as its
    first page: 120 rows became the newest 50, the rows read gone from under the reader.
    It is read again as long as it was."""
    expect = sync_api.expect
    jobs = 120
    rows = _paged_to_the_end(server, spool, page, jobs)
    expect(page.locator("#live")).to_have_text("live")
    lists: list[str] = []
    page.on("response", lambda r: lists.append(r.url) if "/api/v1/tasks?" in r.url else None)
    page.evaluate("ui.events.close()")  # as a dropped connection closes it
    wait_in_page(page, lambda: len(lists) >= 2, what="the list read again after the drop")
    expect(page.locator("#live")).to_have_text("live")
    expect(rows).to_have_count(jobs)
    expect(page.locator("#more")).to_be_hidden()
    ids = page.evaluate("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)")
    assert ids == [f"old-{n:05d}" for n in reversed(range(jobs))]


def test_new_jobs_while_older_tasks_load_leave_no_gap(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """New jobs came while a page of "older tasks" was on its way: they let the list's last
    rows go (it keeps 1,000), and the page came in after the rows kept, the rows let go
    missing between them for good, and no "older tasks" to bring them back."""
    expect = sync_api.expect
    jobs = 1_010
    for n in range(jobs):
        submit(spool, f"old-{n:05d}")
    _wait_indexed(server, jobs)
    page.goto(server.base + "/")
    rows = page.locator("#tasks tbody tr")
    for shown in range(100, 1_001, 50):
        page.click("#more")
        expect(rows).to_have_count(shown)
    held: list[sync_api.Route] = []

    def hold_first(route: sync_api.Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/api/v1/tasks?*cursor=*", hold_first)
    page.click("#more")
    wait_in_page(page, lambda: held, what="the page of older tasks asked for")
    for n in range(5):
        submit(spool, f"new-{n}")
    expect(rows.first).to_have_attribute("data-id", "new-4")
    held[0].continue_()
    expect(_row(page, "old-00000")).to_have_count(1)  # the page has come
    for _ in range(3):  # "older tasks" brings back what was let go, if it is offered
        if page.locator("#more").is_hidden():
            break
        count = rows.count()
        page.click("#more")
        expect(rows).not_to_have_count(count)
    ids_js = "[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)"
    want = [f"new-{n}" for n in reversed(range(5))]
    want += [f"old-{n:05d}" for n in reversed(range(jobs))]
    assert page.evaluate(ids_js) == want


def test_a_list_the_api_refuses_is_said_and_not_asked_again_and_again(
        server: ServerThread, page: sync_api.Page) -> None:
    """A link's filter no list can have (a tool of 200 characters, past the 128 a tool may
    have): statusd refuses it (400), and the page asked again every 2 s for as long as it
    was open.  It says why, once; another filter asks again."""
    expect = sync_api.expect
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/tasks?" in r.url else None)
    page.clock.install()
    page.goto(server.base + "/#/?tool=" + "x" * 200)
    expect(page.locator("#list-error")).to_contain_text("tool is at most 128 characters")
    expect(page.locator("#live")).to_have_text("live")  # its load of the list is asked
    before = len(asked)
    for _ in range(4):  # it asked again at each
        page.clock.run_for(RETRY_MS)
        page.wait_for_timeout(300)  # a try the clock set off has been answered
    assert len(asked) - before <= 1, asked  # (one asked before may be told late)
    page.goto(server.base + "/#/?state=done")
    expect(page.locator("#list-error")).to_be_hidden()
    expect(page.locator("#empty")).to_be_visible()


def test_a_lone_surrogate_in_open_task_says_invalid_id(server: ServerThread,
                                                       page: sync_api.Page) -> None:
    """Half of an emoji's pair left in "open task" (a paste cut short): its link could not
    be made (an uncaught URIError) and Enter did nothing.  No task can have it: it says so."""
    expect = sync_api.expect
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("document.getElementById('goto-id').value = 'bt-7\\ud83d'")
    page.locator("#goto-id").press("Enter")
    expect(page.locator("#task-state")).to_have_text("invalid id")
    expect(page.locator("#task-id")).to_have_text("bt-7\ufffd")


def test_a_list_the_api_refuses_shows_no_rows_of_the_list_before(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """From the list of every task to a link's filter statusd refuses (a tool of 200
    characters): the rows of the list before stayed under it, for good (it is not asked
    again), as if they were that tool's tasks.  Only the reason is shown."""
    expect = sync_api.expect
    submit(spool, "before", tool="echo")
    page.goto(server.base + "/#/")
    expect(_row(page, "before")).to_be_visible()
    page.goto(server.base + "/#/?tool=" + "x" * 200)
    expect(page.locator("#list-error")).to_contain_text("tool is at most 128 characters")
    expect(page.locator("#tasks tbody tr")).to_have_count(0)
    expect(page.locator("#more")).to_be_hidden()
    page.goto(server.base + "/#/")  # a list it can have: its rows again
    expect(page.locator("#list-error")).to_be_hidden()
    expect(_row(page, "before")).to_be_visible()


def test_a_list_link_pasted_into_open_task_opens_that_list(server: ServerThread, spool: Spool,
                                                          page: sync_api.Page) -> None:
    """A filtered list's link pasted into "open task" (a colleague's "failed backtests")
    was taken for an id: "invalid id".  It opens that list, filters and all, in place."""
    expect = sync_api.expect
    run_job(spool, "bt-ok", tool="run_backtest")
    run_job(spool, "bt-bad", tool="run_backtest", error=(ErrorType.TOOL_ERROR, "no data"))
    run_job(spool, "echo-bad", tool="echo", error=(ErrorType.TOOL_ERROR, "no"))
    page.goto(server.base + "/")
    expect(page.locator("#tasks tbody tr")).to_have_count(3)
    page.evaluate("window.notReloaded = true")
    box = page.locator("#goto-id")
    box.fill(" http://elsewhere:8000/spoolq/#/?state=failed&tool=run_backtest ")
    box.press("Enter")
    expect(page.locator("#state-filter")).to_have_value("failed")
    expect(page.locator("#tool-filter")).to_have_value("run_backtest")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(_row(page, "bt-bad", "failed")).to_be_visible()
    expect(page.locator("#list-view")).to_be_visible()
    expect(box).to_have_value("")
    assert page.evaluate("location.hash") == "#/?state=failed&tool=run_backtest"
    box.fill("http://elsewhere:8000/#/")  # the whole list's
    box.press("Enter")
    expect(page.locator("#tasks tbody tr")).to_have_count(3)
    expect(page.locator("#state-filter")).to_have_value("")
    assert page.evaluate("window.notReloaded") is True


def test_a_long_stream_of_new_jobs_keeps_the_list_bounded(server: ServerThread,
                                                          spool: Spool,
                                                          page: sync_api.Page) -> None:
    """Every job that arrived while the page was open added a row for good: an open
    dashboard on a busy spool grew by 13 DOM nodes a job (3,900 rows and 50,000 nodes
    after 90 s of 40 jobs a second).  The newest rows are kept; the rest come back,
    with no gap, through "older tasks"."""
    expect = sync_api.expect
    max_rows = 1000
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    jobs = max_rows + 30
    for n in range(jobs):
        submit(spool, f"new-{n:05d}")
    rows = page.locator("#tasks tbody tr")
    expect(page.locator(f'#tasks tr[data-id="new-{jobs - 1:05d}"]')).to_be_visible(
        timeout=60_000)
    expect(rows).to_have_count(max_rows)
    ids = page.evaluate("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)")
    assert ids == [f"new-{n:05d}" for n in reversed(range(jobs - max_rows, jobs))]
    assert page.evaluate("ui.rows.size") == max_rows
    expect(page.locator("#more")).to_be_visible()
    page.click("#more")
    expect(rows).to_have_count(jobs)
    ids = page.evaluate("[...document.querySelectorAll('#tasks tbody tr')].map(r => r.dataset.id)")
    assert ids == [f"new-{n:05d}" for n in reversed(range(jobs))]


def test_a_processor_asked_to_stop_is_shown_stopping(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """A processor in its stop grace claims nothing more (pending jobs wait, running
    ones are requeued when it ends) but the page said "processor: up" until it exited.
    What that means, and when, is text beside it: it was in the tooltip only, which a
    keyboard, a touch screen and a screen reader never show."""
    expect = sync_api.expect
    owner = FakeOwner(spool)
    processor, note = page.locator("#processor"), page.locator("#processor-note")
    try:
        page.goto(server.base + "/")
        expect(processor).to_have_text("processor: up")
        expect(note).to_be_hidden()
        now = datetime.now(UTC)
        ends = now + timedelta(seconds=30)
        status = OwnerStatus(owner="proc-test", pid=1, host="test", version="0",
                             started_at=now, heartbeat_at=now, job_num=2, stopping=True,
                             grace_ends_at=ends)
        spool.mover.publish(spool.layout.owner_status("proc-test"),
                            status.model_dump_json().encode())
        submit(spool, "waits")  # a transition: the page asks for the stats at once
        expect(processor).to_have_text("processor: stopping")
        assert "requeued" in (processor.get_attribute("title") or "")
        expect(note).to_be_visible()
        expect(note).to_have_text(re.compile(r"^asked to stop: it starts nothing more; what "
                                             r"runs is requeued at .*\d:\d\d:\d\d"))
        assert note.text_content() == processor.get_attribute("title")
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: it wraps, in view
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        status = status.model_copy(update={"stopping": False, "grace_ends_at": None,
                                           "heartbeat_at": datetime.now(UTC)})
        spool.mover.publish(spool.layout.owner_status("proc-test"),
                            status.model_dump_json().encode())
        submit(spool, "waits-too")
        expect(processor).to_have_text("processor: up")
        expect(note).to_be_hidden()
    finally:
        owner.close()


def _publish_status(spool: Spool, busy: int) -> None:
    """A heartbeat of statusdkit.FakeOwner's processor, with ``busy`` COMPUTE workers."""
    now = datetime.now(UTC)
    status = OwnerStatus(owner="proc-test", pid=1, host="test", version="0", started_at=now,
                         heartbeat_at=now, job_num=2, busy_workers=busy)
    spool.mover.publish(spool.layout.owner_status("proc-test"), status.model_dump_json().encode())


def test_busy_workers_follow_a_claim_within_a_heartbeat(server: ServerThread, spool: Spool,
                                                        page: sync_api.Page) -> None:
    """A claim is a transition, and the page reads the stats at once, but the processor
    says its worker is busy at its next heartbeat (one a second): the header said
    "workers 0/2" beside a running backtest until the next refresh, 5 s on."""
    expect = sync_api.expect
    owner = FakeOwner(spool, busy=0)
    try:
        submit(spool, "work", tool="sleep")
        page.clock.install()  # the page's timers run only as far as the test takes them
        page.goto(server.base + "/")
        expect(page.locator("#workers")).to_have_text("workers 0/2")
        running = claim(spool, "work")
        expect(_row(page, "work", "running")).to_be_visible()
        with page.expect_response(lambda r: "/api/v1/stats" in r.url) as read:
            page.clock.fast_forward(300)  # the read at once, still before the heartbeat
        assert read.value.json()["busy_workers"] == 0
        expect(page.locator("#workers")).to_have_text("workers 0/2")
        _publish_status(spool, busy=1)  # the processor's next heartbeat
        page.clock.fast_forward(1_500)
        expect(page.locator("#workers")).to_have_text("workers 1/2")
        finish(spool, running, {"slept": 0})
    finally:
        owner.close()


def test_a_running_job_shows_how_long_it_has_run(server: ServerThread, spool: Spool,
                                                 page: sync_api.Page) -> None:
    """A running row's duration was blank and the task view had only a start time:
    watching a long backtest, the page never said how long it had been running."""
    expect = sync_api.expect
    submit(spool, "busy", tool="sleep")
    running = claim(spool, "busy")
    try:
        report(spool, running, 0.1, "started")
        page.clock.install()
        page.goto(server.base + "/")
        cell = _row(page, "busy", "running").locator("td.duration")
        expect(cell).to_have_text(re.compile(r"^\d+ ms$|^\d+\.\d\d s$"))
        first = cell.text_content()
        page.clock.fast_forward(TICK_MS)  # the next tick, not waited for
        expect(cell).not_to_have_text(first or "")  # it counts on
        page.goto(server.base + "/#/tasks/busy")
        field = page.locator("#task-fields dd[data-field='running for']")
        expect(field).to_have_text(re.compile(r"^\d+\.\d\d s$"))
        shown = field.text_content()
        page.clock.fast_forward(TICK_MS)
        expect(field).not_to_have_text(shown or "")
    finally:
        finish(spool, running, {"slept": 1})
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-fields dd[data-field='running for']")).to_have_count(0)


def test_the_list_reads_on_a_phone(server: ServerThread, spool: Spool,
                                   page: sync_api.Page) -> None:
    """At 420 pixels the id column shrank to one character a line: each row was 580
    pixels tall, one job to a screen.  The table scrolls sideways within the page."""
    expect = sync_api.expect
    width = 420
    page.set_viewport_size({"width": width, "height": 800})
    for n in range(3):
        run_job(spool, f"20261130T023331-87ef8174a7c{n}", tool="run_backtest")
    page.goto(server.base + "/")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(3)
    for n in range(3):
        box = rows.nth(n).bounding_box()
        assert box is not None and box["height"] < 120, box
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_the_status_line_reads_on_a_phone(server: ServerThread, spool: Spool,
                                         page: sync_api.Page) -> None:
    """At 390 pixels each status item broke inside itself ("processor:" over "up",
    "oldest pending 6" over "min 1 s"): each item keeps to one line, the line wraps
    between them."""
    expect = sync_api.expect
    owner = FakeOwner(spool)
    try:
        submit(spool, "waiting")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(server.base + "/")
        expect(page.locator("#processor")).to_have_text("processor: up")
        expect(page.locator("#oldest")).to_contain_text("oldest pending")
        for item in ("processor", "workers", "oldest", "live"):
            lines = page.locator(f"#{item}").evaluate("""(n) => Math.round(
                n.getBoundingClientRect().height / parseFloat(getComputedStyle(n).lineHeight))""")
            assert lines == 1, f"#{item} is broken over {lines} lines"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        owner.close()


def test_the_keyboard_goes_to_a_task_and_back_to_its_row(server: ServerThread, spool: Spool,
                                                         page: sync_api.Page) -> None:
    """Enter on a task's link left the focus nowhere (the link was hidden with the list),
    so Tab began again at the page's top; and back in the list, at its first row however
    far down the task was.  The focus goes to the task's heading, and back to its row."""
    expect = sync_api.expect
    for n in range(3):
        run_job(spool, f"key-{n}")
    page.goto(server.base + "/")
    expect(page.locator("#tasks tbody tr")).to_have_count(3)
    page.locator('#tasks tr[data-id="key-1"] a').focus()
    page.keyboard.press("Enter")
    expect(page.locator("#task-state")).to_have_text("done")
    assert page.evaluate("document.activeElement.id") == "task-title"
    page.keyboard.press("Shift+Tab")  # to "all tasks"
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#/"
    page.keyboard.press("Enter")
    expect(page.locator("#list-view")).to_be_visible()
    focused = page.evaluate("document.activeElement.closest('tr')?.dataset.id")
    assert focused == "key-1"


def test_the_equity_chart_on_a_phone_has_no_empty_band(server: ServerThread, spool: Spool,
                                                       page: sync_api.Page) -> None:
    """At 390 pixels the chart shrank to the screen's width but kept its height: the plot
    sat in the middle of a box twice its height, empty above and below."""
    expect = sync_api.expect
    page.set_viewport_size({"width": 390, "height": 844})
    run_job(spool, "bt-phone", equity_result(("AAA", "BBB")), tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-phone")
    svg = page.locator("#equity svg")
    expect(svg).to_be_visible()
    view = svg.evaluate("(n) => n.viewBox.baseVal.width / n.viewBox.baseVal.height")
    box = svg.bounding_box()
    assert box is not None and box["width"] <= 390, box
    # The box's shape is the drawing's (borders aside): no band the drawing leaves empty.
    assert abs(box["width"] / box["height"] - view) < 0.05, (box, view)


def test_a_huge_result_is_cut_with_a_link_to_the_whole_record(server: ServerThread,
                                                              spool: Spool,
                                                              page: sync_api.Page) -> None:
    """A 20 MB result (400,000 bars of get_kline) was printed whole: the task view took
    26 s to open and 32 s to leave, the page frozen.  The page prints the start of it
    and links the whole record."""
    expect = sync_api.expect
    bars = [[f"2020-01-01T00:00:{n % 60:02d}", 1.0 + n, 2.0, 3.0, 4.0, n] for n in range(40_000)]
    run_job(spool, "many-bars", {"bars": bars}, tool="get_kline")
    page.goto(server.base + "/#/tasks/many-bars")
    expect(page.locator("#task-state")).to_have_text("done")
    pre = page.locator("#task-result pre")
    expect(pre).to_contain_text('"bars": [')
    assert pre.evaluate("e => e.textContent.length") <= 100_001
    link = page.locator("#task-result .cut a")
    expect(link).to_be_visible()
    assert link.evaluate("(a) => a.href") == f"{server.base}/api/v1/tasks/many-bars"
    expect(page.locator("#task-result .cut")).to_contain_text("100,000 of")
    run_job(spool, "small", {"x": 1}, tool="echo")
    page.goto(server.base + "/#/tasks/small")
    expect(page.locator("#task-result pre")).to_contain_text('"x": 1')
    expect(page.locator("#task-result .cut")).to_be_hidden()


def test_a_task_link_shows_nothing_of_the_task_viewed_before(server: ServerThread,
                                                             spool: Spool,
                                                             page: sync_api.Page) -> None:
    """From a backtest's view to a link of an unknown id: the page said "not found"
    over the backtest's fields, equity curve and result (and, while a task loaded, showed
    the one before under its id)."""
    expect = sync_api.expect
    run_job(spool, "bt-1", equity_result(("AAA",), bars=50), tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-1")
    expect(page.locator("#equity svg path.equity")).to_have_count(1)
    page.evaluate("location.hash = '#/tasks/no-such-task'")
    expect(page.locator("#task-state")).to_have_text("not found")
    expect(page.locator("#task-fields dd")).to_have_count(0)
    for box in ("#task-chart", "#task-result", "#task-error", "#task-progress", "#task-params"):
        expect(page.locator(box)).to_be_hidden()


def test_the_list_loads_without_websockets(server: ServerThread, spool: Spool,
                                           page: sync_api.Page) -> None:
    """Behind a proxy that passes no WebSocket upgrade the list was fetched only when
    the events socket opened, so never: an empty table, no word, while the counts
    said there were jobs."""
    expect = sync_api.expect
    run_job(spool, "listed", tool="echo")
    page.route_web_socket("**/api/v1/ws/**", lambda ws: ws.close(code=1011))
    page.goto(server.base + "/")
    expect(page.locator("#count-done")).to_have_text("1")
    expect(_row(page, "listed", "done")).to_be_visible()
    expect(page.locator("#live")).to_have_text("offline")


def test_the_task_view_follows_its_task_without_websockets(server: ServerThread,
                                                           spool: Spool,
                                                           page: sync_api.Page) -> None:
    """Without WebSockets the task view showed the task as it was when opened: a
    backtest at 0% for good, though it ran on and finished."""
    expect = sync_api.expect
    submit(spool, "slow", tool="sleep")
    running = claim(spool, "slow")
    try:
        page.route_web_socket("**/api/v1/ws/**", lambda ws: ws.close(code=1011))
        page.clock.install()
        page.goto(server.base + "/#/tasks/slow")
        expect(page.locator("#task-state")).to_have_text("running")
        report(spool, running, 0.5, "half way")
        page.clock.fast_forward(REREAD_MS)  # its next read, not waited for
        expect(page.locator("#task-progress .text")).to_have_text("50% half way")
    finally:
        finish(spool, running, {"slept": 1})
    page.clock.fast_forward(REREAD_MS)
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result pre")).to_contain_text('"slept": 1')


def test_a_retry_told_before_the_task_stream_ends_is_followed(server: ServerThread,
                                                              spool: Spool,
                                                              page: sync_api.Page) -> None:
    """The retry reached the page by the events stream while the task stream still had
    its snapshot (the old failure) and its close on the way: the view went by that
    snapshot, stopped listening, and showed the failure for good."""
    expect = sync_api.expect
    run_job(spool, "again", tool="echo", error=(ErrorType.TOOL_ERROR, "first try"))
    held: list[str | bytes] = []  # the first task stream's snapshot, until let go
    first: list[sync_api.WebSocketRoute] = []

    def hold(message: str | bytes) -> None:
        held.append(message)

    def hold_first_stream(ws: sync_api.WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        if first:
            return  # a later stream passes as it comes
        first.append(ws)
        upstream.on_message(hold)
        upstream.on_close(lambda code, reason: None)  # its close is held too

    page.route_web_socket("**/api/v1/ws/tasks/**", hold_first_stream)
    page.goto(server.base + "/#/tasks/again")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#live")).to_have_text("live")
    wait_in_page(page, lambda: held, what="the first task stream's snapshot")
    Client.from_settings(server.settings).retry("again")
    # The events stream tells the retry first (a wait of 500 ms was not always enough).
    page.wait_for_function("() => ui.taskEvent && ui.taskEvent.state === 'pending'")
    first[0].send(held[0])
    first[0].close(code=1000)
    expect(page.locator("#task-state")).to_have_text("pending")


def test_the_list_reads_brief_rows_and_the_task_view_the_whole_record(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Three pending jobs with 1 MB params made a 3 MB list page (50 of them, 50 MB):
    the list asks for brief rows, and still shows every column; the task view shows
    the whole job."""
    expect = sync_api.expect
    for n in range(3):
        submit(spool, f"big-{n}", params={"blob": "x" * 1_000_000})
    crashed = run_job(spool, "crashed", tool="echo", error=(ErrorType.TOOL_ERROR, "-"))
    spool.publish_terminal(crashed.model_copy(update={"error": ErrorInfo(
        type=ErrorType.TOOL_ERROR, message="went wrong " * 500,
        traceback="Traceback: " + "y" * 1_000_000)}))
    _wait_served_with_traceback(server, "crashed")
    wait_for(lambda: len(request(server.base, "GET", "/api/v1/tasks").json()["tasks"]) == 4,
             what="every job listed")
    # Waited for, not collected from a "response" handler: that one may not have run yet
    # when the rows show (the list was empty in 2 runs of 8).
    with page.expect_response(lambda r: r.url.startswith(server.base + "/api/v1/tasks?")
                              ) as listed:
        page.goto(server.base + "/")
    expect(page.locator("#tasks tbody tr")).to_have_count(4)
    size = len(listed.value.body())
    assert size < 20_000, size
    row = _row(page, "big-1", "pending")
    expect(row.locator("td.tool")).to_have_text("echo")
    cell = _row(page, "crashed").locator("td.state")
    expect(cell).to_have_text("failed tool_error")
    assert cell.get_attribute("title") == "tool_error: " + ("went wrong " * 500)[:1000]
    row.locator("a").click()
    expect(page.locator("#task-state")).to_have_text("pending")
    params = page.locator("#task-params pre")
    expect(params).to_contain_text('"blob": "xxxx')
    # The whole job came: its text is cut as a result's is, and says how long it is.
    expect(page.locator("#task-params .cut")).to_contain_text(" of 1,000,0")


def test_a_job_of_many_small_values_is_cut_as_a_result_is(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A job within SPOOL_MAX_JOB_BYTES (1 MB) of many small values: its params printed
    as 1.6 million characters on 120,000 lines, and opening "job" froze the page for
    seconds.  Its start is printed, as a result's is, and the whole record is a link away."""
    expect = sync_api.expect
    submit(spool, "many", params={"dates": list(range(120_000))})
    page.goto(server.base + "/#/tasks/many")
    expect(page.locator("#task-state")).to_have_text("pending")
    params = page.locator("#task-params pre")
    expect(params).to_contain_text('"dates": [')
    assert params.evaluate("e => e.textContent.length") <= 100_001
    cut = page.locator("#task-params .cut")
    expect(cut).to_contain_text("the first 100,000 of 1,")
    expect(cut.locator("a")).to_have_attribute("href", "api/v1/tasks/many")
    submit(spool, "other")
    page.goto(server.base + "/#/tasks/other")  # a small job's is whole, with no such word
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(params).to_contain_text('"message": "other"')
    expect(cut).to_be_hidden()


def test_the_live_list_takes_brief_rows_and_the_open_task_everything(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The events stream sent each move of a job as its record, params and all, to every
    open dashboard (1 MB params: 1 MB at each move; the list shows none of it): the page
    asks it for brief rows (fails before: 20,3xx-byte frames for 20 kB params).  A task
    view told of a retry by that stream (its own stream, opened then, not there yet)
    reads the whole record, as a brief row of a record under 32 KiB does not say
    result_omitted, and then shows params, error, progress, result and equity chart."""
    expect = sync_api.expect
    frames: list[int] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(
        len(data))) if "/ws/events" in ws.url else None)
    held: list[str | bytes] = []
    streams: list[sync_api.WebSocketRoute] = []

    def hold_second_stream(ws: sync_api.WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        streams.append(ws)
        if len(streams) == 2:  # the stream opened on the retry: held until let go
            upstream.on_message(lambda m: held.append(m) if held[:1] != ["go"] else ws.send(m))

    page.route_web_socket("**/api/v1/ws/tasks/**", hold_second_stream)
    page.goto(server.base + "/")
    expect(page.locator("#live")).to_have_text("live")
    submit(spool, "big", tool="run_backtest", params={"symbols": ["AAA"], "blob": "x" * 20_000})
    finish(spool, claim(spool, "big"), error=(ErrorType.TOOL_ERROR, "first try"))
    expect(_row(page, "big", "failed").locator("td.state")).to_have_text("failed tool_error")
    _row(page, "big").locator("a").click()
    expect(page.locator("#task-error .message")).to_have_text("tool_error: first try")
    page.wait_for_function("() => ui.taskSocket === null")  # its stream ended with failed
    Client.from_settings(server.settings).retry("big")  # told by the events stream
    expect(page.locator("#task-state")).to_have_text("pending")
    text = page.locator("#task-params pre")
    expect(text).to_contain_text('"blob": "xxxx')
    assert text.evaluate("e => e.textContent.length") > 20_000
    expect(page.locator("#task-error h3")).to_have_text("last error")
    wait_in_page(page, lambda: len(streams) == 2, what="a task stream opened on the retry")
    for message in [*held]:
        streams[1].send(message)
    held[:] = ["go"]
    running = claim(spool, "big")
    expect(page.locator("#task-state")).to_have_text("running")
    report(spool, running, 0.5, "second try")
    expect(page.locator("#task-progress .text")).to_have_text("50% second try")
    finish(spool, running, equity_result(bars=1000))
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#equity svg path.equity")).to_have_count(1)
    expect(page.locator("#task-result pre")).to_contain_text("ma_crossover")
    expect(page.locator("#task-error")).to_be_hidden()
    expect(_row(page, "big", "done")).to_have_count(1)  # the list, behind the task view
    assert len(frames) >= 3 and max(frames) < 4_000, frames  # failed, pending, running, done


def test_a_large_record_is_fetched_once_when_its_task_opens(server: ServerThread, spool: Spool,
                                                            page: sync_api.Page) -> None:
    """The task view read the record over REST, then its stream's snapshot (a record over
    32 KiB comes without its result) made it fetch the whole record again: a 14 MB one
    cost half a second more at each opening.  A snapshot of the run already shown whole
    fetches nothing."""
    run_job(spool, "large", {"curve": list(range(20_000))})
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/tasks/large" in r.url else None)
    page.add_init_script(_COUNT_MESSAGES)
    page.goto(server.base + "/#/tasks/large")
    sync_api.expect(page.locator("#task-state")).to_have_text("done")
    sync_api.expect(page.locator("#task-result")).to_be_visible()
    # A function: an expression is looked at again by an eval the page's CSP refuses (a
    # first look before the snapshot came failed the test with an EvalError).
    page.wait_for_function("() => window.seenMessages.length >= 1")
    assert '"result_omitted":true' in page.evaluate("window.seenMessages[0]")
    time.sleep(0.5)  # what the snapshot set off, a fetch, would have begun by now
    sync_api.expect(page.locator("#task-state")).to_have_text("done")
    assert [u for u in asked if "/ws/" not in u] == [server.base + "/api/v1/tasks/large"]


_COUNT_MESSAGES = """
window.seenMessages = [];
const PageWebSocket = window.WebSocket;
window.WebSocket = class extends PageWebSocket {
  constructor(...args) {
    super(...args);  // heard before the page's own onmessage, in the same task
    this.addEventListener("message", (event) => window.seenMessages.push(event.data));
  }
};
"""


def test_a_curve_timed_past_two_to_the_53_is_still_drawn(server: ServerThread, spool: Spool,
                                                         page: sync_api.Page) -> None:
    """Keeping integers past 2**53 exact made them JSON raw values in the record the page
    computes with: an equity curve timed in epoch nanoseconds broke the chart ("cannot
    load the task"), and the page fetched the record again every 2 s for good.  The
    exact digits are for the text; the chart draws the curve, and the text keeps them."""
    ns = 1_700_000_000_000_000_000
    day = 86_400 * 10**9
    curve = [[ns + n * day, 1.0 + n / 10] for n in range(3)]
    run_job(spool, "ns-curve", {"symbols": {"AAA": {"equity_curve": curve}}, "t0": ns + 1})
    page.goto(server.base + "/#/tasks/ns-curve")
    sync_api.expect(page.locator("#task-state")).to_have_text("done")
    sync_api.expect(page.locator('#equity svg path.equity[data-symbol="AAA"]')).to_have_count(1)
    sync_api.expect(page.locator("#task-result pre")).to_contain_text(f'"t0": {ns + 1}')
    sync_api.expect(page.locator("#task-error")).to_be_hidden()


def test_integers_past_two_to_the_53_are_shown_exactly(server: ServerThread, spool: Spool,
                                                       page: sync_api.Page) -> None:
    """The spool holds integers from -2**63 to 2**64 - 1 exactly, and the API answers them
    so (meta is echoed back untouched), but the page parsed them into doubles:
    18446744073709551615 showed as 18446744073709552000, 2**53 + 1 as 2**53, in the
    params, the result and a streamed record alike."""
    expect = sync_api.expect
    big, bigger = 2**64 - 1, -(2**63)
    submit(spool, "big-ints", meta={"order": big})
    run_job(spool, "big-result", {"message": bigger, "odd": 2**53 + 1, "small": 2**53,
                                  "float": 0.1})
    page.goto(server.base + "/#/tasks/big-ints")
    params = page.locator("#task-params pre")
    expect(params).to_contain_text(f'"order": {big}')
    page.evaluate("location.hash = '#/tasks/big-result'")
    result = page.locator("#task-result pre")
    expect(result).to_contain_text(f'"message": {bigger}')
    expect(result).to_contain_text(f'"odd": {2**53 + 1}')
    expect(result).to_contain_text(f'"small": {2**53}')
    expect(result).to_contain_text('"float": 0.1')
    # A record that comes by the task's stream: the job claimed and finished while shown.
    page.evaluate("location.hash = '#/tasks/big-ints'")
    expect(page.locator("#task-state")).to_have_text("pending")
    finish(spool, claim(spool, "big-ints"), {"echo": big})
    expect(page.locator("#task-state")).to_have_text("done")
    expect(result).to_contain_text(f'"echo": {big}')
    expect(params).to_contain_text(f'"order": {big}')


def test_a_big_integer_stays_exact_when_the_events_stream_tells_the_end_last(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The task stream told the job's end first and closed; the events stream's word of the
    same end came after, and the view drew that record, parsed as doubles: a result of
    18446744073709551615 showed as 18446744073709552000 (once in a full run, under load)."""
    expect = sync_api.expect
    big = 2**64 - 1
    submit(spool, "late-word", meta={"order": big})
    held, streams = _hold_the_events_end(page, "late-word")
    page.goto(server.base + "/#/tasks/late-word")
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#live")).to_have_text("live")
    page.wait_for_function("() => ui.taskSocket && ui.taskSocket.readyState === WebSocket.OPEN")
    finish(spool, claim(spool, "late-word"), {"echo": big})
    result = page.locator("#task-result pre")
    expect(page.locator("#task-state")).to_have_text("done")
    expect(result).to_contain_text(f'"echo": {big}')
    page.wait_for_function("() => ui.taskSocket === null")  # the task stream has ended
    wait_in_page(page, lambda: held, what="the events stream's word of the end")
    streams[0].send(held[0])
    page.wait_for_function("() => ui.taskEvent && ui.taskEvent.state === 'done'")
    expect(result).to_contain_text(f'"echo": {big}')
    expect(page.locator("#task-params pre")).to_contain_text(f'"order": {big}')


def test_a_big_integer_stays_exact_in_the_record_a_cancel_answers(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view draws the task a cancel or a retry answers with (when the streams have not
    told it first), and read that answer into doubles: the job's 18446744073709551615
    showed as 18446744073709552000."""
    expect = sync_api.expect
    big = 2**64 - 1
    submit(spool, "exact-cancel", tool="sleep", meta={"order": big})
    quiet: list[bool] = []  # once set, the streams tell the page nothing more

    def until_quiet(ws: sync_api.WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        upstream.on_message(lambda message: None if quiet else ws.send(message))
        upstream.on_close(lambda code, reason: None)  # no close tells it either

    page.route_web_socket("**/api/v1/ws/**", until_quiet)
    page.goto(server.base + "/#/tasks/exact-cancel")
    params = page.locator("#task-params pre")
    expect(params).to_contain_text(f'"order": {big}')
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)
    quiet.append(True)  # what the page shows of the cancel is its answer's
    page.locator("#cancel-task").click()
    expect(page.locator("#action-status")).to_have_text("exact-cancel cancelled")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(params).to_contain_text(f'"order": {big}')


def test_a_retry_answered_after_its_job_was_claimed_leaves_it_running(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A retry from the view, and a processor that claimed the job at once: the streams
    told "running" before the retry's answer (the job pending) came, and the view drew
    that answer over it: "pending" beside a running job, until it ended.  Nor does it say
    the job "is pending again" beside it (QA)."""
    expect = sync_api.expect
    run_job(spool, "quick-again", tool="sleep", error=(ErrorType.TOOL_ERROR, "first try"))
    page.goto(server.base + "/#/tasks/quick-again")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)
    answers: list[tuple[sync_api.Route, sync_api.APIResponse]] = []

    def hold_the_answer(route: sync_api.Route) -> None:
        answers.append((route, route.fetch()))

    page.route("**/api/v1/tasks/quick-again/retry", hold_the_answer)
    page.locator("#retry-task").click()
    wait_in_page(page, lambda: answers, what="the retry's answer")
    running = claim(spool, "quick-again")
    try:
        expect(page.locator("#task-state")).to_have_text("running")  # told by the streams
        route, answer = answers[0]
        route.fulfill(response=answer)
        expect(page.locator("#action-status")).to_have_text("retry of quick-again done")
        expect(page.locator("#task-state")).to_have_text("running")
    finally:
        finish(spool, running, {"slept": 0})
    expect(page.locator("#task-state")).to_have_text("done")
    # The retry's word is history once the job moved on: it stood under "done" (QA).
    expect(page.locator("#action-status")).to_be_hidden()


def test_a_retry_whose_answer_cannot_be_read_shows_the_task_as_it_is(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A retry's 200 whose body is not the task (cut short, a proxy's page), the streams
    down: the view read it as a task and threw, so "retrying" stood for good and the view
    stayed on "failed" while the job ran again.  The task as it is now is asked for."""
    expect = sync_api.expect
    run_job(spool, "unread", tool="sleep", error=(ErrorType.TOOL_ERROR, "first try"))
    page.route_web_socket("**/api/v1/ws/**", lambda ws: ws.close())  # no stream gets through
    page.goto(server.base + "/#/tasks/unread")
    expect(page.locator("#task-state")).to_have_text("failed")
    page.wait_for_function("() => ui.taskSocket === null")  # its stream tried, and refused
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)

    def not_the_task(route: sync_api.Route) -> None:
        route.fetch()  # the retry is done
        route.fulfill(status=200, content_type="text/html", body="<html>sign in</html>")

    page.route("**/api/v1/tasks/unread/retry", not_the_task)
    page.locator("#retry-task").click()
    expect(page.locator("#task-state")).to_have_text("pending")
    expect(page.locator("#action-status")).to_contain_text("could not be read (HTTP 200)")
    running = claim(spool, "unread")
    try:
        expect(page.locator("#task-state")).to_have_text("running")  # followed, over REST
    finally:
        finish(spool, running, {"slept": 0})
    expect(page.locator("#task-state")).to_have_text("done")
