"""The CLI when owners/ cannot be read for lack of descriptors: advisory reads of the
live processors give way, and what the command did still exits 0.

:func:`spool.stats.processors` raises SpoolIOError then (a live processor is never called
down for it).  ``submit``'s check of the tool against the live catalogue caught only
OSError, so a submit failed (exit 1, nothing dropped) where a catalogue that cannot be
read is documented as no check; ``cancel`` of a running job wrote its request, then
failed (exit 1) on the note that says whether a processor will act on it.  The listing
is made to fail, as a real limit cannot aim at it alone.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from spool import stats
from spool.cli.main import main
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def _short(layout: Layout) -> list[object]:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(layout.owners))


def test_submit_and_cancel_go_on_when_owners_cannot_be_read(
        root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_DIR", str(root))
    monkeypatch.setenv("SPOOL_FSYNC", "never")
    monkeypatch.setattr(stats, "_processors", _short)
    assert main(["submit", "echo", "--id", "j1", "-p", "message=hi"]) == 0
    layout = Layout(root)
    assert layout.job(JobState.PENDING, "j1").is_file()
    claim = Spool(layout, Mover(layout, FsyncMode.NEVER)).claim("j1")
    assert claim is not None
    try:
        capsys.readouterr()
        assert main(["cancel", "j1", "--timeout", "0.2"]) == 0, capsys.readouterr().err
        assert layout.cancel_request("j1").is_file()
    finally:
        claim.close()
