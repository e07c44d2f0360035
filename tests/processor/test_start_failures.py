"""A processor whose start-up fails after its COMPUTE pool started still ends.

The pool's workers were shut down only by the loop's stop.  A start-up step that
failed after the pool had started (the change feed, as inotify ran out; the first
rescan) printed its one error line and then never exited: ``multiprocessing`` joins
a process's children at exit, and each worker waited for its processor's end of
the pipe to close, which the pool still held (py-spy: ``_exit_function`` in
``BaseProcess.join``, the worker in ``_die_with_processor``).  Under systemd, a
unit stuck in "activating" until its start timeout; in a terminal, a hang.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
from daemonkit import Daemon


def _exit_status(d: Daemon, timeout: float) -> int:
    """The daemon's exit status; kills it (and fails) if it is still there after
    ``timeout`` seconds."""
    assert d.proc is not None
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        children = psutil.Process(d.pid).children(recursive=True)
        d.abort()
        for child in children:
            child.kill()
        raise AssertionError(f"still running {timeout} s after its error:\n"
                             f"{d.logs()[-2000:]}") from None


def test_a_start_up_step_that_fails_after_the_pool_started_ends_the_process(
        spool_root: Path, tmp_path: Path) -> None:
    d = Daemon(spool_root, tmp_path / "daemon.log", module="broken_processor",
               BROKEN_STEP="rescan").start(wait_ready=False)
    try:
        assert _exit_status(d, 30) == 2
    finally:
        d.abort()
    assert "spool-processor: error: cannot use the spool: Permission denied" in d.logs()


def test_a_pool_whose_start_fails_part_way_ends_the_process(spool_root: Path,
                                                            tmp_path: Path) -> None:
    """The pool's own start failing after its first worker was up (out of descriptors
    at the second's pipes) hung the process as above: close shut the pool down only once
    its start had returned, and SIGTERM was no help (the early-stop handler is back by
    then).  Seen with real limits, ``prlimit --nofile=52``, ``JOB_NUM=4``: 1 start in 6."""
    d = Daemon(spool_root, tmp_path / "daemon.log", module="broken_processor",
               BROKEN_STEP="second_worker", JOB_NUM="2").start(wait_ready=False)
    try:
        assert _exit_status(d, 30) == 75
    finally:
        d.abort()
    assert ("spool-processor: error: out of descriptors at start-up: Too many open files"
            in d.logs())
