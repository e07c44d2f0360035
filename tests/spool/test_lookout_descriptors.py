"""``spoolq wait``'s lookout out of descriptors: nothing known for now, then it goes on.

:meth:`spool.reader.SpoolReader.processors` raises SpoolIOError when it cannot open an
owner's lock for lack of descriptors (a live processor is never called down for it).
The lookout's thread caught only OSError: SpoolIOError ended it with a traceback on
stderr, and the wait never said that no processor was running.  One call is made to
fail, as a real limit cannot aim at the lookout's thread alone.
"""

from __future__ import annotations

import errno
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spool import stats
from spool.cli import lookout
from spool.cli.lookout import Lookout
from spool.layout import Layout
from spool.models import OwnerStatus
from spool.version import version


def test_the_lookout_waits_out_a_lack_of_descriptors(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(root)
    # A processor killed: its status file left, its lock free.
    beat = datetime.now(UTC) - timedelta(seconds=5)
    layout.owner_status("gone-1").write_text(OwnerStatus(
        owner="gone-1", pid=999_999, host="h", version=version(), started_at=beat,
        heartbeat_at=beat).model_dump_json())
    layout.owner_lock("gone-1").touch()
    real = stats._processors
    calls = []

    def short_once(layout: Layout) -> list[OwnerStatus]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(layout)

    monkeypatch.setattr(stats, "_processors", short_once)
    said = _said(layout, 5.0)
    assert len(calls) >= 2, "the lookout stopped at the first failed look"
    assert len(said) == 1 and "no processor seems to be running" in said[0]
    assert "killed?" in said[0]


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EIO], ids=["emfile", "eio"])
def test_the_lookout_waits_out_a_lock_it_cannot_test(
        root: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A lock file without a status file (a processor starting, or one stopped long ago)
    is tested with :func:`spool.lease.is_locked`, which raises the OSError out of
    descriptors: the lookout ended there, and said nothing for the rest of the wait.
    Since 60b446d it raises a failing disk's EIO too, which the lookout still took for
    an ``owners/`` it may never read."""
    layout = Layout(root)
    layout.owner_lock("quiet-1").touch()
    real = lookout.is_locked
    calls = []

    def short_once(path: Path) -> bool | None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path)

    monkeypatch.setattr(lookout, "is_locked", short_once)
    monkeypatch.setattr(lookout, "NEW_LOCK_S", 0.0)
    said = _said(layout, lookout.QUIET_S + 3 * lookout.CHECK_S)
    assert len(calls) >= 2, "the lookout stopped at the first failed look"
    assert len(said) == 1 and "no status file" in said[0]


def _said(layout: Layout, wait_s: float) -> list[str]:
    """What a lookout on job-1 (still waited for) says within ``wait_s``, up to its first
    line."""
    said: list[str] = []
    told = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        told.set()

    with Lookout(layout, "job-1", say, lambda: True):
        told.wait(wait_s)
    return said
