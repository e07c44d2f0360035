"""The dashboard while statusd cannot read the processors' state (its stats answer 503).

The real ``python -m statusd`` beside a live processor, the page in headless Chromium;
strace fails statusd's opens of the processor's status file (EACCES) for a while.  The
page says the processor's state is not known ("processor: ?", never "down"), keeps the
counts, says why on the processor's tooltip and in the task view's note, and says
"up" again once statusd reads the file.  The tooltip said the 503's message twice
("... (HTTP 503: why): HTTP 503: why"); it says it once.  statusd answers all the while
(only the processors' state is unknown): the page no longer calls it unavailable, which
a running task's stream took back at each message.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from statusd_browserkit import BROWSER_MARKS, STATS_EVERY_MS, chromium, own_page, sync_api
from statusd_daemonkit import failing, statusd_daemon
from statusdkit import FakeOwner, claim, report, submit

from spool.transitions import Spool

WHY = "cannot tell whether a processor is alive: cannot read processor proc-test's status file"

pytestmark = [
    *BROWSER_MARKS,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    """One Chromium for the module's tests (its start was about 1 s of each, 2 s under
    load), as test_statusd_dashboard's."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    """A page in a context of its own: no cookie, storage, cache or clock of one test
    reaches the other."""
    with own_page(browser) as tab:
        yield tab


@contextlib.contextmanager
def _status_file_denied(page: sync_api.Page, proc: subprocess.Popen[bytes], spool: Spool,
                        tmp_path: Path) -> Iterator[None]:
    """Inside the block statusd may not open the processor's status file, and the page,
    asked for the stats again, says ``processor: ?``; after it, asked again, "up", its
    note gone."""
    processor, note = page.locator("#processor"), page.locator("#processor-note")
    strace = shutil.which("strace")
    assert strace is not None  # the module is skipped without it
    with failing(strace, proc.pid, [spool.layout.owner_status("proc-test")], ["openat"],
                 tmp_path / "strace.err", error="EACCES"):
        page.clock.fast_forward(STATS_EVERY_MS)
        sync_api.expect(processor).to_have_text("processor: ?")
        # Why, beside it: in its tooltip only, no keyboard or screen reader had it.
        sync_api.expect(note).to_have_text(re.compile(r"^processor liveness unknown \(.+\)$"))
        yield
    page.clock.fast_forward(STATS_EVERY_MS)
    sync_api.expect(processor).to_have_text("processor: up")
    sync_api.expect(note).to_be_hidden()
    sync_api.expect(page.locator("#task-note")).to_be_hidden()


def test_the_dashboard_says_the_processor_is_unknown_then_up_again(
        spool: Spool, tmp_path: Path, page: sync_api.Page) -> None:
    expect = sync_api.expect
    submit(spool, "j")
    owner = FakeOwner(spool)
    try:
        with statusd_daemon(spool.layout.root) as (port, proc):
            page.clock.install()
            page.goto(f"http://127.0.0.1:{port}/#/tasks/j")
            processor, note = page.locator("#processor"), page.locator("#task-note")
            expect(processor).to_have_text("processor: up")
            expect(page.locator("#count-pending")).to_have_text("1")
            with _status_file_denied(page, proc, spool, tmp_path):
                title = processor.get_attribute("title") or ""
                assert title.startswith("processor liveness unknown ("), title
                assert title.count(WHY) == 1, title  # said once, not twice
                expect(note).to_contain_text(f"({WHY}: Permission denied")
                # The counts move on meanwhile: they stayed as last seen, a queue growing
                # or draining unseen for as long as the status file stayed unread.
                submit(spool, "k")
                page.clock.fast_forward(STATS_EVERY_MS)  # it keeps asking
                expect(page.locator("#count-pending")).to_have_text("2")
                expect(processor).to_have_text("processor: ?")
                expect(page.locator("#workers")).to_have_text("")
    finally:
        owner.close()


def test_a_running_task_streamed_meanwhile_keeps_saying_why_the_processor_is_unknown(
        spool: Spool, tmp_path: Path, page: sync_api.Page) -> None:
    """statusd answers (its task stream is live) and only the processors' state is unknown,
    for as long as a status file it may not open stays so.  The page called statusd
    unavailable and the task "as last seen": each progress message of the running task
    took that back (the note went, the tooltip stayed stale), the next stats' 503 said it
    again with a new "since", so the note flickered beside a running backtest."""
    expect = sync_api.expect
    submit(spool, "j")
    running = claim(spool, "j")
    report(spool, running, 0.1, "first")
    owner = FakeOwner(spool)
    try:
        with statusd_daemon(spool.layout.root) as (port, proc):
            page.clock.install()
            page.goto(f"http://127.0.0.1:{port}/#/tasks/j")
            processor, note = page.locator("#processor"), page.locator("#task-note")
            progress = page.locator("#task-progress .text")
            expect(processor).to_have_text("processor: up")
            expect(progress).to_contain_text("first")
            with _status_file_denied(page, proc, spool, tmp_path):
                expect(note).to_contain_text(WHY)
                report(spool, running, 0.5, "second")  # streamed: statusd answers
                expect(progress).to_contain_text("second")
                expect(note).to_contain_text(WHY)
                assert "unavailable" not in (note.text_content() or ""), note.text_content()
                expect(processor).to_have_text("processor: ?")
                title = processor.get_attribute("title") or ""
                assert title.count(WHY) == 1, title
    finally:
        owner.close()
        running.close()
