"""A researcher watching a long job in the dashboard, in a real headless Chromium.

What the page must say while a backtest runs for minutes and the machinery around it
moves: its run cut short and requeued (a processor's stop, its death), no processor
left to run it, statusd itself away, a link to a task not submitted yet; and the
header's figures read as `spoolq stats` says them.  The browser and page fixtures are
test_statusd_dashboard's (a page with a JavaScript error fails its test).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import test_statusd_dashboard as dashboard
from statusd_browserkit import STATS_EVERY_MS, held_back
from statusd_daemonkit import statusd_daemon
from statusdkit import (
    STATS_URL,
    FakeOwner,
    ServerThread,
    claim,
    finish,
    report,
    run_job,
    submit,
    wait_for,
    wait_in_page,
)

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType
from spool.lease import OwnerLease
from spool.models import ErrorInfo, Job
from spool.transitions import Spool

sync_api = dashboard.sync_api
pytestmark = dashboard.pytestmark
browser = dashboard.browser
page = dashboard.page
expect = sync_api.expect


@contextlib.contextmanager
def _claimed_backtest(spool: Spool, job_id: str) -> Iterator[Claim]:
    """A backtest claimed under a live (stand-in) processor, for the block."""
    owner = FakeOwner(spool)
    submit(spool, job_id, tool="run_backtest")
    running = claim(spool, job_id)
    try:
        yield running
    finally:
        running.close()
        owner.close()


def _expect_until(eta: sync_api.Locator, started: datetime, fraction: float,
                  seen: tuple[float, float], *, ahead_s: float = 0.0,
                  err_s: float = 0.0) -> float:
    """The end the page reckons for a run (``data-until``, by its clock in seconds):
    the straight line from ``started`` through ``fraction`` as of the report, which
    statusd stamped, or the page when it came, between ``seen``: this test's time just
    before the report was written and once the page showed it.  The page's clock is
    ``ahead_s`` ahead of this test's (its run_for), and up to ``err_s`` more where it
    reckons statusd's from a Date header's whole second.

    Each report's way to the page takes time, and the run's time so far with it: a
    loaded host's 1.7 s made "about 1 min 35 s left" of the 90 s a fixed regex
    expected (QA).  The bounds are the pace's at each end of that time."""
    def end(at: float) -> float:
        spent = at - started.timestamp()
        return at + spent * (1 - fraction) / fraction
    until = float(eta.get_attribute("data-until") or "nan") / 1000
    low, high = end(seen[0] + ahead_s) - 1, end(seen[1] + ahead_s + err_s) + 1
    assert low <= until <= high, (until - low, high - until)
    return until


def _expect_left(eta: sync_api.Locator, until: float, since: float, *,
                 ahead_s: float = 0.0, err_s: float = 0.0) -> None:
    """The time left the page shows, counted down to ``until`` by its clock (``ahead_s``
    and ``err_s`` as in :func:`_expect_until`): drawn after ``since`` on this test's
    clock, less the second between the page's redraws, and before now."""
    text = eta.text_content() or ""
    now = time.time()
    match = re.fullmatch(r"about (?:(\d+) min )?(\d+) s left", text)
    assert match, text
    left = 60 * int(match[1] or 0) + int(match[2])
    assert text == (f"about {left // 60} min {left % 60} s left" if left >= 60
                    else f"about {left} s left")
    low = until - (now + ahead_s + err_s) - 0.5  # rounded to a second
    high = until - (since + ahead_s - 1) + 0.5
    assert low <= left <= high, (text, low, high)


