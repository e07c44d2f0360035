"""The read side with no daemon: newest entry wins, newest-first pages with a
cursor that stays stable while jobs move, filters, stats and live processors."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from spoolkit import FakeClock, done_record, submit

from spool.claim import Claim
from spool.cli.overview import stats_lines
from spool.client import Client
from spool.errors import NotFoundError
from spool.lease import OwnerLease
from spool.models import ErrorInfo, OwnerStatus, Record, record_bytes
from spool.reader import (
    PEEK_MAX_BYTES,
    Entry,
    SpoolReader,
    newest,
    read_regular,
    sort_key,
)
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def age(path: os.PathLike[str], seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


def finish(spool: Spool, job_id: str, state: JobState = D) -> None:
    claim = spool.claim(job_id)
    assert claim is not None
    record = done_record(claim, {"ok": job_id}, state)
    if state is F:
        spool.fail(claim, record.model_copy(
            update={"error": ErrorInfo(type="tool_error", message="no")}))
    else:
        spool.complete(claim, record)


# -- get --------------------------------------------------------------------------------


def test_get_each_state(spool: Spool) -> None:
    reader = SpoolReader(spool.layout)
    submit(spool, "p", params={"a": 1})
    assert reader.get("p").state is P and reader.get("p").params == {"a": 1}
    claim = spool.claim("p")
    assert claim is not None
    try:
        running = reader.get("p")
        assert running.state is R and running.attempts == 1 and running.started_at
    finally:
        claim.close()
    with pytest.raises(NotFoundError):
        reader.get("unknown")
    with pytest.raises(ValueError):
        reader.get("../etc/passwd")


def test_a_running_job_never_reads_as_started_before_its_not_before(spool: Spool) -> None:
    """A run's start, until its progress file says it, is its running file's ctime: the
    kernel's coarse clock, a few ms behind, so a run claimed as its ``not_before`` came
    read as started before it (the dashboard: "not before 6:49:12, started 6:49:11";
    QA h380).  Here the ctime is a minute behind: the start reads as the not_before."""
    reader = SpoolReader(spool.layout)
    submit(spool, "at-noon", not_before=time.time() + 60)
    claim = spool.claim("at-noon")
    assert claim is not None
    try:
        running = reader.get("at-noon")
        assert running.not_before is not None and running.started_at == running.not_before
    finally:
        claim.close()
    submit(spool, "now")
    claim = spool.claim("now")
    assert claim is not None
    try:
        started = reader.get("now").started_at
        assert started is not None and abs(started.timestamp() - time.time()) < 30
    finally:
        claim.close()


def test_a_drop_waiting_for_a_run_to_end_shows_as_pending_after_that_run_records(
        spool: Spool) -> None:
    """A drop of a running id waits in pending/; the run then records, newer than the
    drop. The id is pending (its new run is still to come), not done with the old one."""
    reader = SpoolReader(spool.layout)
    submit(spool, "again", params={"run": 1})
    claim = spool.claim("again")
    assert claim is not None
    try:
        submit(spool, "again", params={"run": 2})
        time.sleep(0.03)  # the record is written after the drop
        spool.complete(claim, done_record(claim, "first"))
    finally:
        claim.close()
    got = reader.get("again")
    assert got.state is P and got.params == {"run": 2}
    assert [r.id for r in reader.page(state=P).records] == ["again"]
    assert reader.page(state=D).records == []


def test_a_job_that_moves_while_a_page_is_read_is_still_listed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claimed between the folder scan and the read: listed where it went, so paging a
    busy spool never loses a job between pages."""
    reader = SpoolReader(spool.layout)
    seed(spool, 5)
    moved: list[Claim] = []
    pending = os.fspath(spool.layout.job(P, "job-002"))

    def claim_then_read(path: str | os.PathLike[str], limit: int | None = None, *,
                        strict: bool = False) -> bytes | None:
        if os.fspath(path) == pending and not moved:  # its first read, after the scan
            taken = spool.claim("job-002")
            assert taken is not None
            moved.append(taken)
        return read_regular(path, limit, strict=strict)

    monkeypatch.setattr("spool.listing.read_regular", claim_then_read)
    try:
        listed = {r.id: r.state for r in reader.page(limit=10).records}
        assert len(listed) == 5 and listed["job-002"] is R
        assert "job-002" not in {r.id for r in reader.page(state=P, limit=10).records}
    finally:
        for taken in moved:
            taken.close()


