"""The dashboard's note on a pending job a processor leaves to others, with real daemons.

A processor that does not load a job's tool leaves the job in ``pending/`` while another
live processor offers it, while one starts, or, none offering it, while its mark in
``offers/`` is under a restart's grace (processor.elsewhere).  The task view said "left
to the processors that offer tool X: pid N on H does not load it; it runs as their
workers come free" in all three: false in the last, where no processor offers the tool
and the job fails ``unknown_tool`` once the grace is over (QA h418).  It says why as
``spoolq show`` does (the stats document's ``left_why``).

Real ``python -m processor`` daemons (tests/processor's kit: ``ptools``, or no tools
module), the real ``python -m statusd``, the page in headless Chromium.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from statusd_browserkit import BROWSER_MARKS, chromium, own_page, sync_api
from statusd_daemonkit import statusd_daemon

from spool.transitions import Spool

if str(Path(__file__).resolve().parents[1] / "processor") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "processor"))  # daemonkit

from daemonkit import Daemon, drop, wait_for

pytestmark = BROWSER_MARKS
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    with own_page(browser) as tab:
        yield tab


def test_a_job_only_its_tools_mark_keeps_says_it_fails_once_the_grace_is_over(
        spool: Spool, tmp_path: Path, page: sync_api.Page) -> None:
    """The processor loading ``ptools`` stops cleanly (a rolling upgrade's restart); one
    loading no tools module starts, and a ``t_record`` job comes: no processor offers
    the tool, its mark (seconds old) keeps the job waiting."""
    root = spool.layout.root
    knows = Daemon(root, tmp_path / "knows.log").start()
    assert knows.stop() == 0
    lacks = Daemon(root, tmp_path / "lacks.log", SPOOL_TOOLS="").start()
    try:
        drop(root, "back", {"tool": "t_record", "params": {}})
        wait_for(lambda: lacks.status()["left_to_others"] == {"t_record": 1}, 30,
                 "the job left for the tool's return")
        with statusd_daemon(root) as (port, _):
            page.goto(f"http://127.0.0.1:{port}/#/tasks/back")
            expect(page.locator("#task-state")).to_have_text("pending")
            note = page.locator("#task-note")
            expect(note).to_contain_text("no live processor offers tool 't_record', but "
                                         "one did ")
            expect(note).to_contain_text("then fails unknown_tool")
            expect(note).not_to_contain_text("left to the processors that offer")
            expect(note).not_to_contain_text("as their workers come free")
    finally:
        assert lacks.stop() == 0
