"""Peers for ``bench/throughput.py``: the same workloads through Huey and uWSGI's
spooler, each when installed.

* **Huey** (``pip install huey``): a consumer process with ``JOB_NUM`` worker
  processes (``-k process``) on storage of its own, either SQLite (``SqliteHuey``'s
  defaults: WAL, no fsync, the ``never`` of spoolq) or files (``FileHuey``, a
  directory like a spool).  The client is this process, enqueueing through Huey's API
  (``bench/huey_app.py``).  Huey's workers poll the storage; the consumer runs with
  ``-d 0.001 -b 1``, a poll every millisecond when idle (its default is 0.1 s, backing
  off to 10 s), which is Huey at its lowest latency.  Completion is seen by polling
  the stored results.
* **uWSGI's spooler** (``pip install uwsgi``, which compiles it): a master with one
  HTTP worker and ``JOB_NUM`` spooler processes on a spool directory
  (``bench/uwsgi_app.py``).  A uWSGI application enqueues from inside uWSGI
  (``uwsgi.spool``), so this client asks the worker over HTTP on 127.0.0.1 to spool
  the tasks (one request for all of W1's, one per W2 job); each task appends a byte
  to a file whose size is the completion count.  The spooler deletes a task's file
  when it is done and keeps no result: less than a record per job.  Its scan period
  is set to 1 s, the least it takes (the default is 30 s): a spooler that misses the
  wake-up of a ``uwsgi.spool`` finds the task at its next scan.

Completion is polled every :data:`POLL_S` (W1, W3) or :data:`W2_POLL_S` (W2).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Protocol

from bench.bench_tools import BLAS_THREADS

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.002
W2_POLL_S = 0.0002
START_TIMEOUT_S = 60.0
_HUEY_CONSUMER = "from huey.bin.huey_consumer import consumer_main; consumer_main()"


class PeerError(Exception):
    """The peer could not be measured."""


class Peer(Protocol):
    label: str

    def __enter__(self) -> Peer: ...

    def __exit__(self, *_: object) -> None: ...

    def rate(self, n: int) -> float:
        """W1: ``n`` no-ops enqueued as fast as the client can, until all are done."""

    def round_trips(self, n: int) -> list[float]:
        """W2: one no-op at a time, enqueue-to-done seconds each."""

    def matmul_wall(self, n: int, size: int, reps: int) -> float:
        """W3: ``n`` matmul jobs enqueued at once, until all are done."""


def installed_peers(base: Path, job_num: int) -> list[Peer]:
    """A fresh peer per installed system and storage, each with a folder under ``base``."""
    peers: list[Peer] = []
    if importlib.util.find_spec("huey") is not None:
        peers += [HueyPeer(storage, base / f"huey-{storage}", job_num)
                  for storage in ("sqlite", "file")]
    if shutil.which("uwsgi") is not None:
        peers.append(UwsgiPeer(base / "uwsgi", job_num))
    return peers


def _env() -> dict[str, str]:
    """The peers' processes: single-threaded BLAS, the repository importable."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **dict.fromkeys(BLAS_THREADS, "1"), "PYTHONPATH": path}


def _stop(proc: subprocess.Popen[bytes] | None, signum: signal.Signals) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signum)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        return ""


class HueyPeer:
    """A Huey consumer on fresh storage under ``base``, and this process as its client."""

    def __init__(self, storage: str, base: Path, job_num: int) -> None:
        self.storage, self.base, self.job_num = storage, base, job_num
        self.label = f"huey-{storage}"
        where = base / ("huey.db" if storage == "sqlite" else "huey")
        self.spec = f"{storage}:{where}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.app: ModuleType | None = None

    def __enter__(self) -> HueyPeer:
        self.base.mkdir(parents=True, exist_ok=True)
        os.environ["SPOOLQ_BENCH_HUEY"] = self.spec
        import bench.huey_app  # noqa: PLC0415 - its instance is made from the environment

        self.app = importlib.reload(bench.huey_app)
        with open(self.base / "consumer.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _HUEY_CONSUMER, "bench.huey_app.huey", "-w",
                 str(self.job_num), "-k", "process", "-d", "0.001", "-b", "1", "-C", "-q"],
                env=_env(), cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            self._all_done(self._enqueue_noops(4 * self.job_num), START_TIMEOUT_S)  # warm
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        _stop(self.proc, signal.SIGINT)  # Huey's graceful stop
        shutil.rmtree(self.base, ignore_errors=True)

    def _app(self) -> ModuleType:
        assert self.app is not None, "not started"
        return self.app

    def _enqueue_noops(self, n: int) -> int:
        noop = self._app().noop
        for _ in range(n):
            noop()
        return n

    def _all_done(self, n: int, timeout_s: float = 300.0) -> None:
        """Wait until ``n`` results are stored, then drop them."""
        huey = self._app().huey
        deadline = time.perf_counter() + timeout_s
        while huey.result_count() < n:
            if time.perf_counter() > deadline or (self.proc and self.proc.poll() is not None):
                raise PeerError(f"{self.label}: {huey.result_count()} of {n} results; "
                                f"consumer log: {_log_tail(self.base / 'consumer.log')}")
            time.sleep(POLL_S)
        huey.storage.flush_results()

    def rate(self, n: int) -> float:
        t0 = time.perf_counter()
        self._all_done(self._enqueue_noops(n))
        return n / (time.perf_counter() - t0)

    def round_trips(self, n: int) -> list[float]:
        noop, out = self._app().noop, []
        for _ in range(n):
            t0 = time.perf_counter()
            result = noop()
            while result.get() is None:
                time.sleep(W2_POLL_S)
            out.append(time.perf_counter() - t0)
        return out

    def matmul_wall(self, n: int, size: int, reps: int) -> float:
        matmul = self._app().matmul
        t0 = time.perf_counter()
        for _ in range(n):
            matmul(size, reps)
        self._all_done(n)
        return time.perf_counter() - t0


