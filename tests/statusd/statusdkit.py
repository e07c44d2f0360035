"""Helpers for the statusd tests: a real server on 127.0.0.1, HTTP and WebSocket
clients, and a stand-in for the processor that moves jobs with spool.transitions.

Not a test module; the tests import it by name (pytest's prepend import mode puts
this folder on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self

import aiohttp
import orjson
from aiohttp import web

from spool.claim import Claim
from spool.errors import ErrorType
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import ErrorInfo, Job, OwnerStatus, Progress, Record
from spool.settings import FsyncMode, Settings, load_settings
from spool.states import JobState
from spool.transitions import Spool
from statusd import ws
from statusd.__main__ import STOP_S
from statusd.app import create_app
from statusd.items import Item
from statusd.protocol import AppRunner
from statusd.services import SERVICES, Services

TOKEN = "s3cret-token"
STATS_URL = re.compile(r"/api/v1/stats(\?[^/]*)?$")
"""What a page route takes for the dashboard's stats reads (it asks ``?partial=1``)."""
REPO = Path(__file__).resolve().parents[2]
# Pids of processes a module shares between its tests (the dashboard's browser): they,
# and what they start, are not a test's leak (conftest's no_leaks skips them).
SHARED_HELPERS: set[int] = set()


def make_spool(root: Path) -> Spool:
    layout = Layout(root)
    mover = Mover(layout, FsyncMode.NEVER)
    mover.make_folders()
    return Spool(layout, mover)


def settings_for(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"spool_dir": root, "fsync": "never", "statusd_token": TOKEN,
                              "scan_s": 5.0, "statusd_port": 0}
    values.update(overrides)
    return load_settings(**values)


