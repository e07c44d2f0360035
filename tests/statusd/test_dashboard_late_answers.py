"""The dashboard in a real headless Chromium, when an answer comes after the streams moved on.

A page of "older tasks" and a retry's or a cancel's answer are each asked at one moment
and come later: what the events and task streams told meanwhile is newer, and the page
must not show the answer's older word over it for good.  Also what the header and the
time left say while the processor or statusd comes and goes.  The browser and page
fixtures are test_statusd_dashboard's (a page with a JavaScript error fails its test).
"""

from __future__ import annotations

import contextlib
import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import test_statusd_dashboard as dashboard
from statusd_browserkit import (
    REREAD_MS,
    STATS_EVERY_MS,
    goto_with_clock_paused,
    held_heads,
    refuse,
)
from statusdkit import (
    STATS_URL,
    TOKEN,
    FakeOwner,
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

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType
from spool.states import JobState
from spool.transitions import Spool

sync_api = dashboard.sync_api
pytestmark = dashboard.pytestmark
browser = dashboard.browser
page = dashboard.page
expect = sync_api.expect

Held = list[tuple[sync_api.Route, sync_api.APIResponse]]


def _hold(page: sync_api.Page, url: str) -> Held:
    """Each request to ``url`` sent on to statusd at once, its answer kept from the page
    until the test fulfills it."""
    held: Held = []
    page.route(url, lambda route: held.append((route, route.fetch())))
    return held


def _told(page: sync_api.Page) -> list[dict[str, Any]]:
    """The messages of the page's events stream, as the browser receives them (call
    before the page opens)."""
    told: list[dict[str, Any]] = []

    def on_socket(socket: sync_api.WebSocket) -> None:
        if "/api/v1/ws/events" in socket.url:
            socket.on("framereceived", lambda payload: told.append(orjson.loads(payload)))

    page.on("websocket", on_socket)
    return told


def _with_token(page: sync_api.Page) -> None:
    page.evaluate("(token) => sessionStorage.setItem('spoolq-token', token)", TOKEN)


# filter, the newer jobs' state, how the late job ends, its row's state after (None: gone)
PAGED = {
    "any state": ("", "pending", None, "done"),
    "left the filter": ("running", "running", None, None),
    "came into the filter": ("failed", "failed", (ErrorType.TOOL_ERROR, "no"), "failed"),
}


@pytest.mark.parametrize(("state_filter", "newer", "error", "row_state"), PAGED.values(),
                         ids=PAGED.keys())
def test_a_row_older_tasks_brings_shows_what_moved_while_it_came(
        server: ServerThread, spool: Spool, page: sync_api.Page, *, state_filter: str,
        newer: str, error: tuple[ErrorType, str] | None, row_state: str | None) -> None:
    """A running job on the list's second page, which ended while "older tasks" was on
    its way: the page, asked before, brought its row "running", and the move the events
    stream had told was not the row's (not shown yet): the row said "running", its time
    counting on, until the list was read again.  In a filtered list the row of a job that
    had left the filter stayed, and one that had come into it was missing."""
    submit(spool, "late", tool="sleep")  # the oldest: on the list's second page
    late = claim(spool, "late")
    claims: list[Claim] = [late]
    try:
        for n in range(60):
            if newer == "failed":
                run_job(spool, f"newer-{n:02d}", error=(ErrorType.TOOL_ERROR, "no"))
                continue
            submit(spool, f"newer-{n:02d}", tool="sleep")
            if newer == "running":
                claims.append(claim(spool, f"newer-{n:02d}"))
        dashboard._wait_indexed(server, 61)
        told = _told(page)
        page.goto(f"{server.base}/#/?state={state_filter}")
        expect(page.locator("#tasks tbody tr")).to_have_count(50)
        expect(page.locator("#live")).to_have_text("live")
        held = _hold(page, "**/api/v1/tasks?*cursor=*")
        page.click("#more")
        wait_in_page(page, lambda: held, what="the page of older tasks asked for")
        finish(spool, late, {"slept": 0}, error=error)
        wait_in_page(page, lambda: any(
            m.get("event") == "transition" and m.get("id") == "late" for m in told),
            what="the events stream to tell the page the late job ended")
        route, answer = held[0]
        route.fulfill(response=answer)
        expect(dashboard._row(page, "newer-00")).to_have_count(1)  # the page is in
        if row_state is None:
            expect(dashboard._row(page, "late")).to_have_count(0)
        else:
            expect(dashboard._row(page, "late")).to_have_attribute("data-state", row_state)
            expect(dashboard._row(page, "late").locator("td.duration[data-since]")).to_have_count(0)
    finally:
        for taken in claims:
            taken.close()


def test_a_retry_answered_after_the_job_ran_and_failed_again_says_no_pending(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A retry from the task view whose answer ("pending") came after the streams had
    shown the job run again and fail again: "typo is pending again" stood beside
    "failed" for as long as the view was open (no transition came after it to clear it)."""
    run_job(spool, "typo", error=(ErrorType.INVALID_PARAMS, "messag: extra inputs"))
    page.goto(server.base + "/#/tasks/typo")
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#live")).to_have_text("live")
    _with_token(page)
    held = _hold(page, "**/api/v1/tasks/typo/retry")
    page.locator("#retry-task").click()
    wait_in_page(page, lambda: held, what="the retry sent")
    expect(page.locator("#task-state")).to_have_text("pending")
    again = claim(spool, "typo")
    expect(page.locator("#task-state")).to_have_text("running")
    finish(spool, again, error=(ErrorType.INVALID_PARAMS, "messag: extra inputs"))
    expect(page.locator("#task-state")).to_have_text("failed")
    route, answer = held[0]
    assert answer.json()["state"] == "pending"
    route.fulfill(response=answer)
    status = page.locator("#action-status")
    expect(status).to_have_text("retry of typo done")
    expect(page.locator("#task-state")).to_have_text("failed")


def test_a_cancel_answered_after_the_job_was_stopped_says_not_still_running(
        server: ServerThread, spool: Spool, page: sync_api.Page,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A running task's cancel answers with the task as it is after statusd's wait (1 s
    here), "running"; its processor stopped it before that answer reached the page, which
    then said "it is still running until its processor stops it" beside "failed"."""
    client = server.services.client
    monkeypatch.setattr(client, "cancel", functools.partial(client.cancel, wait_s=1.0))
    submit(spool, "stubborn", tool="sleep")
    running = claim(spool, "stubborn")
    try:
        page.goto(server.base + "/#/tasks/stubborn")
        expect(page.locator("#task-state")).to_have_text("running")
        _with_token(page)
        held = _hold(page, "**/api/v1/tasks/stubborn/cancel")
        page.locator("#cancel-task").click()
        wait_in_page(page, lambda: held, what="the cancel sent")
        route, answer = held[0]
        assert answer.json()["state"] == "running"
        finish(spool, running, error=(ErrorType.CANCELLED, "cancelled while running"))
        expect(page.locator("#task-state")).to_have_text("failed")
        route.fulfill(response=answer)
        expect(page.locator("#action-status")).to_have_text("cancel of stubborn done")
        expect(page.locator("#task-state")).to_have_text("failed")
    finally:
        running.close()


def test_a_claim_after_the_processor_restarted_is_not_said_beside_processor_down(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The stats said "processor: down"; one started and claimed a job: the row said
    "running" beside "processor: down" until the next stats, a second or more on."""
    submit(spool, "work", tool="sleep")
    page.goto(server.base + "/")
    processor = page.locator("#processor")
    expect(processor).to_have_text("processor: down")
    expect(page.locator("#live")).to_have_text("live")
    held = _hold(page, STATS_URL)  # no stats come to say it: only the claim
    owner = FakeOwner(spool)
    running = claim(spool, "work")
    try:
        expect(dashboard._row(page, "work", "running")).to_be_visible()
        expect(processor).to_have_text("processor: up")
    finally:
        running.close()
        owner.close()
        for route, answer in held:  # before the unroute, which lets those held go on
            route.fulfill(response=answer)
        page.unroute(STATS_URL)


def test_the_time_left_is_not_counted_down_while_statusd_is_away(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """statusd went away beside a run half done: the note said the task is as last seen,
    and "about N s left" went on counting down beside it to "about to finish"."""
    owner = FakeOwner(spool)
    submit(spool, "far", tool="run_backtest")
    running = claim(spool, "far")
    eta = page.locator("#task-progress .eta")
    try:
        report(spool, running, 0.25, "25/100",
               started_at=datetime.now(UTC) - timedelta(seconds=30))
        page.goto(server.base + "/#/tasks/far")
        expect(eta).to_have_text(re.compile(r"left$"))
        server.stop()  # its sockets close going away, its port refuses
        expect(page.locator("#task-note")).to_contain_text("statusd unreachable since ")
        expect(eta).to_have_text("")  # at the next tick of the running times
    finally:
        running.close()
        owner.close()


def test_a_task_read_again_without_its_stream_is_read_for_its_latest_opening_only(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Without a task stream (a proxy that passes no WebSocket) the view reads its task
    again each second.  Left for the list and opened again between two reads, the first
    opening's next read still came, beside the new opening's own: two reads a second, and
    one more loop at each opening, for as long as the task ran."""
    submit(spool, "polled", tool="sleep")
    running = claim(spool, "polled")
    reads: list[sync_api.Request] = []
    page.on("requestfinished", lambda r: reads.append(r)
            if r.url.endswith("/api/v1/tasks/polled") and r.method == "GET" else None)
    try:
        page.route_web_socket("**/api/v1/ws/**", lambda ws: ws.close(code=1011))
        goto_with_clock_paused(page, server.base + "/#/tasks/polled")
        expect(page.locator("#task-state")).to_have_text("running")
        wait_in_page(page, lambda: len(reads) == 2, what="the opening's read and read again")
        page.wait_for_timeout(200)
        page.clock.run_for(REREAD_MS // 2)  # half way to the first opening's next read
        page.evaluate("() => { location.hash = '#/'; }")
        expect(page.locator("#list-view")).to_be_visible()
        page.evaluate("() => { location.hash = '#/tasks/polled'; }")
        wait_in_page(page, lambda: len(reads) == 4, what="the new opening's read and read again")
        page.wait_for_timeout(200)
        page.clock.run_for(REREAD_MS // 2 + 100)  # past the first opening's next read
        page.wait_for_timeout(500)
        assert len(reads) == 4, [r.url for r in reads]
        page.clock.run_for(REREAD_MS // 2)  # past the new opening's: it goes on following
        wait_in_page(page, lambda: len(reads) == 5, what="the new opening's next read")
    finally:
        running.close()


def test_a_task_read_again_without_its_stream_is_not_drawn_over_its_end_told_since(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The task stream refused, the view read its task again over REST ("running"); the
    job ended while that read was out, and the events stream's word drew "done".  The read
    came after and was drawn over it: "running" beside a job done, until the next read."""
    submit(spool, "reread", tool="sleep")
    running = claim(spool, "reread")
    held: Held = []

    def hold_the_second(route: sync_api.Route) -> None:  # the read again, as it was then
        if len(held) or route.request.method != "GET":
            route.continue_()
            return
        held.append((route, route.fetch()))

    try:
        page.route_web_socket("**/api/v1/ws/tasks/**", lambda ws: ws.close(code=1011))
        goto_with_clock_paused(page, server.base + "/#/tasks/reread")  # no read but the test's
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#live")).to_have_text("live")
        page.route("**/api/v1/tasks/reread", hold_the_second)
        page.clock.run_for(REREAD_MS)
        wait_in_page(page, lambda: held, what="the view's read again")
        assert held[0][1].json()["state"] == "running"
        finish(spool, running, {"slept": 1})
        expect(page.locator("#task-state")).to_have_text("done")
        expect(page.locator("#task-result pre")).to_contain_text('"slept": 1')
        route, answer = held[0]
        route.fulfill(response=answer)
        page.wait_for_timeout(500)  # the read's answer has come back
        expect(page.locator("#task-state")).to_have_text("done")  # no read again to put right
        expect(page.locator("#task-result pre")).to_contain_text('"slept": 1')
    finally:
        running.close()


def _counted(server: ServerThread, state: str, count: int) -> None:
    """Until statusd counts ``count`` jobs ``state``: it sees a purge a moment after the
    files went (at load, later than the page's stats refresh the test runs next, which
    then found them still there; the page's clock paused, no refresh came after)."""
    wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["counts"][state]
             == count, what=f"statusd to count {count} {state}")


def test_one_look_at_a_purged_task_is_out_at_a_time(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view of an ended task asks statusd whether it is still there (a HEAD) when a
    stats refresh finds jobs gone.  A second purge seen while the first look was out (a
    statusd slow to answer) sent a second look beside it: two out at once, each answered
    and each drawn.  The later look stands for both; the earlier is let go."""
    run_job(spool, "ended", tool="echo", error=(ErrorType.TOOL_ERROR, "old news"))
    run_job(spool, "other", tool="echo")
    let_go: list[sync_api.Request] = []
    page.on("requestfailed", lambda r: let_go.append(r) if r.method == "HEAD" else None)
    looks = held_heads(page, "**/api/v1/tasks/ended")
    goto_with_clock_paused(page, server.base + "/#/tasks/ended")  # stats refreshed only as told
    expect(page.locator("#task-state")).to_have_text("failed")
    expect(page.locator("#count-done")).to_have_text("1")
    client = Client.from_settings(server.settings)
    client.purge(0.0, [JobState.FAILED])
    _counted(server, "failed", 0)  # the page's one refresh below finds it gone
    page.clock.run_for(STATS_EVERY_MS)
    expect(page.locator("#count-failed")).to_have_text("0")
    wait_in_page(page, lambda: looks, what="the first look at the purged task")
    client.purge(0.0, [JobState.DONE])
    _counted(server, "done", 0)
    page.clock.run_for(STATS_EVERY_MS)
    expect(page.locator("#count-done")).to_have_text("0")
    wait_in_page(page, lambda: len(looks) > 1, what="the second look at the purged task")
    # The first look let go (its request failed, as the page aborts it): a fixed 300 ms
    # for that could be short on a loaded host (h370).
    wait_in_page(page, lambda: len([r for r in looks if r.request not in let_go]) == 1,
                 what="one look out, the first let go")
    refuse(looks[-1], 404, "not_found", "no task with id 'ended'")
    expect(page.locator("#task-state")).to_have_text("not found")
    for route in looks[:-1]:
        with contextlib.suppress(sync_api.Error):  # let go by the page
            route.fulfill(status=404)


def test_a_first_read_of_a_task_opened_again_is_drawn_only_for_its_opening(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The view left a running task and opened it again before its first read came; the
    job ended in between.  The first opening's read ("running") came first and was drawn
    in the new opening, and the new opening's read ("done"), come after, was dropped as
    older than a record drawn since: "running" beside a job done, until a stream told it."""
    held_end, _ = dashboard._hold_the_events_end(page, "flip")  # no stream tells the end
    page.route_web_socket("**/api/v1/ws/tasks/**", lambda ws: None)  # open, and silent
    submit(spool, "flip", tool="sleep")
    running = claim(spool, "flip")
    try:
        reads = _hold(page, "**/api/v1/tasks/flip")
        page.goto(server.base + "/#/tasks/flip")
        expect(page.locator("#live")).to_have_text("live")
        wait_in_page(page, lambda: reads, what="the first opening's read")
        finish(spool, running, {"slept": 1})
        wait_in_page(page, lambda: held_end, what="the events stream's word of the end")
        page.evaluate("() => { location.hash = '#/'; }")
        expect(page.locator("#list-view")).to_be_visible()
        page.evaluate("() => { location.hash = '#/tasks/flip'; }")
        wait_in_page(page, lambda: len(reads) > 1, what="the new opening's read")
    finally:
        running.close()
    (first, first_answer), (second, second_answer) = reads
    assert (first_answer.json()["state"], second_answer.json()["state"]) == ("running", "done")
    first.fulfill(response=first_answer)
    page.wait_for_timeout(300)  # the first opening's read has come back
    second.fulfill(response=second_answer)
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-result pre")).to_contain_text('"slept": 1')
