"""Fixtures: a fresh spool and a daemon factory that stops every daemon it started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, make_spool


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    make_spool(root)
    return root


@pytest.fixture
def daemon(spool_root: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(wait_ready: bool = True, **env: str) -> Daemon:
        d = Daemon(spool_root, tmp_path / f"processor-{len(started)}.log", **env)
        started.append(d)
        return d.start(wait_ready)

    yield start
    for d in started:
        d.abort()