def test_get_prefers_newest_of_duplicates(spool: Spool) -> None:
    reader = SpoolReader(spool.layout)
    submit(spool, "dup", params={"run": 1})
    finish(spool, "dup")
    age(spool.layout.job(D, "dup"), 60)
    submit(spool, "dup", params={"run": 2})  # a re-drop, newer than the old record
    got = reader.get("dup")
    assert got.state is P and got.params == {"run": 2}

    # a completion cut short: the running leftover is older than the terminal record
    claim = spool.claim("dup")
    assert claim is not None
    try:
        spool.publish_terminal(done_record(claim, "second"))
        future = time.time() + 5
        os.utime(spool.layout.job(D, "dup"), (future, future))
        got = reader.get("dup")
        assert got.state is D and got.result == "second"
    finally:
        claim.close()

    # both terminal folders: the newer record wins
    spool.layout.job(F, "dup").write_bytes(record_bytes(Record(
        id="dup", tool="echo", state=F, error=ErrorInfo(type="timeout", message="x"))))
    later = time.time() + 10
    os.utime(spool.layout.job(F, "dup"), (later, later))
    assert reader.get("dup").state is F


def test_a_cancelled_re_drops_record_does_not_hide_the_run_going_on(spool: Spool) -> None:
    """A re-drop of a running id waits in pending/; cancelled there, its failed record is
    newer than the running file, and won: ``show`` said failed, a second ``cancel``
    refused the still-running run as finished, ``wait`` exited 1 for a job that then
    succeeded (QA).  A newer record wins only if it is of the running file's run."""
    reader = SpoolReader(spool.layout)
    submit(spool, "cc", params={"v": 1}, submitted_at=T0.isoformat())
    claim = spool.claim("cc")
    assert claim is not None
    try:
        spool.layout.job(F, "cc").write_bytes(record_bytes(Record(
            id="cc", tool="echo", state=F, submitted_at=T0 + timedelta(seconds=5),
            params={"v": 2}, error=ErrorInfo(type="cancelled", message="cancelled"))))
        later = time.time() + 5
        os.utime(spool.layout.job(F, "cc"), (later, later))
        got = reader.get("cc")
        assert got.state is R and got.params == {"v": 1}
        assert reader.stats()["counts"]["running"] == 1
        spool.publish_terminal(done_record(claim, "v1 done"))  # its own: newer still
        got = reader.get("cc")
        assert got.state is D and got.result == "v1 done"
    finally:
        claim.close()


def tied(entry: Entry, stamp: int) -> Entry:
    """``entry`` as if its telling timestamp (ctime of an active file, mtime of a record)
    were ``stamp``: what one tick of the filesystem's coarse clock gives two events."""
    return Entry(entry.job_id, entry.state, entry.path, stamp, stamp)


