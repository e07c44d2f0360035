"""``python -m bench.throughput --quick`` runs end to end: real daemons, real drops.

It asserts that the benchmark runs and reports each workload, never how fast:
speeds are for benchmarks (``docs/benchmarks.md``), not tests.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from benchrun import run_bench

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class QuickRun:
    """One ``--quick`` run, with ``--peers`` when huey is installed."""

    peers: bool
    stdout: str
    spools_left: list[str]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """Both tests read one run: its own rows come first and are the same with or without
    the peers (``run_mode`` before ``run_peers``), and each run costs ~20 s."""
    where = tmp_path_factory.mktemp("bench")
    peers = importlib.util.find_spec("huey") is not None
    proc = run_bench(["bench.throughput", "--quick", *(["--peers"] if peers else []),
                      "--dir", str(where)], timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return QuickRun(peers, proc.stdout, sorted(p.name for p in where.iterdir()))


def test_quick_run_reports_every_workload(quick_run: QuickRun) -> None:
    ours = quick_run.stdout.split("peer workload", 1)[0]
    rows = [line for line in ours.splitlines() if re.match(r"W[123] ", line)]
    assert [row[:2] for row in rows] == ["W1", "W1", "W2", "W3"], quick_run.stdout
    assert all(" never " in row for row in rows), quick_run.stdout
    assert quick_run.spools_left == [], "spools were not removed"


def test_quick_run_with_the_peers_reports_them_too(quick_run: QuickRun) -> None:
    if not quick_run.peers:
        pytest.skip("huey is not installed")
    labels = ["huey-sqlite", "huey-file"] + (["uwsgi-spool"] if shutil.which("uwsgi") else [])
    assert "peer workload" in quick_run.stdout, quick_run.stdout
    peers = quick_run.stdout.split("peer workload", 1)[-1]
    rows = [m.groups() for m in re.finditer(r"^(W[123]) .*?  ([a-z-]+)  ", peers, re.M)]
    assert rows == [(w, label) for label in labels for w in ("W1", "W2", "W3")], \
        quick_run.stdout
    assert quick_run.spools_left == [], "peer storage was not removed"


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
