"""A processor with no writable temporary folder (a container's read-only root, no
tmpfs on /tmp, ``TMPDIR`` unset: multiprocessing puts the forkserver's socket there)
says so in one line and exits 2, where it crashed with tempfile's traceback and exit 1,
which a restart policy repeats for ever (h408)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# tempfile looks in TMPDIR, /tmp, /var/tmp, /usr/tmp and the working directory: none of
# them usable is what a read-only root gives, made here without root or a namespace.
NO_TEMP_DIR = """
import runpy, sys, tempfile
candidates = [sys.argv[1]]
tempfile._candidate_tempdir_list = lambda: list(candidates)
tempfile.tempdir = None
sys.argv = ["spool-processor"]
runpy.run_module("processor", run_name="__main__", alter_sys=True)
"""


def test_no_writable_temp_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {**os.environ, "SPOOL_DIR": str(spool), "JOB_NUM": "1",
           "SPOOL_PRELOAD_QUANT": "0"}
    env.pop("SPOOL_EXECUTOR", None)
    subprocess.run([sys.executable, "-c", "from spool.cli.main import main; main(['init'])"],
                   env=env, check=True, capture_output=True, timeout=60)
    proc = subprocess.run([sys.executable, "-c", NO_TEMP_DIR, str(tmp_path / "missing")],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("spool-processor: error: "), proc.stderr
    assert "writable temporary folder" in lines[0] and "TMPDIR" in lines[0], proc.stderr


def test_a_temp_dir_too_long_for_a_socket_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The forkserver's socket is bound in TMPDIR: one too long for a Unix socket's path
    crashed the processor with a traceback, "AF_UNIX path too long", and exit 1."""
    spool = tmp_path / "spool"
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    env = {**os.environ, "SPOOL_DIR": str(spool), "JOB_NUM": "1",
           "SPOOL_PRELOAD_QUANT": "0", "TMPDIR": str(deep)}
    env.pop("SPOOL_EXECUTOR", None)
    subprocess.run([sys.executable, "-c", "from spool.cli.main import main; main(['init'])"],
                   env=env, check=True, capture_output=True, timeout=60)
    proc = subprocess.run([sys.executable, "-m", "processor"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TMPDIR is too long" in lines[0], proc.stderr
