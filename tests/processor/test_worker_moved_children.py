"""A COMPUTE worker's kill of what a job left running (``processor.worker.reap_leftovers``)
against a tool's thread that ends while it looks: run in a subprocess of its own, since
the kill takes every child of the process that calls it."""

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
worker.reap_leftovers()
end_thread()
child = children[0].pid
try:
    with real_open(f"/proc/{child}/stat") as fh:
        state = fh.read().rsplit(")", 1)[1].split()[0]
except FileNotFoundError:
    state = "reaped"
if state != "reaped":
    children[0].kill()
    children[0].wait()
print(orjson.dumps({"child": child, "state": state}).decode())
"""


def test_a_child_of_a_tool_thread_that_ends_as_the_worker_looks_is_killed_and_reaped(
) -> None:
    """A worker killed what a job left running from each thread's ``children`` list;
    a thread the tool started that ended while the lists were read had its child
    moved to the main thread after that one's list was read: in no list, it was taken
    for none left, and ran on beside the worker's next job."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True,
                          timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    found = orjson.loads(done.stdout)
    assert found["state"] == "reaped", found
