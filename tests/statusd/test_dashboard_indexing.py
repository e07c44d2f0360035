"""The dashboard while statusd loads its index at start (statusd/indexing.py).

statusd listens before its index is in: the page loads, its list and task view are
refused 503 ``indexing`` (after a wait) and its events socket's handshake too, while the
stats are the start scan's.  The page says so, without an error: "statusd is indexing
the spool (read 0 of 4 records, ...): the list shows once it is done", the counts
shown, a task view "indexing" with the same word; once the index is in, the list, the
task and the live updates come without a reload (the events socket at once, not at its
backoff's next try).  The real ``python -m statusd`` with its records' read held until
the test releases it; the page in headless Chromium.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from statusd_browserkit import BROWSER_MARKS, chromium, own_page, sync_api
from statusd_daemonkit import held_statusd
from statusdkit import run_job, submit

from spool.transitions import Spool

pytestmark = BROWSER_MARKS
WAIT_S = 0.5
"""statusd's wait for the index before its 503 here (4 s as shipped)."""
INDEXING = re.compile(r"^statusd is indexing the spool \(read 0 of 4 records, [\d.]+ s in\): ")


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    with own_page(browser) as tab:
        yield tab


@contextlib.contextmanager
def _held(spool: Spool, release: Path) -> Iterator[str]:
    """statusd's base URL, its load of three records and a pending job held at the reads
    until ``release`` is made."""
    for n in range(3):
        run_job(spool, f"done-{n}", {"n": n})
    submit(spool, "waiting")
    with held_statusd(spool.layout.root, release, "read", WAIT_S) as (base, _):
        yield base


def test_the_list_says_statusd_is_indexing_then_shows_once_it_is_done(
        spool: Spool, tmp_path: Path, page: sync_api.Page) -> None:
    expect = sync_api.expect
    release = tmp_path / "release"
    with _held(spool, release) as base:
        page.goto(f"{base}/")
        note = page.locator("#list-error")
        expect(note).to_have_text(re.compile(INDEXING.pattern + "the list shows once it is "
                                             "done$"))
        expect(note).to_have_class("muted")  # a word, not an error
        expect(page.locator("#count-done")).to_have_text("3")  # the start scan's counts
        expect(page.locator("#count-pending")).to_have_text("1")
        expect(page.locator("#live")).to_have_text("offline")
        release.touch()
        expect(page.locator("#tasks tbody tr")).to_have_count(4)
        expect(note).to_be_hidden()
        # The live updates at once, not at the events socket's next try (up to 10 s on).
        expect(page.locator("#live")).to_have_text("live", timeout=3000)


def test_a_task_view_says_statusd_is_indexing_then_shows_the_task(
        spool: Spool, tmp_path: Path, page: sync_api.Page) -> None:
    expect = sync_api.expect
    release = tmp_path / "release"
    with _held(spool, release) as base:
        page.goto(f"{base}/#/tasks/done-1")
        state, note = page.locator("#task-state"), page.locator("#task-note")
        expect(state).to_have_text("indexing")
        expect(note).to_have_text(re.compile(INDEXING.pattern + "the task shows once it is "
                                             "done$"))
        expect(page.locator("#task-error")).to_be_hidden()
        # Asked again meanwhile, the view keeps saying so (it went blank during each ask).
        page.wait_for_timeout(WAIT_S * 1000 * 3)
        expect(state).to_have_text("indexing")
        expect(note).to_be_visible()
        release.touch()
        expect(state).to_have_text("done")
        expect(note).to_be_hidden()
        expect(page.locator("#task-result pre")).to_contain_text('"n": 1')
