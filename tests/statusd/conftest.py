"""Fixtures for the statusd tests: a fresh spool, a real server on 127.0.0.1, a leak guard.

``no_leaks`` is autouse here: a test fails if it leaves threads (a feed
observer, an executor), child processes or file descriptors behind.  It is set
up before the server fixtures, so it checks after they have stopped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from statusdkit import SHARED_HELPERS, ServerThread, make_spool, settings_for

from spool.transitions import Spool


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = _open_fds()
    threads = set(threading.enumerate())
    earlier = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        alive = [t for t in set(threading.enumerate()) - threads if t.is_alive()]
        if not alive and not _new_children(me, earlier):
            break
        time.sleep(0.02)
    leaked_threads = [t.name for t in set(threading.enumerate()) - threads if t.is_alive()]
    children = _new_children(me, earlier)
    leaked_fds = {fd for fd in _open_fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not children, f"child processes left running: {children}"
    assert not leaked_threads, f"threads left running: {leaked_threads}"
    assert not leaked_fds, "file descriptors left open: " + ", ".join(
        f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}" for fd in sorted(leaked_fds))


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return make_spool(tmp_path / "spool")


@pytest.fixture
def server(spool: Spool) -> Iterator[ServerThread]:
    """statusd on a free port of 127.0.0.1, writes enabled with statusdkit.TOKEN."""
    srv = ServerThread(settings_for(spool.layout.root)).start()
    try:
        yield srv
    finally:
        srv.stop()


def _new_children(me: psutil.Process, earlier: set[int]) -> list[psutil.Process]:
    """Children this test started (a session-wide helper, e.g. a forkserver, is not a leak,
    nor is a module's shared browser with the renderers it starts for each test's page)."""
    shared = set(SHARED_HELPERS)
    for pid in SHARED_HELPERS:
        try:
            shared.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return [c for c in me.children(recursive=True) if c.pid not in earlier | shared]
