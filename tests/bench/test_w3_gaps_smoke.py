"""``python -m bench.w3_gaps`` runs end to end on a real processor and a real pool, and
each line accounts for every job (never how fast: that is for docs/benchmarks.md)."""

from __future__ import annotations

import re
from pathlib import Path

from benchrun import run_bench


def test_a_short_run_splits_both_sides(tmp_path: Path) -> None:
    proc = run_bench(["bench.w3_gaps", "--jobs", "6", "--rounds", "1", "--dir", str(tmp_path)],
                     timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = re.findall(r"^  (pool|spoolq) +wall .* busy (\d\.\d+)  \((\d) workers\)$",
                       proc.stdout, re.M)
    assert [label for label, _, _ in lines] == ["pool", "spoolq"], proc.stdout
    # Six jobs over two workers: both ran some, and the work fills part of the wall.
    assert all(workers == "2" and 0 < float(busy) <= 1.0 for _, busy, workers in lines), \
        proc.stdout
    assert list(tmp_path.iterdir()) == [], "the spool was not removed"
