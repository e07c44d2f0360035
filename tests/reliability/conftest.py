"""Fixtures of the reliability suite: a fresh spool, a daemon factory, a stray-process guard.

``no_strays`` is autouse and set up first, so it checks after every daemon of
the test has been stopped: a test fails if any process started for it (found
by the marker in its environment, see :mod:`relkit`) is still alive 5 s later.
The repository root goes on ``sys.path`` so tests can import ``bench``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "processor", HERE.parents[1]):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from daemonkit import run_daemons  # noqa: E402
from relkit import Daemon, make_spool, marked_processes  # noqa: E402


@pytest.fixture(autouse=True)
def no_strays() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5.0
    while (left := marked_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in left:
        proc.kill()
    assert not left, "processes left running: " + ", ".join(
        f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left)


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    make_spool(root)
    return root


@pytest.fixture
def daemon(spool_root: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start ``python -m processor`` on ``spool_root``; every one is killed at teardown."""
    yield from run_daemons(spool_root, tmp_path, Daemon)
