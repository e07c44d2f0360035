"""A processor in a pid namespace whose /proc is another namespace's.

``unshare --pid --fork`` without ``--mount-proc`` leaves the host's /proc: the processor,
pid 1, read the host init's children as its own (its tools' processes, to reap and to
kill at a stop).  It refuses to start there, in one line (QA).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import REPO

from processor import proctree
from spool.errors import ConfigError


def test_a_proc_of_another_namespace_is_refused(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").symlink_to(str(os.getpid() + 1))  # another pid's view
    with pytest.raises(ConfigError, match="another pid namespace's"):
        proctree.require_own_proc(str(proc))
    (proc / "self").unlink()
    (proc / "self").symlink_to(str(os.getpid()))
    proctree.require_own_proc(str(proc))
    proctree.require_own_proc(str(tmp_path / "none"))  # no /proc: nothing to tell
    proctree.require_own_proc()  # this one's own


def test_the_processor_says_so_and_exits_2(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a pid namespace")
    root = tmp_path / "spool"
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--spool-dir", str(root)],
                   check=True, capture_output=True, cwd=REPO)
    proc = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-m", "processor",
                           "run", "--spool-dir", str(root)], check=False, capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "/proc is another pid namespace's" in proc.stderr
    assert os.listdir(root / "owners") == []
