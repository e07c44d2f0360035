"""Benchmark of spool-processor: throughput, latency and pool efficiency, each as a ratio
to a raw ``concurrent.futures.ProcessPoolExecutor(JOB_NUM)`` measured in the same run.

Run from the repository root: ``python -m bench.throughput [--job-num N] [--fsync MODE]
[--quick]`` (``--help`` for the rest).

Workloads (issue 3, item 8):

* **W1** ``--w1`` no-op jobs dropped as fast as this client can (write ``tmp/<name>``,
  ``rename`` to ``pending/<id>.json``), timed from the first drop until the last record
  is in ``done/``: jobs/s.  Twice: the built-in FAST ``echo`` and ``bench_noop``, a
  COMPUTE tool that returns at once.  Pool: that many ``noop()`` calls, submit all,
  wait all: calls/s.
* **W2** ``--w2`` FAST ``echo`` jobs, each dropped once the previous one is done:
  drop-to-done latency (from just before the ``tmp/`` write to the moment this client
  sees the record) p50/p95/p99.  Pool: ``submit(noop).result()`` round trips.
* **W3** ``--w3`` COMPUTE ``bench_matmul`` jobs of about 20 ms each (chained float64
  matrix products; the count per job is calibrated at the start of the run and passed
  as a param), all dropped at once.  Efficiency = N x single-job time / (JOB_NUM x
  wall time), the single-job time measured in this process; pool: the same function
  through the executor, its efficiency computed the same way.

Every (fsync mode, workload) gets a fresh spool under ``--dir`` (default: a temporary
folder in ``/tmp``; its filesystem type is printed) and a fresh ``python -m processor``
with ``JOB_NUM``, ``SPOOL_FSYNC`` and ``SPOOL_TOOLS=bench.bench_tools``, warmed with a
few jobs of each kind before the clock starts.  The pool (warmed once) is measured
just before and just after each daemon run and the ratio uses both, so each ratio
pairs neighbouring measurements on a noisy machine; both are printed.  W1 and W3 run
``--rounds`` times in one daemon (default 3), the pool measured between rounds; each
round has its own ratio, all are printed, and the verdict is on their median (one
sub-second round on a shared 2-core machine swings by 10 to 20 %).  Completion is
seen through inotify on ``done/`` and ``failed/`` (a blocking read: the watching costs
no polling; on a queue overflow it falls back to listing the folders).  BLAS runs
single-threaded everywhere, as the processor sets it for its workers.

``--profile DIR`` attaches ``py-spy record --subprocesses --format raw`` to each daemon
for the timed part (collapsed stacks in ``DIR``); ``--processor-cmd`` starts a variant
of the daemon instead (A/B a patch).  A variant from another tree must put that tree on
``PYTHONPATH`` as well as on its own ``sys.path``: the COMPUTE forkserver (Python 3.11
ignores the ``sys.path`` it is handed) builds its path from the environment, where this
benchmark puts the repository first, so its workers would run this repository's code
whatever the daemon runs.  Every process started here is stopped by its
pid.  Spools are removed at the end of the run (unless ``--keep``), not between
workloads: on an ext4 without a journal, thousands of freshly freed inodes slow every
file creation for a minute or more, and would tax the next workload.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import ctypes
import functools
import itertools
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from bench import bench_tools
from bench.bench_tools import BLAS_THREADS, timed
from bench.creates import probe_line, spread_subfolders
from bench.peers import Peer, PeerError, installed_peers
from processor.proctree import descendants
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

REPO = Path(__file__).resolve().parents[1]
MATMUL_SIZE = 256
TARGET_MS = 20.0
TIMEOUT_S = 300.0
W2_BUDGET_S = 30.0
# issue 3 item 8: with SPOOL_FSYNC=never and JOB_NUM=2, as ratios to the raw pool
TARGETS = {"w1": 0.45, "w2_p50": 3.5, "w2_p99": 6.0, "w3": 0.97}


class BenchError(Exception):
    """A workload could not be measured (a job failed, a daemon misbehaved)."""


# -- watching for records ------------------------------------------------------------

_IN_MOVED_TO, _IN_CREATE, _IN_Q_OVERFLOW = 0x80, 0x100, 0x4000
_EVENT = struct.Struct("iIII")
# The head of IN_Q_OVERFLOW's event: watch descriptor -1, then the mask.
_OVERFLOW = struct.pack("iI", -1, _IN_Q_OVERFLOW)
_TAIL = 4  # names waited for one by one at the end (Arrivals.wait)


class Arrivals:
    """Names created in, or renamed into, some folders: a blocking inotify reader."""

    def __init__(self, folders: list[Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd: int = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.folders: dict[int, Path] = {}
        for folder in folders:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(folder), _IN_MOVED_TO | _IN_CREATE)
            if wd < 0:
                os.close(self.fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
            self.folders[wd] = folder
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def parse(self, data: bytes) -> list[tuple[Path, str]]:
        """(folder, name) of each event in ``data``, read from the inotify descriptor."""
        pos, found = 0, []
        while pos < len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size:pos + _EVENT.size + length].rstrip(b"\0")
            pos += _EVENT.size + length
            if wd in self.folders and not mask & _IN_Q_OVERFLOW:
                found.append((self.folders[wd], os.fsdecode(name)))
        return found

    def close(self) -> None:
        os.close(self.fd)

    def wait(self, names: set[str], deadline: float) -> tuple[float, list[str]]:
        """Wait until every name is in a watched folder: (perf_counter then, failed ones).

        The watching is this client's CPU, on the CPUs the daemon under test needs, and
        the raw pool's ``cf.wait`` sleeps until its last result: so while more than
        :data:`_TAIL` names are to come, this sleeps through a quarter of the time they
        should take at the pace seen since the first arrival, then reads what came
        meanwhile (a wake-up for each record cost this client 112 to 128 us of CPU a W3
        job).  The pace is measured from the first arrival, not the start, over at
        least as many records as that first read found: the first record's time is a
        job's latency, not the rate, and records come in bursts (sixteen workers'
        at once every 20 ms: a pace from the start slept 0.55 s past the last).  The last
        ones are waited for one by one, so the time returned is when the last one came;
        a sleep can only end late if the rest came over four times faster than those
        since the first did, which would count against the daemon, never for it.
        """
        remaining, failed = set(names), []
        poll, now = self.poller.poll, time.perf_counter
        seen, first = 0, (0.0, 0)  # arrivals, and when the first read found some (how many)
        while remaining:
            left = deadline - now()
            if left <= 0:
                raise BenchError(f"{len(remaining)} of {len(names)} jobs unfinished")
            # Paced over at least as many as the first read found: records come in
            # bursts (a worker each), and one more record after a burst is no rate.
            if seen - first[1] >= max(first[1], _TAIL) and len(remaining) > _TAIL:
                pace = (now() - first[0]) / (seen - first[1])
                time.sleep(min(left, 0.25 * (len(remaining) - _TAIL) * pace))
                if not poll(0):
                    continue
            elif not poll(left * 1e3):
                continue
            for folder, name in self.read():
                if name in remaining:
                    remaining.discard(name)
                    seen += 1
                    if folder.name != "done":
                        failed.append(name)
            if seen and not first[1]:
                first = (now(), seen)
        return now(), failed

    def read(self) -> list[tuple[Path, str]]:
        """(folder, name) of every event there is to read (the descriptor is readable);
        on a queue overflow, every name in the folders (events were lost)."""
        data = os.read(self.fd, 1 << 18)
        while self.poller.poll(0):
            data += os.read(self.fd, 1 << 18)
        if _OVERFLOW in data:
            return [(f, n) for f in self.folders.values() for n in os.listdir(f)]
        return self.parse(data)


# -- the daemon ----------------------------------------------------------------------


@dataclass
class Daemon:
    """One ``python -m processor`` on a fresh spool under ``base``."""

    base: Path
    fsync: str
    job_num: int
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.base / "spool"

    def start(self) -> None:
        Mover(Layout(self.root), FsyncMode.NEVER).make_folders()
        env = {**os.environ, "SPOOL_DIR": str(self.root), "JOB_NUM": str(self.job_num),
               "SPOOL_FSYNC": self.fsync, "SPOOL_TOOLS": "bench.bench_tools",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO),
                                                          os.environ.get("PYTHONPATH")) if p)}
        env.update(dict.fromkeys(BLAS_THREADS, "1"))
        with open(self.base / "processor.log", "wb") as log:
            self.proc = subprocess.Popen(self.command, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.base)
        marker = f"-{self.proc.pid}-"
        deadline = time.monotonic() + 60
        while not any(marker in n and n.endswith(".json")
                      for n in os.listdir(self.root / "owners")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"processor did not start:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, wait; exit status 0 expected (SIGKILL after 60 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise BenchError("processor ignored SIGTERM for 60 s") from None
        if code != 0:
            raise BenchError(f"processor exited {code}:\n{self.log_tail()}")

    def cpu_s(self) -> tuple[float, float, float]:
        """CPU seconds so far: daemon user, daemon system, its descendants (workers) total."""
        assert self.proc is not None
        user, system = _cpu_of(self.proc.pid)
        others = sum(sum(_cpu_of(pid)) for pid in descendants(self.proc.pid))
        return user, system, others

    def wait_idle(self, window_s: float = 0.25, timeout_s: float = 30.0) -> None:
        """Until the daemon and its workers use at most one clock tick of CPU in
        ``window_s``.  Start-up's background imports (numpy, pandas, the quant tools) run
        on after the daemon is ready and after a short warm-up: measured 0.4 to 0.8 s
        past ready, 10 to 23 us a job of the daemon's CPU billed to the first round."""
        tick = 1 / os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + timeout_s
        before = sum(self.cpu_s())
        while time.monotonic() < deadline:
            time.sleep(window_s)
            now = sum(self.cpu_s())
            if now - before <= tick * 1.5:
                return
            before = now
        raise BenchError(f"processor still busy {timeout_s:.0f} s after its warm-up")

    def log_tail(self) -> str:
        return (self.base / "processor.log").read_text(errors="replace")[-3000:]

    def drop(self, job_id: str, data: bytes) -> None:
        """The safe drop: write ``tmp/<name>``, rename it to ``pending/<id>.json``."""
        tmp = f"{self.root}/tmp/{job_id}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, f"{self.root}/pending/{job_id}.json")

    def run_jobs(self, jobs: list[tuple[str, bytes]], arrivals: Arrivals
                 ) -> tuple[float, float]:
        """Drop all, wait all: seconds to the last record, and seconds the drops took."""
        t0 = time.perf_counter()
        for job_id, data in jobs:
            self.drop(job_id, data)
        dropped = time.perf_counter()
        t1, failed = arrivals.wait({f"{j}.json" for j, _ in jobs}, t0 + TIMEOUT_S)
        if failed:
            raise BenchError(f"{len(failed)} jobs failed, e.g. {self.root}/failed/{failed[0]}")
        return t1 - t0, dropped - t0

    def one_by_one(self, jobs: list[tuple[str, bytes]], arrivals: Arrivals,
                   budget_s: float) -> list[float]:
        """Drop each once the previous one is done; drop-to-record seconds of each.

        Stops early (with at least 20 samples) once ``budget_s`` is spent.
        """
        latencies: list[float] = []
        start = time.perf_counter()
        for job_id, data in jobs:
            t0 = time.perf_counter()
            if len(latencies) >= 20 and t0 - start > budget_s:
                break
            self.drop(job_id, data)
            t1, failed = arrivals.wait({f"{job_id}.json"}, t0 + TIMEOUT_S)
            if failed:
                raise BenchError(f"job {job_id} failed")
            latencies.append(t1 - t0)
        return latencies


