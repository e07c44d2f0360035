"""A processor started with its standard streams closed (``>&- 2>&-``) opens them on
/dev/null first.  Left closed, its next descriptors took their numbers: the log went
into an internal pipe, the forkserver's stderr was its listening socket, and a FAST
tool's write to fd 1 failed EBADF, its job ``tool_error`` (QA).  Real daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
from daemonkit import Daemon, drop, wait_record


def test_a_processor_started_with_its_streams_closed_opens_them_on_devnull(
        spool_root: Path, tmp_path: Path) -> None:
    d = Daemon(spool_root, tmp_path / "unused.log", tools="printtools")
    # Closed in the child before the processor's exec: fds 0 to 2 of the shell's ">&-".
    d.argv = [sys.executable, "-c", "import os, sys; [os.close(fd) for fd in (0, 1, 2)]; "
              "os.execv(sys.argv[1], sys.argv[1:])", *d.argv]
    d.stdin = subprocess.DEVNULL
    try:
        d.start()
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{d.pid}/fd/{fd}") == os.devnull, fd
        # And in the processes it starts (the forkserver, the resource tracker): opened
        # close-on-exec, they were closed again in each (a review).
        children = psutil.Process(d.pid).children()
        assert children
        for child in children:
            for fd in (0, 1, 2):
                assert os.readlink(f"/proc/{child.pid}/fd/{fd}") == os.devnull, (
                    child.cmdline(), fd)
        drop(spool_root, "fast", {"tool": "p_fast"})
        drop(spool_root, "compute", {"tool": "p_compute"})
        for job_id in ("fast", "compute"):
            found = wait_record(spool_root, job_id, 30)
            assert found["state"] == "done", found
        assert d.stop() == 0
    finally:
        d.abort()

