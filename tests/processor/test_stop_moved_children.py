"""The stop's kill of what FAST tools started (``processor.proctree.kill_tool_processes``)
against a thread that ends while it looks: run in a subprocess of its own, since the kill
takes every child of the process that calls it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import builtins, os, subprocess, threading, time
import orjson
from processor import proctree

started, leave = threading.Event(), threading.Event()
children = []

def tool():  # a FAST tool's thread: its child is listed under it
    children.append(subprocess.Popen(["sleep", "60"]))
    started.set()
    leave.wait()

thread = threading.Thread(target=tool)
thread.start()
started.wait()
tid = thread.native_id
real_open = builtins.open

def end_thread():
    # The thread ends, and the kernel moves its child to the main thread, once the
    # main thread's own list may have been read: as the loop thread ends at a stop.
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
killed = proctree.kill_tool_processes()
end_thread()
child = children[0]
try:
    status = child.wait(10)  # a zombie at once once killed
except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
    status = None
print(orjson.dumps({"killed": killed, "child": child.pid, "status": status}).decode())
"""


def test_a_child_of_a_thread_that_ends_as_the_stop_looks_is_killed() -> None:
    """A stop killed only the FAST tools' processes it found in each thread's ``children``
    list; the loop thread, which ran the tools and started them, ends as the processor
    stops, and a child the kernel moved to the main thread after that thread's list was
    read was in no list, and outlived the stop (sleep children of ``s_fast_child`` left
    running, once in a full run of the suite)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True,
                          timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    found = orjson.loads(done.stdout)
    assert (found["killed"], found["status"]) == ([found["child"]], -9), found
