"""``spoolq purge`` against a re-run of an old id finishing at the same time.

Purge lists a terminal folder, then removes the old entries it listed, in batches.  A
re-drop of a finished id leaves the old record in place until the new run's record
replaces it by rename (DESIGN section 9).  When that rename landed between purge's
listing and its unlink, purge removed the new run's record under the old one's name:
the job left ``running/`` a moment later and was gone from every folder, its result
lost.  Purge must remove only the file it judged old.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from spoolkit import age, listing, make_spool, run_to_end, submit

from spool import purge as purge_module
from spool.client import Client
from spool.states import JobState

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

D, F = JobState.DONE, JobState.FAILED


def _rerun_after_listing(monkeypatch: pytest.MonkeyPatch, job_id: str,
                         rerun: Callable[[], None]) -> list[str]:
    """Make purge's listing run ``rerun`` right after it hands out ``job_id``'s entry:
    the re-run's record lands between purge's look and its unlink."""
    listed = purge_module.listed
    seen: list[str] = []

    def scan(folder: str, state: JobState) -> Iterator[purge_module.Listed]:
        for entry in listed(folder, state):
            yield entry
            seen.append(entry.job_id)
            if entry.job_id == job_id:
                rerun()

    monkeypatch.setattr(purge_module, "listed", scan)
    return seen


@pytest.mark.parametrize("state", [D, F])
def test_purge_keeps_a_new_runs_record_that_replaced_the_old_one_it_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: JobState) -> None:
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    for job_id in ("again", "other"):
        submit(spool, job_id)
        run_to_end(spool, job_id, state, "first run", "run first run")
        age(layout.job(state, job_id))
    submit(spool, "again")  # the re-drop, claimed and finished while purge runs
    seen = _rerun_after_listing(monkeypatch, "again", lambda: run_to_end(
        spool, "again", state, "second run", "run second run"))

    report = Client(layout, spool.mover).purge(3600)

    assert "again" in seen
    assert listing(layout.folder(state)) == ["again.json"]
    record = orjson.loads(layout.job(state, "again").read_bytes())
    assert record["result"] == "second run"
    assert (report.removed, report.kept) == (1, 1)
    assert listing(layout.folder(JobState.RUNNING)) == []
    assert listing(layout.folder(JobState.PENDING)) == []


def test_purge_keeps_the_original_of_a_quarantine_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quarantine of a re-drop places the drop's bytes at ``failed/<id>.orig`` first and
    its record after, over the old one: purge, between the two, removes the old record
    but not the new original, whose record is on its way (its note in ``stage/`` names
    it).  Judged by the time of the listing, one placed 60 ms before it was removed
    (the session's review: a slow disk's fsyncs between the two)."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "bad")
    run_to_end(spool, "bad", F, "first run", "run first run")
    age(layout.job(F, "bad"))
    drop = layout.job(JobState.PENDING, "bad")
    drop.write_bytes(b"{the re-drop, no job")
    st = drop.lstat()
    publish = spool.publish_terminal
    reports = []

    def purge_first(record: object, unwritten: object = None) -> None:
        time.sleep(0.1)  # the original placed, its record slow to come
        reports.append(Client(layout, spool.mover).purge(3600))
        publish(record, unwritten)  # type: ignore[arg-type]

    monkeypatch.setattr(spool, "publish_terminal", purge_first)
    record = spool.quarantine("bad.json", "malformed JSON", kind="file", size=st.st_size,
                              mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    assert record is not None and record.id == "bad"
    assert (reports[0].removed, reports[0].kept) == (1, 0)
    assert listing(layout.folder(F)) == ["bad.json", "bad.orig"]
    assert layout.original("bad").read_bytes() == b"{the re-drop, no job"
    assert orjson.loads(layout.job(F, "bad").read_bytes())["source"]["name"] == "bad.json"


def test_purge_removes_an_original_touched_after_its_record_before_the_listing(
        tmp_path: Path) -> None:
    """A chmod or chown -R of the spool (an rsync -a, a mv) changes the original after
    its record, in any order: taken for a re-drop's, it stayed, and recovery gave it a
    record of its own, "quarantined when its processor died" (QA)."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "bad")
    run_to_end(spool, "bad", F, "first run", "run first run")
    layout.original("bad").write_bytes(b"{the bad drop")
    age(layout.job(F, "bad"))
    time.sleep(0.03)  # past the tick the record's ctime was stamped in
    layout.original("bad").chmod(0o600)  # its ctime now after the record's
    assert layout.original("bad").stat().st_ctime_ns > layout.job(F, "bad").stat().st_ctime_ns
    time.sleep(0.05)  # the purge comes later

    report = Client(layout, spool.mover).purge(3600)

    assert (report.removed, report.kept) == (1, 0)
    assert listing(layout.folder(F)) == []
