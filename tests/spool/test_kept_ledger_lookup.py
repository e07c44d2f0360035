"""Recovery's record of a kept entry that has none (its writer killed between the rename
and the record): an entry the disk cannot look up (EIO: a bad sector under it) is that
entry's trouble, left and said, recorded at a later pass.  Its lstat's OSError got out
of the pass: the processor paused claims at each pass (exit 75 at each start) for as
long as the sector stayed bad."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from spoolkit import FakeClock, listing

from spool import kept as kept_module
from spool.fsops import StrPath
from spool.ids import invalid_id
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_kept_entry_that_cannot_be_looked_up_is_said_and_recorded_later(
        spool: Spool, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = spool.layout
    place = layout.progress_file("g")
    place.mkdir()
    (place / "notes.txt").write_text("an operator's notes\n")
    kept = Path(layout.kept_str(str(place), invalid_id(clock.now())))
    os.rename(place, kept)  # as a writer killed before its record leaves it
    clock.advance(kept_module.KEPT_GRACE_S)
    real_lstat = os.lstat

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == os.fspath(kept):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(kept))
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    recovery = Recovery(spool)
    monkeypatch.setattr(os, "lstat", lstat)
    report = recovery.scan()
    monkeypatch.undo()
    assert any(kept.name in said for said in report.unreadable), report.unreadable
    assert [n for n in listing(layout.folder(JobState.FAILED)) if n.endswith(".json")] == []
    record_id = kept.name.rpartition(".kept-")[2]
    assert recovery.scan().restored == [record_id]  # the disk reads again
    assert layout.job(JobState.FAILED, record_id).exists()
