"""A timeout's message gives the limit in readable units, however small."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

from spool.text import seconds_text

StartDaemon = Callable[..., Daemon]


@pytest.mark.parametrize(("seconds", "text"), [
    (600.0, "600 s"), (1.5, "1.5 s"), (86_400.0, "86400 s"), (1.23456, "1.235 s"),
    (0.3, "300 ms"), (0.0045, "4.5 ms"), (2.5e-5, "25 µs"), (1.00408e-09, "1 ns"),
    (0.0, "0 s"), (9.99e-10, "under 1 ns"), (1e-300, "under 1 ns"), (5e-324, "under 1 ns"),
])
def test_seconds_text(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def test_a_tiny_timeout_is_reported_without_an_exponent(spool_root: Path,
                                                        daemon: StartDaemon) -> None:
    # Read "killed after 1.00408e-09 s (timeout)" before.
    drop(spool_root, "compute", {"tool": "sleep", "params": {"seconds": 5}, "timeout": 1e-9})
    drop(spool_root, "fast", {"tool": "echo", "params": {"message": 1}, "timeout": 1e-9})
    daemon()
    for name in ("compute", "fast"):
        error = wait_record(spool_root, name)["error"]
        assert error["type"] == "timeout", error
        assert re.search(r"\b1 ns\b", error["message"]), error
        assert "e-" not in error["message"], error
        assert "execution_timeout" not in error["message"], "the job's own limit"