def test_a_run_cut_short_and_requeued_is_said_in_the_task_view(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A processor's SIGTERM requeues its running job (the run does not count: attempts
    back to 0) and the next processor runs it again from 0%.  The view went from
    "running 40%" to "pending, attempts 0" and back to "running 0%" with no word of what
    happened: it reads as if the page had lost track."""
    owner = FakeOwner(spool)
    try:
        submit(spool, "bt-long", tool="run_backtest")
        first = claim(spool, "bt-long")
        report(spool, first, 0.4, "backtested 40/100 symbols")
        page.goto(server.base + "/#/tasks/bt-long")
        expect(page.locator("#task-progress .text")).to_have_text("40% backtested 40/100 symbols")
        expect(page.locator("#task-note")).to_be_hidden()
        assert spool.requeue(first, Job.model_validate_json(first.data))
        expect(page.locator("#task-state")).to_have_text("pending")
        note = page.locator("#task-note")
        expect(note).to_contain_text("requeued at ")
        expect(note).to_contain_text("its run was cut short (its processor stopped)")
        second = claim(spool, "bt-long")
        expect(page.locator("#task-state")).to_have_text("running")
        report(spool, second, 0.0, "loading")
        expect(page.locator("#task-progress .text")).to_have_text("0% loading")
        expect(note).to_contain_text("requeued at ")  # still said while it runs again
        finish(spool, second, {"ok": 1})
        expect(page.locator("#task-state")).to_have_text("done")
        page.goto(server.base + "/#/")  # another task's view starts with no such word
        page.goto(server.base + "/#/tasks/other")
        expect(page.locator("#task-state")).to_have_text("not found")
        expect(note).not_to_contain_text("requeued")
    finally:
        owner.close()


def _retry_later(spool: Spool, running: Claim, why: ErrorType) -> None:
    """What the processor does with a run that timed out (or crashed) with attempts left:
    the run counts, and its error goes with the job."""
    job = Job.model_validate_json(running.data)
    assert spool.requeue(running, job.model_copy(update={
        "attempts": job.attempts + 1, "error": ErrorInfo(type=why, message="killed")}))


def test_a_stop_after_a_retried_timeout_is_said_as_a_stop(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A backtest timed out and was retried; its second run was cut short 2 s in by the
    processor's stop.  The note said "cut short (timeout)": the pending job keeps the
    error its retry came from, which was not why this run ended."""
    owner = FakeOwner(spool)
    try:
        submit(spool, "bt-retried", tool="run_backtest", max_attempts=3)
        page.goto(server.base + "/#/tasks/bt-retried")
        expect(page.locator("#task-state")).to_have_text("pending")
        first = claim(spool, "bt-retried")
        expect(page.locator("#task-state")).to_have_text("running")
        _retry_later(spool, first, ErrorType.TIMEOUT)
        note = page.locator("#task-note")
        expect(note).to_contain_text("its run was cut short (timeout)")
        second = claim(spool, "bt-retried")
        expect(page.locator('#task-fields [data-field="attempts"]')).to_have_text("2 of 3")
        assert spool.requeue(second, Job.model_validate_json(second.data))  # a stop's
        expect(page.locator('#task-fields [data-field="attempts"]')).to_have_text("1 of 3")
        expect(note).to_contain_text("its run was cut short (its processor stopped)")
    finally:
        owner.close()


