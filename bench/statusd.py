"""Benchmark of spool-statusd: start-up and REST latency on a large spool, requests per
second for one record, and WebSocket broadcast delay to 1,000 clients (with and
without one stalled client).

Run from the repository root: ``python -m bench.statusd`` (``--help`` for sizes).

Set-up: statusd runs as a real ``python -m statusd`` subprocess pinned to core 0
(``os.sched_setaffinity``); this process, the load generator, pins itself to
core 1.  The HTTP client is aiohttp with keep-alive connections.

Phases:

1. *large spool*: ``--records`` records written straight to ``done/``,
   ``failed/`` and ``pending/`` (untimed); start-up is the time from spawning
   statusd to its "listening" line (interpreter start; it listens while its index
   loads) and to its "indexed" line (the full index load: ``bench.statusd_startup``
   times what clients see meanwhile);
   then the median and p99 latency of the first page of ``/api/v1/tasks``
   (all, and ``state=pending``) and of ``/api/v1/stats``, one request at a time.
2. *requests/s*: ``GET /api/v1/tasks/{id}`` for random ids of that spool from
   ``--connections`` concurrent keep-alive connections for ``--seconds``.
3. *broadcast*: a fresh small spool, ``--clients`` WebSocket clients on
   ``/api/v1/ws/events``; ``--messages`` jobs are submitted one by one
   (``--interval`` apart) and each client timestamps each transition.  Delay =
   receive time minus the moment just before the submit's rename, so it spans
   inotify, the feed, the index update, the fan-out and the client's own
   scheduling (1,000 clients share one Python process: an upper bound).
4. the same with one more client that completes the handshake and never reads.

Phases 3 and 4 each get a fresh statusd: run back to back on one server, the
second one pays for a full garbage collection of the first one's 1,000 closed
connections (aiohttp objects hold reference cycles), a ~100 ms pause that says
nothing about stalled clients.

Every spool lives under ``--dir`` (default: a temporary folder) and is removed
afterwards; every process started here is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from statusd.listening import SAID

INDEXED = re.compile(r"indexed (\d+) records in ([\d.]+) s")
SERVER_CORE, CLIENT_CORE = 0, 1


# -- the spool and the server -----------------------------------------------------------


def make_spool(root: Path) -> Layout:
    layout = Layout(root)
    Mover(layout, FsyncMode.NEVER).make_folders()
    return layout


def fill_spool(layout: Layout, records: int) -> list[str]:
    """Write ``records`` records (90% done, 6% failed, 4% pending) as the spool would."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    done = {"tool": "echo", "params": {"message": "m"}, "priority": 0, "attempts": 1,
            "state": "done", "duration_s": 0.012, "host": "bench", "pid": 1,
            "result": {"message": "m"}}
    failed = {**done, "state": "failed", "result": None,
              "error": {"type": "tool_error", "message": "boom"}}
    del failed["result"]
    pending = {"tool": "sleep", "params": {"seconds": 1.0}, "priority": 0, "attempts": 0}
    ids = []
    for n in range(records):
        job_id = f"bench-{n:07d}"
        when = base + timedelta(seconds=n)
        kind = n % 50
        if kind < 3:
            state, body = "pending", {**pending, "id": job_id, "submitted_at": when}
        elif kind < 6:
            state, body = "failed", {**failed, "id": job_id, "submitted_at": when,
                                     "finished_at": when + timedelta(seconds=1)}
        else:
            state, body = "done", {**done, "id": job_id, "submitted_at": when,
                                   "started_at": when, "finished_at": when + timedelta(seconds=1)}
        path = layout.root / state / f"{job_id}.json"
        path.write_bytes(orjson.dumps(body, option=orjson.OPT_UTC_Z))
        ids.append(job_id)
    return ids


class Server:
    """``python -m statusd`` pinned to one core; stderr read line by line."""

    def __init__(self, root: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "STATUSD_"))}
        env.update(SPOOL_DIR=str(root), SPOOL_FSYNC="never", STATUSD_PORT="0",
                   STATUSD_HOST="127.0.0.1", SPOOL_LOG_LEVEL="INFO")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "statusd"], env=env,
                                     cwd=root.parent, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        os.sched_setaffinity(self.proc.pid, {SERVER_CORE})
        self.base = ""
        self.index_s = float("nan")
        self.listening_s = float("nan")
        assert self.proc.stderr is not None
        # It listens before its index is loaded (statusd.indexing): both lines, in either
        # order, before any phase is timed.
        for line in self.proc.stderr:
            if (m := INDEXED.search(line)) is not None:
                self.index_s = float(m.group(2))
            if (m := SAID.search(line)) is not None:
                self.base = m["url"]
                self.listening_s = time.monotonic() - self.started
            if self.base and not math.isnan(self.index_s):
                break
        if not self.base:
            raise RuntimeError("statusd did not start")
        self.startup_s = time.monotonic() - self.started

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


