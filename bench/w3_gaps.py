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
* *busy*: the work's share of JOB_NUM x wall, and the wall itself;
* *CPU a job* (all threads, from ``/proc/<pid>/task/*/schedstat``): the pool's parent
  (this process: its submitting and result threads), the processor, and this client
  beside it; each side's workers beside the work itself (their CPU less the work's);
  and the machine's idle share over the round (``/proc/stat``).  With JOB_NUM=2 on 2
  cores both are busy nearly all of a round (idle 0 to 2.5 % in 2026-11-30's runs),
  so a side's wall follows its CPU a job: work moved off the path from a result to the
  next task still takes a core from a worker.

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
import shlex
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
from bench.creates import spread_subfolders
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


class Meter:
    """CPU of some processes and the machine's idle time, between two readings."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[dict[str, int], float, float, float]:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
        return ({name: sum(cpu_ns(p) for p in pids) for name, pids in self.pids.items()},
                time.process_time(), ticks[3] + ticks[4], sum(ticks))

    def line(self, n: int, work_cpu_s: float, parts: tuple[str, ...]) -> str:
        """CPU a job of this process (``parts[0]``), of each process group (the workers'
        less ``work_cpu_s``), and the idle share since the start."""
        (cpus, me, idle, total), (cpus0, me0, idle0, total0) = self._read(), self.start
        spent = {name: (cpus[name] - cpus0[name]) / 1e9 for name in cpus}
        spent["workers"] -= work_cpu_s
        shown = [f"{parts[0]} {(me - me0) / n * 1e6:.0f}"] + [
            f"{name} {spent[name] / n * 1e6:.0f}" for name in parts[1:]]
        return f"{', '.join(shown)} us; idle {100 * (idle - idle0) / max(1, total - total0):.1f}%"


def cpu_ns(pid: int) -> int:
    """CPU nanoseconds of the live threads of process ``pid`` (0 once it is gone)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


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


def one_round(executor: cf.ProcessPoolExecutor, daemon: Daemon, arrivals: Arrivals, *,
              tag: str, args: argparse.Namespace, cal: Calibration, our_workers: set[int]
              ) -> None:
    """The pool's round, then spoolq's; a line each, and one of their CPU a job."""
    n = args.jobs
    meter = Meter({"workers": list(executor._processes)})  # (no public list of them)
    timings, wall = pool_round(executor, n, cal)
    print(split("pool", timings, wall, args.job_num))
    theirs = meter.line(n, sum(t["cpu_s"] for t in timings), ("parent", "workers"))
    assert daemon.proc is not None
    meter = Meter({"processor": [daemon.proc.pid], "workers": sorted(our_workers)})
    timings, wall = spool_round(daemon, arrivals, tag, n, cal)
    print(split("spoolq", timings, wall, args.job_num))
    ours = meter.line(n, sum(t["cpu_s"] for t in timings), ("client", "processor", "workers"))
    if not {t["pid"] for t in timings} <= our_workers:
        ours += " (not every worker measured)"
    print(f"  CPU a job: pool {theirs}; spoolq {ours}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.w3_gaps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per round (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--job-num", type=int, default=2, help="JOB_NUM (default 2)")
    parser.add_argument("--dir", type=Path, help="where the spool goes (default /tmp)")
    parser.add_argument("--processor-cmd", type=shlex.split,
                        default=[sys.executable, "-m", "processor"],
                        help="how to start the daemon, to compare a variant (as "
                        "bench.throughput's)")
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
    spread_subfolders(base)  # the spool away from earlier deletions (bench/creates.py)
    executor = cf.ProcessPoolExecutor(args.job_num)
    daemon = Daemon(base, "never", args.job_num, args.processor_cmd)
    try:
        pool_round(executor, 2 * args.job_num, cal)  # workers started, numpy loaded
        daemon.start()
        arrivals = Arrivals([daemon.root / "done", daemon.root / "failed"])
        try:
            warm, _ = spool_round(daemon, arrivals, "warm", 4 * args.job_num, cal)
            daemon.wait_idle()
            for r in range(args.rounds):
                print(f"round {r + 1}")
                one_round(executor, daemon, arrivals, tag=f"r{r}", args=args, cal=cal,
                          our_workers={t["pid"] for t in warm})
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
