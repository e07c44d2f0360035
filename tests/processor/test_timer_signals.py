"""A FAST tool's process-wide timer is no end of the processor.

FAST tools run in the processor's threads, so a tool's ``signal.alarm(1)`` (its own
timeout, a library's) or ``signal.setitimer`` armed the processor's one timer, and a
second later SIGALRM's default action ended the processor (-14), every run with it;
SIGVTALRM and SIGPROF, the CPU timers' signals, likewise.  The signal is a warning line
now and the timer is disarmed.  Real daemons, real signals (see daemonkit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

SIGNALS = {"alarm": "SIGALRM", "real": "SIGALRM", "virtual": "SIGVTALRM", "prof": "SIGPROF"}


@pytest.mark.parametrize("timer", list(SIGNALS))
def test_a_fast_tools_timer_is_disarmed_and_the_processor_goes_on(
        spool_root: Path, daemon: Callable[..., Daemon], timer: str) -> None:
    """The tool's job is done, the timer's signal comes (a second later for ``alarm``;
    every 50 ms for the others, repeating), the processor logs one warning naming it,
    stays up, runs the next job and stops cleanly; a repeating timer is disarmed, not
    warned of again and again."""
    d = daemon()
    drop(spool_root, "arms", {"tool": "t_fast_timer", "params": {"timer": timer}})
    assert wait_record(spool_root, "arms", 30)["state"] == "done"
    name = SIGNALS[timer]

    def warned() -> int:
        assert d.running(), f"the processor died of {name}:\n{d.logs()}"
        return sum(1 for e in d.events() if e.get("signal") == name
                   and e.get("level") == "warning")

    deadline = time.monotonic() + 30
    while not warned():
        assert time.monotonic() < deadline, f"no warning of {name}:\n{d.logs()}"
        time.sleep(0.05)
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still up"}})
    found = wait_record(spool_root, "after", 30)
    assert (found["state"], found["result"]) == ("done", {"message": "still up"}), found
    time.sleep(0.5)  # a repeating timer left armed would come some ten times more
    assert warned() == 1, d.logs()
    line = next(e for e in d.events() if e.get("signal") == name)
    assert "disarmed" in line["msg"] and "FAST tool" in line["cause"], line
    assert d.stop(60) == 0, d.logs()


def test_a_timer_armed_at_every_job_is_said_once_a_minute_and_counted_at_the_stop(
        spool_root: Path, daemon: Callable[..., Daemon]) -> None:
    """A tool that arms its timer at each of its jobs had a warning line for each job, a
    log of them for a busy tool.  One line a minute at most, for each signal: the later
    ones are counted, and the stop says the count (``since_last_line``)."""
    d = daemon()

    def lines() -> list[dict[str, object]]:
        return [e for e in d.events()
                if e.get("signal") == "SIGALRM" and e.get("level") == "warning"]

    for n in range(3):
        drop(spool_root, f"arms-{n}", {"tool": "t_fast_timer", "params": {"timer": "real"}})
        assert wait_record(spool_root, f"arms-{n}", 30)["state"] == "done"
        time.sleep(0.3)  # the timer went off within the job (the tool works until it is disarmed)
        assert d.running(), d.logs()
    assert len(lines()) == 1 and "since_last_line" not in lines()[0], d.logs()
    assert d.stop(60) == 0, d.logs()
    said = lines()
    assert len(said) == 2 and said[1]["since_last_line"] == 2, said
    stopped = next(i for i, e in enumerate(d.events()) if e.get("msg") == "stopped")
    assert d.events().index(said[1]) < stopped, "the count comes before the stop's end"
