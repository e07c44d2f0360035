"""The recovery scan against real processes and real SIGKILLs: exactly a dead
claimant's jobs are requeued or abandoned, a live one's are never touched, and
transitions cut short in ``tmp/`` are settled without losing a byte."""

from __future__ import annotations

import errno
import os
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from spoolkit import (
    NOBODY,
    FakeClock,
    Holders,
    a_grace_later,
    actor,
    await_line,
    drop_raw,
    listing,
    locate,
    make_spool,
    needs_root,
    read_json,
    submit,
)

import spool.staged as staged_module
from spool.cli.render import record_lines, when
from spool.client import Client
from spool.clock import utc_from_ns
from spool.errors import ErrorType, SpoolIOError
from spool.fsops import WRITE_TAG
from spool.ids import invalid_id
from spool.layout import Layout, pid_space
from spool.lease import is_locked
from spool.models import ErrorInfo, Job, Record, Source, job_bytes, record_bytes
from spool.recovery import Recovery, RecoveryReport, backoff_s
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def snapshot(spool: Spool, ids: list[str]) -> dict[str, tuple[bytes, int]]:
    out = {}
    for job_id in ids:
        path = spool.layout.job(R, job_id)
        out[job_id] = (path.read_bytes(), os.lstat(path).st_ino)
    return out


def test_sigkill_requeues_exactly_the_dead_claimants_jobs(spool: Spool,
                                                          holders: Holders) -> None:
    dead_ids = [f"dead-{n}" for n in range(5)]
    live_ids = [f"live-{n}" for n in range(3)]
    for job_id in dead_ids + live_ids:
        submit(spool, job_id, max_attempts=3, params={"id": job_id})
    submit(spool, "waiting")
    layout = spool.layout
    (layout.cancel / "waiting").write_bytes(b"{}")  # a cancel request for a pending job
    (layout.cancel / "gone").write_bytes(b"{}")  # stale: no such job
    layout.progress_file("gone").write_bytes(b"{}")  # stale: not running

    live = holders.hold(ids=live_ids, owner="live-owner", stage_tag="livestage")
    dead = holders.hold(ids=dead_ids, owner="dead-owner")
    live_before = snapshot(spool, live_ids)
    holders.sigkill(dead)

    report = Recovery(spool).scan()

    assert sorted(report.requeued) == dead_ids
    assert report.abandoned == [] and report.finished == []
    now = spool.clock.now()
    for job_id in dead_ids:
        assert locate(layout, job_id) == [P]
        job = read_json(layout.job(P, job_id))
        assert job["attempts"] == 1 and job["params"] == {"id": job_id}
        assert job["error"]["type"] == "abandoned" and "not_before" not in job
        assert datetime.fromisoformat(job["error"]["retry_at"]) > now
    # the live claimant's jobs, leases, sidecars, owner files and staging are untouched
    assert snapshot(spool, live_ids) == live_before
    for job_id in live_ids:
        assert locate(layout, job_id) == [R]
        assert is_locked(layout.job(R, job_id)) is True
    assert listing(layout.progress) == sorted(f"{i}.json" for i in live_ids)
    assert listing(layout.cancel) == ["waiting"]
    assert listing(layout.owners) == ["live-owner.json", "live-owner.lock"]
    assert [n.split(".")[0] for n in listing(layout.tmp)] == ["livestage"]

    again = Recovery(spool).scan()
    assert not again.changed, f"a second scan changed something: {again}"

    holders.tell(live, "complete", "COMPLETED")  # the live owner's claims still work
    for job_id in live_ids:
        assert locate(layout, job_id) == [D]
    assert listing(layout.progress) == []


def test_a_requeued_raw_drop_keeps_its_drop_time(spool: Spool, holders: Holders) -> None:
    """A job file without submitted_at was submitted when it was dropped: the requeued
    file says so, rather than taking the time of the requeue."""
    drop_raw(spool.layout, "raw.json", b'{"tool": "echo", "max_attempts": 2}')
    dropped = os.lstat(spool.layout.job(P, "raw")).st_mtime_ns
    time.sleep(0.03)
    holders.sigkill(holders.hold(ids=["raw"]))
    assert Recovery(spool).scan().requeued == ["raw"]
    job = read_json(spool.layout.job(P, "raw"))
    assert datetime.fromisoformat(job["submitted_at"]) == utc_from_ns(dropped)


def test_a_job_file_with_a_bom_is_read_as_its_job_everywhere(
        spool: Spool, holders: Holders) -> None:
    """Intake runs a drop that starts with a UTF-8 byte order mark (PowerShell 5 writes
    one), and the file keeps it in pending/ and running/.  The other readers of job
    files did not strip it: such a job, orphaned by a SIGKILL, failed ``abandoned`` ("not
    a valid job") where it is requeued; ``get`` showed it with no tool, params or meta;
    and a cancel wrote its failed record without them."""
    bom = b"\xef\xbb\xbf"
    job = (b'{"tool": "echo", "params": {"message": "from windows"}, "meta": {"k": "v"}, '
           b'"max_attempts": 2}')
    for job_id in ("orphan", "listed", "cancelled"):
        drop_raw(spool.layout, f"{job_id}.json", bom + job)
    client = Client(spool.layout, spool.mover, spool.clock)
    listed = client.get("listed")
    assert (listed.tool, listed.params, listed.meta) == (
        "echo", {"message": "from windows"}, {"k": "v"})
    [paged] = [r for r in client.list(state=P).records if r.id == "listed"]
    assert paged.tool == "echo"
    cancelled = client.cancel("cancelled")
    assert (cancelled.tool, cancelled.params, cancelled.error and cancelled.error.type) == (
        "echo", {"message": "from windows"}, ErrorType.CANCELLED)

    holders.sigkill(holders.hold(ids=["orphan"]))
    assert Recovery(spool).scan().requeued == ["orphan"], client.get("orphan").error
    requeued = client.get("orphan")
    assert (requeued.state, requeued.tool, requeued.attempts) == (P, "echo", 1)


