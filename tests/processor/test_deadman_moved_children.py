"""A COMPUTE worker's deadman (``processor.worker.Deadman``) against a tool's thread that
ends while it looks for what to kill: run in a child interpreter, which the deadman
ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from childkit import REPO, THREAD_ENDS_MID_LOOK, script_env
from daemonkit import read_line

from processor.runner import DEADMAN_EXIT

SCRIPT = THREAD_ENDS_MID_LOOK + r"""
print(children[0].pid, flush=True)
worker.Deadman().arm(0.05)  # the job overruns: the deadman ends this process
time.sleep(60)
"""


def _state(pid: int) -> str:
    """The process's state letter; "gone" once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_child_of_a_tool_thread_that_ends_as_the_deadman_looks_is_killed() -> None:
    """The deadman killed what was below its worker from each thread's ``children``
    list; a thread the tool started that ended while the lists were read had its child
    moved to the main thread after that one's list was read: in no list, it outlived
    the worker, running on unowned."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                            cwd=REPO, env=script_env())
    assert proc.stdout is not None
    child = int(read_line(proc))
    try:
        assert proc.wait(60) == DEADMAN_EXIT
        proc.stdout.close()
        deadline = time.monotonic() + 10  # killed, then reaped by init once orphaned
        while _state(child) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(child) in ("gone", "Z")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _state(child) not in ("gone", "Z"):
            os.kill(child, signal.SIGKILL)
