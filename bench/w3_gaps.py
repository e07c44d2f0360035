"""Where W3's wall time goes: the work itself, and each worker's idle gap between jobs,
for spool-processor and for a raw ``ProcessPoolExecutor(JOB_NUM)`` in the same run.

Run from the repository root: ``python -m bench.w3_gaps [--jobs N] [--rounds R]``.
W3 of ``bench/throughput.py`` gives one figure, efficiency = N x single-job time /
(JOB_NUM x wall); this splits the wall.  Each job is ``bench_matmul`` with ``timed``
(``bench.bench_tools.matmul_timed``): it reports its process, its start and end on the
system-wide monotonic clock and its thread's CPU time.  Per round and side:

* *work*: the mean time a job's matrix products took where they ran, and their CPU
  time (work longer than its CPU time was pre-empted: the processor, the client or
  the other worker took the core);
* *gap*: per worker, from the end of one job's work to the start of the next one's
  (the result going back, the next task coming, everything around the tool), median
  and mean;
* *busy*: the work's share of JOB_NUM x wall, and the wall itself.

The pool queues the next task into its workers' pipe before they ask for it; the
processor hands a worker its next job only once it is free (issue 3, item 3), so
its gap holds a round trip through the processor's loop.  spoolq's rounds run in one
processor, started and warmed as ``bench/throughput.py`` does (its ``Daemon``), each
timed from the first drop until this client sees the last record.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import bench_tools
from bench.bench_tools import BLAS_THREADS
from bench.throughput import (
    Arrivals,
    BenchError,
    Calibration,
    Daemon,
    calibrate,
    job,
    machine,
)

TIMEOUT_S = 300.0


def split(label: str, timings: list[dict[str, Any]], wall_s: float, job_num: int) -> str:
    """One line: the work per job, the gaps between a worker's jobs, the busy share."""
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for t in timings:
        by_worker.setdefault(t["pid"], []).append(t)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda t: t["start"])
        gaps += [b["start"] - a["end"] for a, b in itertools.pairwise(runs)]
    work = [t["end"] - t["start"] for t in timings]
    return (f"  {label:<7} wall {wall_s * 1e3:7.1f} ms  work {statistics.mean(work) * 1e3:6.2f} ms"
            f" (CPU {statistics.mean(t['cpu_s'] for t in timings) * 1e3:6.2f})  gap median "
            f"{statistics.median(gaps) * 1e6:5.0f} us, mean {statistics.mean(gaps) * 1e6:5.0f} us"
            f"  busy {sum(work) / (job_num * wall_s):.3f}  ({len(by_worker)} workers)")


def pool_round(executor: cf.ProcessPoolExecutor, n: int, cal: Calibration
               ) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    futures = [executor.submit(bench_tools.matmul_timed, cal.size, cal.reps) for _ in range(n)]
    timings = [f.result() for f in futures]
    return timings, time.perf_counter() - start


def spool_round(daemon: Daemon, arrivals: Arrivals, tag: str, n: int, cal: Calibration
                ) -> tuple[list[dict[str, Any]], float]:
    data = job("bench_matmul", {"size": cal.size, "reps": cal.reps, "timed": True})
    wall, _ = daemon.run_jobs([(f"{tag}-{i:04d}", data) for i in range(n)], arrivals)
    done = daemon.root / "done"
    timings = [orjson.loads((done / f"{tag}-{i:04d}.json").read_bytes())["result"]
               for i in range(n)]
    return timings, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.w3_gaps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--job-num", type=int, default=2, help="JOB_NUM (default 2)")
    parser.add_argument("--dir", type=Path, help="where the spool goes (default /tmp)")
    args = parser.parse_args(argv)
    if "numpy" in sys.modules:
        print("bench.w3_gaps: error: numpy was imported before the BLAS thread count "
              "could be pinned", file=sys.stderr)
        return 1
    for name in BLAS_THREADS:  # one core per job, as the processor sets it for its workers
        os.environ[name] = "1"
    where = args.dir or Path(tempfile.gettempdir())
    cal = calibrate(bench_tools)
    print(f"W3 split: JOB_NUM={args.job_num}; {machine(where)}")
    print(f"{args.jobs} jobs a round of {cal.reps} x {cal.size}^2 matmul = "
          f"{cal.single_s * 1e3:.1f} ms in-process; SPOOL_FSYNC=never", flush=True)
    base = Path(tempfile.mkdtemp(prefix="spoolq-w3gaps-", dir=where))
    executor = cf.ProcessPoolExecutor(args.job_num)
    daemon = Daemon(base, "never", args.job_num, [sys.executable, "-m", "processor"])
    try:
        pool_round(executor, 2 * args.job_num, cal)  # workers started, numpy loaded
        daemon.start()
        arrivals = Arrivals([daemon.root / "done", daemon.root / "failed"])
        try:
            spool_round(daemon, arrivals, "warm", 2 * args.job_num, cal)
            daemon.wait_idle()
            for r in range(args.rounds):
                print(f"round {r + 1}")
                print(split("pool", *pool_round(executor, args.jobs, cal), args.job_num))
                print(split("spoolq", *spool_round(daemon, arrivals, f"r{r}", args.jobs, cal),
                            args.job_num), flush=True)
        finally:
            arrivals.close()
    except BenchError as exc:
        print(f"bench.w3_gaps: error: {exc}", file=sys.stderr)
        return 1
    finally:
        daemon.stop()
        executor.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
