"""The dashboard's browser in tests: Debian's headless Chromium, driven by Playwright.

A test module that imports this is skipped where Playwright is not installed, and marks
its tests with :data:`BROWSER_MARKS` (skipped without Chromium).  The page's own clocks
are read from ``app.js``, so tests run a page's clock on by them instead of waiting.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from statusdkit import SHARED_HELPERS

import statusd

CHROMIUM = "/usr/bin/chromium"
# Chromium 15x's headless mode is the whole browser: each new browser context (so each
# test) got a window whose omnibox popup is a WebUI (chrome://omnibox-popup.top-chrome/,
# and its AI-mode page) in a renderer of its own, ~0.5 CPU-s a test, more than the
# dashboard's own renderer.  No test opens the omnibox; the dashboard's page (canvas, SVG,
# WebSockets, timers, clocks, storage) is untouched.  Measured (QA h349, -n0, Chromium
# 156, Playwright 1.65, CPU of the whole Chromium tree): results+list+late_answers+
# big_table (44 tests) 80.6 and 78.9 CPU-s before, 48.7 and 48.4 after (-39%); all
# 159 browser tests (-n 2) 286 and 281 before, 142 and 133 after (-51%).
# Chromium keeps only the last --disable-features, so this one repeats Playwright's own
# list (chromium() checks that it still covers it) and adds the two.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion")
DISABLED_FEATURES = (*PLAYWRIGHT_DISABLED_FEATURES, "WebUIOmniboxPopup", "WebUIOmniboxAimPopup")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-features=" + ",".join(DISABLED_FEATURES)]
TIMEOUT_MS = 15_000
STATIC_DIR = Path(statusd.__file__).parent / "static"
APP_JS = (STATIC_DIR / "app.js").read_text()
# How often the page refreshes its stats, and how soon a list or task view that could
# not load tries again: tests run the page's clock on by these, not wait them out.
STATS_EVERY_MS, RETRY_MS = (int(re.search(rf"const {name} = (\d+);", APP_JS)[1])
                            for name in ("STATS_EVERY_MS", "RETRY_MS"))
# How often running durations count on, and a task without its stream is read again.
TICK_MS = int(re.search(r"setInterval\(tickRunning, (\d+)\)", APP_JS)[1])
REREAD_MS = int(re.search(r"setTimeout\(retry, (\d+)\)", APP_JS)[1])

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@contextlib.contextmanager
def chromium() -> Iterator[sync_api.Browser]:
    """A launched Chromium, closed after the block; the Playwright driver it talks to is
    a shared helper meanwhile (the no_leaks check leaves it be)."""
    me = psutil.Process()
    before = {c.pid for c in me.children()}
    with sync_api.sync_playwright() as pw:
        shared = {c.pid for c in me.children()} - before  # the Playwright driver
        SHARED_HELPERS.update(shared)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            _check_disabled_features(shared)
            yield browser
        finally:
            browser.close()
            SHARED_HELPERS.difference_update(shared)


def _check_disabled_features(driver_pids: set[int]) -> None:
    """Fail if the launched Chromium's last --disable-features (ours, the one it keeps)
    leaves out a feature of an earlier one (Playwright's, whose list a new Playwright may
    grow): update :data:`PLAYWRIGHT_DISABLED_FEATURES` then."""
    for pid in driver_pids:
        for proc in psutil.Process(pid).children(recursive=True):
            try:
                args = proc.cmdline()
            except psutil.Error:
                continue
            if "--remote-debugging-pipe" not in args or any(
                    a.startswith("--type=") for a in args):
                continue
            lists = [set(a.partition("=")[2].split(",")) for a in args
                     if a.startswith("--disable-features=")]
            dropped = set().union(*lists[:-1]) - lists[-1]
            assert not dropped, (f"Chromium keeps only the last --disable-features, ours: "
                                 f"add {sorted(dropped)} to PLAYWRIGHT_DISABLED_FEATURES")
            return


def watched(tab: sync_api.Page) -> list[str]:
    """``tab`` with the tests' timeout, and the list its JavaScript errors and the
    policy's refusals go to (a page with one fails its test)."""
    errors: list[str] = []
    tab.set_default_timeout(TIMEOUT_MS)
    # The page's timeout is not expect()'s, which kept Playwright's 5 s: a loaded host's
    # event took longer to show (QA).  A negative expect (not_to_..., to_be_hidden) true
    # already passes at once, so only an expect that fails waits the longer.
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # What statusd's Content-Security-Policy refused the page (a script, a style, a
    # socket it opens): logged, not thrown, so the page's part that needed it just fails.
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
           and "Content Security Policy" in msg.text else None)
    return errors


def held_back(page: sync_api.Page, url: str) -> list[sync_api.Route]:
    """Requests to ``url`` held back: the list their routes come into, for the test to
    answer (``fulfill``, ``fetch``) or let go (``continue_``) when it chooses."""
    held: list[sync_api.Route] = []

    def hold(route: sync_api.Route) -> None:  # Playwright takes no builtin (held.append)
        held.append(route)

    page.route(url, hold)
    return held


def held_heads(page: sync_api.Page, url: str) -> list[sync_api.Route]:
    """HEAD requests to ``url`` held back, as :func:`held_back` holds them (the page's look
    at whether a task is still there); its other requests go through."""
    held: list[sync_api.Route] = []

    def hold(route: sync_api.Route) -> None:
        if route.request.method == "HEAD":
            held.append(route)
        else:
            route.continue_()

    page.route(url, hold)
    return held


def goto_with_clock_paused(page: sync_api.Page, url: str) -> None:
    """Open ``url`` on ``page`` with its clock installed and paused a second on: the
    page's timers (its tries again, its stats refreshes) run only as the test runs them
    (``page.clock.run_for``)."""
    start = datetime.now(UTC)
    page.clock.install(time=start)
    page.clock.pause_at(start + timedelta(seconds=1))
    page.goto(url)


def refuse(route: sync_api.Route, status: int, kind: str, message: str) -> None:
    """Answer ``route`` as statusd refuses a request: ``status``, and its error body
    (``{"error": {"type": kind, "message": message}}``)."""
    route.fulfill(status=status, json={"error": {"type": kind, "message": message}})


@contextlib.contextmanager
def own_page(browser: sync_api.Browser, **options: Any) -> Iterator[sync_api.Page]:
    """A page in a browser context of its own (no cookie, storage, cache or clock of one
    test reaches another; ``options``: the context's, a ``locale`` say), :func:`watched`;
    its JavaScript errors fail the test."""
    context = browser.new_context(**options)
    try:
        tab = context.new_page()
        errors = watched(tab)
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