def test_max_attempts_spent_fails_abandoned(spool: Spool, holders: Holders) -> None:
    submit(spool, "flaky", max_attempts=2, meta={"k": "v"})
    submit(spool, "once")  # max_attempts unset: default 1
    holders.sigkill(holders.hold(ids=["flaky", "once"]))
    report = Recovery(spool).scan()
    assert report.requeued == ["flaky"] and report.abandoned == ["once"]
    once = read_json(spool.layout.job(F, "once"))
    assert locate(spool.layout, "once") == [F]
    assert once["error"]["type"] == "abandoned" and once["attempts"] == 1
    assert once["started_at"] is not None and once["state"] == "failed"

    holders.sigkill(holders.hold(ids=["flaky"]))  # second run dies too
    report = Recovery(spool).scan()
    assert report.requeued == [] and report.abandoned == ["flaky"]
    assert locate(spool.layout, "flaky") == [F]
    flaky = read_json(spool.layout.job(F, "flaky"))
    assert flaky["attempts"] == 2 and flaky["meta"] == {"k": "v"}
    assert flaky["error"]["type"] == "abandoned"
    assert "attempt 2 of 2" in flaky["error"]["message"]
    assert listing(spool.layout.folder(R)) == [] and listing(spool.layout.tmp) == []


def test_a_running_file_whose_attempts_pass_64_bits_is_abandoned_not_a_crash(
        spool: Spool, holders: Holders) -> None:
    """Attempt ``attempts + 1`` of such a file cannot be encoded: recovery raised at every
    processor start, so the processor never came up again."""
    drop_raw(spool.layout, "u64.json", b'{"tool": "echo", "attempts": 18446744073709551615}')
    holders.sigkill(holders.hold(ids=["u64"]))
    assert Recovery(spool).scan().abandoned == ["u64"]
    rec = read_json(spool.layout.job(F, "u64"))
    assert rec["error"]["type"] == "abandoned"
    assert "not a valid job" in rec["error"]["message"]
    assert listing(spool.layout.folder(R)) == []


def _scan_and_peak(spool: Spool) -> tuple[RecoveryReport, int]:
    """A recovery scan's report, and the most memory Python held during it."""
    tracemalloc.start()
    try:
        report = Recovery(spool).scan()
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_running_file_is_abandoned_reading_no_more_than_a_job_can_be(
        spool: Spool, holders: Holders) -> None:
    """A sparse 512 MiB running file (a drop grown through a descriptor its submitter
    kept, then a kill) is failed as no job after reading 16 MiB at most: recovery read it
    whole at processor start (a 1 GiB one took the processor to 2 GB)."""
    drop_raw(spool.layout, "huge.json", b'{"tool": "echo"}')
    holders.sigkill(holders.hold(ids=["huge"]))
    path = spool.layout.job(R, "huge")
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(b'{"tool": "echo", "params": {"message": "')
    os.truncate(path, 512 << 20)
    report, peak = _scan_and_peak(spool)
    assert report.abandoned == ["huge"]
    assert peak < 64 << 20, f"recovery took {peak >> 20} MiB"
    rec = read_json(spool.layout.job(F, "huge"))
    assert rec["error"]["type"] == "abandoned" and "too large" in rec["error"]["message"]
    assert listing(spool.layout.folder(R)) == []


def test_a_huge_drop_of_an_orphans_id_is_not_read_whole(spool: Spool,
                                                          holders: Holders) -> None:
    """Recovery asks whether a pending drop of an orphan's id is that run's own requeue:
    it read the drop whole, so a sparse 1 GiB one took the processor to 2.1 GB at start."""
    submit(spool, "orphan", max_attempts=3)
    holders.sigkill(holders.hold(ids=["orphan"]))
    drop = spool.layout.job(P, "orphan")
    drop.write_bytes(b'{"tool": "echo", "params": {"message": "')
    os.truncate(drop, 512 << 20)
    report, peak = _scan_and_peak(spool)
    assert peak < 64 << 20, f"recovery took {peak >> 20} MiB"
    assert report.abandoned == ["orphan"]  # superseded by the drop, which intake judges
    assert "superseded" in read_json(spool.layout.job(F, "orphan"))["error"]["message"]
    assert drop.stat().st_size == 512 << 20


def test_a_huge_file_beside_an_original_is_not_read_whole(spool: Spool) -> None:
    """Every scan asks whether failed/<id>.json beside failed/<id>.orig is a run's record:
    it read the file whole, at every scan (SPOOL_SCAN_S), since one that is no record is
    not remembered."""
    spool.layout.original("q").write_bytes(b"{")
    record = spool.layout.job(F, "q")
    record.write_bytes(b'{"id": "q", "state": "failed", "error": {"type": "crashed", "m')
    os.truncate(record, 512 << 20)
    _, peak = _scan_and_peak(spool)
    assert peak < 64 << 20, f"recovery took {peak >> 20} MiB"
    assert record.stat().st_size == 512 << 20 and spool.layout.original("q").exists()


@pytest.mark.parametrize("junk", ["directory", "symlink", "fifo"])
def test_junk_named_like_a_record_in_the_other_folder_never_costs_the_record(
        spool: Spool, junk: str, tmp_path: Path) -> None:
    """A done and a failed record of one id (a completion cut short) keep the newer: a
    directory, symlink or FIFO named like the record in the other folder counted as the
    newer one, so the scan deleted the real record and the job was gone ("no job")."""
    layout = spool.layout
    for state, job_id in ((F, "was-failed"), (D, "was-done")):
        record = Record(id=job_id, state=state, tool="echo",
                        error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="m")
                        if state is F else None)
        spool.publish_terminal(record)
        other = layout.job(D if state is F else F, job_id)
        if junk == "directory":
            other.mkdir()
        elif junk == "symlink":
            other.symlink_to(tmp_path / "nowhere.json")
        else:
            os.mkfifo(other)
    Recovery(spool).scan()
    assert read_json(layout.job(F, "was-failed"))["state"] == "failed"
    assert read_json(layout.job(D, "was-done"))["state"] == "done"


