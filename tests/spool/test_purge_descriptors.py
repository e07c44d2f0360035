"""``spoolq purge`` out of descriptors keeps the record of a kept entry still there.

A kept entry's record is the only thing that accounts for the entry, and purge keeps it
while the entry is there (:func:`spool.kept.held_by_record_file` reads it for
``kept_at``).  A record it could not open for lack of descriptors read as "no kept
entry", and purge removed it.  The open of that record is made to fail, as a real limit
cannot aim at it alone.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spoolkit import FakeClock, listing, make_spool

from spool import entries
from spool.client import Client
from spool.errors import SpoolIOError
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_purge_out_of_descriptors_keeps_a_kept_entrys_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(datetime.now(UTC) + timedelta(hours=1))
    spool = make_spool(tmp_path / "spool", clock=clock)
    layout = spool.layout
    (layout.job(JobState.DONE, "w")).mkdir()  # a directory under a record's name, kept
    assert spool.keep_in_place(str(layout.job(JobState.DONE, "w")), name="done/w.json",
                               message="kept")
    [record] = listing(layout.folder(JobState.FAILED))
    real = entries.open_nofollow

    def short_for_records(path: str | os.PathLike[str]) -> int:
        if os.fspath(path).startswith(os.fspath(layout.folder(JobState.FAILED))):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(path))
        return real(path)

    monkeypatch.setattr(entries, "open_nofollow", short_for_records)
    with pytest.raises(SpoolIOError, match="Too many open files"):
        Client(layout, spool.mover, clock).purge(60)
    assert listing(layout.folder(JobState.FAILED)) == [record]
