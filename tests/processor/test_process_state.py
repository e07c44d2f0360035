"""processor.process_state: what a COMPUTE job changed in its worker is put back.

Run in a child interpreter: a ProcessState takes over the process's descriptors 0 to 2,
streams, environment and signal handlers, which the test process must keep.
"""

from __future__ import annotations

import subprocess
import sys

_CHILD = """
import signal
from processor.process_state import ProcessState
from processor.stray_threads import StrayThreads

def mine(signum, frame):
    pass

def tools(signum, frame):
    pass

signal.signal(signal.SIGUSR1, mine)
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
state = ProcessState(StrayThreads())
# What a job leaves: a handler of its own, one ignored signal handled, one default
# ignored, and a Python-level handler made the default.
signal.signal(signal.SIGUSR1, tools)
signal.signal(signal.SIGUSR2, mine)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
signal.signal(signal.SIGTERM, tools)
state.restore()
print(signal.getsignal(signal.SIGUSR1) is mine,
      signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN,
      signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""


def test_signal_handlers_a_job_changed_are_put_back() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True"] * 4
