"""The dashboard behind a reverse proxy that serves statusd at a sub-path.

Ops put the dashboard on a shared host as ``https://host/spoolq/``, with nginx's
``location /spoolq/ { proxy_pass http://127.0.0.1:8000/; }``: a request for
``/spoolq/<rest>`` reaches statusd as ``/<rest>``, and nothing else does.  A page
that asks for ``/static/app.css`` or ``/api/v1/stats`` misses the prefix there.

The proxy here is a small aiohttp app in a thread of the test (nginx is not part of
the suite): it forwards HTTP and WebSocket under ``/spoolq/``, answers 404 outside it,
and keeps every path it was asked for.  statusd is the real daemon, as a subprocess,
and the page is loaded in a real headless Chromium through the proxy only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import psutil
import pytest
from aiohttp import web
from statusd_browserkit import BROWSER_MARKS, chromium, sync_api, watched
from statusd_daemonkit import statusd_daemon
from statusdkit import AppThread, claim, finish, report, run_job, submit, wait_for

from spool.transitions import Spool

PREFIX = "/spoolq/"
# Hop-by-hop headers (RFC 9110 section 7.6.1), and those aiohttp sets itself for the
# body it sends: never forwarded as they came.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "content-length"})
"""``Host`` is passed on, as operations.md's nginx snippet does (``proxy_set_header Host
$host``), and the WebSocket's ``Origin`` too, as nginx does: statusd judges them
(statusd.origins)."""

SESSION = web.AppKey("session", aiohttp.ClientSession)

pytestmark = BROWSER_MARKS



class SubpathProxy(AppThread):
    """``/spoolq/<rest>`` forwarded to ``upstream`` + ``/<rest>``, HTTP and WebSocket, on
    127.0.0.1 in a thread and loop of its own; 404 for any other path.  ``paths``: every
    path (with its query) asked for, in order; ``ws_paths``: those that were WebSockets."""

    name = "subpath-proxy"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.paths: list[str] = []
        self.ws_paths: list[str] = []
        super().__init__()

    def outside(self) -> list[str]:
        return [path for path in self.paths if not path.startswith(PREFIX)]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.cleanup_ctx.append(_session)
        app.router.add_route("*", "/{rest:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        session = request.app[SESSION]
        self.paths.append(request.raw_path)
        if not request.raw_path.startswith(PREFIX):
            return web.Response(status=404, text="not under the proxy's prefix\n")
        url = self.upstream + request.raw_path.removeprefix(PREFIX.rstrip("/"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.ws_paths.append(request.raw_path)
            return await _forward_websocket(request, session, url, {
                k: v for k, v in headers.items() if k.lower() in ("host", "origin")})
        async with session.request(request.method, url, headers=headers,
                                   data=await request.read(),
                                   allow_redirects=False) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=body, headers=kept)


async def _session(app: web.Application) -> AsyncIterator[None]:
    """The proxy's client session, for its app's life.  Bytes as they come (a gzip
    answer stays gzip, with its Content-Encoding)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app[SESSION] = session
        yield


async def _forward_websocket(request: web.Request, session: aiohttp.ClientSession,
                             url: str, headers: dict[str, str]) -> web.WebSocketResponse:
    """Both ways, text as text, until either end closes; its close code is passed on."""
    client = web.WebSocketResponse()
    await client.prepare(request)
    async with session.ws_connect(url, headers=headers) as upstream:

        async def down() -> None:
            async for msg in upstream:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await client.send_str(msg.data)
            await client.close(code=upstream.close_code or aiohttp.WSCloseCode.OK)

        async def up() -> None:
            async for msg in client:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
            await upstream.close()

        async with asyncio.TaskGroup() as group:
            group.create_task(down())
            group.create_task(up())
    return client


def _connections_to(port: int) -> list[Any]:
    """Sockets on ``port`` whose other end is not in this process (the browser)."""
    conns = psutil.Process().net_connections(kind="tcp")
    ours = {c.laddr for c in conns}
    return [c for c in conns if c.laddr and c.laddr.port == port and c.raddr
            and c.raddr not in ours]


@pytest.fixture
def proxied(spool: Spool) -> Iterator[SubpathProxy]:
    """statusd as a real daemon on the spool, and the proxy in front of it."""
    with statusd_daemon(spool.layout.root) as (port, _proc):
        proxy = SubpathProxy(f"http://127.0.0.1:{port}").start()
        try:
            yield proxy
        finally:
            proxy.stop()


@pytest.fixture
def page(proxied: SubpathProxy) -> Iterator[sync_api.Page]:
    with chromium() as browser:
        tab = browser.new_page()
        errors = watched(tab)
        yield tab
    wait_for(lambda: not _connections_to(proxied.port),
             what="the browser's connections to the proxy to close")
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_the_dashboard_works_behind_a_proxy_at_a_sub_path(
        spool: Spool, proxied: SubpathProxy, page: sync_api.Page) -> None:
    expect = sync_api.expect
    run_job(spool, "done-before", tool="echo")
    page.goto(proxied.base + PREFIX)

    # The stats render, and the list is live.
    expect(page.locator("#count-done")).to_have_text("1")
    expect(page.locator("#count-pending")).to_have_text("0")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator('#tasks tr[data-id="done-before"]')).to_be_visible()

    # A job submitted while the page is open shows in the list.
    submit(spool, "job-1")
    expect(page.locator('#tasks tr[data-id="job-1"][data-state="pending"]')).to_be_visible()
    expect(page.locator("#count-pending")).to_have_text("1")

    # Opened while it runs, its progress comes live over its task stream.
    running = claim(spool, "job-1")
    report(spool, running, 0.25, "a quarter")
    page.locator('#tasks tr[data-id="job-1"] a').click()
    expect(page.locator("#task-state")).to_have_text("running")
    expect(page.locator("#task-progress .text")).to_have_text("25% a quarter")
    report(spool, running, 0.75, "three quarters")
    expect(page.locator("#task-progress .text")).to_have_text("75% three quarters")
    assert f"{PREFIX}api/v1/ws/tasks/job-1" in proxied.ws_paths, proxied.ws_paths

    # A result too long to print whole links to the whole record, under the prefix.
    finish(spool, running, {"text": "x" * 120_000})
    expect(page.locator("#task-state")).to_have_text("done")
    whole = page.get_by_role("link", name="the whole record")
    assert whole.evaluate("(a) => a.href") == f"{proxied.base}{PREFIX}api/v1/tasks/job-1"
    assert proxied.outside() == [], "the page asked for paths outside the prefix"
    whole.click()
    page.wait_for_url(f"{proxied.base}{PREFIX}api/v1/tasks/job-1")
    record = orjson.loads(page.locator("body").inner_text())
    assert (record["id"], record["state"]) == ("job-1", "done")
    # The record is JSON, no page with an icon of its own: Chromium asks for the host's
    # /favicon.ico for it, which is the browser's doing and no URL of the dashboard's.
    assert set(proxied.outside()) <= {"/favicon.ico"}, proxied.outside()


def test_the_proxy_in_this_test_keeps_to_its_prefix(proxied: SubpathProxy) -> None:
    """The proxy itself: statusd's answers under the prefix, 404 outside it."""

    async def get(path: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(proxied.base + path) as r:
            return r.status, await r.read()

    status, body = asyncio.run(get(f"{PREFIX}api/v1/stats"))
    assert status == 200 and "counts" in orjson.loads(body)
    assert asyncio.run(get("/api/v1/stats"))[0] == 404
    assert proxied.outside() == ["/api/v1/stats"]
