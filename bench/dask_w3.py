"""W3 on the local pool and on Dask, in the same run: ``python -m bench.dask_w3``.

W3 (as in ``bench/throughput.py``): N COMPUTE jobs of about 20 ms of numpy
work each (chained float64 products of 256 x 256 matrices, the count per job
calibrated at the start of the run), all dropped at once.  Each executor gets
a fresh temporary spool and a fresh ``python -m processor`` (``JOB_NUM``,
``SPOOL_FSYNC=never``, ``SPOOL_TOOLS=bench.bench_tools``, the tool
``bench_matmul`` that ``bench/throughput.py`` uses):

* ``local``: ``SPOOL_EXECUTOR=local``, the processor's own pool;
* ``dask``: ``SPOOL_EXECUTOR=dask://...`` on a ``distributed.LocalCluster``
  started here (``--dask-workers`` worker processes, one thread each).

Both are warmed with ``2 x JOB_NUM`` jobs first.  Jobs are dropped the safe
way (``tmp/`` then rename into ``pending/``); the clock runs from just before
the first drop until the last record is in ``done/``.  Efficiency =
N x single-job time / (JOB_NUM x wall), the single-job time measured in this
process with BLAS single-threaded, as the workers run it.  ``--rounds R``
alternates the executors R times and prints every round, then the medians.

Every process started here (daemons, the cluster) is stopped by its pid or
closed; the spools are removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.bench_tools import BLAS_THREADS, matmul_reps, matmul_work, timed

REPO = Path(__file__).resolve().parents[1]
SIZE = 256
TARGET_MS = 20.0


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    reps: int
    single_s: float


@dataclass(frozen=True)
class Result:
    executor: str
    wall_s: float
    n: int
    job_num: int
    single_s: float

    @property
    def efficiency(self) -> float:
        return self.n * self.single_s / (self.job_num * self.wall_s)

    @property
    def overhead_ms(self) -> float:
        """Wall time per job and worker beyond the work itself."""
        return (self.job_num * self.wall_s / self.n - self.single_s) * 1e3


def calibrate(target_ms: float) -> Calibration:
    reps = matmul_reps(SIZE, target_ms)
    single = statistics.median(timed(lambda: matmul_work(SIZE, reps)) for _ in range(15))
    return Calibration(reps, single)


def _drop(root: Path, job_id: str, job: dict[str, Any]) -> None:
    tmp = root / "tmp" / f"drop-{job_id}"
    tmp.write_bytes(orjson.dumps(job))
    os.rename(tmp, root / "pending" / f"{job_id}.json")


def _wait_done(root: Path, ids: list[str], timeout_s: float) -> float:
    """Poll done/ until every id is there; the time the last one was seen."""
    wanted = {f"{i}.json" for i in ids}
    deadline = time.monotonic() + timeout_s
    while True:
        names = set(os.listdir(root / "done"))
        if wanted <= names:
            return time.perf_counter()
        failed = wanted & set(os.listdir(root / "failed"))
        if failed:
            sample = (root / "failed" / sorted(failed)[0]).read_bytes()[:400]
            raise SystemExit(f"a W3 job failed: {sample!r}")
        if time.monotonic() > deadline:
            raise SystemExit(f"W3 did not finish in {timeout_s:g} s")
        time.sleep(0.002)


@contextmanager
def _processor(root: Path, executor: str, job_num: int, log: Path) -> Iterator[int]:
    env = {**os.environ, "SPOOL_DIR": str(root), "JOB_NUM": str(job_num),
           "SPOOL_EXECUTOR": executor, "SPOOL_FSYNC": "never", "SPOOL_SCAN_S": "1",
           "SPOOL_TOOLS": "bench.bench_tools", "SPOOL_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env, cwd=root.parent,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not any(n.endswith(".json") and f"-{proc.pid}-" in n
                      for n in os.listdir(root / "owners")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the processor did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.02)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def run_w3(executor: str, n: int, job_num: int, cal: Calibration, base: Path) -> Result:
    from spool.fsops import Mover  # noqa: PLC0415
    from spool.layout import Layout  # noqa: PLC0415
    from spool.settings import FsyncMode  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="w3-", dir=base)) / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    job = {"tool": "bench_matmul", "params": {"size": SIZE, "reps": cal.reps}}
    name = "dask" if executor.startswith("dask://") else executor
    with _processor(root, executor, job_num, root.parent / "processor.log"):
        warm = [f"warm{i}" for i in range(2 * job_num)]
        for job_id in warm:
            _drop(root, job_id, job)
        _wait_done(root, warm, 120)
        ids = [f"w3-{i:04d}" for i in range(n)]
        start = time.perf_counter()
        for job_id in ids:
            _drop(root, job_id, job)
        end = _wait_done(root, ids, 600)
    return Result(name, end - start, n, job_num, cal.single_s)


@contextmanager
def _dask_cluster(workers: int) -> Iterator[str]:
    try:
        from distributed import LocalCluster  # noqa: PLC0415 - optional extra
    except ImportError:
        raise SystemExit("the dask run needs: pip install 'spoolq[dask]'") from None
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        scheduler_port=0, dashboard_address="127.0.0.1:0")
    try:
        yield str(cluster.scheduler_address).replace("tcp://", "dask://")
    finally:
        cluster.close(timeout=30)


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, load average {load}")


def _line(r: Result) -> str:
    return (f"  {r.executor:<6} wall {r.wall_s:7.3f} s  {r.n / r.wall_s:7.1f} jobs/s  "
            f"efficiency {r.efficiency:5.2f}  overhead {r.overhead_ms:6.1f} ms/job")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_w3",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="W3 jobs per run (100)")
    parser.add_argument("--job-num", type=int, default=2, help="JOB_NUM (2)")
    parser.add_argument("--dask-workers", type=int, default=2, help="Dask workers (2)")
    parser.add_argument("--rounds", type=int, default=1, help="local+dask rounds (1)")
    parser.add_argument("--target-ms", type=float, default=TARGET_MS,
                        help="single-job time to calibrate to (20)")
    args = parser.parse_args(argv)
    for name in BLAS_THREADS:
        os.environ[name] = "1"
    cal = calibrate(args.target_ms)
    print(f"machine: {_machine()}")
    print(f"W3: {args.jobs} jobs of {cal.reps} x {SIZE}^2 matmul = {cal.single_s * 1e3:.1f} ms "
          f"single-job; JOB_NUM={args.job_num}; Dask: {args.dask_workers} worker processes "
          "x 1 thread on 127.0.0.1")
    results: dict[str, list[Result]] = {"local": [], "dask": []}
    with tempfile.TemporaryDirectory(prefix="bench-dask-w3-") as tmp, \
            _dask_cluster(args.dask_workers) as address:
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}:")
            for executor in ("local", address):
                result = run_w3(executor, args.jobs, args.job_num, cal, Path(tmp))
                results[result.executor].append(result)
                print(_line(result), flush=True)
    if args.rounds > 1:
        print("medians:")
        for name, runs in results.items():
            wall = statistics.median(r.wall_s for r in runs)
            print(_line(Result(name, wall, args.jobs, args.job_num, cal.single_s)))
    local, dask = (statistics.median(r.wall_s for r in results[k]) for k in ("local", "dask"))
    print(f"dask / local wall time: {dask / local:.2f}x")
    with suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
