"""processor.inbox: posts wake the loop, readers run on it, stale readiness is dropped."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from processor.inbox import BULK_BUDGET_S, Inbox


def sleep_out_the_rest(inbox: Inbox) -> None:
    """Sleep until the rest the bulk readers earned is over.  The rest is as long as they
    took, and a reader's ``time.sleep`` runs over by as much as the host stalls it: a
    fixed pause (10 ms, 0.6 s) fell short under load, and a wait that was to run them
    found them resting."""
    time.sleep(max(0.0, inbox._rest_until - time.monotonic()))


def test_a_post_from_another_thread_wakes_a_sleeping_wait() -> None:
    inbox = Inbox()
    try:
        timer = threading.Timer(0.05, inbox.post, args=(("hello",),))
        timer.start()
        t0 = time.monotonic()
        inbox.wait(10.0)
        assert time.monotonic() - t0 < 5.0
        assert inbox.get() == ("hello",)
        assert inbox.get() is None
        timer.join()
    finally:
        inbox.close()


def test_a_reader_runs_when_its_fd_is_readable() -> None:
    inbox = Inbox()
    r, w = os.pipe()
    seen: list[bytes] = []
    try:
        inbox.add_reader(r, lambda: seen.append(os.read(r, 100)))
        inbox.wait(0.01)
        assert seen == []
        os.write(w, b"x")
        inbox.wait(5.0)
        assert seen == [b"x"]
        inbox.remove_reader(r)
        os.write(w, b"y")
        inbox.wait(0.01)
        assert seen == [b"x"]
    finally:
        inbox.close()
        os.close(r)
        os.close(w)


def test_a_reader_registered_during_a_wait_is_not_run_for_the_fd_it_replaced() -> None:
    """The pool closes a dead worker's pipe and opens its successor's in one callback;
    the successor may get the same fd number, which the finished poll still reports
    ready, and reading it then would block on a pipe with nothing in it."""
    inbox = Inbox()
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    calls: list[str] = []
    fresh: list[int] = []

    def on_a() -> None:  # polled first: replaces b's pipe by a new one
        calls.append("a")
        os.read(a_r, 100)
        inbox.remove_reader(b_r)
        os.close(b_r)
        new_r, new_w = os.pipe()  # the lowest free number: b_r's
        fresh.extend((new_r, new_w))
        inbox.add_reader(new_r, lambda: calls.append("successor"))

    try:
        inbox.add_reader(a_r, on_a)
        inbox.add_reader(b_r, lambda: calls.append("old b"))
        os.write(a_w, b"x")
        os.write(b_w, b"x")
        time.sleep(0.01)
        inbox.wait(5.0)
        assert fresh[0] == b_r, "the test needs b's fd number reused"
        # b's readiness went to b's own callback (which the pool ignores: its pipe is
        # gone), never to the successor's, whose pipe is empty
        assert calls == ["a", "old b"]
        inbox.wait(0.01)
        assert calls == ["a", "old b"]
        os.write(fresh[1], b"y")
        inbox.wait(5.0)
        assert calls == ["a", "old b", "successor"]
    finally:
        inbox.close()
        for fd in (a_r, a_w, b_w, *fresh):
            os.close(fd)


def test_bulk_readers_share_a_budget_per_wait_and_the_one_left_behind_goes_first() -> None:
    """The pipes COMPUTE tools write their output to were each read in full every pass
    of the loop: two tools flooding theirs made every pass, and so every FAST job, wait
    for thousands of lines to be formatted.  Bulk readers now share a time budget per
    wait (the first ready one always runs, so each makes progress), other readers run
    regardless, and a bulk reader skipped for want of budget runs first next time."""
    inbox = Inbox()
    pipes = [os.pipe() for _ in range(3)]
    calls: list[str] = []

    def reader(name: str, fd: int, cost_s: float) -> Callable[[], None]:
        def read() -> None:
            calls.append(name)
            os.read(fd, 1)
            time.sleep(cost_s)  # more than the whole budget
        return read

    try:
        for name, (r, w), bulk in zip("abx", pipes, (True, True, False), strict=True):
            inbox.add_reader(r, reader(name, r, 2 * BULK_BUDGET_S if bulk else 0.0),
                             bulk=bulk)
            os.write(w, b"1234")
        for _ in range(4):
            sleep_out_the_rest(inbox)
            inbox.wait(5.0)
        # x every time; a and b take turns, each once per wait
        assert calls == ["x", "a", "x", "b", "x", "a", "x", "b"]
    finally:
        inbox.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_bulk_readers_that_took_their_time_rest_as_long_while_others_run() -> None:
    """Bulk readers kept the loop busy whenever a tool kept writing, and a loop that
    never sleeps shares its core with the busy tools in slices of milliseconds, which
    FAST jobs waited out.  Once bulk readers took BULK_REST_S they are not run for as
    long; the other readers run all the while."""
    inbox = Inbox()
    pipes = [os.pipe() for _ in range(2)]
    calls: list[str] = []
    cost_s = 1.5  # a rest no stall between the two waits outlasts (0.5 s could be)

    def bulk_read() -> None:
        calls.append("a")
        os.read(pipes[0][0], 1)
        time.sleep(cost_s)

    try:
        inbox.add_reader(pipes[0][0], bulk_read, bulk=True)
        inbox.add_reader(pipes[1][0], lambda: calls.append("x"))
        for _, w in pipes:
            os.write(w, b"1234")
        before = time.monotonic()
        inbox.wait(5.0)
        after = time.monotonic()
        inbox.wait(5.0)  # x is readable: returns at once, a resting (for cost_s)
        assert calls == ["x", "a", "x"]
        # As long a rest as the reader took: at least its cost, at most the whole wait.
        assert before + 2 * cost_s <= inbox._rest_until <= after + (after - before)
        sleep_out_the_rest(inbox)
        inbox.wait(5.0)
        assert calls[-2:] == ["x", "a"]
    finally:
        inbox.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)