def test_attempts_show_the_tools_limit_where_the_job_sets_none(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A job that sets no max_attempts gets its tool's (DESIGN section 9), which `spoolq
    show` says ("1 of 3 (the tool's limit)"); the page said "attempts 1" of a backtest
    with two retries to go.  It asks the live processors' catalogue (GET api/v1/tools),
    again when other processors run; with none running, the limit is not known."""
    submit(spool, "bt-limit", tool="run_backtest")
    page.goto(server.base + "/#/tasks/bt-limit")
    attempts = page.locator('#task-fields [data-field="attempts"]')
    expect(attempts).to_have_text("0")
    owner = FakeOwner(spool, tools=[{"name": "run_backtest", "max_attempts": 3}])
    try:
        running = claim(spool, "bt-limit")
        try:
            expect(page.locator("#task-state")).to_have_text("running")
            expect(attempts).to_have_text("1 of 3")
        finally:
            finish(spool, running, {"ok": 1})
        expect(page.locator("#task-state")).to_have_text("done")
        expect(attempts).to_have_text("1 of 3")
    finally:
        owner.close()
    restarted = FakeOwner(spool, "proc-restarted",
                          tools=[{"name": "run_backtest", "max_attempts": 5}])
    try:  # no transition: the page's next stats refresh (every 5 s) sees it
        expect(attempts).to_have_text("1 of 5", timeout=15_000)
    finally:
        restarted.close()


def test_a_tools_catalogue_overtaken_by_a_later_one_is_not_taken(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The processors changed (a restart with other limits) while the catalogue asked for
    the ones before was still on its way, and that answer came last: the page took it, and
    said the old tool's limit ("1 of 3" of a tool now of 5) until the processors changed
    again, not asked for again meanwhile."""
    submit(spool, "bt-late", tool="run_backtest")
    owner = FakeOwner(spool, tools=[{"name": "run_backtest", "max_attempts": 3}])
    tools = held_back(page, "**/api/v1/tools")  # answered below
    try:
        page.clock.install()
        page.goto(server.base + "/#/tasks/bt-late")
        expect(page.locator("#task-state")).to_have_text("pending")
        wait_in_page(page, lambda: tools, what="the catalogue asked for")
        before = tools[0].fetch()  # of the processor before the restart
    finally:
        owner.close()
    restarted = FakeOwner(spool, "proc-restarted",
                          tools=[{"name": "run_backtest", "max_attempts": 5}])
    try:
        page.clock.run_for(STATS_EVERY_MS)  # the stats that see the restarted processor
        wait_in_page(page, lambda: page.evaluate("() => ui.toolsOf").startswith(
            "proc-restarted "), what="the restarted processor seen")
        wait_in_page(page, lambda: len(tools) > 1, what="its catalogue asked for")
        for route in tools[1:]:
            route.continue_()
        attempts = page.locator('#task-fields [data-field="attempts"]')
        expect(attempts).to_have_text("0 of 5")
        tools[0].fulfill(response=before)
        page.wait_for_timeout(500)
        expect(attempts).to_have_text("0 of 5")
    finally:
        restarted.close()


def test_a_requeue_is_not_said_of_an_ended_job_nor_of_its_retry(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A run cut short by a stop, then the job failed for good: the note still said it
    "runs again from the start", and after a `spoolq retry` it told that old requeue of
    the new run, which no stop had cut short."""
    owner = FakeOwner(spool)
    try:
        submit(spool, "bt-failing", tool="run_backtest")
        page.goto(server.base + "/#/tasks/bt-failing")
        first = claim(spool, "bt-failing")
        expect(page.locator("#task-state")).to_have_text("running")
        assert spool.requeue(first, Job.model_validate_json(first.data))
        note = page.locator("#task-note")
        expect(note).to_contain_text("and runs again from the start")
        finish(spool, claim(spool, "bt-failing"), error=(ErrorType.TIMEOUT, "killed"))
        expect(page.locator("#task-state")).to_have_text("failed")
        expect(note).to_contain_text("and it ran again from the start")
        Client.from_settings(server.settings).retry("bt-failing")
        expect(page.locator("#task-state")).to_have_text("pending")
        expect(note).to_be_hidden()
        again = claim(spool, "bt-failing")
        expect(page.locator("#task-state")).to_have_text("running")
        expect(note).to_be_hidden()
        finish(spool, again, {"ok": 1})
        expect(page.locator("#task-state")).to_have_text("done")
        expect(note).to_be_hidden()
    finally:
        owner.close()


def test_a_run_claimed_again_before_statusd_saw_it_pending_is_a_new_run(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Two processors on a spool: one stops, and the other claims its requeued backtest
    at once, before statusd sees it pending (2 of 4 tries with real processors).  The
    view kept the first run's start, "running for" counting from it beside the new run's
    10%, and no word of the requeue."""
    owner = FakeOwner(spool)
    try:
        submit(spool, "bt-handed", tool="run_backtest", max_attempts=3)
        first = claim(spool, "bt-handed")
        report(spool, first, 0.4, "backtested 40/100 symbols")
        page.goto(server.base + "/#/tasks/bt-handed")
        expect(page.locator("#task-progress .text")).to_have_text("40% backtested 40/100 symbols")
        started = page.locator('#task-fields [data-field="started"]').inner_text()
        time.sleep(1.1)  # the next run starts a second later

        def handed_over() -> Claim:  # on statusd's loop: it reads both moves as one
            assert spool.requeue(first, Job.model_validate_json(first.data))
            return claim(spool, "bt-handed")

        second = server.in_loop(handed_over)
        try:
            report(spool, second, 0.1, "backtested 10/100 symbols")
            expect(page.locator("#task-note")).to_contain_text(
                "its run was cut short (its processor stopped)")
            expect(page.locator('#task-fields [data-field="started"]')).not_to_have_text(started)
            expect(page.locator("#task-progress .text")).to_have_text(
                "10% backtested 10/100 symbols")
        finally:
            finish(spool, second, {"ok": 1})
        expect(page.locator("#task-state")).to_have_text("done")
    finally:
        owner.close()


def test_a_running_job_with_no_processor_left_says_it_is_not_progressing(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A SIGKILL'd processor leaves its job in running/ until a processor starts and
    recovers it: the view said "running", its bar still and its "running for" counting
    on, and only the header's "processor: down" hinted that nothing ran it."""
    owner = FakeOwner(spool)
    submit(spool, "orphan", tool="run_backtest")
    running = claim(spool, "orphan")
    eta = page.locator("#task-progress .eta")
    try:
        report(spool, running, 0.3, "backtested 30/100 symbols",
               started_at=datetime.now(UTC) - timedelta(seconds=30))
        page.goto(server.base + "/#/tasks/orphan")
        expect(page.locator("#processor")).to_have_text("processor: up")
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#task-note")).to_be_hidden()
        expect(eta).to_have_text(re.compile(r"left$"))
        owner.close()  # its lock free: the processor is gone
        submit(spool, "poke")  # a transition: the page reads the stats at once
        expect(page.locator("#processor")).to_have_text("processor: down")
        expect(page.locator("#task-note")).to_contain_text("no processor is running")
        # No time left counted down beside it ("about 1 s left", QA).
        expect(eta).to_have_text("")
    finally:
        owner.close()
        finish(spool, running, {"ok": 1})
    expect(page.locator("#task-state")).to_have_text("done")
    expect(page.locator("#task-note")).to_be_hidden()


def test_a_long_run_says_about_how_long_it_has_left(server: ServerThread, spool: Spool,
                                                    page: sync_api.Page) -> None:
    """A researcher watching a backtest saw "25%" and "running for 30 s", and had to work
    out when it would end.  The view says it, from the run's pace so far, and counts it
    down; a progress event that changes the pace changes it."""
    eta = page.locator("#task-progress .eta")
    with _claimed_backtest(spool, "bt-eta") as running:
        started = datetime.now(UTC) - timedelta(seconds=30)
        report(spool, running, None, "", started_at=started)  # where it runs, no more
        page.clock.install()
        page.goto(server.base + "/#/tasks/bt-eta")
        host = page.locator("#task-fields dd[data-field='host']")
        expect(host).to_contain_text("test (processor pid ")
        expect(page.locator("#task-progress")).to_be_hidden()  # no empty bar
        report(spool, running, 0.01, "1/100", started_at=started)
        expect(page.locator("#task-progress .text")).to_have_text("1% 1/100")
        expect(eta).to_have_text("")  # 1% says too little of the pace
        t0 = time.time()
        report(spool, running, 0.25, "25/100", started_at=started)  # 90 s to go
        expect(page.locator("#task-progress .text")).to_have_text("25% 25/100")
        until = _expect_until(eta, started, 0.25, (t0, time.time()))
        _expect_left(eta, until, t0)
        t0 = time.time()
        page.clock.run_for(30_000)  # counted down by the page's clock, now 30 s ahead
        _expect_left(eta, until, t0, ahead_s=30)
        t0 = time.time()
        report(spool, running, 0.75, "75/100", started_at=started)  # faster: 20 s to go
        expect(page.locator("#task-progress .text")).to_have_text("75% 75/100")
        until = _expect_until(eta, started, 0.75, (t0, time.time()), ahead_s=30)
        _expect_left(eta, until, t0, ahead_s=30)
        page.clock.run_for(60_000)
        expect(eta).to_have_text("about to finish, at its pace so far")
        finish(spool, running, {"ok": 1})
        expect(page.locator("#task-state")).to_have_text("done")
        expect(page.locator("#task-progress")).to_be_hidden()
        expect(host).to_have_text(f"test (ran in pid {os.getpid()})")  # where the tool ran


SKEW_ERR_S = 2.0  # statusd's clock as a page reckons it: a Date's second, and a way back


def test_the_time_left_is_by_statusds_clock_not_a_browsers_set_wrong(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A laptop's clock 10 minutes fast: a run 30 s in at 25% (90 s to go) read "about to
    finish" from its record, and "about 10 min 30 s left" at its next report, as the
    browser's clock was taken for statusd's.  The Date of statusd's answers says how far
    apart the two are."""
    eta = page.locator("#task-progress .eta")
    with _claimed_backtest(spool, "bt-skew") as running:
        started = datetime.now(UTC) - timedelta(seconds=30)
        t0 = time.time()
        report(spool, running, 0.25, "25/100", started_at=started)
        t1 = time.time()  # its updated_at, statusd's, between the two
        # Indexed with its progress before the view opens: the task stream's snapshot is
        # the index's, and one of the claim alone (its start the claim's, not the report's
        # 30 s earlier) left the next report's pace to be reckoned from a second or so.
        wait_for(lambda: server.in_loop(lambda: getattr(
                     server.services.index.get("bt-skew"), "fraction", None)) == 0.25,
                 what="statusd's index to hold the report")
        since = time.time()
        page.clock.install(time=datetime.now(UTC) + timedelta(minutes=10))
        page.goto(server.base + "/#/tasks/bt-skew")
        expect(page.locator("#task-progress .text")).to_have_text("25% 25/100")
        # By statusd's clock, as the page reckons it from its answers' Date (a whole
        # second, so up to a second and their way back ahead); 10 minutes off, before.
        until = _expect_until(eta, started, 0.25, (t0, t1))
        _expect_left(eta, until, since, err_s=SKEW_ERR_S)
        t0 = time.time()
        report(spool, running, 0.5, "50/100", started_at=started)  # 30 s to go, or so
        expect(page.locator("#task-progress .text")).to_have_text("50% 50/100")
        until = _expect_until(eta, started, 0.5, (t0, time.time()), err_s=SKEW_ERR_S)
        _expect_left(eta, until, t0, err_s=SKEW_ERR_S)


def test_running_for_is_by_statusds_clock_not_a_browsers_set_wrong(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A laptop's clock 10 minutes fast: a job claimed a moment ago read "running for
    10 min 0 s" in its view and in the list, the browser's clock taken for statusd's."""
    with _claimed_backtest(spool, "bt-since"):
        page.clock.install(time=datetime.now(UTC) + timedelta(minutes=10))
        page.goto(server.base + "/#/tasks/bt-since")
        expect(page.locator("#task-state")).to_have_text("running")
        under_a_minute = re.compile(r"^(\d+ ms|\d{1,2}\.\d\d s)$")
        expect(page.locator('#task-fields dd[data-field="running for"]')).to_have_text(
            under_a_minute)
        page.goto(server.base + "/#/")
        expect(page.locator('#tasks tr[data-id="bt-since"] td.duration')).to_have_text(
            under_a_minute)


def test_a_browser_clock_set_while_the_page_is_open_is_reckoned_again(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The laptop's clock set 10 minutes on while the page was open (by hand, by NTP at
    last): the reckoning of statusd's clock was of the clock as it had been, each answer
    after fell outside it and was left out, and a job claimed a moment ago read "running
    for 10 min" until the page was reloaded."""
    under_a_minute = re.compile(r"^(\d+ ms|\d{1,2}\.\d\d s)$")
    running_for = page.locator('#task-fields dd[data-field="running for"]')
    with _claimed_backtest(spool, "bt-set"):
        page.clock.install()
        page.goto(server.base + "/#/tasks/bt-set")
        expect(page.locator("#task-state")).to_have_text("running")
        expect(running_for).to_have_text(under_a_minute)
        page.clock.set_system_time(datetime.now(UTC) + timedelta(minutes=10))
        page.clock.run_for(dashboard.TICK_MS)
        expect(running_for).to_have_text(under_a_minute)
        page.clock.run_for(dashboard.STATS_EVERY_MS)  # a stats answer by the clock as set
        expect(page.locator("#processor")).to_have_text("processor: up")
        page.clock.run_for(dashboard.TICK_MS)
        expect(running_for).to_have_text(under_a_minute)
        page.clock.set_system_time(datetime.now(UTC) - timedelta(minutes=10))  # and back
        page.goto(server.base + "/#/")
        expect(page.locator('#tasks tr[data-id="bt-set"] td.duration')).to_have_text(
            under_a_minute)
        page.clock.run_for(dashboard.STATS_EVERY_MS)
        expect(page.locator('#tasks tr[data-id="bt-set"] td.duration')).to_have_text(
            under_a_minute)


def test_statusd_away_is_said_and_the_processor_is_not_shown_up(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """statusd restarted or down: the page went "offline" in a corner, but the header
    still said "processor: up" in green with its workers, and the task view showed the
    job running at its last progress, its time counting on, as if all were well."""
    with _claimed_backtest(spool, "watched") as running:
        report(spool, running, 0.5, "half way")
        page.goto(server.base + "/#/tasks/watched")
        expect(page.locator("#processor")).to_have_text("processor: up")
        expect(page.locator("#task-progress .text")).to_have_text("50% half way")
        server.stop()  # its sockets close going away (1001), its port refuses
        expect(page.locator("#live")).to_have_text("offline")
        expect(page.locator("#processor")).to_have_text("processor: ?")
        expect(page.locator("#workers")).to_have_text("")
        expect(page.locator("#task-note")).to_contain_text("statusd unreachable since ")
        expect(page.locator("#task-note")).to_contain_text("the task as last seen")


def test_the_list_is_live_again_as_soon_as_statusd_answers(
        spool: Spool, page: sync_api.Page) -> None:
    """statusd restarted after a while away: the page read the task and the stats again
    at once ("processor: up"), but its events socket waited out its backoff (up to 10 s)
    and the list said "offline", its rows and progress still, meanwhile."""
    owner = FakeOwner(spool)
    submit(spool, "watched", tool="run_backtest")
    running = claim(spool, "watched")
    try:
        page.clock.install()
        # The first statusd binds a port the kernel picks (0), the second the same one:
        # a port picked here and bound later, after statusd's start-up, could be taken
        # meanwhile by another worker's test (a bind to 0, an outgoing connection).
        with statusd_daemon(spool.layout.root, STATUSD_PORT="0") as (port, _):
            page.goto(f"http://127.0.0.1:{port}/#/tasks/watched")
            expect(page.locator("#live")).to_have_text("live")
            expect(page.locator("#task-state")).to_have_text("running")
            page.clock.pause_at(datetime.now(UTC) + timedelta(minutes=1))
        for _ in range(6):  # its events socket tried again and again: 10 s apart by now
            page.clock.run_for(10_000)
            page.wait_for_timeout(200)  # the refused try closes, and sets its next
        expect(page.locator("#task-note")).to_contain_text("statusd unreachable since ")
        with statusd_daemon(spool.layout.root, STATUSD_PORT=str(port)):
            page.clock.run_for(1_500)  # the task view's next read (a second apart)
            expect(page.locator("#task-note")).to_be_hidden()  # statusd answers
            expect(page.locator("#live")).to_have_text("live", timeout=5_000)
            submit(spool, "next")
            expect(dashboard._row(page, "next", "pending")).to_have_count(1)
            page.goto("about:blank")  # its sockets closed before statusd stops
    finally:
        running.close()
        owner.close()


def test_a_link_to_a_task_not_submitted_yet_says_what_not_found_means(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A link shared a moment before its job was dropped (or one to a purged record)
    said a bare "not found"; the job, once dropped, does show there."""
    page.goto(server.base + "/#/tasks/bt-next")
    expect(page.locator("#task-state")).to_have_text("not found")
    expect(page.locator("#task-note")).to_contain_text("not submitted yet, or its record "
                                                       "was purged")
    submit(spool, "bt-next", tool="run_backtest")
    expect(page.locator("#task-state")).to_have_text("pending")
    # No "not found" note: the one a pending job gets while no processor runs.
    expect(page.locator("#task-note")).to_have_text(dashboard.NO_PROCESSOR_PENDING)


def test_a_link_run_into_the_text_after_it_says_no_task_can_have_its_id(
        server: ServerThread, page: sync_api.Page) -> None:
    """A link pasted from a chat took the ")." after it: the view said "not found" and
    "not submitted yet ... it shows here once submitted", of an id no task can have.
    The page asks statusd nothing for it (a 400 in the console)."""
    asked = []
    page.on("request", lambda req: asked.append(req.url) if "bt-7" in req.url else None)
    page.goto(server.base + "/#/tasks/bt-7).")
    expect(page.locator("#task-state")).to_have_text("invalid id")
    note = page.locator("#task-note")
    expect(note).to_contain_text("no task can have this id")
    expect(note).not_to_contain_text("once submitted")
    page.goto(server.base + "/#/tasks/" + "x" * 129)
    expect(page.locator("#task-state")).to_have_text("invalid id")
    page.goto(server.base + "/#/tasks/bt-7")  # the id as it was meant
    expect(page.locator("#task-state")).to_have_text("not found")
    expect(note).to_contain_text("it shows here once submitted")
    assert asked == [server.base + "/api/v1/tasks/bt-7"]


# What changed in #task-state since this was run, each change's text as it was then.
WATCH_STATE = """() => {
  const node = document.getElementById("task-state");
  window.stateChanges = [];
  new MutationObserver(() => window.stateChanges.push(node.textContent))
    .observe(node, { childList: true, characterData: true, subtree: true });
}"""


def test_a_screen_reader_is_told_when_the_watched_task_ends(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """The task's state was plain text in its heading: a screen reader user watching a
    backtest for minutes was not told when it ended (running -> done).  It is a polite
    live region, read whole; a progress report, which left the state as it was but wrote
    it again (a change to the region), changes nothing in it, so it is not said again at
    every report."""
    with _claimed_backtest(spool, "bt-said") as running:
        report(spool, running, 0.1, "backtested 10/100 symbols")
        page.goto(server.base + "/#/tasks/bt-said")
        state = page.locator("#task-state")
        expect(state).to_have_text("running")
        expect(state).to_have_attribute("aria-live", "polite")
        expect(state).to_have_attribute("aria-atomic", "true")
        # The heading's name still says the state (role=status would take it out).
        expect(page.get_by_role("heading", name="bt-said running", exact=True)).to_be_visible()
        page.evaluate(WATCH_STATE)
        for n in (20, 30, 40):
            report(spool, running, n / 100, f"backtested {n}/100 symbols")
            expect(page.locator("#task-progress .text")).to_have_text(
                f"{n}% backtested {n}/100 symbols")
        assert page.evaluate("window.stateChanges") == []
        finish(spool, running, {"ok": 1})
        expect(state).to_have_text("done")
        wait_for(lambda: page.evaluate("window.stateChanges") == ["done"],
                 what="one change of the region, to done")


def test_progress_reads_100_percent_only_when_it_is(server: ServerThread, spool: Spool,
                                                     page: sync_api.Page) -> None:
    """0.996 was rounded to "100%" while the backtest still ran (and 0.29 must not read
    28%); so was 1.0, which the quant tools report as their work ends, seconds before a
    large result's record is written."""
    submit(spool, "nearly", tool="run_backtest")
    running = claim(spool, "nearly")
    try:
        report(spool, running, 0.996, "backtested 996/1000 symbols")
        page.goto(server.base + "/")
        expect(dashboard._row(page, "nearly", "running").locator(".progress-cell")).to_have_text(
            "99% backtested 996/1000 symbols")  # its message on the row too
        page.goto(server.base + "/#/tasks/nearly")
        text = page.locator("#task-progress .text")
        expect(text).to_have_text("99% backtested 996/1000 symbols")
        report(spool, running, 0.29, "backtested 290/1000 symbols")
        expect(text).to_have_text("29% backtested 290/1000 symbols")
        report(spool, running, 1.0, "backtested 1000/1000 symbols")
        expect(text).to_have_text("99% backtested 1000/1000 symbols")
        row_cell = dashboard._row(page, "nearly", "running").locator(".progress-cell")
        expect(row_cell).to_have_text("99% backtested 1000/1000 symbols")
        # Nor is a bar full beside it (QA h392): filled as far as the percent says.
        filled = "e => parseFloat(e.querySelector('.fill').style.width)"
        for box in (page.locator("#task-progress"), row_cell):
            wait_for(lambda box=box: box.evaluate(filled) == 99, what="the bar filled to 99 %")
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
    page.route(STATS_URL, _many)
    page.goto(server.base + "/")
    expect(page.locator("#count-done")).to_have_text("1,234,567")
    expect(page.locator("#count-pending")).to_have_text("1,234")
    expect(page.locator("#count-failed")).to_have_text("12,000")
    expect(page.locator("#count-running")).to_have_text("2")
    expect(page.locator("#oldest")).to_have_text("oldest pending 2 h 0 min, "
                                                 "oldest due for 59 min 59 s")
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_a_long_progress_message_leaves_the_bar_its_width(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A tool's progress message may run to 500 characters (the processor's cut): the
    bar beside it shrank to a sliver (60 px of 240 at 1200 px wide, less on a phone),
    and the view said "50%" with no bar.  The text wraps under the bar instead."""
    message = " ".join(f"SYM{n:03d}" for n in range(70))  # 489 characters
    with _claimed_backtest(spool, "bt-wordy") as running:
        report(spool, running, 0.5, message)
        for width in (1200, 360):
            page.set_viewport_size({"width": width, "height": 740})
            page.goto(server.base + "/#/tasks/bt-wordy")
            # Visible first: reopened, the view keeps its last text while hidden, which
            # to_have_text matched before the GET re-rendered it (no box yet: None).
            expect(page.locator("#task-progress")).to_be_visible()
            expect(page.locator("#task-progress .text")).to_have_text(f"50% {message}")
            bar = page.locator("#task-progress .bar").bounding_box()
            assert bar is not None and bar["width"] >= min(240, width - 60), (width, bar)
            wait_for(lambda: abs(page.locator("#task-progress .fill").evaluate(
                "e => e.getBoundingClientRect().width") - bar["width"] / 2) <= 1,  # noqa: B023
                what="the bar filled to half")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.goto(server.base + "/#/")


def test_a_long_id_leaves_the_other_columns_their_width(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A valid id of 128 characters took 745 px of a 1400 px table, and every row's tool
    name wrapped to a second line ("run_backtes/t").  Capped, it wraps in its own cell."""
    run_job(spool, "L" * 128)
    for n in range(3):
        run_job(spool, f"bt-{n}", tool="run_backtest")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(server.base + "/")
    expect(page.locator("td.tool")).to_have_count(4)
    cells = page.evaluate("""() => [...document.querySelectorAll('tbody tr')].map(row =>
        [row.querySelector('td.id').innerText, row.getBoundingClientRect().height,
         row.querySelector('td.id').getBoundingClientRect().width])""")
    short = [height for text, height, _ in cells if not text.startswith("LLLL")]
    tall = [height for text, height, _ in cells if text.startswith("LLLL")]
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('td.tool'))"
                         ".lineHeight) || 20")
    assert len(short) == 3 and len(tall) == 1, cells
    assert max(short) < min(tall) and max(short) < 2.5 * line + 12, cells  # one line each
    assert cells[0][2] < 0.3 * 1400, cells


def test_a_job_is_its_own_processor_s_whoever_shares_that_host_and_pid(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """Processors in containers share host names and pids (two "box", each pid 1): a
    live processor's job was said to be a hung one's, by host and pid (QA).  The owner
    its progress names is its processor."""
    hung = FakeOwner(spool, "box-1-aaaa", beat_age_s=120)
    live = FakeOwner(spool, "box-1-bbbb")
    submit(spool, "lively")
    running = claim(spool, "lively")
    report(spool, running, 0.5, "half", owner="box-1-bbbb")
    submit(spool, "stuck")
    stuck = claim(spool, "stuck")
    report(spool, stuck, 0.5, "half", owner="box-1-aaaa")
    try:
        page.goto(server.base + "/#/tasks/stuck")
        expect(page.locator("#task-note")).to_contain_text("has sent no heartbeat since")
        page.goto(server.base + "/#/tasks/lively")
        expect(page.locator("#task-progress .text")).to_have_text("50% half")
        expect(page.locator("#task-note")).not_to_contain_text("heartbeat")
    finally:
        stuck.close()
        running.close()
        live.close()
        hung.close()


def test_a_job_left_to_the_processor_offering_its_tool_says_so(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A rolling upgrade: one processor loads the job's tool, the other does not and
    leaves the job to it.  The task view said "pending" alone beside idle workers (left
    by the sixty-eighth session); it names the processor that leaves it, and the one
    it is left to, as ``spoolq show`` does (the stats' left_why, QA h418).  A processor
    starting, which may offer the tool, is said to be why once none offers it."""
    offers = FakeOwner(spool, "offers-1-aaaa", tools=[{"name": "echo"}, {"name": "nap"}])
    lacks = FakeOwner(spool, "lacks-2-bbbb", busy=0, host="box<b>",
                      left_to_others={"nap": 1})
    submit(spool, "napping", tool="nap")
    submit(spool, "plain")
    try:
        page.goto(server.base + "/#/tasks/napping")
        expect(page.locator("#task-state")).to_have_text("pending")
        expect(page.locator("#task-note")).to_have_text(
            f"left to the processors that offer tool 'nap' (pid {os.getpid()} on test); "
            f"pid {os.getpid()} on box<b> does not load it")
        page.goto(server.base + "/#/tasks/plain")  # echo: no processor leaves it
        expect(page.locator("#task-state")).to_have_text("pending")
        expect(page.locator("#task-note")).to_be_hidden()
        offers.close()  # stopped; one starts, its tools not said yet
        starting = OwnerLease(spool.layout.owner_lock("box-77-cccc"))
        try:
            page.goto(server.base + "/#/tasks/napping")
            expect(page.locator("#task-note")).to_have_text(
                "no live processor offers tool 'nap', but the tools of pid 77 on box "
                "(starting) are not known yet: the job is left until they are "
                "(docs/scaling.md)")
        finally:
            starting.release()
    finally:
        lacks.close()
        offers.close()


def test_a_job_of_a_hung_processor_and_a_job_no_processor_runs_say_why(
        server: ServerThread, spool: Spool, page: sync_api.Page) -> None:
    """A processor that hangs (SIGSTOP, a stuck disk) holds its lock: its running job
    showed no note, or "until one starts, and requeues it", which a new processor does
    not do while the lock is held; and a pending job's view said nothing while no
    processor ran, the researcher's first question (QA)."""
    submit(spool, "stuck")
    running = claim(spool, "stuck")
    report(spool, running, None, "")  # where it runs: this process, as its processor
    hung = FakeOwner(spool, beat_age_s=120)
    submit(spool, "waiting")
    try:
        page.goto(server.base + "/#/tasks/stuck")
        expect(page.locator("#processor")).to_have_text("processor: down")
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#task-note")).to_contain_text(
            f"its processor (pid {os.getpid()} on test) has sent no heartbeat since")
        expect(page.locator("#task-note")).to_contain_text(
            "it still holds its lock, so no other processor takes this job until it ends")
        page.goto(server.base + "/#/tasks/waiting")
        expect(page.locator("#task-state")).to_have_text("pending")
        expect(page.locator("#task-note")).to_contain_text(
            "no processor is live: the processor (pid")
        hung.close()  # gone: its lock free
        submit(spool, "poke")  # a transition: the page reads the stats at once
        expect(page.locator("#task-note")).to_have_text(dashboard.NO_PROCESSOR_PENDING)
    finally:
        hung.close()
        running.close()
