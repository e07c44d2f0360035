"""processor.inbox: posts wake the loop, readers run on it, stale readiness is dropped."""

from __future__ import annotations

import os
import threading
import time

from processor.inbox import Inbox


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
