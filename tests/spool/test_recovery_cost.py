"""What a periodic recovery pass reads of ``done/``, which only ``spoolq purge`` shrinks.

A pass runs on the processor's loop every SPOOL_SCAN_S; listing all of ``done/`` there
held FAST jobs and the heartbeat ~0.2 s a pass at 200,000 records.  The passes after
the first must read no name of ``done/`` when ``failed/`` is far smaller, and still
settle every id left in both (and every original) that another process leaves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from spoolkit import locate, read_json

from spool.errors import ErrorType
from spool.models import ErrorInfo, Record, record_bytes
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

D, F = JobState.DONE, JobState.FAILED


class _Listing(list[Any]):
    """A materialised ``os.scandir``: iterable, and usable in a ``with``."""

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class DoneReads:
    """Counts the names of ``folder`` listed through ``os.scandir`` and ``os.listdir``
    (by path or by descriptor), whatever the caller."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        self.folder = os.path.realpath(folder)
        self.names = 0
        real_scandir, real_listdir = os.scandir, os.listdir

        def scandir(path: Any = ".") -> _Listing:
            with real_scandir(path) as it:
                entries = _Listing(it)
            self._count(path, len(entries))
            return entries

        def listdir(path: Any = ".") -> list[str]:
            names = real_listdir(path)
            self._count(path, len(names))
            return names

        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "listdir", listdir)

    def _count(self, path: Any, n: int) -> None:
        where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else path
        if os.path.realpath(where) == self.folder:
            self.names += n


def _records(spool: Spool, state: JobState, ids: list[str]) -> None:
    """Write records straight into ``state``'s folder, as years of jobs leave them."""
    data = record_bytes(Record(id="x", tool="echo", state=state, result=1))
    for job_id in ids:
        spool.layout.job(state, job_id).write_bytes(data)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def big_done(spool: Spool) -> Iterator[Spool]:
    _records(spool, D, [f"old-{i:05d}" for i in range(3000)])
    _records(spool, F, [f"bad-{i}" for i in range(5)])
    yield spool


def test_passes_after_the_first_read_no_name_of_done(
        big_done: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = Recovery(big_done)
    assert not recovery.scan().changed  # the start-up pass
    reads = DoneReads(monkeypatch, big_done.layout.folder(D))
    for _ in range(3):
        assert not recovery.scan().changed
    assert reads.names == 0, f"3 periodic passes listed {reads.names} names of done/"


def test_what_another_process_cut_short_is_settled_by_the_next_pass(
        big_done: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one Recovery keeps passing (as a running processor's does), records of one
    id left in both done/ and failed/ (the newer kept, either way round) and originals
    left by cut-short transitions are settled by its next pass, done/ still unlisted."""
    spool, layout = big_done, big_done.layout
    recovery = Recovery(spool)
    recovery.scan()
    reads = DoneReads(monkeypatch, layout.folder(D))
    # A run's done record published, the earlier failed one not yet removed.
    _records(spool, F, ["redone"])
    _age(layout.job(F, "redone"), 100)
    _records(spool, D, ["redone"])
    # A cancel's failed record published, the earlier done one not yet removed.
    _records(spool, D, ["cancelled"])
    _age(layout.job(D, "cancelled"), 100)
    spool.mover.publish(layout.job(F, "cancelled"), record_bytes(Record(
        id="cancelled", tool="echo", state=F,
        error=ErrorInfo(type=ErrorType.CANCELLED, message="cancelled while pending"))))
    # A quarantine cut short before its record; a later run's done record beside an
    # older original it should have removed.
    layout.original("lost").write_bytes(b"what a client sent")
    layout.original("rerun").write_bytes(b"the bad drop before")
    time.sleep(0.03)  # the coarse filesystem clock ticks past the original's ctime
    _records(spool, D, ["rerun"])

    report = recovery.scan()

    assert report.removed == 3 and report.restored == ["lost"]
    assert locate(layout, "redone") == [D]
    assert locate(layout, "cancelled") == [F]
    assert read_json(layout.job(F, "cancelled"))["error"]["type"] == "cancelled"
    assert locate(layout, "rerun") == [D] and not os.path.lexists(layout.original("rerun"))
    assert locate(layout, "lost") == [F]
    assert read_json(layout.job(F, "lost"))["error"]["type"] == "invalid_job"
    assert not recovery.scan().changed
    assert reads.names == 0


def test_a_failed_folder_larger_than_done_is_still_cross_checked(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where failed/ outnumbers done/, done/ is listed (cheaper than a lookup per failed
    name), every pass, and a duplicate is settled the same way."""
    layout = spool.layout
    _records(spool, F, [f"bad-{i:03d}" for i in range(200)])
    _records(spool, D, ["fine"])
    recovery = Recovery(spool)
    recovery.scan()
    reads = DoneReads(monkeypatch, layout.folder(D))
    _age(layout.job(F, "bad-007"), 100)
    _records(spool, D, ["bad-007"])
    assert recovery.scan().removed == 1
    assert locate(layout, "bad-007") == [D]
    assert reads.names == 2  # done/ listed in that pass: "fine" and "bad-007"
