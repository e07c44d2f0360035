"""Benchmark of what COMPUTE tools' output costs the FAST lane: drop-to-done latency of
FAST ``echo`` jobs while COMPUTE tools flood their stdout, as a ratio to the same
latency with no flood, measured in the same run.

Run from the repository root: ``python -m bench.output_flood [--jobs N] [--job-num N]
[--flood-s S]`` (``--help`` for the rest).

A COMPUTE worker's fds 1 and 2 are pipes the daemon's loop reads, and each line is
formatted there as a log line (:mod:`processor.stdio_pipes`, about 3 us a line), while
FAST jobs must run at once whatever COMPUTE jobs do (DESIGN sections 3 and 4).  Three
daemons, each a fresh ``python -m processor`` on a fresh spool (``JOB_NUM``, default 2,
``SPOOL_FSYNC=never``, ``SPOOL_TOOLS=bench.bench_tools``), warmed with a few jobs:

* **quiet**: no flood, the baseline;
* **print**: ``JOB_NUM`` ``bench_flood`` jobs calling ``print`` in a loop;
* **write**: ``JOB_NUM`` ``bench_flood`` jobs writing 64 KiB of 32-byte lines per
  ``os.write``.

Once the floods run, ``--jobs`` FAST ``echo`` jobs (default 200), each dropped once the
previous one's record is seen (through inotify, as W2 of ``bench/throughput.py``):
p50/p95/p99 of drop-to-record, and each as a ratio to quiet's.  The floods go on until
``--flood-s`` seconds (default 5) have passed since they started, at least until the
last echo; printed too: the daemon's CPU share over that time (``/proc/PID/stat``), the
lines per second the floods got logged, and whether the log holds each of their lines
(every ``spoolq.output`` line of theirs is counted).  Spools and logs are removed at
the end (unless ``--keep``); every process started here is stopped by its pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.bench_tools import BLAS_THREADS
from bench.throughput import Arrivals, BenchError, Daemon, job, pct

HOW = ("quiet", "print", "write")
WARM = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.output_flood",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="FAST echo jobs (default 200)")
    parser.add_argument("--job-num", type=int, default=2, help="JOB_NUM (default 2)")
    parser.add_argument("--flood-s", type=float, default=5.0,
                        help="seconds each flood runs at least (default 5)")
    parser.add_argument("--dir", type=Path, default=None, help="where spools go (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep spools and processor logs")
    args = parser.parse_args(argv)
    for name in BLAS_THREADS:
        os.environ[name] = "1"
    run_dir = Path(tempfile.mkdtemp(prefix="spoolq-flood-", dir=args.dir))
    print(f"spoolq output flood: JOB_NUM={args.job_num}, {args.jobs} sequential FAST echo "
          f"jobs, floods of {args.flood_s:g} s at least; {os.cpu_count()} CPUs")
    print(f"{'flood':6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  {'ratio p50/p95/p99':19} "
          f"{'daemon CPU':>10} {'lines/s logged':>15}  all logged", flush=True)
    try:
        quiet: tuple[float, float, float] | None = None
        for how in HOW:
            figures, cpu, rate, whole = measure(args, run_dir, how)
            quiet = quiet or figures
            ratio = "/".join(f"{mine / base:.1f}" for mine, base in zip(figures, quiet,
                                                                       strict=True))
            print(f"{how:6} {figures[0]:8.2f} {figures[1]:8.2f} {figures[2]:8.2f}  "
                  f"{ratio:19} {cpu:9.0f}% {rate:15,.0f}  {whole}", flush=True)
    except BenchError as exc:
        print(f"bench.output_flood: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"spools and processor logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def measure(args: argparse.Namespace, run_dir: Path, how: str
            ) -> tuple[tuple[float, float, float], float, float, str]:
    """One daemon: (p50, p95, p99 ms), its CPU %, flood lines/s logged, all logged?"""
    base = Path(tempfile.mkdtemp(prefix=f"{how}-", dir=run_dir))
    daemon = Daemon(base, "never", args.job_num, [sys.executable, "-m", "processor"])
    floods = [f"flood-{i}" for i in range(args.job_num)] if how != "quiet" else []
    stop_file = base / "stop-flooding"
    try:
        daemon.start()
        arrivals = Arrivals([daemon.root / "done", daemon.root / "failed"])
        try:
            daemon.run_jobs([(f"warm-{i}", job("echo")) for i in range(WARM)], arrivals)
            for flood in floods:
                daemon.drop(flood, job("bench_flood", {"how": how, "stop_file": str(stop_file),
                                                       "max_s": args.flood_s + 120}))
            started = time.perf_counter()
            wait_running(daemon, floods)
            cpu0 = sum(daemon.cpu_s()[:2])
            latencies = daemon.one_by_one(
                [(f"echo-{i}", job("echo", {"message": i})) for i in range(args.jobs)],
                arrivals, budget_s=float("inf"))
            time.sleep(max(0.0, started + args.flood_s - time.perf_counter()))
            cpu = (sum(daemon.cpu_s()[:2]) - cpu0) / (time.perf_counter() - started) * 100
            stop_file.touch()
            _, failed = arrivals.wait({f"{f}.json" for f in floods}, time.perf_counter() + 300)
            if failed:
                raise BenchError(f"a flood failed: {daemon.root}/failed/{failed[0]}")
        finally:
            stop_file.touch()
            arrivals.close()
    finally:
        daemon.stop()
    results = [orjson.loads((daemon.root / "done" / f"{f}.json").read_bytes())["result"]
               for f in floods]
    written = sum(r["lines"] for r in results)
    rate = sum(r["lines"] / r["seconds"] for r in results)
    logged = count_output(base / "processor.log")
    return pct(latencies), cpu, rate, "-" if not floods else str(logged == written)


def wait_running(daemon: Daemon, floods: list[str]) -> None:
    """Until every flood is in ``running/`` (and writing: a moment more)."""
    deadline = time.monotonic() + 60
    while not all((daemon.root / "running" / f"{f}.json").exists() for f in floods):
        if time.monotonic() > deadline:
            raise BenchError("the floods did not start")
        time.sleep(0.01)
    if floods:
        time.sleep(0.3)


def count_output(log: Path) -> int:
    """``spoolq.output`` lines in a processor's log (a byte search: the log is large)."""
    count = 0
    with open(log, "rb") as fh:
        for line in fh:
            count += b'"logger":"spoolq.output"' in line
    return count


if __name__ == "__main__":
    sys.exit(main())
