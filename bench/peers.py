"""Peers for ``bench/throughput.py``: the same workloads through Huey, when installed.

Huey (``pip install huey``, in the ``bench`` extra) is the nearest peer that needs no
server: a consumer process with ``JOB_NUM`` worker processes (``-k process``) on
storage of its own, either SQLite (``SqliteHuey``'s defaults: WAL, no fsync, the
``never`` of spoolq) or files (``FileHuey``, a directory like a spool).  The client is
this process, enqueueing through Huey's API (``bench/huey_app.py``).  Huey's workers
poll the storage; the consumer runs with ``-d 0.001 -b 1``, a poll every millisecond
when idle (its default is 0.1 s, backing off to 10 s), which is Huey at its lowest
latency.  Completion is seen by polling the stored results every
:data:`POLL_S` (W1, W3) or the one result (W2), as a Huey client does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from bench.bench_tools import BLAS_THREADS

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.002
W2_POLL_S = 0.0002
STORAGES = ("sqlite", "file")
_CONSUMER = ("from huey.bin.huey_consumer import consumer_main; consumer_main()")


class PeerError(Exception):
    """The peer could not be measured."""


def huey_installed() -> bool:
    return importlib.util.find_spec("huey") is not None


class HueyPeer:
    """A running Huey consumer on fresh storage under ``base``, and the client's API."""

    def __init__(self, storage: str, base: Path, job_num: int) -> None:
        self.storage, self.base, self.job_num = storage, base, job_num
        where = base / ("huey.db" if storage == "sqlite" else "huey")
        self.spec = f"{storage}:{where}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.app: ModuleType | None = None

    def __enter__(self) -> HueyPeer:
        self.base.mkdir(parents=True, exist_ok=True)
        os.environ["SPOOLQ_BENCH_HUEY"] = self.spec
        import bench.huey_app  # noqa: PLC0415 - its instance is made from the environment

        self.app = importlib.reload(bench.huey_app)
        env = {**os.environ, **dict.fromkeys(BLAS_THREADS, "1"),
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO),
                                                          os.environ.get("PYTHONPATH")) if p)}
        with open(self.base / "consumer.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CONSUMER, "bench.huey_app.huey", "-w",
                 str(self.job_num), "-k", "process", "-d", "0.001", "-b", "1", "-C", "-q"],
                env=env, cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            self.all_done(self.enqueue_noops(4 * self.job_num), 60.0)  # started and warm
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # Huey's graceful stop
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def label(self) -> str:
        return f"huey {self.storage}"

    def _app(self) -> ModuleType:
        assert self.app is not None, "not started"
        return self.app

    def enqueue_noops(self, n: int) -> int:
        noop = self._app().noop
        for _ in range(n):
            noop()
        return n

    def all_done(self, n: int, timeout_s: float = 300.0) -> None:
        """Wait until ``n`` results are stored, then drop them."""
        huey = self._app().huey
        deadline = time.perf_counter() + timeout_s
        while huey.result_count() < n:
            if time.perf_counter() > deadline or (self.proc and self.proc.poll() is not None):
                raise PeerError(f"{self.label}: {huey.result_count()} of {n} results "
                                f"(log: {(self.base / 'consumer.log').read_text()[-2000:]})")
            time.sleep(POLL_S)
        huey.storage.flush_results()

    def rate(self, n: int) -> float:
        """W1: ``n`` no-ops enqueued as fast as this client can, until all results are in."""
        t0 = time.perf_counter()
        self.all_done(self.enqueue_noops(n))
        return n / (time.perf_counter() - t0)

    def round_trips(self, n: int) -> list[float]:
        """W2: one no-op at a time, enqueue-to-result seconds each."""
        noop, out = self._app().noop, []
        for _ in range(n):
            t0 = time.perf_counter()
            result = noop()
            while result.get() is None:
                time.sleep(W2_POLL_S)
            out.append(time.perf_counter() - t0)
        return out

    def matmul_wall(self, n: int, size: int, reps: int) -> float:
        """W3: ``n`` matmul jobs enqueued at once, until all results are in."""
        matmul = self._app().matmul
        t0 = time.perf_counter()
        for _ in range(n):
            matmul(size, reps)
        self.all_done(n)
        return time.perf_counter() - t0
