"""Spool operations SIGKILLed at a chosen filesystem syscall, then one recovery scan.

strace's ``-P PATH -e inject=%file:signal=SIGKILL:when=1`` kills the operation (a
real process, the library's own code: crash_actor.py) on entering its first syscall
that names PATH, before that syscall runs.  These are the crash points a review that
killed every operation at every syscall found wrong (docs/reliability.md, sixth
session): after the kill and a single scan, every job is in one state, nothing is
left in ``tmp/``, and every quarantined original sits beside its own record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spoolkit import (
    CRASH_ACTOR,
    REPO,
    FakeClock,
    age,
    drop_raw,
    kill_in_actor,
    listing,
    locate,
    make_spool,
    read_json,
    strace_path,
    submit,
)

from spool.client import Client
from spool.clock import SystemClock
from spool.errors import ErrorType
from spool.intake import Intake, Verdict
from spool.models import ErrorInfo
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.staged import DEAD_STAGING_AGE_S
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


@pytest.fixture(autouse=True)
def _needsstrace_path() -> None:
    if strace_path() is None:
        pytest.skip("needs strace, allowed to trace")


def kill_at_first_touch(root: Path, path: Path | None, command: str, arg: str, *,
                        mode: FsyncMode = FsyncMode.ALWAYS, syscalls: str = "%file") -> None:
    """Run crash_actor.py's ``command arg`` on the spool at ``root``, SIGKILLed on entering
    its first syscall of ``syscalls`` that names ``path`` (None: the actor kills itself)."""
    if path is None:
        proc = subprocess.run(
            [sys.executable, str(CRASH_ACTOR), str(root), mode.value, command, arg],
            check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env={
                **os.environ, "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
        return
    kill_in_actor(root, command, arg, syscalls=syscalls, path=path, mode=mode)


def quarantine(spool: Spool, name: str, data: bytes) -> None:
    """Drop ``data`` as ``pending/name`` and let intake quarantine it (in this process)."""
    drop_raw(spool.layout, name, data)
    intake = Intake(spool, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock())
    assert intake.inspect(name).verdict is Verdict.QUARANTINED


def failed_run(spool: Spool, job_id: str) -> None:
    submit(spool, job_id)
    claim = spool.claim(job_id)
    assert claim is not None
    spool.fail(claim, spool.record_of_claim(claim, F).model_copy(
        update={"error": ErrorInfo(type=ErrorType.TOOL_ERROR, message="earlier run")}))


def settled_in_one_scan(spool: Spool) -> None:
    Recovery(spool).scan()
    assert listing(spool.layout.tmp) == [] and listing(spool.layout.stage) == []
    assert listing(spool.layout.folder(R)) == []
    assert not Recovery(spool).scan().changed, "a second scan still had work"


def test_a_quarantine_killed_beside_an_earlier_original_gets_an_id_of_its_own(
        spool: Spool) -> None:
    """Killed between staging the drop in ``stage/`` and moving it beside the id's earlier
    original: it stayed staged with no record, restored and left again at each scan."""
    layout = spool.layout
    quarantine(spool, "dup.json", b"{the first bad drop")
    earlier = {path: path.read_bytes() for path in (layout.original("dup"), layout.job(F, "dup"))}
    drop_raw(layout, "dup.json", b"{the second bad drop")

    kill_at_first_touch(layout.root, layout.original("dup"), "quarantine", "dup.json")
    assert [n.split(".")[0] for n in listing(layout.stage)] == ["quarantine-dup"]

    settled_in_one_scan(spool)
    assert {path: path.read_bytes() for path in earlier} == earlier
    [orig] = [n for n in listing(layout.folder(F)) if n.endswith(".orig") and n != "dup.orig"]
    assert (layout.folder(F) / orig).read_bytes() == b"{the second bad drop"
    record = read_json(layout.job(F, orig.removesuffix(".orig")))
    assert record["error"]["type"] == "invalid_job"
    assert record["source"]["name"] == "dup.json"


@pytest.mark.parametrize("kill_at", ["staged", "placed"])
def test_a_quarantine_killed_beside_an_earlier_runs_record_replaces_that_record(
        spool: Spool, kill_at: str) -> None:
    """A bad drop of an id whose earlier run failed, killed with the drop staged in
    ``tmp/`` or just placed in ``failed/``: its original ended beside the earlier run's
    record, with no record of its own (and a retry of the id would rerun the old job)."""
    layout = spool.layout
    failed_run(spool, "rerun")
    drop_raw(layout, "rerun.json", b"{not a job")
    target = layout.original("rerun") if kill_at == "staged" else layout.folder(F)

    kill_at_first_touch(layout.root, target, "quarantine", "rerun.json")

    settled_in_one_scan(spool)
    assert locate(layout, "rerun") == [F]
    assert layout.original("rerun").read_bytes() == b"{not a job"
    record = read_json(layout.job(F, "rerun"))
    assert record["error"]["type"] == "invalid_job"
    assert record["source"]["name"] == "rerun.json"


def test_a_failed_run_of_a_quarantined_id_killed_before_the_old_original_went(
        spool: Spool) -> None:
    """The run's record replaced the quarantine record; killed before removing the
    original beside it, the original stayed beside a record that was not its own."""
    layout = spool.layout
    quarantine(spool, "again.json", b"{bad at first")
    submit(spool, "again", params={"fixed": True})

    kill_at_first_touch(layout.root, layout.original("again"), "fail", "again")
    assert locate(layout, "again") == [R, F]

    settled_in_one_scan(spool)
    assert locate(layout, "again") == [F]
    assert not os.path.lexists(layout.original("again"))
    record = read_json(layout.job(F, "again"))
    assert record["error"]["type"] == "tool_error" and record["params"] == {"fixed": True}


def original_listed_first(folder: Path, candidates: list[str]) -> str:
    """An id whose ``<id>.orig`` ``folder`` lists before ``<id>.json`` (a hash-ordered
    directory lists names in an order fixed by the names), so a scan meets it first."""
    for job_id in candidates:
        orig, record = folder / f"{job_id}.orig", folder / f"{job_id}.json"
        orig.write_bytes(b"")
        record.write_bytes(b"")
        names = [entry.name for entry in os.scandir(folder)]
        orig.unlink()
        record.unlink()
        if names.index(orig.name) < names.index(record.name):
            return job_id
    return candidates[0]


def test_a_done_run_of_a_quarantined_id_killed_before_the_old_record_went(
        spool: Spool) -> None:
    """Killed after the done record and before removing the quarantine record: a first
    scan removed that record but, meeting the original before it, left the original
    without a record until the next scan."""
    layout = spool.layout
    job_id = original_listed_first(layout.folder(F), [f"redo{n}" for n in range(32)])
    quarantine(spool, f"{job_id}.json", b"{bad at first")
    submit(spool, job_id)

    kill_at_first_touch(layout.root, layout.job(F, job_id), "complete", job_id)
    assert locate(layout, job_id) == [R, D, F]

    settled_in_one_scan(spool)
    assert locate(layout, job_id) == [D]
    assert not os.path.lexists(layout.original(job_id))
    assert read_json(layout.job(D, job_id))["result"] == {"ok": True}


def same_tick(record: Path, running: Path) -> None:
    """Give ``record`` the timestamp of the claim of ``running``, as the filesystem's coarse
    clock does to two events less than a tick apart (on ext4 here, 4 ms)."""
    claimed_ns = os.lstat(running).st_ctime_ns
    os.utime(record, ns=(claimed_ns, claimed_ns))


def test_a_waiting_drop_claimed_as_its_predecessor_ends_outlives_its_processor(
        spool: Spool) -> None:
    """A drop of an id that waited for that id's run is claimed the moment the run is
    recorded, in the same tick of the clock.  Its processor died during that second run,
    and recovery took the first run's record for the second's: the running file went,
    and the second drop with it (the real processor: 6 times in 6)."""
    layout = spool.layout
    submit(spool, "twice", params={"drop": 1})

    kill_at_first_touch(layout.root, None, "rerun", "twice")
    assert locate(layout, "twice") == [R, D]
    same_tick(layout.job(D, "twice"), layout.job(R, "twice"))

    settled_in_one_scan(spool)
    assert locate(layout, "twice") == [F]
    record = read_json(layout.job(F, "twice"))
    assert record["error"]["type"] == "abandoned" and record["params"] == {"drop": 2}


def test_a_run_recorded_in_the_tick_of_its_claim_is_finished_not_run_again(
        spool: Spool) -> None:
    """The other side: a run recorded in the tick it was claimed, killed before its
    running file went, was finished: recovery removes the running file and keeps the
    record (it does not abandon the run over its own result)."""
    layout = spool.layout
    submit(spool, "quick", params={"drop": 1})

    kill_at_first_touch(layout.root, layout.job(R, "quick"), "complete", "quick",
                        syscalls="unlink,rename")
    assert locate(layout, "quick") == [R, D]
    same_tick(layout.job(D, "quick"), layout.job(R, "quick"))
    done = layout.job(D, "quick").read_bytes()

    settled_in_one_scan(spool)
    assert locate(layout, "quick") == [D]
    assert layout.job(D, "quick").read_bytes() == done


def kill_at_rename(root: Path, nth: int, command: str, arg: str) -> None:
    """Run crash_actor.py's ``command arg``, SIGKILLed on entering its ``nth`` rename."""
    kill_in_actor(root, command, arg, syscalls="rename,renameat,renameat2", nth=nth)


