"""A processor started out of descriptors exits 75 with one line, as for a full disk.

Below what start-up needs (the loop's wake pipe, each COMPUTE worker's pipes), the
OSError of the pipe it could not make ended start-up as a crash: a traceback and exit
status 1, where ``spool-processor``'s exit status 75 (EX_TEMPFAIL) says "out of
descriptors, for now".  Real limits (``prlimit``) at a few points of start-up.
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

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")
REPO = Path(__file__).resolve().parents[2]


def test_start_up_out_of_descriptors_is_exit_75_and_one_line(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never", "JOB_NUM": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    statuses = {}
    for limit in (12, 26, 30):  # the wake pipe, a worker's channel, its pipes (here)
        proc = subprocess.Popen(["prlimit", f"--nofile={limit}:{limit}", "--",
                                 sys.executable, "-m", "processor"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # started after all: not this test's case
            proc.terminate()
            proc.communicate(timeout=30)
            continue
        statuses[limit] = proc.returncode
        assert "Traceback" not in err, err[-2000:]
        if proc.returncode == 75:
            assert err.strip().splitlines()[-1].startswith("spool-processor: error: "), err
            assert "Too many open files" in err.strip().splitlines()[-1]
    assert statuses and set(statuses.values()) == {75}, statuses