def test_junk_named_like_a_record_is_not_taken_for_one(spool: Spool,
                                                         holders: Holders) -> None:
    """A directory named like a record, newer than an orphan's claim, passed for that run's
    record: the running file was removed as finished and the job was in no folder.  Newer
    than a quarantined original, it passed for a later run's record: the original went."""
    layout = spool.layout
    submit(spool, "orphan", max_attempts=3)
    holders.sigkill(holders.hold(ids=["orphan"]))
    layout.original("quarantined").write_bytes(b"{")
    time.sleep(0.02)
    layout.job(D, "orphan").mkdir()
    layout.job(D, "quarantined").mkdir()
    report = Recovery(spool).scan()
    assert report.requeued == ["orphan"] and report.finished == []
    assert read_json(layout.job(P, "orphan"))["attempts"] == 1  # the junk stays junk
    assert layout.original("quarantined").read_bytes() == b"{"
    assert read_json(layout.job(F, "quarantined"))["error"]["type"] == "invalid_job"


def test_a_cancel_asked_of_a_dead_processors_run_is_honoured_not_requeued(
        spool: Spool, holders: Holders) -> None:
    """A cancel of a running job whose processor was down sat in ``cancel/`` (the client
    was answered 200), and recovery requeued the job and removed the request with the
    run: the job ran again.  Its record is now ``cancelled``; a run without a request
    is still requeued."""
    submit(spool, "unwanted", max_attempts=3)
    submit(spool, "wanted", max_attempts=3)
    holder = holders.hold(ids=["unwanted", "wanted"])
    client = Client(spool.layout, spool.mover)
    assert client.cancel("unwanted", wait_s=0).state is R  # asked; nobody acts on it yet
    holders.sigkill(holder)
    report = Recovery(spool).scan()
    assert (report.cancelled, report.requeued, report.abandoned) == (
        ["unwanted"], ["wanted"], [])
    assert locate(spool.layout, "unwanted") == [F]
    record = read_json(spool.layout.job(F, "unwanted"))
    assert record["error"]["type"] == ErrorType.CANCELLED.value
    assert "processor" in record["error"]["message"] and record["attempts"] == 1
    assert listing(spool.layout.cancel) == [] and listing(spool.layout.folder(R)) == []
    assert Recovery(spool).scan().changed is False


