"""processor.noforks: the processor's last step forbids new processes, not new threads."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from processor.noforks import ARCHES

PROBE = """
import os, subprocess, threading
from concurrent.futures import ThreadPoolExecutor
from processor.noforks import forbid_new_processes

started = threading.Event()
def tool_thread():  # a thread that was running before the ban, as a FAST tool's would be
    started.wait()
    try:
        subprocess.Popen(["true"])
        print("thread: started a process")
    except PermissionError:
        print("thread: refused")
thread = threading.Thread(target=tool_thread)
thread.start()
print("banned:", forbid_new_processes())
started.set()
thread.join()
for what, make in [("fork", os.fork), ("spawn", lambda: os.posix_spawn("/bin/true", ["true"], {})),
                   ("popen", lambda: subprocess.run(["true"]))]:
    try:
        make()
        print(what + ": made")
    except PermissionError:
        print(what + ": refused")
with ThreadPoolExecutor(3) as pool:
    print("threads:", sum(pool.map(lambda n: n, range(10))))
"""


@pytest.mark.skipif(platform.machine() not in ARCHES, reason="the ban is for x86-64 and AArch64")
def test_after_the_ban_no_thread_starts_a_process_and_new_threads_still_run() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["banned: True", "thread: refused", "fork: refused", "spawn: refused",
                   "popen: refused", "threads: 45"]
