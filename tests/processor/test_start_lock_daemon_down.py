"""A processor whose start-up cannot take a lock because a network filesystem's lock
daemon is down (ENOLCK: NFS's lockd or rpc.statd stopped) exits 75, which the unit
restarts after: the lock daemon comes back by itself.  It exited 2, a configuration
error the unit does not restart, and the processor stayed down until someone started
it by hand.  strace fails every ``flock`` (the owner lease's, recovery's claims)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

REPO = Path(__file__).resolve().parents[2]


def test_start_up_with_the_lock_daemon_down_is_exit_75_and_one_line(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None or subprocess.run([strace, "-o", os.devnull, "true"], check=False,
                                        capture_output=True, timeout=30).returncode:
        pytest.skip("strace is not available here")
    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never", "JOB_NUM": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=flock",
         "-e", "inject=flock:error=ENOLCK", sys.executable, "-m", "processor"],
        env=env, cwd=tmp_path, check=False, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("spool-processor: error: ") and "No locks available" in last, (
        proc.stderr)
    assert proc.returncode == 75, proc.stderr
