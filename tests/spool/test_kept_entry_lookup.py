"""``spoolq purge`` keeps the record of a kept entry (another user's directory spoolq
renamed within its folder) while the entry is there: that record is the only thing that
accounts for it.  Whether it is there was asked of ``os.path.lexists``, which takes a
lookup the disk fails (EIO: a bad sector under the entry) for nothing there: the record
was purged with its entry still in place, unaccounted for.  It is now kept and said in
the report's ``unread``, as a record whose own read fails is."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spoolkit import FakeClock, listing, make_spool

from spool.client import Client
from spool.fsops import StrPath
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_purge_keeps_a_record_whose_kept_entry_cannot_be_looked_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool",
                       clock=FakeClock(datetime.now(UTC) + timedelta(hours=1)))
    layout = spool.layout
    occupied = layout.job(JobState.DONE, "w")
    occupied.mkdir()
    (occupied / "notes.txt").write_text("an operator's notes\n")
    assert spool.keep_in_place(str(occupied), name="done/w.json", message="kept")
    [kept_name] = [n for n in listing(layout.folder(JobState.DONE)) if n.startswith(".")]
    [record_name] = listing(layout.folder(JobState.FAILED))
    kept = os.fspath(layout.folder(JobState.DONE) / kept_name)
    real_lstat = os.lstat

    def lstat(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == kept:
            raise OSError(errno.EIO, os.strerror(errno.EIO), kept)
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    report = Client(layout, spool.mover, spool.clock).purge(60)
    monkeypatch.undo()
    assert listing(layout.folder(JobState.FAILED)) == [record_name], \
        "the record of a kept entry still there was purged"
    assert (report.removed, report.kept) == (0, 1)
    assert any(kept_name in said for said in report.unread), report.unread
    assert os.path.isdir(kept)
