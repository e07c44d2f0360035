"""Fixtures: a fresh spool, a daemon factory that stops every daemon it started, and for
tests of the loop's parts in this process, the spool's settings and an inbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, make_spool, run_daemons

from processor.inbox import Inbox
from spool.settings import Settings, load_settings


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    make_spool(root)
    return root


@pytest.fixture
def daemon(spool_root: Path, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    yield from run_daemons(spool_root, tmp_path)


@pytest.fixture
def settings(spool_root: Path) -> Settings:
    """The spool's settings, SPOOL_FSYNC=never and no settle time."""
    return load_settings(spool_dir=spool_root, fsync="never", settle_s=0)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    yield inbox
    inbox.close()
