"""processor.relay: the loop runs inline work and moves to its standby when held."""

from __future__ import annotations

import threading
import time

import pytest

from processor.relay import Relay

Hold = float | threading.Event
"""How long a call holds its thread: seconds, or until the test sets the event (a
call held by an event is still running whenever the test looks, however slow the
host: a 1 s sleep was over before the check after a 0.5 s stall)."""


class Loop:
    """A loop whose steps run queued callables inline, as the daemon runs FAST tools."""

    def __init__(self, handoff_s: float = 0.05) -> None:
        self.relay = Relay(self.step, handoff_s)
        self.work: list[tuple[str, Hold]] = []
        self.lock = threading.Lock()
        self.results: list[tuple[str, bool, str]] = []  # (name, still the loop?, thread)
        self.steps_by: set[str] = set()
        self.stop = threading.Event()

    def step(self) -> bool:
        self.steps_by.add(threading.current_thread().name)
        with self.lock:
            item = self.work.pop(0) if self.work else None
        if item is None:
            if self.stop.is_set():
                return False
            time.sleep(0.001)
            return True
        name, hold = item
        still, thread = self.relay.run_inline(_hold, hold)
        self.results.append((name, still, thread))
        return True

    def add(self, name: str, hold: Hold) -> None:
        with self.lock:
            self.work.append((name, hold))

    def wait_for(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not names <= {r[0] for r in self.results}:
            assert time.monotonic() < deadline, f"not all of {names} ran: {self.results}"
            time.sleep(0.005)


def _hold(hold: Hold) -> str:
    """Sleep ``hold`` seconds, or hold the thread until the event ``hold`` is set."""
    if isinstance(hold, threading.Event):
        assert hold.wait(30), "never released"
    else:
        time.sleep(hold)
    return threading.current_thread().name


def test_quick_work_stays_on_one_thread() -> None:
    # A handoff of 0.5 s, not 0.05: the loop thread descheduled for 50 ms within one call
    # (CI's two cores beside the suite's other worker) is a hold, and moves it.
    loop = Loop(handoff_s=0.5)
    loop.relay.start()
    for i in range(50):
        loop.add(f"q{i}", 0.0)
    loop.wait_for({f"q{i}" for i in range(50)}, 5)
    loop.stop.set()
    loop.relay.wait()
    assert all(still for _, still, _ in loop.results)
    assert len({thread for _, _, thread in loop.results}) == 1
    assert len(loop.steps_by) == 1


def test_held_loop_moves_to_the_standby_and_goes_on() -> None:
    loop = Loop(handoff_s=0.05)
    loop.relay.start()
    slow = threading.Event()
    loop.add("slow", slow)
    loop.add("quick", 0.0)
    try:  # the slow call holds its thread past handoff_s: quick runs on the standby
        loop.wait_for({"quick"}, 5)
    finally:
        slow.set()
    loop.wait_for({"slow"}, 10)
    by_name = {name: (still, thread) for name, still, thread in loop.results}
    assert by_name["slow"][0] is False, "the old loop thread must learn it no longer leads"
    assert by_name["quick"][0] is True
    assert by_name["quick"][1] != by_name["slow"][1]
    loop.stop.set()
    loop.relay.wait()


def test_a_second_hold_moves_it_again() -> None:
    loop = Loop(handoff_s=0.05)
    loop.relay.start()
    slow1, slow2 = threading.Event(), threading.Event()
    loop.add("slow1", slow1)  # holds the first loop thread
    loop.add("slow2", slow2)  # holds the standby that took over
    loop.add("quick", 0.0)  # runs on the next standby
    try:
        loop.wait_for({"quick"}, 5)
    finally:
        slow1.set()
        slow2.set()
    loop.wait_for({"slow1", "slow2"}, 10)
    threads = {name: thread for name, _, thread in loop.results}
    assert len(set(threads.values())) == 3
    loop.stop.set()
    loop.relay.wait()
    deadline = time.monotonic() + 5  # each ends once it is scheduled, not within 0.1 s
    while alive := [t for t in threading.enumerate() if t.name.startswith("loop-")]:
        assert time.monotonic() < deadline, f"relay threads left running: {alive}"
        time.sleep(0.01)


def test_an_error_in_a_step_ends_the_loop_and_reaches_wait() -> None:
    def step() -> bool:
        raise RuntimeError("broken step")

    relay = Relay(step, 0.05)
    relay.start()
    with pytest.raises(RuntimeError, match="broken step"):
        relay.wait()


def test_no_thread_for_a_standby_does_not_end_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of threads (RLIMIT_NPROC, a cgroup's pids.max) when the loop moves to its
    standby: the new leader goes on without a standby of its own, the held thread stands
    by once its call returns, and a later run starts one again.  Before, "can't start new
    thread" ended the loop: the processor crashed with its runs held."""
    loop = Loop(handoff_s=0.05)
    loop.relay.start()
    real = loop.relay._spawn
    refused: list[str] = []

    def refuse_once() -> None:
        if not refused:
            refused.append("refused")
            loop.relay._threads += 1  # as the real one counts before Thread.start fails
            raise RuntimeError("can't start new thread")
        real()

    monkeypatch.setattr(loop.relay, "_spawn", refuse_once)
    slow = threading.Event()
    loop.add("slow", slow)
    loop.add("quick", 0.0)
    try:
        loop.wait_for({"quick"}, 5)
    finally:
        slow.set()
    loop.wait_for({"slow"}, 10)
    assert refused == ["refused"]
    slow2 = threading.Event()  # a second hold: it needs a standby again
    loop.add("slow2", slow2)
    loop.add("quick2", 0.0)
    try:
        loop.wait_for({"quick2"}, 5)
    finally:
        slow2.set()
    loop.wait_for({"slow2"}, 10)
    loop.stop.set()
    loop.relay.wait()  # no error: the loop ended as asked
