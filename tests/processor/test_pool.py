"""processor.pool with real worker processes, read by an inbox loop as the daemon does."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor import pool as pool_module
from processor.executor import Task
from processor.inbox import Inbox, InboxSink
from processor.pool import LocalPool
from processor.runner import Outcome
from spool.errors import ErrorType


@pytest.fixture
def started() -> Iterator[tuple[LocalPool, Inbox]]:
    inbox = Inbox()
    pool = LocalPool(1, tool_modules=["ptools"])
    pool.start(InboxSink(inbox))
    try:
        yield pool, inbox
    finally:
        pool.shutdown()
        inbox.close()


def finished(inbox: Inbox, timeout_s: float = 30.0) -> Outcome:
    """Run the loop's side (reads, posts) until an outcome comes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        inbox.wait(0.05)
        while (event := inbox.get()) is not None:
            if event[0] == "finished":
                outcome: Outcome = event[1]
                return outcome
    raise AssertionError("no outcome")


def task(job_id: str, tool: str, tmp_path: Path, **params: Any) -> Task:
    return Task(job_id, tool, params, 30.0, str(tmp_path), 1)


def test_a_result_comes_back_through_the_loops_reads(started: tuple[LocalPool, Inbox],
                                                    tmp_path: Path) -> None:
    pool, inbox = started
    assert pool.free_slots() == 1
    pool.submit(task("one", "t_big", tmp_path, mb=3))
    assert pool.free_slots() == 0 and pool.busy() == 1
    outcome = finished(inbox)
    assert outcome.ok and outcome.job_id == "one"
    assert outcome.result_json is not None and len(outcome.result_json) > 3 << 20
    assert pool.free_slots() == 1 and pool.busy() == 0


def test_a_worker_that_cannot_be_replaced_is_retried_and_its_job_still_reported(
        started: tuple[LocalPool, Inbox], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool, inbox = started
    real = pool._ctx.Process
    refusals: list[str] = []

    def refuse_once(*args: Any, **kwargs: Any) -> Any:
        if not refusals:
            refusals.append("refused")
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(pool._ctx, "Process", refuse_once)
    monkeypatch.setattr(pool_module, "_RESPAWN_RETRY_S", 0.3)
    pool.submit(task("crash", "t_crash", tmp_path))
    outcome = finished(inbox)
    assert outcome.error_type is ErrorType.WORKER_CRASHED and outcome.job_id == "crash"
    assert refusals == ["refused"]
    assert pool.free_slots() == 0, "no worker to offer until the retry"
    deadline = time.monotonic() + 10
    while pool.free_slots() == 0:
        assert time.monotonic() < deadline, "the slot was never refilled"
        inbox.wait(0.05)
    pool.submit(task("after", "t_pid", tmp_path))
    assert finished(inbox).ok
