"""The owner lease is taken before the tools load (:func:`processor.lifecycle.
lease_before_tools`), so the other processors on the spool know one is starting that
may offer tools they do not load (tests/scaleout/test_shared_spool.py); a start that
fails after it leaves no lock file, which the others would take for a start for their
grace (a minute and more)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import REPO, Daemon, wait_for


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--spool-dir", str(root)],
                   check=True, capture_output=True, cwd=REPO)
    return root


def test_the_lock_is_taken_before_the_tools_load(spool: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    d = Daemon(spool, tmp_path / "p.log", tools="gated_start_tools",
               tools_dir=REPO / "tests" / "scaleout", GATED_START=str(gate))
    try:
        d.start(wait_ready=False)
        wait_for(lambda: any(n.endswith(".lock") and f"-{d.pid}-" in n
                             for n in os.listdir(spool / "owners")), 30, "its lock file")
        assert not [n for n in os.listdir(spool / "owners") if n.endswith(".json")], \
            "its tools still loading: no status file yet"
        gate.touch()
        wait_for(d.ready, 30, "its status file")
        assert d.stop() == 0
    finally:
        d.abort()
    assert os.listdir(spool / "owners") == []


def test_a_start_whose_tools_do_not_load_leaves_no_lock_file(spool: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "processor"], check=False,
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "SPOOL_DIR": str(spool),
                               "SPOOL_TOOLS": "qa_no_such_tools_module"})
    assert proc.returncode == 2, proc.stderr
    assert "qa_no_such_tools_module" in proc.stderr
    assert os.listdir(spool / "owners") == []


@pytest.mark.parametrize(("module", "refused"), [
    # Once the tools loaded and before the processor's run takes the lease over (its
    # inbox's pipe out of descriptors: ``ulimit -n 12``).
    ("processor.daemon", "Processor.__init__"),
    # take_hold's last steps, the stop signals' pipe and stdio's capture, came after the
    # try that gives the lease back (h415).
    ("processor.stop_signals", "StopSignals.install"),
])
def test_a_start_out_of_descriptors_leaves_no_lock_file(spool: Path, module: str,
                                                        refused: str) -> None:
    """A start that fails out of descriptors (exit 75, which systemd restarts) after the
    lease was taken left the lock file: each start one more, taken by the others for a
    start that may offer any tool for their grace."""
    owner, attribute = refused.split(".")
    script = ("import errno, sys\n"
              f"import {module}\n"
              "def refused(*args, **kwargs):\n"
              "    raise OSError(errno.EMFILE, 'Too many open files')\n"
              f"{module}.{owner}.{attribute} = refused\n"
              "from processor.__main__ import main\n"
              "sys.exit(main([]))\n")
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "SPOOL_DIR": str(spool), "SPOOL_TOOLS": ""})
    assert proc.returncode == 75, proc.stderr
    assert "out of descriptors at start-up" in proc.stderr
    assert os.listdir(spool / "owners") == []
