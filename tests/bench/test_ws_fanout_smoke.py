"""``python -m bench.ws_fanout --quick`` runs end to end: a real statusd, a real baseline
server, real sockets and renames.

It asserts that the benchmark runs, reports both servers and that every client got every
record's terminal event, never how fast: speeds are for benchmarks
(``docs/benchmarks.md``), not tests.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchrun import run_bench

ROW = re.compile(r"^1\s+(statusd|baseline)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)\s+"
                 r"([\d.]+) / ([\d.]+)\s+.*\s(\d+)/(\d+)$", re.M)
RATIO = re.compile(r"^spoolq/baseline (events/s|worst healthz):\s+[\d.]+\s+\(median ([\d.]+)\)$",
                   re.M)


def test_quick_run_reports_both_servers_and_every_event(tmp_path: Path) -> None:
    proc = run_bench(["bench.ws_fanout", "--quick", "--dir", str(tmp_path)], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = ROW.findall(proc.stdout)
    assert [row[0] for row in rows] == ["statusd", "baseline"], proc.stdout
    for _, clients, records, _, span_s, per_s, _, _, got, expected in rows:
        assert int(got) == int(expected) == int(clients) * int(records), proc.stdout
        assert float(span_s) > 0 and int(per_s.replace(",", "")) > 0, proc.stdout
    assert [label for label, _ in RATIO.findall(proc.stdout)] == \
        ["events/s", "worst healthz"], proc.stdout
    assert "FAILED" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == [], "the spools were not removed"