@pytest.mark.parametrize("kill_at", ["staged", "placed"])
def test_a_badly_named_drop_killed_mid_quarantine_keeps_its_name_and_reason(
        spool: Spool, kill_at: str) -> None:
    """Killed with the drop staged in ``stage/`` (before its second rename, into
    ``failed/``) or with its original in ``failed/`` (before its record's rename), the
    record recovery wrote said "the original name was lost" or named the generated id
    as the drop, and never why the drop was refused."""
    layout = spool.layout
    drop_raw(layout, "Q3 report (final).json", b'{"tool": "echo"}')
    kill_at_rename(layout.root, 2 if kill_at == "staged" else 3, "quarantine",
                   "Q3 report (final).json")
    staged = [n for n in listing(layout.stage) if n.startswith("quarantine-")]
    originals = [n for n in listing(layout.folder(F)) if n.endswith(".orig")]
    assert (len(staged), len(originals)) == ((1, 0) if kill_at == "staged" else (0, 1))
    assert not [n for n in listing(layout.folder(F)) if n.endswith(".json")]

    settled_in_one_scan(spool)
    [orig] = [n for n in listing(layout.folder(F)) if n.endswith(".orig")]
    assert (layout.folder(F) / orig).read_bytes() == b'{"tool": "echo"}'
    record = read_json(layout.job(F, orig.removesuffix(".orig")))
    assert record["source"]["name"] == "Q3 report (final).json"
    assert record["error"]["type"] == "invalid_job"
    assert "name" in record["error"]["message"] and "lost" not in record["error"]["message"]