class UwsgiPeer:
    """A uWSGI master with ``job_num`` spooler processes, driven over HTTP on 127.0.0.1."""

    label = "uwsgi-spool"

    def __init__(self, base: Path, job_num: int) -> None:
        self.base, self.job_num = base, job_num
        self.done = base / "done"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.finished = 0  # tasks counted as done so far

    def __enter__(self) -> UwsgiPeer:
        (self.base / "spool").mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:  # a free port, taken by uWSGI a moment later
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(self.base / "uwsgi.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["uwsgi", "--master", "--http11-socket", f"127.0.0.1:{port}", "--wsgi-file",
                 str(REPO / "bench" / "uwsgi_app.py"), "--need-app", "--processes", "1",
                 "--spooler", str(self.base / "spool"), "--spooler-processes",
                 str(self.job_num), "--spooler-frequency", "1", "--spooler-quiet",
                 "--disable-logging"],
                env={**_env(), "UWSGI_DONE": str(self.done)}, cwd=self.base,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            self._connect(port)
            self._wait(self._spool(4 * self.job_num), START_TIMEOUT_S)  # started and warm
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.conn is not None:
            self.conn.close()
        _stop(self.proc, signal.SIGINT)  # uWSGI's master: stop everything now
        shutil.rmtree(self.base, ignore_errors=True)

    def _connect(self, port: int) -> None:
        deadline = time.perf_counter() + START_TIMEOUT_S
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.connect()
            except OSError:
                if time.perf_counter() > deadline or (self.proc and self.proc.poll() is not None):
                    raise PeerError(f"uWSGI did not start: "
                                    f"{_log_tail(self.base / 'uwsgi.log')}") from None
                time.sleep(0.05)
            else:
                self.conn = conn
                return

    def _spool(self, n: int, query: str = "") -> int:
        assert self.conn is not None, "not started"
        try:
            response = self._get(f"/?n={n}{query}")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # uWSGI closes a kept-alive connection left idle (while the pool runs): the
            # request never reached it, so it goes again on a new connection.
            self.conn.close()
            response = self._get(f"/?n={n}{query}")
        if response.read() != b"ok":
            raise PeerError(f"uWSGI answered {response.status}")
        return n

    def _get(self, path: str) -> http.client.HTTPResponse:
        assert self.conn is not None
        self.conn.request("GET", path)
        return self.conn.getresponse()

    def _count(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            return self.done.stat().st_size
        return 0

    def _wait(self, n: int, timeout_s: float = 300.0, poll_s: float = POLL_S) -> None:
        target, deadline = self.finished + n, time.perf_counter() + timeout_s
        while self._count() < target:
            if time.perf_counter() > deadline or (self.proc and self.proc.poll() is not None):
                raise PeerError(f"{self.label}: {self._count() - self.finished} of {n} done; "
                                f"log: {_log_tail(self.base / 'uwsgi.log')}")
            time.sleep(poll_s)
        self.finished = target

    def rate(self, n: int) -> float:
        t0 = time.perf_counter()
        self._wait(self._spool(n))
        return n / (time.perf_counter() - t0)

    def round_trips(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._wait(self._spool(1), poll_s=W2_POLL_S)
            out.append(time.perf_counter() - t0)
        return out

    def matmul_wall(self, n: int, size: int, reps: int) -> float:
        t0 = time.perf_counter()
        self._wait(self._spool(n, f"&size={size}&reps={reps}"))
        return time.perf_counter() - t0
