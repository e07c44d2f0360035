"""processor.worker.Deadman: a COMPUTE worker's own deadline for each job.

Run in a child interpreter: the deadman's thread lives as long as its process, and
ends it (exit status DEADMAN_EXIT) once an armed deadline passes.
"""

from __future__ import annotations

import subprocess
import sys
import time

from processor.runner import DEADMAN_EXIT

_CHILD = """
import math, sys, time
from processor.worker import Deadman

deadman = Deadman()
notified = 0
notify = deadman._cond.notify

def counted(n=1):
    global notified
    notified += 1
    notify(n)

deadman._cond.notify = counted
deadman.arm(1.0)  # the first job's arming wakes the thread, once
while math.isinf(deadman._wake_at):  # until the thread has looked: on a loaded host it
    time.sleep(0.001)                # can lag several jobs, each arming it again
deadman.disarm()
notified = 0
# Jobs over before the deadman's thread looks (it needs the GIL this thread holds).
for _ in range(200):
    deadman.arm(1.0)
    deadman.disarm()
    time.sleep(0.0005)
print(notified, flush=True)
deadman.arm(1.0)  # a job that overruns, after all those
time.sleep(60)
"""


def test_short_jobs_wake_the_deadman_once_and_an_overrun_still_dies() -> None:
    """Each job's arming woke the deadman's thread when the job before was over before
    that thread looked: a wake-up and a GIL hand-off per job, a tenth of a no-op job's
    CPU in its worker (docs/benchmarks.md)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == DEADMAN_EXIT, proc.stderr
    assert time.monotonic() - start < 30, "killed long after its deadline"
    assert int(proc.stdout) == 0  # once the thread sleeps towards a deadline, no wake-ups


_FAILING_WALK = """
import time
import processor.worker as worker

def walk(pid):
    raise OSError(5, "Input/output error")  # /proc failing mid-walk, say

worker.kill_descendants = walk
worker.Deadman().arm(0.1)
time.sleep(60)
"""


def test_a_deadman_whose_walk_fails_still_ends_its_worker() -> None:
    """The deadman is the job's limit when the processor cannot act: an error out of its
    walk of the worker's processes ended its thread, and the worker ran on past its
    deadline for as long as the job did."""
    proc = subprocess.run([sys.executable, "-c", _FAILING_WALK], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == DEADMAN_EXIT, (proc.returncode, proc.stderr)


_KILLED_CHILD = """
import subprocess, sys, time
import processor.worker as worker

walk = worker.kill_descendants

def slow_walk(pid):  # the walk's second look: the tool's thread runs meanwhile
    walk(pid)
    time.sleep(2)

worker.kill_descendants = slow_walk
deadman = worker.Deadman()
deadman.arm(0.3)
child = subprocess.run([sys.executable, "-c", "import time; time.sleep(60)"], check=False)
print(child.returncode, deadman.disarm(), flush=True)  # the tool is back, its job over
time.sleep(60)
"""


def test_a_job_back_from_a_child_the_deadman_killed_is_told_it_is_too_late() -> None:
    """The deadman kills the worker's children before the worker: a tool waiting on one
    (``subprocess.run``) came back with -9 while the worker still lived, and the worker
    sent that as the job's result, recorded ``done`` past the job's limit (2 of 5 jobs
    with the processor stopped, QA h395).  ``disarm`` now says the deadline had passed,
    and the worker sends nothing (see ``_serve``)."""
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == DEADMAN_EXIT, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == ["-9", "True"], proc.stdout