@pytest.mark.parametrize("kill_at", ["staged", "placed"])
def test_a_second_bad_drop_of_an_id_killed_mid_quarantine_keeps_its_reason(
        spool: Spool, kill_at: str) -> None:
    """The drop's id had an earlier original, so its record took an id of its own, and
    its note went under that id where recovery looked under the staged one: the record
    said "the original name was lost" and not why the drop was refused.  Nor does it say
    twice that the earlier original keeps its id."""
    layout = spool.layout
    quarantine(spool, "rep.json", b"{the first bad drop")
    drop_raw(layout, "rep.json", b"[1]")
    kill_at_rename(layout.root, 2 if kill_at == "staged" else 3, "quarantine", "rep.json")

    settled_in_one_scan(spool)
    [orig] = [n for n in listing(layout.folder(F)) if n.endswith(".orig") and n != "rep.orig"]
    assert (layout.folder(F) / orig).read_bytes() == b"[1]"
    record = read_json(layout.job(F, orig.removesuffix(".orig")))
    assert record["source"] == {"name": "rep.json", "size": 3, "kind": "file"}
    message = record["error"]["message"]
    assert message.startswith("invalid job: the file must hold a JSON object, not list")
    assert message.count("earlier") == 1, message
    assert read_json(layout.job(F, "rep"))["source"]["size"] == len(b"{the first bad drop")


