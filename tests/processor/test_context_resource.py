"""ctx.resource makes a key's object once per cache, as docs/operations.md says ("made
once a worker, or once in the processor for FAST tools"): the processor's FAST jobs run
at once on several threads and share one cache, and each used to run the factory
itself when they came together, each getting an object of its own (four loads of a
model, three connections leaked; QA h380)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from processor.runner import Context, Resources


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