class AppThread:
    """An aiohttp app (``make_app``) served by AppRunner on 127.0.0.1, in a thread and
    event loop of its own, until :meth:`stop`."""

    name = "test-app"
    runner_kwargs: dict[str, Any] = {}
    """More of :class:`statusd.protocol.AppRunner`'s arguments (``max_connections``)."""

    def __init__(self) -> None:
        self.port = 0
        self.app: web.Application | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        # A daemon thread: a server that does not stop fails its test (stop() below),
        # and must not also keep the whole pytest run from exiting.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def make_app(self) -> web.Application:
        raise NotImplementedError

    async def serving(self) -> None:
        """What :meth:`start` waits for once the app listens (nothing here)."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"{self.name} did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.app = self.make_app()
        # The daemon's runner (parse errors answered in the JSON shape, logged in one
        # line), and its bound on requests in flight at a stop: aiohttp's own 60 s
        # (twice, with the cancel) would outlast stop()'s 20 s wait.
        runner = AppRunner(self.app, handle_signals=False, access_log=None,
                           shutdown_timeout=STOP_S, **self.runner_kwargs)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            await self.serving()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        if self._thread.is_alive():
            assert self.loop is not None
            stuck = [t.get_stack() for t in asyncio.all_tasks(self.loop)]
            raise AssertionError(f"{self.name} did not stop; tasks: {stuck}")


class ServerThread(AppThread):
    """create_app(settings) served on 127.0.0.1 in its own thread and loop."""

    name = "statusd-test-server"

    def __init__(self, settings: Settings, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app_kwargs = app_kwargs
        super().__init__()

    def make_app(self) -> web.Application:
        return create_app(self.settings, **self.app_kwargs)

    async def serving(self) -> None:
        """statusd listens before its index is loaded (statusd.indexing): the tests here
        start from a whole index, as a statusd of a small spool is a moment after it
        listens."""
        await self.services.tracker.loading.wait()

    @property
    def services(self) -> Services:
        assert self.app is not None
        return self.app[SERVICES]

    def indexed_state(self, job_id: str) -> JobState | None:
        """The state statusd's index holds for ``job_id`` (None: not indexed): what the
        list, the counts and a task stream's snapshot go by, where a GET made while the
        index applies a batch reads the disk."""
        item = self.indexed(job_id)
        return None if item is None else item.state

    def indexed(self, job_id: str) -> Item | None:
        """What statusd's index holds for ``job_id`` (see :meth:`indexed_state`)."""
        item: Item | None = self.in_loop(lambda: self.services.index.get(job_id))
        return item

    def ws_clients(self) -> int:
        """How many WebSocket clients statusd's hub holds now."""
        clients: int = self.in_loop(lambda: self.services.hub.clients)
        return clients

    def in_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (to read its state safely)."""
        assert self.loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def stalled_ws_client(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing more (a
    4 KiB receive buffer, so what statusd sends it backs up soon)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def request(base: str, method: str, path: str, body: Any = None, *,
            token: str | None = None, headers: dict[str, str] | None = None,
            raw: bytes | None = None, chunks: list[bytes] | None = None) -> Reply:
    """One HTTP request sent exactly as given (the path is not normalised).

    ``chunks`` sends the body with ``Transfer-Encoding: chunked`` (no Content-Length).
    """
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = dict(headers or {})
    data: bytes | Iterator[bytes] | None = raw
    if chunks is not None:
        data = iter(chunks)
    if body is not None:
        data = orjson.dumps(body)
        sent.setdefault("Content-Type", "application/json")
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=data, headers=sent, encode_chunked=chunks is not None)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             pause: Callable[[], None] = lambda: time.sleep(0.02)) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        pause()
    raise AssertionError(f"timed out waiting for {what}")


class _Pauses(Protocol):
    def wait_for_timeout(self, timeout: float) -> None: ...


def wait_in_page(page: _Pauses, predicate: Callable[[], Any], timeout: float = 10.0,
                 what: str = "condition") -> Any:
    """`wait_for` for what a Playwright handler (a route, a web socket's) sets: the sync API
    runs those handlers only inside its own calls, so a `time.sleep` loop waits for good
    on a request that came in after the last call returned."""
    return wait_for(predicate, timeout, what, pause=lambda: page.wait_for_timeout(20))


@dataclass
class WsLog:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


async def ws_collect(url: str, *, until: Callable[[list[dict[str, Any]]], bool] | None = None,
                     timeout: float = 15.0, on_open: Callable[[], None] | None = None) -> WsLog:
    """Read a WebSocket until the server closes it (or ``until`` holds)."""
    log = WsLog()
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        if on_open is not None:
            await asyncio.get_running_loop().run_in_executor(None, on_open)
        async with asyncio.timeout(timeout):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    log.messages.append(orjson.loads(msg.data))
                    if until is not None and until(log.messages):
                        break
        log.close_code = ws.close_code
    return log


# -- a stand-in for the processor ---------------------------------------------------------


def submit(spool: Spool, job_id: str, tool: str = "echo", **fields: Any) -> None:
    job = Job.model_validate({"tool": tool, "params": {"message": job_id}, **fields})
    spool.submit(job, job_id)


def claim(spool: Spool, job_id: str) -> Claim:
    taken = spool.claim(job_id)
    assert taken is not None, f"could not claim {job_id}"
    return taken


def report(spool: Spool, claim_: Claim, fraction: float | None, message: str, *,
           started_at: datetime | None = None, owner: str | None = None) -> None:
    """Write the progress sidecar as the processor does (``started_at``: the run's start,
    by default now; ``owner``: the processor's owner id, none by default)."""
    now = datetime.now(UTC)
    progress = Progress(fraction=fraction, message=message, updated_at=now,
                        started_at=started_at or now, attempt=1, host="test", pid=os.getpid(),
                        owner=owner)
    spool.mover.publish(spool.layout.progress_file(claim_.job_id),
                        progress.model_dump_json().encode(), durable=False)


def finish(spool: Spool, claim_: Claim, result: Any = None, *,
           error: tuple[ErrorType, str] | None = None, duration_s: float = 0.25) -> Record:
    job = Job.model_validate_json(claim_.data)
    state = JobState.FAILED if error else JobState.DONE
    now = datetime.now(UTC)  # started ``duration_s`` before, as a processor's record says
    record = record_from_job(job, claim_.job_id, state, claim_.mtime_ns).model_copy(update={
        "result": result, "attempts": job.attempts + 1,
        "started_at": now - timedelta(seconds=duration_s),
        "finished_at": now, "duration_s": duration_s, "host": "test",
        "pid": os.getpid(),
        "error": ErrorInfo(type=error[0], message=error[1]) if error else None})
    if error:
        spool.fail(claim_, record)
    else:
        spool.complete(claim_, record)
    return record


def run_job(spool: Spool, job_id: str, result: Any = None, tool: str = "echo",
            error: tuple[ErrorType, str] | None = None) -> Record:
    submit(spool, job_id, tool)
    return finish(spool, claim(spool, job_id), result, error=error)


def equity_result(symbols: tuple[str, ...] = ("AAA",), bars: int = 300) -> dict[str, Any]:
    """A run_backtest-shaped result (QUANT.md) with deterministic equity curves."""
    out: dict[str, Any] = {}
    for n, symbol in enumerate(symbols):
        curve = []
        equity = 100_000.0
        for t in range(bars):
            equity *= 1 + 0.002 * ((t * (n + 3)) % 7 - 3) / 3
            curve.append([f"2020-01-{1 + t % 28:02d}T00:00:00", round(equity, 2)])
        out[symbol] = {"total_return": equity / 100_000 - 1, "bars": bars,
                       "final_equity": equity, "equity_curve": curve}
    return {"strategy": "ma_crossover", "params": {"fast": 10, "slow": 50},
            "symbols": out, "summary": {"symbols": len(symbols)}}


class FakeOwner:
    """A live processor as statusd sees it: a held owner lock and a status file."""

    def __init__(self, spool: Spool, owner: str = "proc-test", busy: int = 1,
                 tools: list[dict[str, Any]] | None = None, *, host: str = "test",
                 beat_age_s: float = 0.0, **fields: Any) -> None:
        """``beat_age_s``: how long ago its last heartbeat was (past 60 s: a hung one);
        ``fields``: more of its status file's fields (``compute_room``, ``io_trouble``)."""
        layout = spool.layout
        self.lease = OwnerLease(layout.owner_lock(owner))
        now = datetime.now(UTC)
        beat = now - timedelta(seconds=beat_age_s)
        status = OwnerStatus(owner=owner, pid=os.getpid(), host=host, version="0",
                             started_at=beat, heartbeat_at=beat, job_num=2, busy_workers=busy,
                             tools=[{"name": "echo"}, {"name": "sleep"}] if tools is None
                             else tools, **fields)
        spool.mover.publish(layout.owner_status(owner), status.model_dump_json().encode())

    def close(self) -> None:
        self.lease.release()


def unsent_bytes(srv: ServerThread) -> list[int]:
    """The bytes each WebSocket's transport holds that the kernel has not taken yet (the
    transport is aiohttp's, not public: read here, on the server's loop, only)."""

    def sizes() -> list[int]:
        transports = [sock._req.transport if sock._req else None
                      for sock in srv.app[ws.SOCKETS]] if srv.app else []
        return [t.get_write_buffer_size() for t in transports if t is not None]

    found: list[int] = srv.in_loop(sizes)
    return found
