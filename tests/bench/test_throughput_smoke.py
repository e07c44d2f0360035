"""``python -m bench.throughput --quick`` runs end to end: real daemons, real drops.

It asserts that the benchmark runs and reports each workload, never how fast:
speeds are for benchmarks (``docs/benchmarks.md``), not tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_workload(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.throughput", "--quick",
                           "--dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"W[123] ", line)]
    assert [row[:2] for row in rows] == ["W1", "W1", "W2", "W3"], proc.stdout
    assert all(" never " in row for row in rows), proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "spools were not removed"


def test_quick_run_with_the_peers_reports_them_too(tmp_path: Path) -> None:
    pytest.importorskip("huey")
    proc = subprocess.run([sys.executable, "-m", "bench.throughput", "--quick", "--peers",
                           "--dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = ["huey-sqlite", "huey-file"] + (["uwsgi-spool"] if shutil.which("uwsgi") else [])
    peers = proc.stdout.split("peer workload", 1)[-1]
    rows = [m.groups() for m in re.finditer(r"^(W[123]) .*?  ([a-z-]+)  ", peers, re.M)]
    assert rows == [(w, label) for label in labels for w in ("W1", "W2", "W3")], proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "peer storage was not removed"


def test_benchmarks_import_numpy_only_after_pinning_blas_threads() -> None:
    # Their main() pins the BLAS thread count before numpy loads. Once numpy is in,
    # the pins are ignored: the raw pool's workers (forked from the benchmark) then run
    # two BLAS threads each on two cores, and the W3 baseline is slowed down by
    # oversubscription (a pool wall of 10.75 s against 1.3 s pinned, seen here).
    for module in ("bench.throughput", "bench.dask_w3"):
        proc = subprocess.run(
            [sys.executable, "-c", f"import sys, {module}; print('numpy' in sys.modules)"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        assert proc.stdout.strip() == "False", f"{module} imports numpy at import time"
