"""Benchmark of spool-statusd's start on a large spool: how soon it answers, and how soon
its answers are complete.

Run from the repository root: ``python -m bench.statusd_startup`` (``--help`` for sizes).

Set-up: the spool is :func:`bench.statusd.fill_spool`'s (90% done, 6% failed, 4%
pending records), written once and synced; statusd runs as a real ``python -m statusd``
pinned to core 0, this process to core 1, as in :mod:`bench.statusd`.  statusd binds
port 0 (a port picked here and let go could be taken before statusd bound it); once its
"listening" line has told the port, one poller per path asks it every ``POLL_S`` on a
fresh connection (a refused connection is tried again) until it has the answer it waits
for; each time is from the spawn:

* ``/healthz``: its first answer of any status (statusd answers at all), and its
  first 200 (statusd says it is ready);
* ``/api/v1/stats``: its first 200 (a real answer), and its first whose ``counts`` add
  up to ``--records`` (the counts are whole);
* ``/api/v1/tasks?limit=1``: its first 200 whose row is the newest record (the list,
  which needs the whole index): the first complete answer.

The "listening" and "indexed" log lines are timed as they are read.  ``--runs`` starts
are made one after another; each figure is reported as the median and the range.
Every process started here is stopped by its pid; the spool is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.statusd import CLIENT_CORE, SERVER_CORE, fill_spool, make_spool
from statusd.listening import SAID

POLL_S = 0.01
GIVE_UP_S = 120.0
INDEXED = re.compile(r"indexed (\d+) records in ([\d.]+) s")


class Start:
    """One statusd start: the spawn, its log lines timed as they come."""

    def __init__(self, root: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "STATUSD_"))}
        env.update(SPOOL_DIR=str(root), SPOOL_FSYNC="never", STATUSD_PORT="0",
                   STATUSD_HOST="127.0.0.1", SPOOL_LOG_LEVEL="INFO")
        self.lines: dict[str, float] = {}
        self.port: int | None = None
        self.listening = threading.Event()  # set once the port is known (or never will be)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "statusd"], env=env,
                                     cwd=root.parent, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        os.sched_setaffinity(self.proc.pid, {SERVER_CORE})
        self._reader = threading.Thread(target=self._read, name="statusd-stderr")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                now = time.monotonic() - self.started
                if found := SAID.search(line):
                    self.lines.setdefault("listening", now)
                    if self.port is None:
                        self.port = int(found["port"])
                        self.listening.set()
                if INDEXED.search(line):
                    self.lines.setdefault("indexed", now)
        finally:
            self.listening.set()  # statusd's stderr ended: no port to wait for

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


async def _poll(session: aiohttp.ClientSession, url: str, started: float,
                wanted: dict[str, Callable[[int, Any], bool]]) -> dict[str, float]:
    """Ask ``url`` until each of ``wanted`` (name: test of status and JSON body) has held
    once; the time since ``started`` of each."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + GIVE_UP_S
    while len(found) < len(wanted) and time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                body = orjson.loads(await resp.read()) if resp.content_type.endswith(
                    "json") else None
                now = time.monotonic() - started
                for name, test in wanted.items():
                    if name not in found and test(resp.status, body):
                        found[name] = now
        except (TimeoutError, aiohttp.ClientConnectionError):
            pass
        await asyncio.sleep(POLL_S)
    return found


async def _measure(base: str, started: float, records: int, newest: str) -> dict[str, float]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        parts = await asyncio.gather(
            _poll(session, f"{base}/healthz", started, {
                "healthz: first answer": lambda status, body: True,
                "healthz: 200": lambda status, body: status == 200}),
            _poll(session, f"{base}/api/v1/stats", started, {
                "stats: first 200": lambda status, body: status == 200,
                "stats: whole counts": lambda status, body: status == 200
                and sum(body["counts"].values()) == records}),
            _poll(session, f"{base}/api/v1/tasks?limit=1", started, {
                "list: first 200": lambda status, body: status == 200
                and [t["id"] for t in body["tasks"]] == [newest]}))
    return {name: at for part in parts for name, at in part.items()}


def one_start(root: Path, records: int, newest: str) -> dict[str, float]:
    """The figures of one start (seconds from the spawn)."""
    start = Start(root)
    try:
        start.listening.wait(GIVE_UP_S)
        figures = {} if start.port is None else asyncio.run(_measure(
            f"http://127.0.0.1:{start.port}", start.started, records, newest))
    finally:
        code = start.stop()
    figures.update({f"log: {name}": at for name, at in start.lines.items()})
    if code != 0:
        print(f"  (statusd exited {code})")
    return figures


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.statusd_startup",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    return parser.parse_args()


def main() -> int:
    args = _parse()
    os.sched_setaffinity(0, {CLIENT_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="bench-statusd-start-", dir=args.dir))
    try:
        layout = make_spool(workdir / "spool")
        began = time.monotonic()
        ids = fill_spool(layout, args.records)
        os.sync()
        print(f"statusd start-up: {args.records} records (written in "
              f"{time.monotonic() - began:.1f} s), {args.runs} runs, server on core "
              f"{SERVER_CORE}, pollers on core {CLIENT_CORE}, Python {sys.version.split()[0]}")
        runs = [one_start(layout.root, args.records, ids[-1]) for _ in range(args.runs)]
        names = sorted({name for run in runs for name in run},
                       key=lambda name: statistics.median(r.get(name, GIVE_UP_S) for r in runs))
        for name in names:
            values = [run[name] for run in runs if name in run]
            missing = len(runs) - len(values)
            print(f"  {name:<22} median {statistics.median(values):6.2f} s  "
                  f"(min {min(values):.2f}, max {max(values):.2f})"
                  + (f", not seen in {missing} runs" if missing else ""))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