def quarantine_leaving_a_live_pids_note(spool: Spool) -> None:
    """A bad ``rep.json`` quarantined, killed with it staged, and settled by a scan that
    leaves its note: the note's pid is this (live) process's, as when the writer's pid
    was reused."""
    layout = spool.layout
    drop_raw(layout, "rep.json", b"{the first bad drop")
    kill_at_rename(layout.root, 2, "quarantine", "rep.json")
    [note] = [n for n in listing(layout.stage) if n.startswith("record-")]
    tag, _pid, rand, tmp = note.rsplit(".", 3)
    os.rename(layout.stage / note, layout.stage / f"{tag}.{os.getpid()}.{rand}.{tmp}")
    Recovery(spool).scan()


def test_a_note_left_by_a_process_whose_pid_lives_on_names_no_later_drop(
        spool: Spool) -> None:
    """A quarantine's note outlives it when its writer dies and the pid is reused (a
    note of a live pid stays).  Keyed by the drop's id, it gave a later drop of the
    name, quarantined and cut short too, the first drop's reason and size."""
    layout = spool.layout
    quarantine_leaving_a_live_pids_note(spool)
    assert "unexpected character" in read_json(layout.job(F, "rep"))["error"]["message"]
    os.unlink(layout.job(F, "rep"))  # purged, say: the id is free again
    os.unlink(layout.original("rep"))

    drop_raw(layout, "rep.json", b"[1]")
    kill_at_rename(layout.root, 2, "quarantine", "rep.json")
    Recovery(spool).scan()
    assert (layout.original("rep")).read_bytes() == b"[1]"
    record = read_json(layout.job(F, "rep"))
    assert record["source"]["size"] == 3
    assert "not list" in record["error"]["message"], record["error"]


def test_a_live_pids_note_a_day_old_is_removed(tmp_path: Path) -> None:
    """Nothing else removes it: a quarantine takes milliseconds, so a day-old note of a
    live pid is one whose writer died and whose pid was reused."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    quarantine_leaving_a_live_pids_note(spool)
    assert [n for n in listing(layout.stage) if n.startswith("record-")], "a live pid's note"

    later = FakeClock(datetime.now(UTC) + timedelta(seconds=DEAD_STAGING_AGE_S + 60))
    Recovery(Spool(layout, spool.mover, later)).scan()
    assert listing(layout.stage) == []
    assert "unexpected character" in read_json(layout.job(F, "rep"))["error"]["message"]


@pytest.mark.parametrize("kill_at", ["staged", "placed"])
def test_a_quarantine_cut_short_keeps_its_reason_when_recovery_comes_a_day_later(
        tmp_path: Path, kill_at: str) -> None:
    """A processor killed mid-quarantine and started again only after a weekend: its
    note, over a day old, was taken for a stale one and never read, and the record said
    "the original name was lost" (or no reason at all) where it had both."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    drop_raw(layout, "rep.json", b"[1]")
    kill_at_rename(layout.root, 2 if kill_at == "staged" else 3, "quarantine", "rep.json")

    later = FakeClock(datetime.now(UTC) + timedelta(seconds=2 * DEAD_STAGING_AGE_S))
    settled_in_one_scan(Spool(layout, spool.mover, later))
    assert layout.original("rep").read_bytes() == b"[1]"
    record = read_json(layout.job(F, "rep"))
    assert record["source"] == {"name": "rep.json", "size": 3, "kind": "file"}
    assert "not list" in record["error"]["message"], record["error"]


@pytest.mark.parametrize("kill_at", ["staged", "placed"])
@pytest.mark.parametrize(("name", "reason"), [("rep.json", "not list"),
                                              ("Q3 report (final).json", "bad file name")])
def test_a_note_in_the_format_before_the_drops_inode_still_gives_its_reason(
        spool: Spool, kill_at: str, name: str, reason: str) -> None:
    """A spool upgraded with a quarantine cut short by the earlier spoolq: its note,
    ``record-<id>.<pid>.<hex>.tmp``, was no longer read (no inode in its name), and the
    record said "the original name was lost"."""
    layout = spool.layout
    drop_raw(layout, name, b"[1]")
    kill_at_rename(layout.root, 2 if kill_at == "staged" else 3, "quarantine", name)
    [note] = [n for n in listing(layout.stage) if n.startswith("record-")]
    tag, rest = note.split(".", 1)
    staged_id = tag.removeprefix("record-").partition("-")[2]
    os.rename(layout.stage / note, layout.stage / f"record-{staged_id}.{rest}")

    settled_in_one_scan(spool)
    [orig] = [n for n in listing(layout.folder(F)) if n.endswith(".orig")]
    record = read_json(layout.job(F, orig.removesuffix(".orig")))
    assert record["source"] == {"name": name, "size": 3, "kind": "file"}
    assert reason in record["error"]["message"], record["error"]


