"""A tool whose params schema the status file cannot carry is refused at start, in one
line with exit status 2 (operations.md: a badly declared tool), as ``max_attempts`` of
10**30 already was.

An integer past 64 bits in a params schema (a bound ``lt=2**64``, a default) was
registered, and the status file's writer (orjson) refused the catalogue: the
processor logged ``crashed`` with a traceback and exited 1, which the unit's
``Restart=on-failure`` restarts every 2 s for good; ``spool-processor tools`` crashed
the same way.  Real processes (see daemonkit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemonkit import HERE, REPO, Daemon

SAYS = ("spool-processor: error: tool 'b_seeded' (bigbound_tools.Seeded): its params "
        "schema cannot be written as JSON: Integer exceeds 64-bit range")


def test_the_processor_refuses_the_tool_in_one_line(spool_root: Path, tmp_path: Path) -> None:
    d = Daemon(spool_root, tmp_path / "daemon.log", tools="bigbound_tools")
    try:
        d.start(wait_ready=False)
        assert d.proc is not None and d.proc.wait(60) == 2, d.logs()
        assert d.logs().splitlines() == [SAYS], d.logs()
        assert os.listdir(spool_root / "owners") == []
    finally:
        d.abort()


def test_spool_processor_tools_refuses_it_in_one_line(spool_root: Path) -> None:
    env = {**os.environ, "SPOOL_DIR": str(spool_root), "SPOOL_TOOLS": "bigbound_tools",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "processor", "tools", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [SAYS]
    assert done.stdout == ""


def test_json_without_tools_is_a_usage_error_not_a_running_daemon(spool_root: Path) -> None:
    """``spool-processor --json`` (``tools`` left out) started the daemon, which claimed
    the spool's jobs (QA): ``--json`` goes with ``tools``, exit 2, nothing started."""
    env = {**os.environ, "SPOOL_DIR": str(spool_root)}
    for argv in (["--json"], ["run", "--json"]):
        done = subprocess.run([sys.executable, "-m", "processor", *argv], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.startswith("spool-processor: error: --json goes with 'tools'")
        assert done.stderr.count("\n") == 1, done.stderr
        assert os.listdir(spool_root / "owners") == []
