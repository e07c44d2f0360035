"""Fixtures for the operations tests: a leak guard, autouse.

The ops tests start real daemons (the units' commands, the processor under a
stand-in for systemd's notify socket).  ``no_leaks`` fails a test that leaves
a child process or a file descriptor behind, so a daemon that ignores SIGTERM
or a socket the notifier forgot to close cannot slip through.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil
import pytest


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = _open_fds()
    earlier = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 5.0
    while _new_children(me, earlier) and time.monotonic() < deadline:
        time.sleep(0.02)
    children = _new_children(me, earlier)
    leaked_fds = {fd for fd in _open_fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not children, f"child processes left running: {children}"
    assert not leaked_fds, "file descriptors left open: " + ", ".join(
        f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}" for fd in sorted(leaked_fds))


def _new_children(me: psutil.Process, earlier: set[int]) -> list[psutil.Process]:
    """Children this test started (a session-wide helper, e.g. a forkserver, is not a leak)."""
    return [c for c in me.children(recursive=True) if c.pid not in earlier]
