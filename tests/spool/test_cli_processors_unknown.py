"""``spoolq stats`` when it cannot read the processors' state: one line, exit 1.

A live processor (a held owner lock, a fresh status file); strace fails every open of
``owners/``, of its status file or of its lock (EACCES, EIO).  Before: ``owners/`` it
could not list said ``Permission denied (<path>)`` without saying what for, and a status
file or lock it could not open (EACCES) printed "processor down: no live processor on
this spool" (exit 0), about a processor that ran.  It names the cause now, on one line
of stderr, exit 1, and prints no table that would say the processor is down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from spoolkit import REPO, strace_path

from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import OwnerStatus

OWNER = "live-1"


@pytest.fixture
def live(root: Path) -> Iterator[tuple[Layout, str]]:
    """A live processor on the spool (its owner lock held, a fresh status file), and the
    path of strace, which fails what the test names."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    layout = Layout(root)
    lease = OwnerLease(layout.owner_lock(OWNER))
    try:
        now = datetime.now(UTC)
        layout.owner_status(OWNER).write_text(OwnerStatus(
            owner=OWNER, pid=os.getpid(), host="h", version="0", started_at=now,
            heartbeat_at=now, job_num=2).model_dump_json())
        yield layout, strace
    finally:
        lease.release()


@pytest.mark.parametrize("case", [
    ("owners", "EACCES", "cannot list owners/", "Permission denied"),
    ("owners", "EIO", "cannot list owners/", "Input/output error"),
    ("status", "EACCES", f"cannot read processor {OWNER}'s status file", "Permission denied"),
    ("status", "EIO", f"cannot read processor {OWNER}'s status file", "Input/output error"),
    ("lock", "EACCES", f"cannot test processor {OWNER}'s owner lock", "Permission denied"),
])
def test_stats_that_cannot_read_the_processors_say_why_not_down(
        env: dict[str, str], live: tuple[Layout, str], case: tuple[str, str, str, str]
        ) -> None:
    """``case``: what fails, its errno, and what the line says of it."""
    target, error, said, text = case
    layout, strace = live
    path = {"owners": layout.owners, "status": layout.owner_status(OWNER),
            "lock": layout.owner_lock(OWNER)}[target]
    stats = [sys.executable, "-m", "spool.cli.main", "stats"]
    known = subprocess.run(stats, check=False, capture_output=True, text=True,
                           timeout=60, env=env, cwd=REPO)
    assert known.returncode == 0 and "processor up" in known.stdout, known

    def failing(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [strace, "-f", "-qq", "-o", os.devnull, "-P", str(path), "-e", "trace=openat",
             "-e", f"inject=openat:error={error}:when=1+", *stats, *extra],
            check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)

    proc = failing()
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot tell whether a processor is alive" in lines[0], lines
    assert said in lines[0] and text in lines[0], lines
    assert "processor down" not in proc.stdout, proc.stdout
    # --partial: what is known of the spool all the same, and why the rest is not
    partial = failing("--partial", "--json")
    assert partial.returncode == 0, (partial.returncode, partial.stdout, partial.stderr)
    doc = json.loads(partial.stdout)
    assert doc["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 0}, doc
    assert said in doc["processors_unknown"] and text in doc["processors_unknown"], doc
    for unknown in ("processor", "processors", "job_num", "busy_workers", "fast_running"):
        assert unknown not in doc, doc  # never a made-up alive: false
    table = failing("--partial")
    assert table.returncode == 0, (table.returncode, table.stdout, table.stderr)
    assert f"processor ?: cannot tell whether a processor is alive: {said}" in table.stdout
    assert "pending" in table.stdout and "processor down" not in table.stdout, table.stdout


def test_tools_whose_live_catalogue_cannot_be_read_lists_the_installed_ones_and_why(
        env: dict[str, str], live: tuple[Layout, str]) -> None:
    """A status file the disk fails (EIO): ``spoolq tools`` lists the installed tools and
    says why, neither exit 1 with no list nor "none is running" of a processor that runs."""
    layout, strace = live
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-P", str(layout.owner_status(OWNER)),
         "-e", "trace=openat", "-e", "inject=openat:error=EIO:when=1+",
         sys.executable, "-m", "spool.cli.main", "tools", "--json"],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "echo" in {tool["name"] for tool in json.loads(proc.stdout)}, proc.stdout
    assert "tools of the installed processor" in proc.stderr, proc.stderr
    assert "Input/output error" in proc.stderr and "none is running" not in proc.stderr
