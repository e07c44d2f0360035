"""A benchmark run as a test runs it: ``python -m bench.NAME`` in a session of its own,
whose every process is killed should it outlast its time.

``subprocess.run``'s timeout kills the benchmark's process alone: the servers and
daemons it had started (``bench/ws_fanout.py``'s baseline server, a processor and its
forkserver) ran on after the test had failed, seen once (two baseline servers still
up 18 minutes later)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<args>`` from the repository, its output captured; on timeout,
    its whole session killed, then :class:`subprocess.TimeoutExpired` raised with what it
    wrote."""
    argv = [sys.executable, "-m", *args]
    with subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # what it started with it
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