@pytest.mark.parametrize("result_bytes", [10, 9 * 1024 * 1024])
def test_a_tie_between_a_run_and_an_earlier_runs_record_goes_to_the_run(
        spool: Spool, result_bytes: int) -> None:
    """A drop of an id that waited for the id's run is claimed the moment that run is
    recorded, often in the same tick of the filesystem's clock: the claim's ctime equalled
    the old record's mtime, the tie went to the record, and ``wait`` answered the earlier
    run's result at once (``show``, ``ls`` and statusd said done for the whole new run).
    A tie is now decided by whose run the record is; a record of the running file's own
    run (a completion whose running file is not yet removed) still wins it."""
    reader = SpoolReader(spool.layout)
    submit(spool, "re", params={"run": 1}, submitted_at=T0.isoformat())
    finish(spool, "re")
    submit(spool, "re", params={"run": 2}, submitted_at=(T0 + timedelta(seconds=1)).isoformat())
    claim = spool.claim("re")
    assert claim is not None
    try:
        found = {e.state: e for e in reader.entries_of("re")}
        assert set(found) == {R, D}
        chosen = newest([tied(found[R], 7), tied(found[D], 7)])
        assert chosen is not None and chosen.state is R
        assert reader.load(chosen).params == {"run": 2}  # type: ignore[union-attr]

        spool.publish_terminal(done_record(claim, "x" * result_bytes))  # this run's own
        found = {e.state: e for e in reader.entries_of("re")}
        chosen = newest([tied(found[R], 7), tied(found[D], 7)])
        assert chosen is not None and chosen.state is D
    finally:
        claim.close()


@pytest.mark.parametrize("submitted", [b"1764460000", b'"2026-11-30T01:00:00+01:00"'])
def test_a_tie_with_its_own_runs_record_reads_the_submission_as_the_job_model_does(
        spool: Spool, submitted: bytes) -> None:
    """A drop may give ``submitted_at`` as epoch seconds (the job model takes them): the
    tie-break read only a string, took the file's mtime instead, and so said the job was
    still running beside the record of that very run (recovery, which reads the model,
    called the run finished)."""
    path = spool.layout.job(P, "epoch")
    path.write_bytes(b'{"tool": "echo", "submitted_at": ' + submitted + b"}")
    claim = spool.claim("epoch")
    assert claim is not None
    try:
        spool.publish_terminal(done_record(claim, "ok"))
        found = {e.state: e for e in SpoolReader(spool.layout).entries_of("epoch")}
        chosen = newest([tied(found[R], 7), tied(found[D], 7)])
        assert chosen is not None and chosen.state is D
    finally:
        claim.close()


def test_wait_ends_when_the_job_it_saw_is_removed(spool: Spool) -> None:
    """``spoolq wait`` (and ``submit --wait``) of a job whose pending file was then
    removed by hand polled for ever: it kept the last state it had seen.  Gone from
    every folder for ``gone_after_s`` (5 s by default), the job is not found."""
    client = Client(spool.layout, spool.mover)
    submit(spool, "withdrawn")
    seen: list[JobState] = []

    def remove_once_seen(record: Record) -> None:
        seen.append(record.state)
        spool.layout.job(P, "withdrawn").unlink()

    start = time.monotonic()
    with pytest.raises(NotFoundError, match="withdrawn is gone: it was pending"):
        client.wait("withdrawn", on_update=remove_once_seen, gone_after_s=0.3)
    assert seen == [P] and 0.3 <= time.monotonic() - start < 5