def test_orphans_are_requeued_with_exponential_backoff_and_jitter(
        spool: Spool, clock: FakeClock, holders: Holders) -> None:
    """A dead processor's runs are retried "with exponential backoff and jitter" (DESIGN
    section 9): run n + 1 waits between half and all of 2^(n-1) s (capped at 300 s), each
    job a delay of its own, so the jobs of one crash do not all come back at one instant."""
    ids = [f"j{n:02d}" for n in range(16)]
    for job_id in ids:
        submit(spool, job_id, max_attempts=3)
    for ran, ceiling in ((1, 1.0), (2, 2.0)):
        holders.sigkill(holders.hold(ids=ids))
        assert sorted(Recovery(spool).scan().requeued) == ids
        delays = []
        for job_id in ids:
            job = read_json(spool.layout.job(P, job_id))
            assert job["attempts"] == ran
            due = datetime.fromisoformat(job["error"]["retry_at"])
            delays.append((due - clock.now()).total_seconds())
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), delays
        assert len(set(delays)) > len(ids) // 2, f"no jitter: {delays}"
    for attempts, ceiling in ((1, 1.0), (3, 4.0), (9, 256.0), (10, 300.0), (40, 300.0)):
        drawn = [backoff_s(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in drawn), (attempts, drawn)
        assert max(drawn) - min(drawn) > ceiling / 4, (attempts, "no jitter")


def test_custom_max_attempts_resolver(spool: Spool, holders: Holders) -> None:
    submit(spool, "tool-limit")
    holders.sigkill(holders.hold(ids=["tool-limit"]))
    report = Recovery(spool, max_attempts=lambda job: 5).scan()
    assert report.requeued == ["tool-limit"]
    assert read_json(spool.layout.job(P, "tool-limit"))["attempts"] == 1


def test_requeue_superseded_by_newer_drop_fails_the_orphan(spool: Spool,
                                                           holders: Holders) -> None:
    submit(spool, "again", max_attempts=3, params={"v": 1})
    holders.sigkill(holders.hold(ids=["again"]))
    submit(spool, "again", max_attempts=3, params={"v": 2})
    report = Recovery(spool).scan()
    assert report.abandoned == ["again"]
    assert sorted(locate(spool.layout, "again")) == sorted([P, F])
    assert read_json(spool.layout.job(P, "again"))["params"] == {"v": 2}
    assert "superseded" in read_json(spool.layout.job(F, "again"))["error"]["message"]


def test_a_requeue_cut_short_is_finished_not_failed(spool: Spool, holders: Holders) -> None:
    """Killed between writing the requeued pending file and removing the running one: the
    pending file is that run's requeue (same submission), not a newer drop to yield to."""
    submit(spool, "again", max_attempts=3)
    holder = holders.hold(ids=["again"])
    running = Job.model_validate_json(spool.layout.job(R, "again").read_bytes())
    requeued = job_bytes(running.model_copy(update={"attempts": 1}))
    spool.layout.job(P, "again").write_bytes(requeued)
    holders.sigkill(holder)
    report = Recovery(spool).scan()
    assert report.finished == ["again"] and report.abandoned == []
    assert locate(spool.layout, "again") == [P]
    assert spool.layout.job(P, "again").read_bytes() == requeued


def test_a_shutdown_requeue_cut_short_is_finished_not_failed(spool: Spool,
                                                             holders: Holders) -> None:
    """A stop's requeue does not count the attempt cut short (processor.lifecycle
    .stop_runs): its pending file has the running one's attempts, not one more.  Killed
    before the running file went, that is still the run's own requeue, not a newer drop
    that would fail the run ``abandoned`` ("superseded") beside it."""
    submit(spool, "stopped", max_attempts=3)
    holder = holders.hold(ids=["stopped"])
    running = Job.model_validate_json(spool.layout.job(R, "stopped").read_bytes())
    requeued = job_bytes(running.model_copy(update={"not_before": None}))
    spool.layout.job(P, "stopped").write_bytes(requeued)
    holders.sigkill(holder)
    report = Recovery(spool).scan()
    assert report.finished == ["stopped"] and report.abandoned == []
    assert locate(spool.layout, "stopped") == [P]
    assert spool.layout.job(P, "stopped").read_bytes() == requeued


def test_terminal_record_newer_than_claim_removes_leftover(spool: Spool,
                                                           holders: Holders) -> None:
    submit(spool, "almost", max_attempts=3)
    submit(spool, "midway", max_attempts=3)
    holders.sigkill(holders.hold(ids=["almost", "midway"], finish=["almost"]))
    record_before = spool.layout.job(D, "almost").read_bytes()
    report = Recovery(spool).scan()
    assert report.finished == ["almost"] and report.requeued == ["midway"]
    assert locate(spool.layout, "almost") == [D]
    assert spool.layout.job(D, "almost").read_bytes() == record_before


def test_dead_staging_files_are_settled(spool: Spool, holders: Holders,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    layout = spool.layout
    # Untouched (by ctime) for longer than the age limit, shortened for the test.
    monkeypatch.setattr(staged_module, "DEAD_STAGING_AGE_S", 1.0)
    old = layout.tmp / "old-foreign"
    old.write_bytes(b"?")
    old_since = time.monotonic()
    bad_id = invalid_id(datetime.now(UTC))
    (layout.folder(P) / "Bad Name!.json").write_bytes(b"\x00hostile bytes\xff")
    for job_id in ("c-undo", "c-done", "c-newer"):
        submit(spool, job_id, params={"for": job_id})
    originals = {j: layout.job(P, j).read_bytes() for j in ("c-undo", "c-done", "c-newer")}
    for job_id in ("r-undo", "r-done"):
        submit(spool, job_id)
        claim = spool.claim(job_id)
        assert claim is not None
        spool.fail(claim, spool.record_of_claim(claim, F).model_copy(
            update={"error": ErrorInfo(type=ErrorType.TOOL_ERROR, message="x")}))
    failed_before = {j: layout.job(F, j).read_bytes() for j in ("r-undo", "r-done")}

    stager = actor(layout.root, "stage", {"ops": [
        {"from": ["pending", "Bad Name!.json"], "tag": f"quarantine-{bad_id}"},
        {"from": ["pending", "c-undo.json"], "tag": "cancel-c-undo"},
        {"from": ["pending", "c-done.json"], "tag": "cancel-c-done"},
        {"from": ["pending", "c-newer.json"], "tag": "cancel-c-newer"},
        {"from": ["failed", "r-undo.json"], "tag": "retry-r-undo"},
        {"from": ["failed", "r-done.json"], "tag": "retry-r-done"},
    ], "dead_tmp": [WRITE_TAG + "half-written", "cancel-not a valid id"]})
    holders.procs.append(stager)
    staged = orjson.loads(await_line(stager, "STAGED "))
    assert stager.wait(timeout=10) == 0
    assert sorted([*staged, "old-foreign"]) == listing(layout.tmp) and len(staged) == 8
    # what the cut-short transitions had already done before the crash
    spool.publish_terminal(Record(id="c-done", tool="echo", state=F,
                                  error=ErrorInfo(type=ErrorType.CANCELLED, message="c")))
    submit(spool, "c-newer", params={"newer": True})
    newer = layout.job(P, "c-newer").read_bytes()
    submit(spool, "r-done", params={"retried": True})
    retried = layout.job(P, "r-done").read_bytes()
    time.sleep(max(0.0, old_since + 1.2 - time.monotonic()))
    # a live writer's staging file (this process) and a foreign file, young and old
    live_staging = layout.staging("mine")
    live_staging.write_bytes(b"in progress")
    young = layout.tmp / "young-foreign"
    young.write_bytes(b"?")
    # A client's staging files, fresh, shaped almost like spoolq's (a tag, digits that
    # are no live pid, no 12-digit hex part), or just like it but for the tag (a pid of
    # another host's): removed mid-write before.
    clients = ["export.20261201.part.tmp", "cancel-c-undo.99999999.a.tmp",
               "job.4000000.ABCDEF012345.tmp", f"report-42.4000000.{'ab' * 16}.tmp"]
    for name in clients:
        (layout.tmp / name).write_bytes(b'{"tool": "echo",')
    past = datetime.now(UTC).timestamp() - 3 * 86_400
    os.utime(young, (past, past))  # an old mtime (a copy keeps it) makes nothing old
    # The scan's clock stops at the young files' ctime: however long the host stalls
    # before it runs, they are 0 s old and old-foreign at least 1.2 s.
    scan_time = utc_from_ns(max(p.stat().st_ctime_ns for p in (
        live_staging, young, *(layout.tmp / name for name in clients))))

    report = Recovery(make_spool(layout.root, clock=FakeClock(scan_time))).scan()

    assert sorted(report.restored) == sorted(
        [bad_id, "c-undo", "c-done", "c-newer", "r-undo", "r-done"])
    assert report.removed == 3  # two dead half-written files, the old foreign one
    assert listing(layout.tmp) == sorted([live_staging.name, "young-foreign", *clients])
    # quarantine: the original is kept, with a record saying why
    assert layout.original(bad_id).read_bytes() == b"\x00hostile bytes\xff"
    quarantined = read_json(layout.job(F, bad_id))
    assert quarantined["error"]["type"] == "invalid_job"
    assert quarantined["source"]["size"] == len(b"\x00hostile bytes\xff")
    # cancel: undone (pending again), completed (removed), superseded (cancelled record)
    assert locate(layout, "c-undo") == [P]
    assert layout.job(P, "c-undo").read_bytes() == originals["c-undo"]
    assert locate(layout, "c-done") == [F]
    assert read_json(layout.job(F, "c-done"))["error"]["type"] == "cancelled"
    assert layout.job(P, "c-newer").read_bytes() == newer
    cancelled = read_json(layout.job(F, "c-newer"))
    assert cancelled["error"]["type"] == "cancelled"
    assert cancelled["params"] == {"for": "c-newer"}
    # retry: undone (the failed record is back), completed (the stale copy removed)
    assert locate(layout, "r-undo") == [F]
    assert layout.job(F, "r-undo").read_bytes() == failed_before["r-undo"]
    assert locate(layout, "r-done") == [P]
    assert layout.job(P, "r-done").read_bytes() == retried


def test_dead_staged_non_files_are_settled_unopened(spool: Spool, holders: Holders,
                                                   tmp_path: Path) -> None:
    """A quarantine of a symlink, FIFO or directory cut short between its two
    renames: recovery finishes it without opening (or following) the thing."""
    layout = spool.layout
    target = tmp_path / "target"
    target.write_bytes(b"outside the spool")
    os.symlink(target, layout.folder(P) / "ln.json")
    os.mkfifo(layout.folder(P) / "ff.json")
    (layout.folder(P) / "dd.json").mkdir()
    (layout.folder(P) / "dd.json" / "inner").write_bytes(b"kept")
    stager = actor(layout.root, "stage", {"ops": [
        {"from": ["pending", f"{j}.json"], "tag": f"quarantine-{j}"} for j in ("ln", "ff", "dd")
    ]})
    holders.procs.append(stager)
    await_line(stager, "STAGED ")
    assert stager.wait(timeout=10) == 0

    report = Recovery(spool).scan()

    assert sorted(report.restored) == ["dd", "ff", "ln"]
    assert listing(layout.tmp) == []
    assert os.readlink(layout.original("ln")) == str(target)
    assert layout.original("ff").is_fifo()
    assert (layout.original("dd") / "inner").read_bytes() == b"kept"
    for job_id in ("ln", "ff", "dd"):
        assert read_json(layout.job(F, job_id))["error"]["type"] == "invalid_job"


def test_a_cut_short_cancel_beside_a_directory_original_and_a_newer_drop_is_kept(
        spool: Spool, holders: Holders) -> None:
    """A cancel of a file that holds no job, killed once it staged the file, while
    failed/x.orig is a directory (a quarantined directory drop) and a newer drop of x is
    pending: finishing that cancel raised ConflictError out of the scan (a processor
    exited 2 at start, and at its next periodic pass).  The bytes are kept under an id
    of their own, with a record that says why."""
    layout = spool.layout

    def staged_by_a_dead_process(tag: str) -> None:
        stager = actor(layout.root, "stage", {"ops": [{"from": ["pending", "x.json"],
                                                        "tag": tag}]})
        holders.procs.append(stager)
        await_line(stager, "STAGED ")
        assert stager.wait(timeout=10) == 0

    (layout.folder(P) / "x.json").mkdir()
    (layout.folder(P) / "x.json" / "inner").write_bytes(b"kept")
    staged_by_a_dead_process("quarantine-x")
    Recovery(spool).scan()  # the directory becomes failed/x.orig, beside its record
    layout.job(P, "x").write_bytes(b'{"tool": "echo", "params": ')
    staged_by_a_dead_process("cancel-x")
    quarantined = layout.job(F, "x").read_bytes()
    newer = b'{"tool": "echo", "params": {"newer": true}}'
    layout.job(P, "x").write_bytes(newer)

    report = Recovery(spool).scan()

    assert report.restored == ["x"]
    assert listing(layout.tmp) == []
    assert layout.job(P, "x").read_bytes() == newer
    assert (layout.original("x") / "inner").read_bytes() == b"kept"
    assert layout.job(F, "x").read_bytes() == quarantined
    [kept] = [n for n in listing(layout.folder(F)) if n.endswith(".orig") and n != "x.orig"]
    job_id = kept.removesuffix(".orig")
    assert layout.original(job_id).read_bytes() == b'{"tool": "echo", "params": '
    record = read_json(layout.job(F, job_id))
    assert record["error"]["type"] == "invalid_job"
    assert "failed/x.orig" in record["error"]["message"], record["error"]["message"]
    assert "directory" in record["error"]["message"], record["error"]["message"]
    assert not Recovery(spool).scan().changed


def _kept_by_a_dead_canceller(layout: Layout, job_id: str) -> None:
    """The link ``Spool._cancel_no_job`` keeps in tmp/ to the earlier original, named as
    a process that is gone left it."""
    pid = os.getpid()
    while True:  # a pid that is not alive
        pid += 7919
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            continue
    space = pid_space() or ""
    os.link(layout.original(job_id), layout.tmp / f"kept-{job_id}.{pid}.{space}0123456789ab.tmp")


def test_a_cancel_cut_short_after_replacing_an_earlier_original_gets_its_record(
        spool: Spool) -> None:
    """A cancel of a file that holds no job, beside an earlier quarantine of its id, killed
    once its bytes replaced failed/x.orig and before its record (seen with a real
    'spoolq cancel' SIGKILLed by strace at that publish): recovery removed the link to the
    earlier original it kept in tmp/, and left the new bytes beside the earlier record,
    which describes other bytes (their size, time and cause).  Now the bytes get their
    record, as the cancel meant (the earlier original goes with its record)."""
    layout = spool.layout
    layout.original("x").write_bytes(b"OLD")
    spool.publish_terminal(Record(id="x", state=F, error=ErrorInfo(
        type=ErrorType.INVALID_JOB, message="malformed JSON"),
        source=Source(name="x.json", size=3, kind="file")))
    _kept_by_a_dead_canceller(layout, "x")
    time.sleep(0.05)  # past the coarse filesystem clock's tick of the record
    staged = layout.tmp / "new"
    staged.write_bytes(b"the newer bytes")
    os.rename(staged, layout.original("x"))  # the cancel's bytes, its record never written

    report = Recovery(spool).scan()

    assert report.restored == ["x"]
    assert listing(layout.tmp) == []
    assert layout.original("x").read_bytes() == b"the newer bytes"
    record = read_json(layout.job(F, "x"))
    assert record["source"]["size"] == len(b"the newer bytes")
    assert "malformed JSON" not in record["error"]["message"]
    assert "cancel" in record["error"]["message"], record["error"]["message"]
    assert not Recovery(spool).scan().changed


def test_a_cancel_undo_cut_short_puts_the_earlier_original_back(spool: Spool) -> None:
    """The undo of a cancel whose record was not written took the new bytes out of
    failed/x.orig, then died before putting the earlier original back from tmp/:
    recovery removed that last name of the earlier original."""
    layout = spool.layout
    layout.original("x").write_bytes(b"OLD")
    spool.publish_terminal(Record(id="x", state=F, error=ErrorInfo(
        type=ErrorType.INVALID_JOB, message="malformed JSON"),
        source=Source(name="x.json", size=3, kind="file")))
    quarantined = layout.job(F, "x").read_bytes()
    _kept_by_a_dead_canceller(layout, "x")
    os.unlink(layout.original("x"))  # replaced, then moved out by the undo

    Recovery(spool).scan()

    assert listing(layout.tmp) == []
    assert layout.original("x").read_bytes() == b"OLD"
    assert layout.job(F, "x").read_bytes() == quarantined
    assert not Recovery(spool).scan().changed


def test_orphan_original_gets_a_record_and_duplicate_terminals_keep_newer(
        spool: Spool) -> None:
    layout = spool.layout
    layout.original("lonely").write_bytes(b"what a client sent")
    spool.publish_terminal(Record(id="both", tool="echo", state=F,
                                  error=ErrorInfo(type=ErrorType.TIMEOUT, message="old")))
    old = datetime.now(UTC).timestamp() - 100
    os.utime(layout.job(F, "both"), (old, old))
    layout.job(D, "both").write_bytes(Record(id="both", tool="echo", state=D,
                                             result=1).model_dump_json().encode())
    report = Recovery(spool).scan()
    assert report.restored == ["lonely"] and report.removed == 1
    assert read_json(layout.job(F, "lonely"))["error"]["type"] == "invalid_job"
    assert layout.original("lonely").read_bytes() == b"what a client sent"
    assert locate(layout, "both") == [D]


def test_an_original_left_by_a_cut_short_completion_goes_not_the_done_record(
        spool: Spool) -> None:
    """A run of an id quarantined earlier completed, but was killed before removing the
    old original: the done record stands (over two scans) and the original goes.  An
    original newer than the done record is a quarantine cut short: it gets its record,
    which replaces the done record in the same scan."""
    layout = spool.layout
    layout.original("redone").write_bytes(b"the bad drop before")
    time.sleep(0.03)  # the coarse filesystem clock must tick between the two
    spool.publish_terminal(Record(id="redone", tool="echo", state=D, result=1))
    done_bytes = layout.job(D, "redone").read_bytes()
    spool.publish_terminal(Record(id="requarantined", tool="echo", state=D, result=1))
    time.sleep(0.03)
    layout.original("requarantined").write_bytes(b"the bad drop after")
    first = Recovery(spool).scan()
    assert first.removed == 1 and first.restored == ["requarantined"]
    assert locate(layout, "redone") == [D] and layout.job(D, "redone").read_bytes() == done_bytes
    assert not os.path.lexists(layout.original("redone"))
    assert locate(layout, "requarantined") == [F]
    assert not Recovery(spool).scan().changed
    assert layout.original("requarantined").read_bytes() == b"the bad drop after"


def test_a_restored_quarantine_older_than_its_ids_done_record_goes_with_its_original(
        spool: Spool) -> None:
    """A backup whose failed/ was copied while it held a quarantine, and whose done/ after
    a fixed re-drop of the id ran: restored, the id had both records, the older
    quarantine record went, and its original, left alone with a ctime of the restore,
    was taken for a quarantine cut short after the run: its new record replaced the done
    one, the run's result lost (QA, following operations.md's backup)."""
    layout = spool.layout
    before = datetime.now(UTC) - timedelta(hours=1)
    layout.original("fixed").write_bytes(b"{not json")
    spool.publish_terminal(Record(
        id="fixed", state=F, submitted_at=before, finished_at=before,
        error=ErrorInfo(type=ErrorType.INVALID_JOB, message="malformed JSON"),
        source=Source(name="fixed.json", size=9)))
    hour_ago = before.timestamp()
    os.utime(layout.job(F, "fixed"), (hour_ago, hour_ago))  # as rsync -a restores them
    os.utime(layout.original("fixed"), (hour_ago, hour_ago))
    layout.job(D, "fixed").write_bytes(record_bytes(Record(id="fixed", tool="echo", state=D,
                                                           result={"message": "ok"})))
    half_hour_ago = hour_ago + 1800  # the original's ctime is the restore's: now
    os.utime(layout.job(D, "fixed"), (half_hour_ago, half_hour_ago))
    done_bytes = layout.job(D, "fixed").read_bytes()
    report = Recovery(spool).scan()
    assert report.removed == 2 and report.restored == [], report
    assert locate(layout, "fixed") == [D] and layout.job(D, "fixed").read_bytes() == done_bytes
    assert not os.path.lexists(layout.original("fixed"))
    assert not Recovery(spool).scan().changed


def _quarantine_older_than_done(spool: Spool, job_id: str) -> None:
    """done/<id>.json newer than a quarantine's failed/<id>.json, and no original yet."""
    layout = spool.layout
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).timestamp()
    layout.job(F, job_id).write_bytes(record_bytes(Record(
        id=job_id, state=F, error=ErrorInfo(type=ErrorType.INVALID_JOB,
                                            message="malformed JSON"),
        source=Source(name=f"{job_id}.json", size=9))))
    os.utime(layout.job(F, job_id), (hour_ago, hour_ago))
    layout.job(D, job_id).write_bytes(record_bytes(Record(id=job_id, tool="echo", state=D,
                                                          result={"message": "ok"})))
    os.utime(layout.job(D, job_id), (hour_ago + 1800, hour_ago + 1800))


def test_an_older_quarantine_records_removal_spares_a_new_quarantines_original(
        spool: Spool) -> None:
    """Another processor has moved a new bad drop of the id to failed/<id>.orig, its
    record to come: the older quarantine record goes, not those bytes (the session's
    review of 632b020)."""
    _quarantine_older_than_done(spool, "x")
    spool.layout.original("x").write_bytes(b"the new bad drop")
    Recovery(spool).scan()
    assert spool.layout.original("x").read_bytes() == b"the new bad drop"


def test_an_older_quarantine_records_removal_spares_a_running_ids_kept_original(
        spool: Spool, holders: Holders) -> None:
    """A live run of the id failing ``unknown_tool`` keeps its job's bytes in
    failed/<id>.orig before its record (Spool.fail): they stay (review of 632b020)."""
    _quarantine_older_than_done(spool, "x")
    submit(spool, "x")
    holders.hold(ids=["x"], owner="live-owner")
    spool.layout.original("x").write_bytes(b'{"tool":"nope"}')
    Recovery(spool).scan()
    assert spool.layout.original("x").read_bytes() == b'{"tool":"nope"}'


@pytest.mark.parametrize("how", ["removal cut short", "restored without folder times"])
def test_a_quarantined_folder_beside_an_older_record_never_costs_the_done_record(
        spool: Spool, how: str) -> None:
    """A folder's mtime is no quarantine's time (its entries change it): taken for
    another's original, it was left alone while its older record went, and then given a
    record of its own that replaced the done one (the session's second review)."""
    layout = spool.layout
    _quarantine_older_than_done(spool, "d")
    layout.job(F, "d").write_bytes(record_bytes(Record(
        id="d", state=F, error=ErrorInfo(type=ErrorType.INVALID_JOB,
                                         message="not a regular file: directory"),
        source=Source(name="d.json", kind="directory"))))
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).timestamp()
    os.utime(layout.job(F, "d"), (hour_ago, hour_ago))
    done = layout.job(D, "d").read_bytes()
    folder = layout.original("d")
    folder.mkdir()
    for name in ("a", "b"):
        (folder / name).write_bytes(name.encode())
    if how == "removal cut short":
        time.sleep(0.03)  # the coarse filesystem clock must tick
        (folder / "a").unlink()
    report = Recovery(spool).scan()
    assert report.restored == [], report
    assert locate(layout, "d") == [D] and layout.job(D, "d").read_bytes() == done
    assert not os.path.lexists(folder)


