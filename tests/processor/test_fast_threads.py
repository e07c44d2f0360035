"""The threads a FAST tool starts write and log as its job's.  A real daemon (daemonkit).

A FAST tool runs on a thread of the processor, whose lines name its job; a thread it
started (a helper, a ``Timer``, the next ``Timer`` that one arms) logged and printed
with no ``id``, so operations.md's query for one job missed them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from daemonkit import REPO, Daemon, drop, wait_for, wait_record

StartDaemon = Callable[..., Daemon]


def test_threads_a_fast_tool_starts_name_its_job(spool_root: Path, daemon: StartDaemon,
                                                   tmp_path: Path) -> None:
    d = daemon(tools="threadtools")
    until = tmp_path / "until"
    drop(spool_root, "starter", {"tool": "th_helpers", "params": {"until": str(until)}})
    assert wait_record(spool_root, "starter")["state"] == "done"
    drop(spool_root, "later", {"tool": "echo", "params": {"message": "x"}})
    assert wait_record(spool_root, "later")["state"] == "done"

    def timer_lines() -> int:
        return sum(e["logger"] == "spoolq.output" and e["msg"].startswith("timer ")
                   for e in d.events())

    wait_for(lambda: timer_lines() >= 10, what="the timers' lines")
    until.touch()
    # The last timer writes its text without a newline, and ends: the line is out then
    # (waited for, not given a fixed 0.2 s, which a loaded host may not schedule it in).
    wait_for(lambda: any(e["logger"] == "spoolq.output" and e["msg"] == "timer end"
                         for e in d.events()), 30, "the last timer's line")
    assert d.stop() == 0
    events = d.events()
    printed = [e for e in events if e["logger"] == "spoolq.output"]
    logged = [e for e in events if e["logger"] == "threadtools"]
    assert {"helper says", "timer end"} <= {e["msg"] for e in printed}
    assert sum(e["msg"].startswith("timer ") for e in printed) >= 10
    assert {e["msg"] for e in logged} >= {"helper logs", "timer logs 0", "timer logs 9"}
    assert {(e.get("id"), e.get("tool")) for e in [*printed, *logged]} == {
        ("starter", "th_helpers")}
    own = [e for e in events if e["logger"].startswith("spoolq.") and e.get("id") == "starter"]
    assert "done" in {e["msg"] for e in own}


def test_a_tool_modules_own_thread_start_wrapper_is_kept(spool_root: Path,
                                                         daemon: StartDaemon) -> None:
    """A wrapper of ``Thread.start`` a tool module put in place as it was imported (under
    capture, as sentry_sdk.init() does with functools.wraps, which copies the wrapped
    function's attributes) still starts the threads of the tools: capture's uninstall
    once set Thread.start back to the original, under the library's wrapper.  The
    thread still prints as the job's (capture's wrapper stays under the library's)."""
    d = daemon(tools="threadtools,wraptools")
    drop(spool_root, "wrapped", {"tool": "wr_started", "params": {}})
    rec = wait_record(spool_root, "wrapped")
    assert rec["state"] == "done" and rec["result"] is True
    assert d.stop() == 0
    printed = [e for e in d.events() if e["msg"] == "probe says"]
    assert [(e.get("id"), e.get("tool")) for e in printed] == [("wrapped", "wr_started")]


FREED = '''
import gc, threading, weakref
from processor import capture
gc.disable()
saved = capture.install()
capture._state.job = ("j", "t")  # as capture.begin sets it for a FAST job's thread
class Arg: pass
arg = Arg()
thread = threading.Thread(target=lambda a: None, args=(arg,))
thread.start()
thread.join()
capture._state.job = None
freed = weakref.ref(thread), weakref.ref(arg)
del thread, arg
alive = [ref() is not None for ref in freed]
capture.uninstall(saved)
print(alive)
'''


def test_a_finished_job_thread_is_freed_without_the_collector() -> None:
    """Running a thread as its job's wrapped its ``run`` in a function holding the
    thread's bound ``run``: thread -> wrapper -> thread, a cycle that kept every such
    thread (a Timer's function and arguments with it) until the garbage collector ran."""
    done = subprocess.run([sys.executable, "-c", FREED], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO)
    assert done.stdout.strip() == "[False, False]", done.stdout + done.stderr