def test_a_cancel_asked_as_its_run_ends_leaves_no_request_behind(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel reads the job as running, then writes its request.  When the run ended
    on its own in between, its processor had already dropped the run's sidecars, so
    the request stayed in ``cancel/`` until a recovery scan (``SPOOL_SCAN_S``) and
    cancelled a new drop of the id claimed meanwhile, before it ran."""
    client = Client(spool.layout, spool.mover)
    submit(spool, "quick")
    claim = spool.claim("quick")
    assert claim is not None
    read = client.reader.get

    def read_then_end_the_run(job_id: str) -> Record:
        record = read(job_id)
        if not claim.closed:  # the run ends on its own just after the cancel saw it
            spool.complete(claim, done_record(claim))
        return record

    monkeypatch.setattr(client.reader, "get", read_then_end_the_run)
    assert client.cancel("quick", wait_s=1.0).state is D
    assert claim.closed and not os.path.lexists(spool.layout.cancel_request("quick"))


def test_get_tolerates_garbage_record(spool: Spool) -> None:
    spool.layout.job(D, "junk").write_bytes(b"{not json")
    record = SpoolReader(spool.layout).get("junk")
    assert record.state is D and record.id == "junk"


# -- page -------------------------------------------------------------------------------


def seed(spool: Spool, count: int, tools: tuple[str, ...] = ("echo",)) -> list[str]:
    ids = []
    for n in range(count):
        job_id = f"job-{n:03d}"
        submit(spool, job_id, tool=tools[n % len(tools)],
               submitted_at=(T0 + timedelta(seconds=n)).isoformat())
        ids.append(job_id)
    return ids


def test_a_page_whose_newest_files_go_while_it_is_read_is_still_whole(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page keeps only the files that can still be on it once ``limit + 1`` others
    sort after them; should those others be gone by the time they are read as records
    (large files are read again, not kept), the page is made again from every file:
    never a short page, nor a last page that ends the listing early."""
    ids = seed(spool, 12)
    big = ids[-3:]  # the three newest: over what a page keeps of a file
    for job_id in big:
        path = spool.layout.job(P, job_id)
        fields = orjson.loads(path.read_bytes())
        path.write_bytes(orjson.dumps({**fields, "params": {"pad": "x" * 70_000}}))
    for n, job_id in enumerate(ids):  # file times of the submissions: narrow key bounds
        stamp = (T0 + timedelta(seconds=n)).timestamp()
        os.utime(spool.layout.job(P, job_id), (stamp, stamp))
    reader = SpoolReader(spool.layout)
    stamps = reader.current_stamps
    # The newest files first, so that the three are what every other file is dropped for.
    monkeypatch.setattr(reader, "current_stamps", lambda state=None: dict(
        sorted(stamps(state).items(), reverse=True)))
    gone = {os.fspath(spool.layout.job(P, job_id)) for job_id in big}

    def read_then_remove(path: str | os.PathLike[str], limit: int | None = None, *,
                         strict: bool = False) -> bytes | None:
        data = read_regular(path, limit, strict=strict)
        if os.fspath(path) in gone:  # read for its key, then gone (purged, say)
            gone.discard(os.fspath(path))
            os.unlink(path)
        return data

    monkeypatch.setattr("spool.listing.read_regular", read_then_remove)
    page = reader.page(limit=2)
    assert [r.id for r in page.records] == ids[-4:-6:-1]
    seen, cursor = [r.id for r in page.records], page.next_cursor
    while cursor is not None:
        page = reader.page(limit=2, cursor=cursor)
        seen, cursor = seen + [r.id for r in page.records], page.next_cursor
    assert seen == ids[-4::-1]


def test_page_newest_first(spool: Spool) -> None:
    ids = seed(spool, 12)
    page = SpoolReader(spool.layout).page(limit=5)
    assert [r.id for r in page.records] == ids[::-1][:5]
    assert page.next_cursor is not None


def test_jobs_submitted_within_one_second_are_listed_newest_first(spool: Spool) -> None:
    """Newest ``submitted_at`` first (DESIGN section 9, "HTTP shapes"), to the
    microsecond: jobs submitted within one second are not ordered by their ids."""
    for job_id, offset_ms in (("a", 900), ("b", 100), ("c", 500)):
        submit(spool, job_id, submitted_at=(T0 + timedelta(milliseconds=offset_ms)).isoformat())
    reader = SpoolReader(spool.layout)
    assert [r.id for r in reader.page(limit=10).records] == ["a", "c", "b"]
    first = reader.page(limit=1)
    assert [r.id for r in first.records] == ["a"]
    rest = reader.page(limit=10, cursor=first.next_cursor)
    assert [r.id for r in rest.records] == ["c", "b"]


def test_cursor_stable_across_moves(spool: Spool) -> None:
    ids = seed(spool, 25)
    reader = SpoolReader(spool.layout)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = reader.page(limit=7, cursor=cursor)
        seen += [r.id for r in page.records]
        pages += 1
        # between pages, jobs move: some already listed, some not yet
        for job_id in (ids[pages], ids[-pages], ids[len(ids) // 2 + pages]):
            if spool.layout.job(P, job_id).exists():
                finish(spool, job_id, D if pages % 2 else F)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 4
    assert seen == ids[::-1], "every job listed once, in order, while jobs moved"


def test_pages_keep_the_submission_order_whatever_the_files_times_say(spool: Spool) -> None:
    """A page validates only the records that can be on it, bounding each file's sort key
    by the ``submitted_at`` it gives and its time (what a file that is no valid record
    sorts by).  A file's time is no stand-in for its submission: records are written
    when jobs finish, a job file may give any ``submitted_at``.  Every page, with a
    cursor or a tool, is still a slice of the order of all the records."""
    ids = seed(spool, 12, tools=("echo", "sleep"))  # submitted months ago
    for job_id in ids[:8]:
        finish(spool, job_id)  # records written now
    submit(spool, "from-the-future", submitted_at="2030-01-01T00:00:00+00:00")
    age(spool.layout.job(P, "from-the-future"), 86_400)
    spool.layout.job(P, "raw").write_bytes(b'{"tool": "echo"}')  # no submitted_at: its time
    age(spool.layout.job(P, "raw"), 30)
    spool.layout.job(D, "corrupt").write_bytes(b"{not json")
    age(spool.layout.job(D, "corrupt"), 3600)
    invalid = {"id": "invalid", "state": "done", "tool": "sleep", "attempts": "many",
               "submitted_at": "2031-01-01T00:00:00Z"}  # not a record: sorts by its time
    spool.layout.job(D, "invalid").write_bytes(orjson.dumps(invalid))
    age(spool.layout.job(D, "invalid"), 2 * 86_400)
    spool.layout.job(D, "undated").write_bytes(b'{"id": "undated", "state": "done"}')
    big = {"tool": "sleep", "params": {"pad": "x" * (PEEK_MAX_BYTES + 1)},
           "submitted_at": "2029-01-01T00:00:00Z"}  # too large to peek at: read whole
    spool.layout.job(P, "big").write_bytes(orjson.dumps(big))
    reader = SpoolReader(spool.layout)
    everything = sorted((reader.get(i) for i in [*ids, "from-the-future", "raw", "corrupt",
                                                 "invalid", "undated", "big"]),
                        key=sort_key, reverse=True)
    assert [r.id for r in everything[:5]] == ["from-the-future", "big", "raw", "corrupt",
                                              "invalid"]
    assert everything[-1].id == "undated"
    for tool in (None, "sleep"):
        expected = [r.id for r in everything if tool is None or r.tool == tool]
        for limit in (1, 2, 5, 50):
            seen: list[str] = []
            cursor = None
            while True:
                page = reader.page(limit=limit, cursor=cursor, tool=tool)
                seen += [r.id for r in page.records]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == expected, (tool, limit)


def test_page_filters_and_bad_input(spool: Spool) -> None:
    ids = seed(spool, 12, tools=("echo", "sleep"))
    for job_id in ids[:4]:
        finish(spool, job_id)
    finish(spool, ids[4], F)
    claim = spool.claim(ids[5])
    assert claim is not None
    reader = SpoolReader(spool.layout)
    try:
        done = reader.page(state=D)
        assert [r.id for r in done.records] == ids[3::-1]
        assert [r.id for r in reader.page(state=R).records] == [ids[5]]
        assert [r.id for r in reader.page(state=F).records] == [ids[4]]
        sleeps = reader.page(tool="sleep", limit=1000).records
        assert [r.id for r in sleeps] == ids[1::2][::-1]
        both = reader.page(state=P, tool="sleep").records
        assert [r.id for r in both] == [i for i in ids[6:][::-1] if int(i[-3:]) % 2]
        assert reader.page(tool="nothing").records == []
    finally:
        claim.close()
    with pytest.raises(ValueError):
        reader.page(limit=0)
    with pytest.raises(ValueError):
        reader.page(cursor="!!not-a-cursor")


# -- stats and processors -------------------------------------------------------------------


def test_stats_counts_and_oldest_pending(spool: Spool) -> None:
    reader = SpoolReader(spool.layout)
    assert reader.stats()["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    assert reader.stats()["oldest_pending_age_s"] is None
    ids = seed(spool, 7)
    finish(spool, ids[0])
    finish(spool, ids[1])
    finish(spool, ids[2], F)
    for state in (P, D, F):  # not jobs or records: never counted
        os.symlink("/etc/hostname", spool.layout.job(state, f"link-{state.value}"))
    (spool.layout.folder(D) / "dir.json").mkdir()
    claim = spool.claim(ids[3])
    assert claim is not None
    try:
        # Waiting since it arrived in pending/ (its ctime), whatever mtime a copy kept.
        age(spool.layout.job(P, ids[5]), 3 * 86_400)
        # 120 s after the oldest pending job (ids[4]) arrived, on the clock that stamped
        # it: time.time() + 120 read the host's clock, and a 2 s stall since the drop
        # made the age 122.
        arrived = os.stat(spool.layout.job(P, ids[4])).st_ctime_ns / 1e9
        stats = reader.stats(now=arrived + 120)
        assert stats["counts"] == {"pending": 3, "running": 1, "done": 2, "failed": 1}
        assert stats["total"] == 7
        assert stats["oldest_pending_age_s"] == pytest.approx(120, abs=2)
        assert stats["processor"] == {"alive": False, "heartbeat_at": None, "count": 0,
                                      "io_trouble": 0}
    finally:
        claim.close()


def test_stats_count_a_completion_cut_short_once_as_its_record(spool: Spool) -> None:
    """A completion killed between publishing its record and removing ``running/<id>.json``
    leaves both; the record tells the state (DESIGN section 9), in the counts too: the job
    counts once, as done, not as running."""
    submit(spool, "cut")
    submit(spool, "other")
    claim = spool.claim("cut")
    assert claim is not None
    try:
        spool.publish_terminal(done_record(claim, "ok"))
        assert os.path.lexists(spool.layout.job(R, "cut"))
        reader = SpoolReader(spool.layout)
        assert reader.get("cut").state is D
        expected = {"pending": 1, "running": 0, "done": 1, "failed": 0}
        assert reader.counts() == expected
        assert reader.stats()["counts"] == expected
        assert reader.stats()["total"] == 2
    finally:
        claim.close()


def write_status(spool: Spool, owner: str, heartbeat: datetime, job_num: int) -> None:
    status = OwnerStatus(owner=owner, pid=os.getpid(), host="h", version="t",
                         started_at=heartbeat, heartbeat_at=heartbeat, job_num=job_num)
    spool.layout.owner_status(owner).write_bytes(status.model_dump_json().encode())


def test_processors_lists_only_held_owners(spool: Spool, clock: FakeClock) -> None:
    now = datetime.now(UTC)
    lease = OwnerLease(spool.layout.owner_lock("alive"))
    try:
        write_status(spool, "alive", now, 4)
        write_status(spool, "dead", now, 8)
        spool.layout.owner_lock("dead").write_bytes(b"")  # its lock file, nobody holding it
        write_status(spool, "nolock", now, 16)
        write_status(spool, "linked", now, 32)  # a symlink for a lock: never followed
        os.symlink(spool.layout.owner_lock("alive"), spool.layout.owner_lock("linked"))
        reader = SpoolReader(spool.layout)
        assert [p.owner for p in reader.processors()] == ["alive"]
        stats = reader.stats()
        assert stats["job_num"] == 4 and stats["processor"]["alive"] is True
        assert stats["processor"]["count"] == 1
    finally:
        lease.release()
    assert SpoolReader(spool.layout).processors() == []


def test_throughput_counts_the_records_of_the_last_minute_with_no_processor(
        spool: Spool) -> None:
    """done_last_60s and failed_last_60s came from the processors' own tallies: 0 from the
    moment a processor stopped or restarted (300 jobs done 5 s before), and blind to what
    no run of theirs wrote (a quarantine, a cancel).  They count the records written in
    the last 60 s now, as the folders hold them."""
    ids = seed(spool, 5)
    finish(spool, ids[0])
    finish(spool, ids[1])
    finish(spool, ids[2])
    finish(spool, ids[3], F)
    age(spool.layout.job(D, ids[2]), 120)  # done two minutes ago: outside the window
    stats = SpoolReader(spool.layout).stats()
    assert stats["processor"]["count"] == 0
    assert stats["throughput"] == {"done_last_60s": 2, "failed_last_60s": 1}
    later = SpoolReader(spool.layout).stats(now=time.time() + 61)
    assert later["throughput"] == {"done_last_60s": 0, "failed_last_60s": 0}


def test_a_processor_with_a_stale_heartbeat_is_not_counted_live(spool: Spool) -> None:
    """A processor that holds its lock but stopped heartbeating (SIGSTOP, a hung loop)
    made processor.alive false, yet still counted as a live processor, with its JOB_NUM,
    busy workers and a done_last_60s frozen at its last heartbeat."""
    now = datetime.now(UTC)
    leases = [OwnerLease(spool.layout.owner_lock(o)) for o in ("hung", "fresh")]
    try:
        hung = OwnerStatus(owner="hung", pid=os.getpid(), host="h", version="t",
                           started_at=now, heartbeat_at=now - timedelta(seconds=90),
                           job_num=8, busy_workers=3, fast_running=1, done_last_60s=500)
        spool.layout.owner_status("hung").write_bytes(hung.model_dump_json().encode())
        reader = SpoolReader(spool.layout)
        alone = reader.stats()
        assert alone["processor"] == {"alive": False, "count": 0, "io_trouble": 0,
                                      "heartbeat_at": hung.heartbeat_at}
        assert (alone["job_num"], alone["busy_workers"], alone["fast_running"]) == (0, 0, 0)
        assert alone["throughput"] == {"done_last_60s": 0, "failed_last_60s": 0}
        assert [p["alive"] for p in alone["processors"]] == [False]
        write_status(spool, "fresh", now, 4)
        both = reader.stats()
        assert both["processor"]["alive"] is True and both["processor"]["count"] == 1
        assert (both["job_num"], both["busy_workers"]) == (4, 0)
        assert {p["owner"]: p["alive"] for p in both["processors"]} == {"fresh": True,
                                                                      "hung": False}
    finally:
        for lease in leases:
            lease.release()


def test_oldest_due_pending_age_leaves_out_the_wait_for_not_before(spool: Spool) -> None:
    """oldest_pending_age_s counts a job that waits for its not_before (or a retry
    backoff), so one job scheduled for tomorrow kept an alert on it firing all day.
    oldest_due_pending_age_s is how long a pending job has waited since it could run."""
    start = time.time()
    submit(spool, "scheduled", not_before=start + 3600)
    submit(spool, "delayed", not_before=start + 100)
    arrived = os.stat(spool.layout.job(P, "scheduled")).st_ctime_ns / 1e9
    reader = SpoolReader(spool.layout)
    stats = reader.stats(now=arrived + 120)
    assert stats["oldest_pending_age_s"] == pytest.approx(120, abs=1)
    assert stats["oldest_due_pending_age_s"] == pytest.approx(arrived + 120 - (start + 100))
    assert reader.stats(now=arrived + 50)["oldest_due_pending_age_s"] is None
    submit(spool, "plain")  # no not_before: due from its arrival
    assert reader.stats()["oldest_due_pending_age_s"] == pytest.approx(0, abs=1)


def test_oldest_due_pending_is_exact_when_the_oldest_jobs_wait_for_later(spool: Spool) -> None:
    """``stats`` reads pending jobs oldest arrival first and stops once no later arrival
    can be due sooner; jobs that wait for a ``not_before`` must not end the search early:
    the one due longest here is the newest but one.  A re-drop of a finished id counts
    once, as pending."""
    start = time.time()
    submit(spool, "scheduled", not_before=start + 3600)  # not due at all
    submit(spool, "delayed", not_before=start + 50)  # due, but after "plain" arrived
    (spool.layout.folder(P) / "broken.json").write_bytes(b'{"tool": ')  # due on arrival
    submit(spool, "plain")
    finish(spool, "plain")
    submit(spool, "plain")  # a re-drop: pending again, and due from this arrival
    arrived = {name: os.stat(spool.layout.job(P, name)).st_ctime_ns / 1e9
               for name in ("scheduled", "delayed", "broken", "plain")}
    reader = SpoolReader(spool.layout)
    now = arrived["plain"] + 100
    stats = reader.stats(now=now)
    assert stats["counts"] == {"pending": 4, "running": 0, "done": 0, "failed": 0}
    assert stats["oldest_pending_age_s"] == pytest.approx(now - arrived["scheduled"])
    assert stats["oldest_due_pending_age_s"] == pytest.approx(now - arrived["broken"])
    os.unlink(spool.layout.job(P, "broken"))
    assert reader.stats(now=now)["oldest_due_pending_age_s"] == pytest.approx(100)
    assert reader.stats(now=start + 60)["oldest_due_pending_age_s"] == pytest.approx(
        start + 60 - arrived["plain"])
    os.unlink(spool.layout.job(P, "plain"))
    assert reader.stats(now=start + 60)["oldest_due_pending_age_s"] == pytest.approx(10)
    assert reader.stats(now=start + 40)["oldest_due_pending_age_s"] is None


@pytest.mark.parametrize("trouble", [
    {"error": "disk full", "since": "2026-12-01T12:00:00", "retry_at": "2026-12-01T12:00:30"},
    {"error": "disk full", "since": "2026-12-01T12:00:00Z"},
    "disk full",
], ids=["no offset", "no retry_at", "a string"])
def test_a_status_file_whose_io_trouble_cannot_be_read_still_counts_its_processor(
        spool: Spool, trouble: Any) -> None:
    """``io_trouble`` is advisory.  One without an offset made ``spoolq stats`` crash
    ("can't subtract offset-naive and offset-aware datetimes"); then such a status file
    was not read at all, so a live processor was counted down (``spoolq_processor_up 0``
    with no other).  It is counted live and in trouble, timed by its heartbeat."""
    now = datetime.now(UTC)
    lease = OwnerLease(spool.layout.owner_lock("odd"))
    try:
        status = OwnerStatus(owner="odd", pid=os.getpid(), host="h", version="t",
                             started_at=now, heartbeat_at=now).model_dump(mode="json")
        status["io_trouble"] = trouble
        spool.layout.owner_status("odd").write_bytes(orjson.dumps(status))
        stats = SpoolReader(spool.layout).stats()
        assert stats["processor"] == {**stats["processor"], "count": 1, "io_trouble": 1}
        [processor] = stats["processors"]
        assert processor["io_trouble"]["since"] == processor["heartbeat_at"]
        assert "disk full" in processor["io_trouble"]["error"]
        assert "disk full" in "\n".join(stats_lines(stats))
        status["io_trouble"] = {"error": "disk full", "since": "2026-12-01T12:00:00Z",
                                "retry_at": "2026-12-01T12:00:30Z"}
        spool.layout.owner_status("odd").write_bytes(orjson.dumps(status))
        stats = SpoolReader(spool.layout).stats()
        assert stats["processors"][0]["io_trouble"]["error"] == "disk full"
        assert "I/O trouble for " in "\n".join(stats_lines(stats))
    finally:
        lease.release()
