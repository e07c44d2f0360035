"""Edges of what readers are told: a listing's pages (a cursor is the last row's key:
the next page starts just past it, and the last page has no cursor), a processor's
room in the stats, and the attempts a submit refuses (QA h338's mutation audit: each
test here fails with one edge moved by one)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spoolkit import submit

from spool.models import Job, OwnerStatus
from spool.reader import SpoolReader
from spool.states import JobState
from spool.stats import spent_attempts, stats_document
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _walk(reader: SpoolReader, limit: int) -> tuple[list[str], int]:
    """Every id the pages list, in order, and how many pages were asked for."""
    ids: list[str] = []
    cursor: str | None = None
    for asked in range(1, 20):
        page = reader.page(limit=limit, cursor=cursor)
        ids += [record.id for record in page.records]
        if page.next_cursor is None:
            return ids, asked
        cursor = page.next_cursor
    raise AssertionError(f"pages never ended: {ids}")


def test_pages_list_each_job_once_and_the_last_full_page_has_no_cursor(
        spool: Spool) -> None:
    for n in range(4):
        submit(spool, f"j{n}", submitted_at=T0 + timedelta(seconds=n))
    reader = SpoolReader(spool.layout)
    # Four jobs, two a page: two pages, the second full and the last (a cursor on it
    # had a script ask for a third, empty, page).
    assert _walk(reader, 2) == (["j3", "j2", "j1", "j0"], 2)
    assert _walk(reader, 3) == (["j3", "j2", "j1", "j0"], 2)


def test_a_processor_s_room_is_its_own_word_and_its_job_num_only_when_it_gives_none(
) -> None:
    now = datetime.now(UTC)
    full = OwnerStatus(owner="full", pid=os.getpid(), host="h", version="t",
                       started_at=now, heartbeat_at=now, job_num=4, compute_room=0)
    older = OwnerStatus(owner="older", pid=os.getpid(), host="h", version="t",
                        started_at=now, heartbeat_at=now, job_num=2)
    doc = stats_document({}, None, [full, older], now.timestamp(), finished_recently={},
                         oldest_due_pending_age_s=None, in_progress=None)
    assert (doc["job_num"], doc["compute_room"]) == (6, 2)


def test_a_submit_is_refused_only_once_its_attempts_reach_max_attempts(
        spool: Spool) -> None:
    below = Job.model_validate({"tool": "echo", "attempts": 2, "max_attempts": 3})
    at = Job.model_validate({"tool": "echo", "attempts": 3, "max_attempts": 3})
    assert spent_attempts(spool.layout, below) is None
    assert spent_attempts(spool.layout, at) is not None


def test_in_progress_drops_are_a_client_s_names_not_a_filesystem_s_or_spoolq_s(
        spool: Spool) -> None:
    """What a filesystem names a file unlinked while open (libfuse's ``.fuse_hidden``, an
    NFS client's ``.nfs``: each claim on a FUSE spool left one, the job's mtime) and
    spoolq's kept names are no upload cut off; a client's name that holds ``.kept-``
    somewhere is one all the same (QA h397)."""
    pending = spool.layout.folder(JobState.PENDING)
    for name in (".fuse_hidden0000003000000002", ".nfs000000000012340001",
                 ".x.json.kept-invalid-1", "a.kept-1.json.part", "up.json.filepart"):
        (pending / name).write_bytes(b"{")
    assert SpoolReader(spool.layout).stats(partial=True)["in_progress_drops"]["count"] == 2


def test_a_status_file_without_its_lock_file_is_no_processor_live_or_dead(tmp_path: Path) -> None:
    """A status file whose lock file is missing (removed by hand, a symlink) is no live
    processor's: read as one once ``dead_processors`` came (``is_locked``'s None taken
    for held), ``spoolq stats`` said "processor up" and "holds its lock" for it (h403);
    nor a crash's, which has a lock file that recovery removes with it."""
    from spool.layout import Layout  # noqa: PLC0415
    from spool.stats import _processors, dead_processors  # noqa: PLC0415

    layout = Layout(tmp_path)
    layout.owners.mkdir(parents=True)
    now = datetime.now(UTC)
    status = OwnerStatus(owner="ghost", pid=42, host="h", version="0", started_at=now,
                         heartbeat_at=now, tools=[{"name": "nap"}])
    layout.owner_status("ghost").write_text(status.model_dump_json())
    assert _processors(layout) == []
    assert dead_processors(layout) == []
    layout.owner_lock("ghost").write_bytes(b"")  # its lock file, held by none: a crash's
    assert _processors(layout) == []
    assert [s.owner for s in dead_processors(layout)] == ["ghost"]
