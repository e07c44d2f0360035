"""Fixtures for the spool tests: a fresh spool per test and a leak guard.

``no_leaks`` fails a test that leaves file descriptors (an unclosed claim is
a held lease), threads or child processes behind.  The spool library modules
opt in with ``pytestmark = pytest.mark.usefixtures("no_leaks")``.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from spoolkit import FakeClock, Holders, make_client, make_spool

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.lease import CLAIMS
from spool.settings import FsyncMode
from spool.transitions import Spool


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def no_leaks() -> Iterator[None]:
    fds = _open_fds()
    claims = dict(CLAIMS)
    threads = set(threading.enumerate())
    earlier = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 2.0
    while _new_children(me, earlier) and time.monotonic() < deadline:
        time.sleep(0.02)  # a child that was just waited on may still be listed
    children = _new_children(me, earlier)
    leaked_fds = {fd for fd in _open_fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")}
    leaked_threads = [t.name for t in set(threading.enumerate()) - threads if t.is_alive()]
    assert not children, f"child processes left running: {children}"
    assert not leaked_fds, "file descriptors left open: " + ", ".join(
        f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}" for fd in sorted(leaked_fds))
    assert not leaked_threads, f"threads left running: {leaked_threads}"
    stale = {fd: ino for fd, ino in CLAIMS.items() if claims.get(fd) != ino}
    assert not stale, f"claim descriptors left noted (spool.lease.CLAIMS): {stale}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path, clock: FakeClock) -> Spool:
    """A spool under ``tmp_path/spool`` with SPOOL_FSYNC=never and the fake clock."""
    return make_spool(tmp_path / "spool", clock=clock)


@pytest.fixture
def holders(spool: Spool) -> Iterator[Holders]:
    """Actor processes that hold claims in ``spool``; any left running is killed and
    reaped at the test's end."""
    group = Holders(spool)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def client(tmp_path: Path) -> Client:
    """A client of a new spool under ``tmp_path/spool`` with SPOOL_FSYNC=never."""
    return make_client(tmp_path / "spool")


def _new_children(me: psutil.Process, earlier: set[int]) -> list[psutil.Process]:
    """Children this test started (a session-wide helper, e.g. a forkserver, is not a leak)."""
    return [c for c in me.children(recursive=True) if c.pid not in earlier]


# -- the CLI tests (test_cli*.py) -----------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: a spool under ``tmp_path``, no fsync."""
    return {**os.environ, "SPOOL_DIR": str(tmp_path / "spool"), "SPOOL_FSYNC": "never"}


@pytest.fixture
def root(env: dict[str, str]) -> Path:
    """An initialised spool (made through the library: ``init`` has its own test)."""
    path = Path(env["SPOOL_DIR"])
    Mover(Layout(path), FsyncMode.NEVER).make_folders()
    return path


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="spoolq-cli-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def sigio_ignored() -> Iterator[None]:
    """As the processor has it (processor.stop_signals): a read lease is asked for only
    by a process the lease-break signal does not end."""
    old = signal.signal(signal.SIGIO, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGIO, old)