def test_an_older_quarantine_records_removal_spares_a_quarantine_in_flight(
        spool: Spool) -> None:
    """Another processor's quarantine of a new drop of the id (an old mtime, kept by
    ``mv``; the size of the first): its note written, its original placed, its record
    to come. Its bytes stay (the session's second review)."""
    layout = spool.layout
    _quarantine_older_than_done(spool, "q")
    old_ns = int((datetime.now(UTC) - timedelta(hours=3)).timestamp() * 1e9)
    original = layout.original("q")
    original.write_bytes(b"{new bad}")
    os.utime(original, ns=(old_ns, old_ns))
    st = os.lstat(original)
    meant = Record(id="q", state=F, submitted_at=utc_from_ns(old_ns),
                   finished_at=spool.clock.now(), host=spool.host, pid=spool.pid,
                   error=ErrorInfo(type=ErrorType.INVALID_JOB, message="malformed JSON"),
                   source=Source(name="q.json", size=9))
    assert spool.mover.write_note(f"record-{st.st_ino}-q", record_bytes(meant)) is not None
    Recovery(spool).scan()
    assert original.read_bytes() == b"{new bad}"


def test_a_failed_run_recorded_in_its_originals_tick_keeps_its_record(spool: Spool) -> None:
    """A run's failed record written in the very tick of the filesystem's clock that
    stamped an earlier quarantine's original (a drop of the id run and failed within 4 ms
    of it), its completion cut short, is that later run's: the original goes and the
    record stands.  Taken for an
    earlier one, the run's record was replaced by a quarantine record, its outcome lost."""
    layout = spool.layout
    layout.original("tick").write_bytes(b"the bad drop before")
    # Its completion, killed before it removed the original it supersedes.
    layout.job(F, "tick").write_bytes(record_bytes(Record(
        id="tick", tool="echo", state=F,
        error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="it broke"))))
    tick = os.lstat(layout.original("tick")).st_ctime_ns
    os.utime(layout.job(F, "tick"), ns=(tick, tick))
    failed = layout.job(F, "tick").read_bytes()
    report = Recovery(spool).scan()
    assert report.removed == 1 and report.restored == [], report
    assert not os.path.lexists(layout.original("tick"))
    assert layout.job(F, "tick").read_bytes() == failed