def kill_at_unlink(root: Path, nth: int, command: str, arg: str) -> None:
    """Run crash_actor.py's ``command arg``, SIGKILLed on entering its ``nth`` unlink."""
    kill_in_actor(root, command, arg, syscalls="unlink,unlinkat", nth=nth)


@pytest.mark.parametrize("then", ["nothing", "a newer record"])
def test_a_purge_killed_holding_a_record_leaves_it_to_recovery(spool: Spool, then: str) -> None:
    """Purge holds a record where moves stage before it removes it, as a re-run's record
    may have taken the old one's name since the listing (test_purge_race.py).  Killed
    there (its original already removed, the record's removal next), the record went
    back at the next recovery scan, or went for good when a newer record of the id stood
    there by then; the next purge takes an old one again."""
    layout = spool.layout
    quarantine(spool, "old.json", b"{a bad drop")
    age(layout.job(F, "old"))
    kill_at_unlink(layout.root, 2, "purge", "3600")  # the original's, then the record's
    assert [n.split(".")[0] for n in listing(layout.stage)] == ["purge-failed-old"]
    assert listing(layout.folder(F)) == []
    if then == "a newer record":
        failed_run(spool, "old")

    settled_in_one_scan(spool)
    record = read_json(layout.job(F, "old"))
    if then == "nothing":
        assert record["error"]["type"] == "invalid_job"
        assert listing(layout.folder(F)) == ["old.json"]
        report = Client(layout, spool.mover, SystemClock()).purge(3600)
        assert (report.removed, report.kept) == (1, 0)
        assert listing(layout.folder(F)) == []
    else:
        assert record["error"]["message"] == "earlier run"
        assert listing(layout.folder(F)) == ["old.json"]


@pytest.mark.parametrize("max_attempts", [3, None])
def test_a_kept_job_file_cut_short_before_its_record_goes_with_the_run(
        spool: Spool, max_attempts: int | None) -> None:
    """An unknown tool's run keeps its job file as ``failed/<id>.orig`` before its record:
    killed between the two, recovery gave that file a quarantine's record beside the run
    it requeued (the job pending and failed at once), or took the running file for a
    run that had ended.  It goes with the run recovery settles."""
    layout = spool.layout
    fields = {} if max_attempts is None else {"max_attempts": max_attempts}
    submit(spool, "typo", tool="no_such_tool", **fields)

    kill_at_first_touch(layout.root, layout.job(F, "typo"), "keep", "typo")
    assert locate(layout, "typo") == [R]
    assert layout.original("typo").exists()

    settled_in_one_scan(spool)
    assert not os.path.lexists(layout.original("typo"))
    if max_attempts is None:
        assert locate(layout, "typo") == [F]
        assert read_json(layout.job(F, "typo"))["error"]["type"] == "abandoned"
    else:
        assert locate(layout, "typo") == [P]
        assert listing(layout.folder(F)) == []


def test_a_kept_job_file_cut_short_after_its_record_stays_with_it(spool: Spool) -> None:
    """Killed after the record (in the tick of the claim), before the running file went:
    the run is over, its record and kept file stay (a record with a ``source`` was taken
    for a quarantine's, which tells no run, and the ended run was abandoned over it)."""
    layout = spool.layout
    submit(spool, "typo", tool="no_such_tool")
    sent = layout.job(P, "typo").read_bytes()

    kill_at_first_touch(layout.root, layout.job(R, "typo"), "keep", "typo",
                        syscalls="unlink,rename")
    assert locate(layout, "typo") == [R, F]
    same_tick(layout.job(F, "typo"), layout.job(R, "typo"))

    settled_in_one_scan(spool)
    assert locate(layout, "typo") == [F]
    assert layout.original("typo").read_bytes() == sent
    record = read_json(layout.job(F, "typo"))
    assert record["error"]["type"] == "unknown_tool"
    assert record["source"]["size"] == len(sent)
