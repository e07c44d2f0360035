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


def test_purge_keeps_the_record_of_a_kept_entry_whose_name_is_not_utf8(
        tmp_path: Path) -> None:
    """A kept name of bytes that are not UTF-8 is in its record's ``kept_at`` as escapes,
    four characters a byte: a lookup of that text is past the longest name a folder holds
    (ENAMETOOLONG), which names nothing there, so the folder is searched.  Taken for the
    disk failing, it failed the whole purge."""
    spool = make_spool(tmp_path / "spool",
                       clock=FakeClock(datetime.now(UTC) + timedelta(hours=1)))
    layout = spool.layout
    occupied = os.path.join(os.fsencode(layout.folder(JobState.DONE)), b"\xff" * 150)
    os.mkdir(occupied)
    with open(os.path.join(occupied, b"notes.txt"), "w") as notes:
        notes.write("an operator's notes\n")
    record = spool.keep_in_place(os.fsdecode(occupied), name="done/w.json", message="kept")
    assert record is not None and record.source is not None
    assert len(os.fsencode(str(record.source.kept_at))) > 255
    report = Client(layout, spool.mover, spool.clock).purge(60)
    assert (report.removed, report.kept, report.held) == (0, 1, (record.source.kept_at,))
    assert listing(layout.folder(JobState.FAILED)) == [f"{record.id}.json"]
