"""A processor whose start-up meets a failing disk or a stale NFS handle exits 75.

Spool trouble that passes exits ``EX_TEMPFAIL`` (75), which the unit restarts after;
2, a configuration error, it does not restart.  An NFS spool whose handle went stale
(ESTALE: the folder replaced on the server) exited 2 and stayed down, where a restart
looks every path up afresh.  strace fails the recovery scan's open of ``running/``.
"""

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


@pytest.mark.parametrize(("error", "text"), [("EIO", "Input/output error"),
                                             ("ESTALE", "Stale file handle")])
def test_start_up_on_a_failing_disk_is_exit_75_and_one_line(
        tmp_path: Path, error: str, text: str) -> None:
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
        [strace, "-f", "-qq", "-o", os.devnull, "-P", str(root / "running"),
         "-e", "trace=openat", "-e", f"inject=openat:error={error}:when=1",
         sys.executable, "-m", "processor"], env=env, cwd=tmp_path, check=False,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("spool-processor: error: ") and text in last, proc.stderr
    assert proc.returncode == 75, proc.stderr
