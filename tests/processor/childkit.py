"""Helpers for tests of the kills of what tools started (``processor.proctree``,
``processor.worker``): each runs in a child interpreter of its own, since a kill takes
every child of the process that calls it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]

THREAD_ENDS_MID_LOOK = r"""
import builtins, os, subprocess, threading, time
import orjson
from processor import proctree, worker

started, leave = threading.Event(), threading.Event()
children = []

def tool_thread():  # a thread the tool started: its child is listed under it
    children.append(subprocess.Popen(["sleep", "60"]))
    started.set()
    leave.wait()

thread = threading.Thread(target=tool_thread)
thread.start()
started.wait()
tid = thread.native_id
real_open = builtins.open

def end_thread():
    # The thread ends, and the kernel moves its child to the main thread, once the
    # main thread's own list may have been read.
    leave.set()
    thread.join()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
        time.sleep(0.01)

def opening(path, *args, **kwargs):
    if str(path).endswith(f"/task/{tid}/children"):
        end_thread()
    return real_open(path, *args, **kwargs)

proctree.open = opening  # shadows the builtin in proctree's lookups
"""
"""A script's start: a tool's thread that started a ``sleep`` ends at the first read
of its ``children`` list (``children[0]`` is the sleep, ``end_thread()`` ends it)."""


CHILD_STATUS = r"""
try:
    status = child.wait(10)  # a zombie at once once killed
except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
    status = None
"""
"""A script's lines that set ``status``: how ``child`` (a ``subprocess.Popen``) ended
once killed, ``None`` (and killed now) when it still ran 10 s on."""


def script_env() -> dict[str, str]:
    """The environment of a script that imports this tree's ``processor``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_script(script: str) -> Any:
    """Runs ``script`` in a child interpreter; what it printed, a JSON value."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                          timeout=120, cwd=REPO, env=script_env())
    return orjson.loads(done.stdout)
