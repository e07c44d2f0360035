"""The spool tests' reads of a child's pipe end, whatever the child does.

A test that read its child's first line with ``readline()`` waited for ever when the
child never wrote it (pytest-timeout's one alarm then failed the test, and its
``finally`` waited again); and one that killed ``strace`` to end a traced child and then
called ``communicate()`` waited as long as the tracee ran, which outlives a killed
strace and holds its pipes (a ``spoolq submit --wait`` with no processor: for ever, a
CI job held until its own limit).  spoolkit's ``read_line`` and ``stop`` are bounded.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
from spoolkit import read_line, stop, strace_path

SILENT = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_line_that_never_comes_fails_the_test_and_ends_the_child() -> None:
    child = subprocess.Popen(SILENT, stdout=subprocess.PIPE, text=True)
    try:
        with pytest.raises(AssertionError, match=r"no line from .* in 1 s"):
            read_line(child, timeout=1)
        assert child.poll() is not None, "the silent child was left running"
    finally:
        stop(child)


def test_lines_are_read_one_at_a_time_and_the_rest_left_on_the_pipe() -> None:
    child = subprocess.Popen([sys.executable, "-c", "print('first'); print('second')"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(child) == b"first\n"
        out, _err = child.communicate(timeout=30)
        assert out == b"second\n"
    finally:
        stop(child)


def test_stopping_strace_ends_its_tracee_too() -> None:
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    sub = subprocess.Popen([strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=write",
                            *SILENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    tracees: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while not tracees and time.monotonic() < deadline:  # strace starts its tracee
            tracees = psutil.Process(sub.pid).children()
            time.sleep(0.01)
        assert tracees, "strace started no tracee"
        with pytest.raises(AssertionError, match="no line"):
            read_line(sub, timeout=1)  # stops strace and its tracee
        assert sub.poll() is not None
        _gone, alive = psutil.wait_procs(tracees, timeout=10)
        assert alive == [], "the tracee outlived strace, holding its pipes"
    finally:
        stop(sub)
        for proc in tracees:
            if proc.is_running():
                proc.kill()