def _cpu_of(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of one live process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def job(tool: str, params: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"tool": tool, "params": params or {}})


@contextmanager
def daemon_on(args: argparse.Namespace, fsync: str, label: str,
              warm: list[bytes]) -> Iterator[tuple[Daemon, Arrivals]]:
    """A started, warmed daemon on a fresh spool, and a watch on its terminal folders."""
    base = Path(tempfile.mkdtemp(prefix=f"{fsync}-{label}-", dir=args.run_dir))
    daemon = Daemon(base, fsync, args.job_num, args.processor_cmd)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        daemon.start()
        arrivals = Arrivals([daemon.root / "done", daemon.root / "failed"])
        try:
            daemon.run_jobs([(f"warm-{i}", data) for i, data in enumerate(warm)], arrivals)
            daemon.wait_idle()  # the warm-up's last writes and start-up's imports
            if args.profile is not None:
                profiler = start_profiler(args.profile / f"{fsync}-{label}.txt", daemon,
                                          args.profile_args)
            yield daemon, arrivals
        finally:
            arrivals.close()
            if profiler is not None:
                os.kill(profiler.pid, signal.SIGINT)
                profiler.wait(60)
    finally:
        daemon.stop()


def start_profiler(out: Path, daemon: Daemon, extra: list[str]) -> subprocess.Popen[bytes]:
    assert daemon.proc is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["py-spy", "record", "--pid", str(daemon.proc.pid), "--threads",
                             "--format", "raw", "-o", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the clock starts
    return proc


# -- the workloads -------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    fsync: str
    spoolq: str
    pool: str
    ratio: str
    target: str
    detail: str
    value: float = 0.0  # the figure compared with the peers: jobs/s, p50 ms, efficiency


def pct(samples: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in ms."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1e3, q[94] * 1e3, q[98] * 1e3


def targets_apply(args: argparse.Namespace, fsync: str) -> bool:
    return fsync == "never" and args.job_num == 2


def verdict(ok: bool, text: str, applies: bool) -> str:
    return f"{text} {'ok' if ok else 'MISS'}" if applies else "-"


def run_w1(args: argparse.Namespace, fsync: str, tool: str, pool: Pool) -> Row:
    n = args.w1
    params = (lambda i: {"message": i}) if tool == "echo" else (lambda i: None)
    pools, rates = [pool.rate(n)], []
    with daemon_on(args, fsync, f"w1-{tool}", [job(tool, params(0))] * (4 * args.job_num)
                   ) as (daemon, arrivals):
        dropping, client, spent = 0.0, 0.0, [0.0, 0.0, 0.0]  # daemon user, sys, workers
        for r in range(args.rounds):
            jobs = [(f"w1-{r}-{i:05d}", job(tool, params(i))) for i in range(n)]
            cpu0, daemon0 = time.process_time(), daemon.cpu_s()
            wall, drops = daemon.run_jobs(jobs, arrivals)
            # CPU of the round only: the pool's runs between rounds are left out
            client += time.process_time() - cpu0
            spent = [s + b - a for s, a, b in zip(spent, daemon0, daemon.cpu_s(), strict=True)]
            rates.append(n / wall)
            dropping += drops
            pools.append(pool.rate(n))
    user, system, workers = (s / (n * args.rounds) * 1e6 for s in spent)
    # each round against the pool just before and just after it (2n calls over both times)
    bases = [2 / (1 / a + 1 / b) for a, b in itertools.pairwise(pools)]
    ratio = statistics.median(r / b for r, b in zip(rates, bases, strict=True))
    label = "FAST echo" if tool == "echo" else "COMPUTE bench_noop"
    return Row(f"W1 no-op {label}", fsync, f"{statistics.median(rates):,.0f} jobs/s",
               f"{statistics.median(bases):,.0f} calls/s", f"{ratio:.2f}x",
               verdict(ratio >= TARGETS["w1"], f">= {TARGETS['w1']}x", targets_apply(args, fsync)),
               f"{n} x {args.rounds} rounds: {rounds_text(rates, bases, ',.0f')}; drops "
               f"{dropping / args.rounds:.2f} s/round; CPU per job: client "
               f"{client / (n * args.rounds) * 1e6:.0f} us, daemon {user:.0f} us user + "
               f"{system:.0f} us sys, workers {workers:.0f} us", statistics.median(rates))


def rounds_text(mine: list[float], bases: list[float], spec: str) -> str:
    """Each round: its figure, the pool's figure around it, and their ratio."""
    return ", ".join(f"{m:{spec}}/{b:{spec}} = {m / b:.2f}x"
                     for m, b in zip(mine, bases, strict=True))


def run_w2(args: argparse.Namespace, fsync: str, pool: Pool) -> Row:
    before = pool.round_trips(args.w2)
    with daemon_on(args, fsync, "w2", [job("echo", {"message": 0})] * 10) as (daemon, arrivals):
        lat = daemon.one_by_one([(f"w2-{i:04d}", job("echo", {"message": i}))
                                 for i in range(args.w2)], arrivals, W2_BUDGET_S)
    after = pool.round_trips(args.w2)
    mine, base = pct(lat), pct(before + after)
    r = [m / b for m, b in zip(mine, base, strict=True)]
    ok = r[0] <= TARGETS["w2_p50"] and r[2] <= TARGETS["w2_p99"]
    target = f"p50 <= {TARGETS['w2_p50']}x, p99 <= {TARGETS['w2_p99']}x"
    cut = "" if len(lat) == args.w2 else f" (stopped after {W2_BUDGET_S:g} s)"
    return Row("W2 FAST latency p50/p95/p99", fsync, "/".join(f"{v:.2f}" for v in mine) + " ms",
               "/".join(f"{v:.2f}" for v in base) + " ms", "/".join(f"{v:.1f}" for v in r) + "x",
               verdict(ok, target, targets_apply(args, fsync)),
               f"n={len(lat)}{cut}, max {max(lat) * 1e3:.1f} ms; pool p50 before/after "
               f"{pct(before)[0]:.2f}/{pct(after)[0]:.2f} ms", mine[0])


def run_w3(args: argparse.Namespace, fsync: str, cal: Calibration, pool: Pool) -> Row:
    n, params = args.w3, {"size": cal.size, "reps": cal.reps}
    cal = cal.remeasured()
    pools, walls = [pool.matmul_wall(n, cal)], []
    with daemon_on(args, fsync, "w3", [job("bench_matmul", params)] * args.job_num
                   ) as (daemon, arrivals):
        for r in range(args.rounds):
            wall, _ = daemon.run_jobs([(f"w3-{r}-{i:04d}", job("bench_matmul", params))
                                       for i in range(n)], arrivals)
            walls.append(wall)
            pools.append(pool.matmul_wall(n, cal))
    # Each round against the mean of the pool's walls just before and just after it.
    # Efficiency is n x single / (JOB_NUM x wall), so a ratio is the ratio of the walls.
    effs = [cal.efficiency(n, args.job_num, w) for w in walls]
    bases = [cal.efficiency(n, args.job_num, (a + b) / 2) for a, b in itertools.pairwise(pools)]
    ratio = statistics.median(e / b for e, b in zip(effs, bases, strict=True))
    return Row("W3 COMPUTE ~20 ms efficiency", fsync, f"{statistics.median(effs):.3f}",
               f"{statistics.median(bases):.3f}", f"{ratio:.3f}x",
               verdict(ratio >= TARGETS["w3"], f">= {TARGETS['w3']}x", targets_apply(args, fsync)),
               f"{n} x {cal.single_s * 1e3:.1f} ms x {args.rounds} rounds: "
               f"{rounds_text(effs, bases, '.3f')}; walls {fmt_list(walls)} s, pool "
               f"{fmt_list(pools)} s", statistics.median(effs))


def fmt_list(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


# -- the raw pool --------------------------------------------------------------------


@dataclass
class Calibration:
    """The W3 job (``reps`` products of ``size`` matrices) and its in-process time."""

    size: int
    reps: int
    single_s: float
    work: Callable[[int, int], float]

    def efficiency(self, n: int, job_num: int, wall_s: float) -> float:
        return n * self.single_s / (job_num * wall_s)

    def remeasured(self) -> Calibration:
        """The single-job time again, now (median of 9, after one warm-up)."""
        self.work(self.size, self.reps)
        return replace(self, single_s=statistics.median(
            timed(lambda: self.work(self.size, self.reps)) for _ in range(9)))


def calibrate(tools: ModuleType) -> Calibration:
    """Chained products of MATMUL_SIZE matrices adding up to about TARGET_MS here."""
    return Calibration(MATMUL_SIZE, tools.matmul_reps(MATMUL_SIZE, TARGET_MS), 0.0,
                       tools.matmul_work).remeasured()


class Pool:
    """The baseline: a raw ProcessPoolExecutor(JOB_NUM), warmed once."""

    def __init__(self, job_num: int, tools: ModuleType) -> None:
        self.tools = tools
        self.executor = cf.ProcessPoolExecutor(job_num)
        cf.wait([self.executor.submit(time.sleep, 0.05) for _ in range(4 * job_num)])

    def rate(self, n: int) -> float:
        noop = self.tools.noop
        t0 = time.perf_counter()
        cf.wait([self.executor.submit(noop) for _ in range(n)])
        return n / (time.perf_counter() - t0)

    def round_trips(self, n: int) -> list[float]:
        noop, out = self.tools.noop, []
        for i in range(n + 10):
            t0 = time.perf_counter()
            self.executor.submit(noop).result()
            if i >= 10:
                out.append(time.perf_counter() - t0)
        return out

    def matmul_wall(self, n: int, cal: Calibration) -> float:
        work = self.tools.matmul_work
        cf.wait([self.executor.submit(work, cal.size, cal.reps) for _ in range(2)])
        t0 = time.perf_counter()
        cf.wait([self.executor.submit(work, cal.size, cal.reps) for _ in range(n)])
        return time.perf_counter() - t0

    def close(self) -> None:
        self.executor.shutdown(wait=True)


# -- main ----------------------------------------------------------------------------


def _command(*argv: str) -> list[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True).stdout.splitlines()


def machine(where: Path) -> str:
    model = next((line.split(":", 1)[1].strip() for line in _command("lscpu")
                  if line.startswith("Model name:")), platform.processor() or "?")
    df = _command("df", "-T", str(where))
    fstype = df[1].split()[1] if len(df) > 1 else "?"
    return (f"{model}, {os.cpu_count()} CPUs; spools under {where} ({fstype}); "
            f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}")


def code_state() -> str:
    """The commit measured, and which daemon files differ from it (a shared checkout)."""
    head = _command("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    dirty = [line[3:] for line in _command("git", "-C", str(REPO), "status", "--porcelain",
                                           "--", "spool", "processor")]
    return (f"code: {head[0] if head else '?'}"
            + (f" + uncommitted {', '.join(dirty)}" if dirty else " (clean spool/, processor/)"))


_COLUMNS = [("workload", 30), ("fsync", 6), ("spoolq", 24), ("raw pool", 24), ("ratio", 16),
            ("target", 30), ("detail", 0)]
_PEER_COLUMNS = [("peer workload", 24), ("peer", 12), ("figure", 24), ("raw pool", 24),
                 ("ratio", 16), ("spoolq never / peer", 30), ("detail", 0)]


def print_rows(rows: list[Row], cols: list[tuple[str, int]] = _COLUMNS,
               header: bool = False) -> None:
    if header:
        print("  ".join(f"{name:<{w}}" for name, w in cols).rstrip(), flush=True)
    for row in rows:
        values = [row.workload, row.fsync, row.spoolq, row.pool, row.ratio, row.target,
                  row.detail]
        print("  ".join(f"{v:<{w}}" for v, (_, w) in zip(values, cols, strict=True)).rstrip(),
              flush=True)


def run_mode(args: argparse.Namespace, fsync: str, pool: Pool, cal: Calibration
             ) -> dict[str, float]:
    """Each workload's figure (jobs/s, p50 ms, efficiency), by workload name."""
    rows = []
    for run in ([functools.partial(run_w1, args, fsync, tool, pool)
                 for tool in ("echo", "bench_noop")]
                + [functools.partial(run_w2, args, fsync, pool),
                   functools.partial(run_w3, args, fsync, cal, pool)]):
        rows.append(run())
        print_rows(rows[-1:])
    return {row.workload: row.value for row in rows}


# -- the peers -----------------------------------------------------------------------


def run_peers(args: argparse.Namespace, pool: Pool, cal: Calibration,
              ours: dict[str, float]) -> None:
    """The same workloads through each installed peer, against the same pool."""
    peers = installed_peers(Path(tempfile.mkdtemp(prefix="peers-", dir=args.run_dir)),
                            args.job_num)
    if not peers:
        print("\npeers: none installed (pip install huey; pip install uwsgi)")
        return
    print()
    print_rows([], _PEER_COLUMNS, header=True)
    for peer in peers:
        with peer:
            print_rows([peer_w1(args, peer, pool, ours)], _PEER_COLUMNS)
            print_rows([peer_w2(args, peer, pool, ours)], _PEER_COLUMNS)
            print_rows([peer_w3(args, peer, pool, cal, ours)], _PEER_COLUMNS)


def peer_w1(args: argparse.Namespace, peer: Peer, pool: Pool, ours: dict[str, float]
            ) -> Row:
    pools, rates = [pool.rate(args.w1)], []
    for _ in range(args.rounds):
        rates.append(peer.rate(args.w1))
        pools.append(pool.rate(args.w1))
    bases = [2 / (1 / a + 1 / b) for a, b in itertools.pairwise(pools)]
    ratio = statistics.median(r / b for r, b in zip(rates, bases, strict=True))
    rate = statistics.median(rates)
    fast, compute = (ours.get(f"W1 no-op {label}", 0.0)
                     for label in ("FAST echo", "COMPUTE bench_noop"))
    return Row("W1 no-op", peer.label, f"{rate:,.0f} jobs/s",
               f"{statistics.median(bases):,.0f} calls/s", f"{ratio:.2f}x",
               f"FAST {fast / rate:.2f}x, COMPUTE {compute / rate:.2f}x",
               f"{args.w1} x {args.rounds} rounds: {rounds_text(rates, bases, ',.0f')}")


def peer_w2(args: argparse.Namespace, peer: Peer, pool: Pool, ours: dict[str, float]
            ) -> Row:
    before = pool.round_trips(args.w2)
    lat = peer.round_trips(args.w2)
    after = pool.round_trips(args.w2)
    theirs, base = pct(lat), pct(before + after)
    mine = ours.get("W2 FAST latency p50/p95/p99", 0.0)
    return Row("W2 latency p50/p95/p99", peer.label,
               "/".join(f"{v:.2f}" for v in theirs) + " ms",
               "/".join(f"{v:.2f}" for v in base) + " ms",
               "/".join(f"{t / b:.1f}" for t, b in zip(theirs, base, strict=True)) + "x",
               f"p50 {mine / theirs[0]:.2f}x", f"n={len(lat)}, max {max(lat) * 1e3:.1f} ms")


def peer_w3(args: argparse.Namespace, peer: Peer, pool: Pool, cal: Calibration,
            ours: dict[str, float]) -> Row:
    cal = cal.remeasured()
    pools, walls = [pool.matmul_wall(args.w3, cal)], []
    for _ in range(args.rounds):
        walls.append(peer.matmul_wall(args.w3, cal.size, cal.reps))
        pools.append(pool.matmul_wall(args.w3, cal))
    effs = [cal.efficiency(args.w3, args.job_num, w) for w in walls]
    bases = [cal.efficiency(args.w3, args.job_num, (a + b) / 2)
             for a, b in itertools.pairwise(pools)]
    ratio = statistics.median(e / b for e, b in zip(effs, bases, strict=True))
    eff = statistics.median(effs)
    mine = ours.get("W3 COMPUTE ~20 ms efficiency", 0.0)
    return Row("W3 ~20 ms efficiency", peer.label, f"{eff:.3f}",
               f"{statistics.median(bases):.3f}", f"{ratio:.3f}x", f"{mine / eff:.3f}x",
               f"{args.w3} x {cal.single_s * 1e3:.1f} ms x {args.rounds} rounds: "
               f"{rounds_text(effs, bases, '.3f')}; walls {fmt_list(walls)} s")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-num", type=int, default=2, help="JOB_NUM (default 2)")
    parser.add_argument("--fsync", action="append", choices=[m.value for m in FsyncMode],
                        help="SPOOL_FSYNC, repeatable (default: never, always, batch)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few jobs, fsync=never unless --fsync")
    parser.add_argument("--w1", type=int, help="W1 jobs (default 2000, quick 100)")
    parser.add_argument("--w2", type=int, help="W2 jobs (default 200, quick 20)")
    parser.add_argument("--w3", type=int, help="W3 jobs (default 100, quick 8)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="W1 and W3 rounds, each between two pool measurements; the "
                        "verdict is on the median ratio (default 3, quick 1)")
    parser.add_argument("--dir", type=Path, default=None, help="where spools go (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep spools and processor logs")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                        help="the same workloads through Huey (SQLite and file storage) "
                        "and uWSGI's spooler, those installed (default: on, off with "
                        "--quick)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="attach py-spy to each daemon; raw stacks into this folder")
    parser.add_argument("--profile-args", type=shlex.split,
                        default=["--rate", "250", "--subprocesses"],
                        help="more py-spy record options (default: '--rate 250 --subprocesses')")
    parser.add_argument("--processor-cmd", type=shlex.split,
                        default=[sys.executable, "-m", "processor"],
                        help="how to start the daemon, to compare a variant (default: "
                        "%(prog)s's python -m processor); a variant from another tree puts "
                        "it on PYTHONPATH too, for its COMPUTE workers")
    args = parser.parse_args(argv)
    sizes = (100, 20, 8) if args.quick else (2000, 200, 100)
    args.w1, args.w2, args.w3 = (v or d for v, d in zip((args.w1, args.w2, args.w3), sizes,
                                                         strict=True))
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.fsync = args.fsync or (["never"] if args.quick else ["never", "always", "batch"])
    if args.peers is None:
        args.peers = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if "numpy" in sys.modules:  # its BLAS threads are set: the raw pool would oversubscribe
        print("bench.throughput: error: numpy was imported before the BLAS thread count "
              "could be pinned", file=sys.stderr)
        return 1
    for name in BLAS_THREADS:  # before numpy loads: one core per job, as the processor does
        os.environ[name] = "1"

    where = args.dir or Path(tempfile.gettempdir())
    cal = calibrate(bench_tools)
    args.run_dir = Path(tempfile.mkdtemp(prefix="spoolq-bench-", dir=args.dir))
    # Each workload's spool in a block group away from earlier runs' deletions: see
    # bench/creates.py (they made a client's drops cost 4 to 6 times the CPU).
    spread = spread_subfolders(args.run_dir)
    print(f"spoolq throughput: JOB_NUM={args.job_num}; {machine(where)}")
    print(probe_line(args.run_dir) + ("; each spool placed as a top-level folder (+T)"
                                      if spread else ""))
    print(code_state())
    print(f"sizes: W1 {args.w1} no-op jobs, W2 {args.w2} sequential echo jobs, W3 {args.w3} "
          f"jobs of {cal.reps} x {cal.size}^2 matmul = {cal.single_s * 1e3:.1f} ms single-job "
          "in-process (measured again before each W3); targets apply to fsync=never, "
          "JOB_NUM=2\n", flush=True)
    pool = Pool(args.job_num, bench_tools)
    try:
        print_rows([], header=True)
        ours: dict[str, float] = {}
        for fsync in args.fsync:
            figures = run_mode(args, fsync, pool, cal)
            if fsync == "never":
                ours = figures
        if args.peers and not ours:
            print("\npeers: skipped (they are compared with fsync=never, which did not run)")
        elif args.peers:
            run_peers(args, pool, cal, ours)
    except (BenchError, PeerError) as exc:
        print(f"bench.throughput: error: {exc}", file=sys.stderr)
        return 1
    finally:
        pool.close()
        if args.keep:
            print(f"spools and processor logs kept in {args.run_dir}")
        else:
            shutil.rmtree(args.run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
