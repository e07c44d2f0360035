"""ctx.resource makes a key's object once per cache, as docs/operations.md says ("made
once a worker, or once in the processor for FAST tools"): the processor's FAST jobs run
at once on several threads and share one cache, and each used to run the factory
itself when they came together, each getting an object of its own (four loads of a
model, three connections leaked; QA h380)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonkit import Daemon, drop, wait_record

from processor import runner
from processor.runner import Context, ResourceCycle, Resources


def _context(resources: dict[str, Any]) -> Context:
    return Context("job", Path("."), lambda fraction, message: None, resources)


def test_jobs_that_come_together_make_a_key_once_and_share_it() -> None:
    resources = Resources()
    made: list[object] = []

    def factory() -> object:
        time.sleep(0.2)  # a model's load: the other jobs ask meanwhile
        made.append(object())
        return made[-1]

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(
        _context(resources).resource("model", factory))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1
    assert got == made * 4


def test_a_slow_key_does_not_hold_up_another() -> None:
    resources = Resources()
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "slow"

    thread = threading.Thread(target=lambda: _context(resources).resource("slow", slow))
    thread.start()
    assert started.wait(5)
    try:
        began = time.monotonic()
        assert _context(resources).resource("quick", lambda: "quick") == "quick"
        assert time.monotonic() - began < 1
    finally:
        release.set()
        thread.join()
    assert resources["slow"] == "slow"


def test_a_factory_that_raises_leaves_the_key_to_the_next_job() -> None:
    resources = Resources()

    def broken() -> str:
        raise OSError("no connection")

    with pytest.raises(OSError, match="no connection"):
        _context(resources).resource("client", broken)
    assert _context(resources).resource("client", lambda: "client") == "client"


def test_a_plain_dict_still_serves_as_a_cache() -> None:
    resources: dict[str, Any] = {}
    assert _context(resources).resource("k", lambda: 1) == 1
    assert _context(resources).resource("k", lambda: 2) == 1


def test_a_factory_whose_run_timed_out_no_longer_holds_its_key() -> None:
    """A FAST job's factory that hangs (a connect with no timeout, the network down a
    moment) is abandoned with its thread when the job times out; the next job asking for
    that key makes it itself.  Waiting for the hung one, every later job asking for the
    key timed out too, for the life of the processor, its thread abandoned (QA h384)."""
    resources = Resources()
    hung, timed_out, release = threading.Event(), threading.Event(), threading.Event()

    def hangs() -> str:
        hung.set()
        release.wait(10)
        return "late"

    first = threading.Thread(target=lambda: Context(
        "first", Path("."), lambda fraction, message: None, resources,
        abandoned=timed_out.is_set).resource("conn", hangs))
    first.start()
    try:
        assert hung.wait(5)
        timed_out.set()  # the lane failed "first" timeout, its thread still in hangs()
        got: list[str] = []
        second = threading.Thread(target=lambda: got.append(
            _context(resources).resource("conn", lambda: "fresh")))
        second.start()
        second.join(3)
        assert got == ["fresh"]
        assert _context(resources).resource("conn", lambda: "third") == "fresh"
    finally:
        release.set()
        first.join(10)
    assert resources["conn"] == "fresh", "the abandoned factory's late object is not kept"


def test_a_factory_asking_for_its_own_key_says_so() -> None:
    """It recursed until RecursionError, its traceback a thousand frames long (h384)."""
    resources = Resources()
    ctx = _context(resources)

    def selfish() -> str:
        return ctx.resource("a", selfish)

    def first() -> str:
        return ctx.resource("b", lambda: ctx.resource("a", first))

    with pytest.raises(ResourceCycle, match="the factory of 'a' asks for 'a' itself"):
        ctx.resource("a", selfish)
    with pytest.raises(ResourceCycle, match="'a' -> 'b' -> 'a'"):
        ctx.resource("a", first)
    assert ctx.resource("a", lambda: "made") == "made"


def test_factories_on_two_threads_asking_for_each_others_key_fail_at_once() -> None:
    """Each job's factory holds its key and waits for the other's: both waited until
    their jobs' timeouts (h384).  Now the cycle is found while they wait: the job that
    finds it fails, which frees its key for the other's factory."""
    resources = Resources()
    both = threading.Barrier(2, timeout=5)
    errors: dict[str, BaseException] = {}

    def factory(mine: str, theirs: str) -> Callable[[], str]:
        def make() -> str:
            both.wait()  # each holds its own key now
            return _context(resources).resource(theirs, lambda: f"{theirs} by {mine}")
        return make

    def job(mine: str, theirs: str) -> None:
        try:
            _context(resources).resource(mine, factory(mine, theirs))
        except BaseException as exc:  # recorded for the assertions
            errors[mine] = exc

    began = time.monotonic()
    threads = [threading.Thread(target=job, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "still waiting for each other"
    assert time.monotonic() - began < 3
    assert len(errors) == 1, errors
    [(failed, error)] = errors.items()
    assert isinstance(error, ResourceCycle), repr(error)
    cycle = "'a' -> 'b' -> 'a'" if failed == "a" else "'b' -> 'a' -> 'b'"
    assert str(error) == (f"ctx.resource: factories ask for each other's keys ({cycle}): "
                          "each would wait for the other for good")
    other = "b" if failed == "a" else "a"
    assert resources[failed] == f"{failed} by {other}"  # made by the job that went on
    assert resources[other] == f"{failed} by {other}"


def test_a_made_key_keeps_no_lock() -> None:
    resources = Resources()
    for n in range(100):
        _context(resources).resource(f"key{n}", object)
    assert resources._making == {}


def test_a_processor_whose_factory_hung_once_makes_the_key_for_the_next_job(
        spool_root: Path, daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """A real processor: the first job's factory hangs past its FAST timeout (the network
    down a moment); once the network is back, the next job asking for the key gets it.
    It waited for the abandoned factory instead, and timed out too (QA h384)."""
    down = tmp_path / "down"
    down.touch()
    d = daemon(tools="resourcetools")
    drop(spool_root, "first", {"tool": "rs_connect", "params": {"hang_while": str(down)}})
    assert wait_record(spool_root, "first")["error"]["type"] == "timeout"
    drop(spool_root, "second", {"tool": "rs_connect",
                                "params": {"hang_while": str(tmp_path / "up")}})
    rec = wait_record(spool_root, "second")
    down.unlink()  # the first thread's factory returns, late: its object is not kept
    assert rec["state"] == "done", rec
    assert rec["result"] == "conn made by second"
    assert d.stop() == 0


def test_the_other_job_of_a_cycle_goes_on_though_the_first_is_slow_to_fail(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The job that found the cycle stayed among the waiters until its error was raised:
    the other job, looking meanwhile (a GIL switch, a loaded host: here its message takes
    0.3 s), found the same cycle through it and failed too, neither key made (h391)."""
    said = runner._cycle_text

    def slow(keys: list[str]) -> str:
        time.sleep(3 * runner.MAKING_POLL_S)
        return said(keys)

    monkeypatch.setattr(runner, "_cycle_text", slow)
    resources = Resources()
    both = threading.Barrier(2, timeout=5)
    errors: dict[str, BaseException] = {}

    def job(mine: str, theirs: str) -> None:
        def make() -> str:
            both.wait()
            return _context(resources).resource(theirs, lambda: f"{theirs} by {mine}")
        try:
            _context(resources).resource(mine, make)
        except BaseException as exc:  # recorded for the assertions
            errors[mine] = exc

    threads = [threading.Thread(target=job, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 1, errors
    [failed] = errors
    assert resources[failed] == resources["b" if failed == "a" else "a"]