def test_dead_owner_files_removed_live_kept(spool: Spool, holders: Holders) -> None:
    layout = spool.layout
    holders.hold(owner="alive")
    holders.sigkill(holders.hold(owner="crashed"))
    (layout.owners / "never-locked.lock").write_bytes(b"")
    Recovery(spool).scan()
    assert listing(layout.owners) == ["alive.json", "alive.lock"]


@pytest.mark.parametrize("mode", [FsyncMode.ALWAYS, FsyncMode.BATCH])
def test_recovery_under_durable_modes(tmp_path: Path, mode: FsyncMode,
                                      holders: Holders) -> None:
    spool = make_spool(tmp_path / "durable", mode)
    holders.spool = spool
    submit(spool, "a", max_attempts=2)
    submit(spool, "b")
    holders.sigkill(holders.hold(ids=["a", "b"]))
    report = Recovery(spool).scan()
    assert (report.requeued, report.abandoned) == (["a"], ["b"])
    assert locate(spool.layout, "a") == [P] and locate(spool.layout, "b") == [F]


@needs_root
def test_a_submitter_cannot_name_a_file_in_a_shared_tmp_into_a_move(spool: Spool) -> None:
    """In a tmp/ the submit group shares, a file named like a cut-short move of a dead
    process was completed by recovery: ``retry-<id>...`` became failed/<id>.json byte for
    byte over the id's done record, ``quarantine-<id>...`` replaced it with a quarantine.
    Moves stage in stage/ now; such names in a shared tmp/ are the submitter's own files
    (hers: the spool user's own are an older spoolq's moves, see
    test_upgrade_leftovers.py).  A cancel's goes back to pending/ only where the name is
    free (here c4's newer drop holds it), as she could rename it there herself."""
    assert NOBODY is not None
    layout = spool.layout
    for job_id in ("g1", "q3", "c4"):
        submit(spool, job_id)
        claim = spool.claim(job_id)
        assert claim is not None
        spool.complete(claim, spool.record_of_claim(claim, D))
    submit(spool, "c4")  # a newer drop, pending
    done = {j: layout.job(D, j).read_bytes() for j in ("g1", "q3", "c4")}
    pending = layout.job(P, "c4").read_bytes()
    layout.tmp.chmod(0o3770)  # as spoolq init --system makes it, writable by a group
    forged = {f"retry-g1.99999998.{'ab' * 6}.tmp": b'{"id": "g1", "state": "failed", '
              b'"error": {"type": "timeout", "message": "FORGED"}}',
              f"quarantine-q3.99999997.{'cd' * 6}.tmp": b"junk",
              f"cancel-c4.99999996.{'ef' * 6}.tmp": b'{"tool": "echo"}'}
    for name, data in forged.items():
        (layout.tmp / name).write_bytes(data)
        os.chown(layout.tmp / name, *NOBODY)

    report = Recovery(a_grace_later(layout.root)).scan()

    assert {j: layout.job(D, j).read_bytes() for j in done} == done
    assert layout.job(P, "c4").read_bytes() == pending
    # Nor dropped (a cut-short move of an older spoolq, or of one that could not stage
    # in stage/, may hold a job): each kept as a quarantine under an id of its own.
    assert len(report.restored) == 3 and listing(layout.tmp) == []
    kept = {}
    for job_id in report.restored:
        record = read_json(layout.job(F, job_id))
        assert record["error"]["type"] == "invalid_job" and "named like a move" in \
            record["error"]["message"]
        kept[record["source"]["name"]] = layout.original(job_id).read_bytes()
    assert kept == forged
    # A CLI that cannot stage in stage/ refuses a move in this tmp/ before moving anything.
    cli = make_spool(layout.root)
    os.rename(layout.stage, layout.root / "stage.away")
    with pytest.raises(SpoolIOError, match="tmp/ is shared"):
        cli.cancel_pending("c4")
    assert layout.job(P, "c4").read_bytes() == pending
    os.rename(layout.root / "stage.away", layout.stage)
    # A move cut short in stage/ is still settled: a cancel of c4 undone.
    staged = spool.mover.action_staging("cancel-c4")
    assert staged.parent == layout.stage
    os.rename(layout.job(P, "c4"), staged.with_name(staged.name.replace(
        f".{os.getpid()}.", ".99999995.")))
    assert Recovery(a_grace_later(layout.root)).scan().restored == ["c4"]
    assert layout.job(P, "c4").read_bytes() == pending


