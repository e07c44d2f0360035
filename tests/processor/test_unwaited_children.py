"""A FAST tool that starts a process and never waits for it (``os.posix_spawn``,
``os.fork``): the FAST lane's threads live as long as the processor, and the reaper never
takes a child listed under one (the tool may still wait for it), so each such job left
a zombie holding a pid of the unit's until the processor stopped (QA: 100 jobs, 100
zombies, none reaped over 15 periodic scans).  One a zombie for ``UNWAITED_S`` is reaped,
and said once a pass.

The reaper runs in a process of its own here: in the test's process it would reap the
exited children of the suite's other tests."""

from __future__ import annotations

import subprocess
import sys

import orjson
from daemonkit import REPO

SCRIPT = r"""
import logging, os, threading, time
import orjson
from processor import proctree

logging.basicConfig(level=logging.WARNING, format="%(message)s")
started, release = threading.Event(), threading.Event()
child = []

def tool():  # a FAST tool's thread: starts a child, never waits, lives on
    child.append(os.posix_spawnp("true", ["true"], os.environ))
    started.set()
    release.wait()

thread = threading.Thread(target=tool)
thread.start()
started.wait()
pid = child[0]
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    with open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
            break
    time.sleep(0.01)
reaper = proctree.Reaper()
now = time.monotonic()
unwaited_s = getattr(proctree, "UNWAITED_S", 600.0)
reaped = [reaper.reap(now), reaper.reap(now + proctree.ADOPTED_GRACE_S + 1),
          reaper.reap(now + unwaited_s - 1), reaper.reap(now + unwaited_s)]
gone = not os.path.exists(f"/proc/{pid}")
release.set()
thread.join()
print(orjson.dumps({"reaped": reaped, "gone": gone}).decode())
"""


def test_a_fast_tools_child_it_never_waits_for_is_reaped_in_the_end() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    found = orjson.loads(proc.stdout)
    # Left while a tool may still wait for it (at once, past the orphans' grace, just
    # short of UNWAITED_S), reaped at it.
    assert found == {"reaped": [0, 0, 0, 1], "gone": True}, found
    assert proc.stderr.count("never waited for") == 1, proc.stderr