@contextmanager
def running(root: Path) -> Iterator[Server]:
    server = Server(root)
    try:
        yield server
    finally:
        code = server.stop()
        if code != 0:
            print(f"  (statusd exited {code})")


# -- phases -------------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


async def latencies(base: str, rounds: int) -> dict[str, list[float]]:
    paths = {"first page": "/api/v1/tasks", "pending page": "/api/v1/tasks?state=pending",
             "stats": "/api/v1/stats"}
    out: dict[str, list[float]] = {name: [] for name in paths}
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            for name, path in paths.items():
                began = time.perf_counter()
                async with session.get(base + path) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                out[name].append(time.perf_counter() - began)
    return out


async def requests_per_second(base: str, ids: list[str], connections: int,
                              seconds: float) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=connections)
    done = errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + seconds

        async def worker(seed: int) -> None:
            nonlocal done, errors
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                async with session.get(f"{base}/api/v1/tasks/{rng.choice(ids)}") as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1

        began = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = time.monotonic() - began
    return done / elapsed, errors


async def _until(done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _stalled(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/v1/ws/events HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock


async def broadcast(base: str, client: Client, *, clients: int, messages: int,
                    interval: float, stalled: bool) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delays: list[float] = []
    stuck = _stalled(base) if stalled else None
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for start in range(0, clients, 100):  # the listen backlog is 128
            batch = [session.ws_connect(f"{base}/api/v1/ws/events", autoping=True)
                     for _ in range(start, min(clients, start + 100))]
            sockets.extend(await asyncio.gather(*batch))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                now = time.monotonic()
                data = orjson.loads(msg.data)
                if data.get("event") == "transition" and data["id"] in sent:
                    delays.append(now - sent[data["id"]])

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        want = clients + (1 if stalled else 0)
        async with session.get(f"{base}/api/v1/stats") as resp:
            seen = (await resp.json())["statusd"]["ws_clients"]
        assert seen == want, f"{seen} clients connected, expected {want}"
        gc.disable()  # the load generator's own pauses are not the server's
        try:
            for n in range(-1, messages):  # n = -1: a warm-up broadcast, not counted
                job_id = f"bcast-{stalled:d}-{n + 1:04d}-{os.urandom(3).hex()}"
                sent[job_id] = time.monotonic()
                client.submit(Job(tool="echo", params={"message": n}), job_id)
                await asyncio.sleep(interval)
                if n < 0:
                    await _until(lambda: len(delays) >= clients)
                    delays.clear()
            await _until(lambda: len(delays) >= clients * messages)
        finally:
            gc.enable()
        async with session.get(f"{base}/api/v1/stats") as resp:
            dropped = (await resp.json())["statusd"]["ws_dropped"]
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    if stuck is not None:
        stuck.close()
    return {"delivered": len(delays), "expected": clients * messages, "delays": delays,
            "dropped": dropped}


# -- main -------------------------------------------------------------------------------


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.statusd", description=__doc__
                                     .split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=50, help="latency samples per path")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--dir", type=Path, default=None)
    return parser.parse_args()


def main() -> int:
    args = _parse()
    os.sched_setaffinity(0, {CLIENT_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="bench-statusd-", dir=args.dir))
    try:
        print(f"statusd benchmark: {os.cpu_count()} cores, server on core {SERVER_CORE}, "
              f"load generator on core {CLIENT_CORE}, Python {sys.version.split()[0]}")
        big = make_spool(workdir / "big")
        began = time.monotonic()
        ids = fill_spool(big, args.records)
        os.sync()  # start-up is measured on a settled spool, not during writeback
        print(f"wrote {args.records} records in {time.monotonic() - began:.1f} s")
        with running(big.root) as server:
            print(f"1. start-up on {args.records} records: {server.listening_s:.2f} s to "
                  f"listening, {server.startup_s:.2f} s to indexed (index load "
                  f"{server.index_s:.2f} s)")
            for name, values in asyncio.run(latencies(server.base, args.rounds)).items():
                print(f"   {name}: {_ms(values)}")
            rps, errors = asyncio.run(requests_per_second(server.base, ids, args.connections,
                                                          args.seconds))
            print(f"2. GET /api/v1/tasks/{{id}}: {rps:,.0f} requests/s "
                  f"({args.connections} keep-alive connections, {args.seconds:.0f} s, "
                  f"{errors} errors)")
        for label, stalled in (("3. broadcast", False), ("4. with one stalled client", True)):
            small = make_spool(workdir / f"small-{stalled:d}")
            client = Client(small, Mover(small, FsyncMode.NEVER))
            with running(small.root) as server:  # a fresh statusd per phase (see docstring)
                out = asyncio.run(broadcast(server.base, client, clients=args.clients,
                                            messages=args.messages, interval=args.interval,
                                            stalled=stalled))
            print(f"{label}: {args.clients} clients x {args.messages} transitions, "
                  f"{out['delivered']}/{out['expected']} delivered, "
                  f"{_ms(out['delays'])}, max {max(out['delays']) * 1000:.1f} ms, "
                  f"dropped {out['dropped']}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
