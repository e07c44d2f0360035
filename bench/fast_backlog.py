"""Benchmark: a FAST job's latency while ``pending/`` holds a COMPUTE backlog.

FAST jobs run at once and never wait behind COMPUTE jobs (issue 3); the processor's loop
also rescans ``pending/`` every ``SPOOL_SCAN_S``, a lookup a file, and one rescan of
50,000 drops in one go held FAST jobs 0.2 to 0.8 s (h333).  This drops one FAST ``echo``
at a time (tmp + rename, as a client does) and times each from its drop to its record in
``done/``, first on a spool with no backlog (the baseline, in the same run), then with
``--backlog`` COMPUTE ``sleep`` jobs pending behind one running (``JOB_NUM=1``), for
``--seconds`` each, with ``SPOOL_SCAN_S`` short enough that several rescans fall in the
window.  Prints p50, p99 and the worst of each, and their ratios.

Run from the repository root: ``python -m bench.fast_backlog`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import orjson

REPO = Path(__file__).resolve().parents[1]


class Latencies(NamedTuple):
    p50: float
    p99: float
    worst: float
    n: int


def _drop(spool: Path, job_id: str, job: dict[str, object]) -> float:
    staged = spool / "tmp" / f"{job_id}.{uuid.uuid4().hex}"
    staged.write_bytes(orjson.dumps(job))
    os.rename(staged, spool / "pending" / f"{job_id}.json")
    return time.perf_counter()


def measure(base: Path, backlog: int, seconds: float, scan_s: float) -> Latencies:
    """FAST drop-to-record latencies (seconds) over ``seconds``, ``backlog`` COMPUTE jobs
    pending."""
    spool = base / f"spool-{backlog}"
    env = {**os.environ, "SPOOL_DIR": str(spool), "JOB_NUM": "1", "SPOOL_FSYNC": "never",
           "SPOOL_SCAN_S": str(scan_s), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    for i in range(backlog):
        _drop(spool, f"c{i:06d}", {"tool": "sleep", "params": {"seconds": 3600}})
    log_path = base / f"processor-{backlog}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env, stdout=log,
                                stderr=log)
    try:
        deadline = time.monotonic() + 120
        while b'"msg":"started"' not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not start: {log_path}")
            time.sleep(0.05)
        time.sleep(2 * scan_s)  # the start-up's backlog judged, a rescan or two begun
        done, latencies = spool / "done", []
        ends = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < ends:
            job_id = f"f{n:06d}"
            n += 1
            dropped = _drop(spool, job_id, {"tool": "echo", "params": {"message": n}})
            record = done / f"{job_id}.json"
            while not record.exists():
                time.sleep(0.0002)
            latencies.append(time.perf_counter() - dropped)
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(spool, ignore_errors=True)
    latencies.sort()
    return Latencies(statistics.median(latencies), latencies[int(0.99 * len(latencies))],
                     latencies[-1], len(latencies))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_backlog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=50_000,
                        help="COMPUTE jobs pending (default 50,000)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="how long FAST jobs are dropped, each run (default 15)")
    parser.add_argument("--scan-s", type=float, default=2.0,
                        help="SPOOL_SCAN_S for both runs (default 2)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the spools go (default: a temporary folder)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="spoolq-fast-backlog-", dir=args.dir))
    try:
        print(f"FAST echo drop-to-record, one at a time, {args.seconds:g} s a run, "
              f"JOB_NUM=1, SPOOL_FSYNC=never, SPOOL_SCAN_S={args.scan_s:g}; "
              f"load average {os.getloadavg()[0]:.2f}")
        empty = measure(base, 0, args.seconds, args.scan_s)
        loaded = measure(base, args.backlog, args.seconds, args.scan_s)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for label, got in (("no backlog (the baseline)", empty),
                       (f"{args.backlog:,} COMPUTE jobs pending", loaded)):
        print(f"  {label:<36} n={got.n:<5} p50 {1e3 * got.p50:7.2f} ms  "
              f"p99 {1e3 * got.p99:7.2f} ms  worst {1e3 * got.worst:7.2f} ms")
    print(f"  ratio to the baseline: p50 {loaded.p50 / empty.p50:.1f}x, p99 "
          f"{loaded.p99 / empty.p99:.1f}x, worst {loaded.worst / empty.worst:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