def test_an_orphans_requeue_keeps_the_clients_not_before_and_puts_its_backoff_on_the_error(
        spool: Spool, clock: FakeClock, holders: Holders) -> None:
    """The backoff before an orphan's retry is the retry's (``error.retry_at``), which
    holds the job back as a ``not_before`` does (stats count it not due), and is shown as
    a backoff; the job's ``not_before`` stays the client's.  Before, the requeue wrote
    the backoff into ``not_before``, and the job's later records showed it as the
    client's."""
    clock.step((datetime.now(UTC) - clock.now()).total_seconds() + 3600)  # an hour ahead
    asked = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    submit(spool, "scheduled", max_attempts=3, not_before=asked)
    holders.sigkill(holders.hold(ids=["scheduled"]))
    assert Recovery(spool).scan().requeued == ["scheduled"]
    job = read_json(spool.layout.job(P, "scheduled"))
    assert datetime.fromisoformat(job["not_before"]) == asked
    retry_at = datetime.fromisoformat(job["error"]["retry_at"])
    assert clock.now() + timedelta(seconds=0.5) <= retry_at <= clock.now() + timedelta(
        seconds=1), job
    reader = Client(spool.layout, spool.mover).reader
    record = reader.get("scheduled")
    assert record.due_at() == retry_at
    assert reader.stats()["oldest_due_pending_age_s"] is None  # an hour to wait
    lines = record_lines(record)
    assert f"not before  {when(asked)}" in lines
    assert f"backoff     until {when(retry_at)} (after the last error)" in lines


def test_a_cancel_request_whose_job_cannot_be_looked_up_is_kept(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk failing the look for the job's running file (EIO) is no word that the job
    is gone: its cancel request stays for a later pass.  Removed, the job then ran, the
    user's cancel lost."""
    request = Path(spool.layout.cancel_str("x"))
    request.write_bytes(b"")
    running = spool.layout.job_str(JobState.RUNNING, "x")
    real_lstat = os.lstat

    def lstat(path: object, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) == running:  # type: ignore[call-overload]
            raise OSError(errno.EIO, os.strerror(errno.EIO), running)
        return real_lstat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    Recovery(spool).scan()
    monkeypatch.undo()
    assert request.exists()
    Recovery(spool).scan()  # looked up now: no job of that id, and the request goes
    assert not request.exists()
