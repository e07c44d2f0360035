"""Fixtures: a fresh spool and a daemon factory that stops every daemon it started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, make_spool, run_daemons


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    make_spool(root)
    return root


@pytest.fixture
def daemon(spool_root: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    yield from run_daemons(spool_root, tmp_path)
