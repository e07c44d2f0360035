"""Every transition of the state table done through the Spool API and checked on
disk, every other pair refused, and the claim/complete/requeue/retry edge cases
of DESIGN sections 2 and 9."""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import stat
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import (
    FakeClock,
    done_record,
    drop_raw,
    listing,
    locate,
    make_spool,
    read_json,
    submit,
)

from spool.errors import (
    ConflictError,
    InvalidJob,
    NotFoundError,
    SpoolIOError,
    TransitionError,
)
from spool.fsops import StrPath
from spool.ids import JOB_SUFFIX
from spool.intake import Intake, Verdict
from spool.lease import is_locked
from spool.models import MAX_NESTING, ErrorInfo, Job, job_bytes
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import ACTIVE, TERMINAL, TRANSITIONS, JobState, check_transition
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def only_in(spool: Spool, job_id: str, state: JobState) -> None:
    assert locate(spool.layout, job_id) == [state]
    assert listing(spool.layout.tmp) == [], "a transition left staging files behind"


# -- the allowed table, one check per entry -------------------------------------------


def do_claim(spool: Spool) -> None:
    job = submit(spool, "j1", params={"n": 1}, priority=5)
    claim = spool.claim("j1")
    assert claim is not None
    try:
        only_in(spool, "j1", R)
        assert Job.model_validate_json(claim.data) == job.model_copy(
            update={"id": "j1", "submitted_at": spool.clock.now()})
        assert claim.data == spool.layout.job(R, "j1").read_bytes()
        assert is_locked(spool.layout.job(R, "j1")) is True, "a claim holds its lease"
    finally:
        claim.close()
    assert is_locked(spool.layout.job(R, "j1")) is False, "closing the claim drops the lease"


def do_quarantine_and_cancel(spool: Spool) -> None:
    drop_raw(spool.layout, "bad.json", b"not json at all")
    st = os.lstat(spool.layout.entry(P, "bad.json"))
    record = spool.quarantine("bad.json", "malformed JSON: test", kind="file",
                              size=st.st_size, mtime_ns=st.st_mtime_ns,
                              inode=(st.st_ino, st.st_dev))
    assert record is not None and record.id == "bad"
    only_in(spool, "bad", F)
    assert spool.layout.original("bad").read_bytes() == b"not json at all"
    on_disk = read_json(spool.layout.job(F, "bad"))
    assert on_disk["error"] == {"type": "invalid_job", "message": "malformed JSON: test"}
    assert on_disk["source"] == {"name": "bad.json", "size": 15, "kind": "file"}
    assert on_disk["state"] == "failed"

    submit(spool, "c1", meta={"who": "ops"})
    cancelled = spool.cancel_pending("c1")
    assert cancelled is not None and cancelled.error is not None
    only_in(spool, "c1", F)
    on_disk = read_json(spool.layout.job(F, "c1"))
    assert on_disk["error"]["type"] == "cancelled"
    assert on_disk["meta"] == {"who": "ops"} and on_disk["tool"] == "echo"


def do_complete(spool: Spool) -> None:
    submit(spool, "j2", params={"message": "hi"})
    claim = spool.claim("j2")
    assert claim is not None
    spool.complete(claim, done_record(claim, {"message": "hi"}))
    assert claim.closed
    only_in(spool, "j2", D)
    on_disk = read_json(spool.layout.job(D, "j2"))
    assert on_disk["state"] == "done" and on_disk["id"] == "j2"
    assert on_disk["result"] == {"message": "hi"} and on_disk["params"] == {"message": "hi"}
    assert on_disk["attempts"] == 1 and on_disk["pid"] == os.getpid()


def do_fail(spool: Spool) -> None:
    submit(spool, "j3")
    claim = spool.claim("j3")
    assert claim is not None
    record = done_record(claim, state=F).model_copy(update={
        "error": ErrorInfo(type="tool_error", message="boom", traceback="Traceback...")})
    spool.fail(claim, record)
    only_in(spool, "j3", F)
    on_disk = read_json(spool.layout.job(F, "j3"))
    assert on_disk["state"] == "failed" and "result" not in on_disk
    assert on_disk["error"] == {"type": "tool_error", "message": "boom",
                                "traceback": "Traceback..."}
    assert not spool.layout.original("j3").exists()


def do_requeue(spool: Spool) -> None:
    submit(spool, "j4", max_attempts=3)
    claim = spool.claim("j4")
    assert claim is not None
    job = Job.model_validate_json(claim.data).model_copy(update={"attempts": 1})
    assert spool.requeue(claim, job) is True
    assert claim.closed
    only_in(spool, "j4", P)
    on_disk = read_json(spool.layout.job(P, "j4"))
    assert on_disk["attempts"] == 1 and on_disk["max_attempts"] == 3


def do_retry(spool: Spool) -> None:
    submit(spool, "j5", params={"x": 1})
    claim = spool.claim("j5")
    assert claim is not None
    job = Job.model_validate_json(claim.data)
    record = done_record(claim, state=F).model_copy(update={
        "error": ErrorInfo(type="timeout", message="too slow"), "attempts": 1})
    spool.fail(claim, record)
    returned = spool.retry("j5")
    assert returned.state is P and returned.attempts == 0
    only_in(spool, "j5", P)
    on_disk = read_json(spool.layout.job(P, "j5"))
    assert on_disk["attempts"] == 0 and on_disk["params"] == {"x": 1}
    assert on_disk["error"]["type"] == "timeout", "the failed record goes with it"
    assert Job.model_validate(on_disk).submitted_at == job.submitted_at
    assert Job.model_validate(on_disk).tool == job.tool


ALLOWED: dict[tuple[JobState, JobState], Callable[[Spool], None]] = {
    (P, R): do_claim,
    (P, F): do_quarantine_and_cancel,
    (R, D): do_complete,
    (R, F): do_fail,
    (R, P): do_requeue,
    (F, P): do_retry,
}


def test_every_table_entry_has_a_test() -> None:
    assert set(ALLOWED) == set(TRANSITIONS)
    assert set(TERMINAL) | set(ACTIVE) == set(JobState)


@pytest.mark.parametrize("mode", list(FsyncMode))
@pytest.mark.parametrize("pair", list(ALLOWED), ids=lambda p: f"{p[0]}->{p[1]}")
def test_allowed_transition_on_disk(tmp_path: Path, pair: tuple[JobState, JobState],
                                    mode: FsyncMode) -> None:
    spool = make_spool(tmp_path / "spool", mode, FakeClock())
    check_transition(*pair)
    ALLOWED[pair](spool)
    spool.mover.flush()


FORBIDDEN = [pair for pair in itertools.product(JobState, JobState) if pair not in TRANSITIONS]


def test_forbidden_list_is_complete() -> None:
    assert len(FORBIDDEN) == len(JobState) ** 2 - len(TRANSITIONS) == 10


@pytest.mark.parametrize("pair", FORBIDDEN, ids=lambda p: f"{p[0]}->{p[1]}")
def test_forbidden_transition_refused(pair: tuple[JobState, JobState]) -> None:
    with pytest.raises(TransitionError, match=f"{pair[0].value} -> {pair[1].value}"):
        check_transition(*pair)


# -- claim -----------------------------------------------------------------------------


def test_claim_never_overwrites_running(spool: Spool) -> None:
    submit(spool, "x", params={"run": 1})
    first = spool.claim("x")
    assert first is not None
    running_bytes = spool.layout.job(R, "x").read_bytes()
    submit(spool, "x", params={"run": 2})
    pending_bytes = spool.layout.job(P, "x").read_bytes()
    try:
        assert spool.claim("x") is None
        assert spool.layout.job(R, "x").read_bytes() == running_bytes
        assert spool.layout.job(P, "x").read_bytes() == pending_bytes
        assert is_locked(spool.layout.job(P, "x")) is False, "a refused claim keeps no lock"
        spool.complete(first, done_record(first, "one"))
    finally:
        first.close()
    second = spool.claim("x")
    assert second is not None
    try:
        assert Job.model_validate_json(second.data).params == {"run": 2}
    finally:
        second.close()


def test_claim_never_overwrites_a_foreign_running_file(spool: Spool) -> None:
    """Even a running file nobody holds (an orphan) is not overwritten by a claim."""
    submit(spool, "y")
    orphan = spool.layout.job(R, "y")
    orphan.write_bytes(b'{"tool": "echo", "params": {"orphan": true}}')
    assert spool.claim("y") is None
    assert orphan.read_bytes() == b'{"tool": "echo", "params": {"orphan": true}}'
    assert spool.layout.job(P, "y").exists()


def test_lost_claims_return_none(spool: Spool) -> None:
    assert spool.claim("never-submitted") is None
    submit(spool, "z")
    held = os.open(spool.layout.job(P, "z"), os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert spool.claim("z") is None, "another claimant holds the pending inode"
        assert locate(spool.layout, "z") == [P]
    finally:
        os.close(held)
    claim = spool.claim("z")
    assert claim is not None
    try:
        assert spool.claim("z") is None, "already claimed"
    finally:
        claim.close()


def test_claim_of_a_non_file_is_refused(spool: Spool) -> None:
    (spool.layout.folder(P) / "d.json").mkdir()
    os.symlink("/etc/hostname", spool.layout.folder(P) / "s.json")
    assert spool.claim("d") is None
    assert spool.claim("s") is None
    assert listing(spool.layout.folder(R)) == []


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the spool, for symlinks to point at."""
    path = tmp_path / "outside"
    path.write_bytes(b"outside")
    return path


def _swap_during_claim(spool: Spool, monkeypatch: pytest.MonkeyPatch, job_id: str,
                       swap: Callable[[Path], None], redrop: bool = False) -> None:
    """Replace ``pending/<id>.json`` with ``swap(path)`` between the claim's open and its
    move (and, with ``redrop``, drop a new job there once the move is done)."""
    move = spool.mover.move
    pending = spool.layout.job(P, job_id)

    def racing(src: StrPath, dst: StrPath, **kw: Any) -> bool:
        if os.fspath(src) == str(pending) and os.fspath(dst).startswith(
                str(spool.layout.folder(R))):
            os.unlink(pending)
            swap(pending)
            moved = move(src, dst, **kw)
            if redrop:
                drop_raw(spool.layout, pending.name, b'{"tool": "echo"}')
            return moved
        return move(src, dst, **kw)

    monkeypatch.setattr(spool.mover, "move", racing)


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_a_non_file_swapped_in_mid_claim_goes_back_to_pending(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, outside: Path, kind: str) -> None:
    """The claim moved what it did not lock: it is sent back for intake to quarantine, the
    claim is lost and the claim's own descriptor is closed once (no_leaks checks)."""
    swaps: dict[str, Callable[[Path], None]] = {
        "symlink": lambda p: os.symlink(outside, p),
        "directory": lambda p: p.mkdir(),
        "fifo": os.mkfifo,
    }
    submit(spool, "w")
    _swap_during_claim(spool, monkeypatch, "w", swaps[kind])
    assert spool.claim("w") is None
    assert listing(spool.layout.folder(R)) == []
    back = os.lstat(spool.layout.job(P, "w")).st_mode
    assert {"symlink": stat.S_ISLNK, "directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO}[kind](back)


def test_a_non_file_swapped_in_mid_claim_with_a_newer_drop_is_quarantined_by_recovery(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, outside: Path) -> None:
    submit(spool, "v")
    _swap_during_claim(spool, monkeypatch, "v", lambda p: os.symlink(outside, p), redrop=True)
    assert spool.claim("v") is None
    assert os.path.islink(spool.layout.job(R, "v")), "pending/ was taken: it stays for recovery"
    monkeypatch.undo()
    report = Recovery(spool).scan()
    assert report.restored == ["v"]
    assert listing(spool.layout.folder(R)) == []
    assert os.readlink(spool.layout.original("v")) == str(outside)
    error = read_json(spool.layout.job(F, "v"))["error"]
    assert error["type"] == "invalid_job" and "not a regular file" in error["message"]
    assert spool.layout.job(P, "v").read_bytes() == b'{"tool": "echo"}', "the newer drop waits"
    assert outside.read_bytes() == b"outside", "nothing outside the spool is touched"


# -- complete and fail replace the other terminal record --------------------------------


def test_complete_replaces_failed_record(spool: Spool) -> None:
    submit(spool, "k")
    claim = spool.claim("k")
    assert claim is not None
    spool.fail(claim, done_record(claim, state=F).model_copy(
        update={"error": ErrorInfo(type="tool_error", message="first")}))
    submit(spool, "k")
    claim = spool.claim("k")
    assert claim is not None
    spool.complete(claim, done_record(claim, "second"))
    assert locate(spool.layout, "k") == [D]
    assert read_json(spool.layout.job(D, "k"))["result"] == "second"


def test_fail_replaces_done_record_and_complete_drops_stale_original(spool: Spool) -> None:
    submit(spool, "m")
    claim = spool.claim("m")
    assert claim is not None
    spool.complete(claim, done_record(claim, 1))
    submit(spool, "m")
    claim = spool.claim("m")
    assert claim is not None
    spool.fail(claim, done_record(claim, state=F).model_copy(
        update={"error": ErrorInfo(type="timeout", message="late")}))
    assert locate(spool.layout, "m") == [F]
    # a quarantined drop of the id, then a good drop completes: the .orig goes too
    drop_raw(spool.layout, "m.json", b"[1, 2]")
    st = os.lstat(spool.layout.job(P, "m"))
    spool.quarantine("m.json", "not an object", kind="file", size=st.st_size,
                     mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))
    assert spool.layout.original("m").exists()
    submit(spool, "m")
    claim = spool.claim("m")
    assert claim is not None
    spool.complete(claim, done_record(claim, 3))
    assert locate(spool.layout, "m") == [D]
    assert not spool.layout.original("m").exists()
    assert listing(spool.layout.folder(F)) == []


# -- requeue ---------------------------------------------------------------------------


def test_requeue_yields_to_a_newer_drop(spool: Spool) -> None:
    submit(spool, "r", params={"v": "old"})
    claim = spool.claim("r")
    assert claim is not None
    submit(spool, "r", params={"v": "new"})
    newer = spool.layout.job(P, "r").read_bytes()
    try:
        job = Job.model_validate_json(claim.data).model_copy(update={"attempts": 1})
        assert spool.requeue(claim, job) is False
        assert not claim.closed, "a refused requeue leaves the claim with the caller"
        assert spool.layout.job(P, "r").read_bytes() == newer
        assert spool.layout.job(R, "r").exists()
        assert listing(spool.layout.tmp) == []
        spool.fail(claim, done_record(claim, state=F).model_copy(
            update={"error": ErrorInfo(type="abandoned", message="superseded")}))
    finally:
        claim.close()
    assert sorted(locate(spool.layout, "r")) == sorted([P, F])


def test_requeue_removes_sidecars(spool: Spool) -> None:
    submit(spool, "s1")
    claim = spool.claim("s1")
    assert claim is not None
    spool.layout.progress_file("s1").write_bytes(b"{}")
    spool.layout.cancel_request("s1").write_bytes(b"{}")
    assert spool.requeue(claim, Job.model_validate_json(claim.data))
    assert listing(spool.layout.progress) == [] and listing(spool.layout.cancel) == []


# -- retry -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"\xff\xfe",  # no tool at all
    b'{"tool": "echo", "params": {"message": "keep me"}, "priority": "high"}',  # has a tool
])
def test_retry_refuses_quarantined_records(spool: Spool, clock: FakeClock,
                                           data: bytes) -> None:
    drop_raw(spool.layout, "q.json", data)
    intake = Intake(spool, max_job_bytes=4096, settle_s=0, clock=clock)
    assert intake.inspect("q.json").verdict is Verdict.QUARANTINED
    before = spool.layout.job(F, "q").read_bytes()
    with pytest.raises(ConflictError, match="quarantined"):
        spool.retry("q")
    assert locate(spool.layout, "q") == [F]
    assert spool.layout.job(F, "q").read_bytes() == before
    assert spool.layout.original("q").read_bytes() == data
    assert listing(spool.layout.tmp) == []


def test_retry_unknown_and_conflicts(spool: Spool) -> None:
    with pytest.raises(NotFoundError):
        spool.retry("nope")
    submit(spool, "t")
    claim = spool.claim("t")
    assert claim is not None
    spool.fail(claim, done_record(claim, state=F).model_copy(
        update={"error": ErrorInfo(type="tool_error", message="x")}))
    submit(spool, "t", params={"newer": True})
    newer = spool.layout.job(P, "t").read_bytes()
    with pytest.raises(ConflictError, match="already pending"):
        spool.retry("t")
    assert spool.layout.job(P, "t").read_bytes() == newer
    assert spool.layout.job(F, "t").exists(), "a refused retry keeps the failed record"
    assert listing(spool.layout.tmp) == []


def test_retry_never_follows_a_symlink_or_trusts_a_non_record(spool: Spool,
                                                              outside: Path) -> None:
    """A symlink in failed/ is refused unread; a file that is not a record is a conflict
    that names the file, not an error that quotes its content."""
    outside.write_bytes(b'{"secret": "hunter2"}')
    os.symlink(outside, spool.layout.job(F, "ln"))
    (spool.layout.job(F, "junk")).write_bytes(b'{"secret": "hunter2"}')
    with pytest.raises(ConflictError, match="not a regular file") as refused:
        spool.retry("ln")
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConflictError, match="not a valid record") as invalid:
        spool.retry("junk")
    assert "hunter2" not in str(invalid.value)
    assert os.path.islink(spool.layout.job(F, "ln")) and locate(spool.layout, "junk") == [F]
    assert listing(spool.layout.tmp) == [] and listing(spool.layout.folder(P)) == []


def test_retry_of_a_socket_in_failed_is_a_conflict_not_a_disk_error(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket's open fails ENXIO: what is in ``failed/`` is no record (a conflict, as a
    symlink is), not the spool's I/O trouble (statusd's 503, "cannot read")."""
    monkeypatch.chdir(spool.layout.folder(F))  # a socket's path: at most 107 bytes
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock.json")
        with pytest.raises(ConflictError, match="not a regular file"):
            spool.retry("sock")
    assert stat.S_ISSOCK(os.lstat(spool.layout.job(F, "sock")).st_mode)
    assert listing(spool.layout.tmp) == [] and listing(spool.layout.folder(P)) == []


def test_retry_reads_no_more_of_a_huge_failed_file_than_a_record_can_be(spool: Spool) -> None:
    """A sparse 512 MiB file in failed/ is refused after reading at most 16 MiB: retry read
    it whole (statusd's POST .../retry of a 1 GiB one took it from 57 MB to 3.1 GB)."""
    path = spool.layout.job(F, "huge")
    path.write_bytes(b'{"id": "huge", "state": "failed", "tool": "echo", "error": '
                     b'{"type": "crashed", "message": "')
    os.truncate(path, 512 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ConflictError, match="too large to retry"):
            spool.retry("huge")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"retry took {peak >> 20} MiB"
    assert locate(spool.layout, "huge") == [F] and listing(spool.layout.folder(P)) == []


def test_a_claim_reads_no_more_of_a_drop_grown_since_it_was_judged(spool: Spool,
                                                                    clock: FakeClock) -> None:
    """A submitter who kept a descriptor on the drop grew it to 512 MiB after intake judged
    it: the claim read it whole (the processor went to 2.1 GB for a 1 GiB one)."""
    path = drop_raw(spool.layout, "grown.json", b'{"tool": "echo"}')
    intake = Intake(spool, max_job_bytes=4096, settle_s=0, clock=clock)
    assert intake.inspect("grown.json").verdict is Verdict.READY
    os.truncate(path, 512 << 20)
    tracemalloc.start()
    try:
        claim = spool.claim("grown")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert claim is not None
    try:
        assert peak < 64 << 20, f"the claim took {peak >> 20} MiB"
        assert claim.data.startswith(b'{"tool": "echo"}')
    finally:
        claim.close()


# -- cancel ----------------------------------------------------------------------------


def test_cancel_pending_only(spool: Spool) -> None:
    assert spool.cancel_pending("ghost") is None
    submit(spool, "run1")
    claim = spool.claim("run1")
    assert claim is not None
    try:
        assert spool.cancel_pending("run1") is None, "a running job is not cancelled here"
        assert locate(spool.layout, "run1") == [R]
    finally:
        claim.close()
    submit(spool, "p1", priority=3)
    record = spool.cancel_pending("p1")
    assert record is not None and record.state is F and record.priority == 3
    assert record.error is not None and record.error.type == "cancelled"
    assert locate(spool.layout, "p1") == [F]
    assert spool.cancel_pending("p1") is None, "twice is a no-op"
    assert listing(spool.layout.tmp) == []


@pytest.mark.parametrize("data", [
    b'{"tool": "echo", "priority": "high"}',  # invalid fields
    b'{"tool": "echo", "meta": {"order": 98765432109876543210}}',  # past 64 bits
    b'{"tool": "echo", "params": ',  # cut short
], ids=["fields", "big-integer", "cut-short"])
def test_cancelling_a_pending_file_that_is_no_job_keeps_its_bytes(spool: Spool,
                                                                  data: bytes) -> None:
    # Nothing is lost: as intake would have quarantined it, the cancel keeps the bytes
    # beside the record (failed/<id>.orig), and a retry says to fix that file.
    spool.layout.job(P, "bad").write_bytes(data)
    record = spool.cancel_pending("bad")
    assert record is not None and record.state is F and record.tool is None
    assert record.error is not None and record.error.type == "cancelled"
    assert "bad.orig" in record.error.message, record.error.message
    assert record.source is not None and record.source.size == len(data)
    assert spool.layout.original("bad").read_bytes() == data
    assert orjson.loads(spool.layout.job(F, "bad").read_bytes())["source"]["size"] == len(data)
    with pytest.raises(ConflictError, match=r"fix its file \(.*bad\.orig\)"):
        spool.retry("bad")
    assert listing(spool.layout.tmp) == []


def _refuse_failed_record(spool: Spool, monkeypatch: pytest.MonkeyPatch, job_id: str,
                          meanwhile: Callable[[], object] | None = None) -> None:
    """From now on, writing failed/<job_id>.json fails as on a full disk (``meanwhile``
    is called first: what another process did while the write was tried)."""
    publish = spool.mover.publish

    def full(dest: Any, payload: bytes, **kwargs: Any) -> bool:
        if str(dest) == str(spool.layout.job(F, job_id)):
            if meanwhile is not None:
                meanwhile()
            raise SpoolIOError(f"cannot publish {job_id}.json: No space left on device")
        return publish(dest, payload, **kwargs)

    monkeypatch.setattr(spool.mover, "publish", full)


def _failed_bytes(spool: Spool) -> dict[str, bytes]:
    """What ``failed/`` holds, name by name."""
    return {name: (spool.layout.folder(F) / name).read_bytes()
            for name in listing(spool.layout.folder(F))}


@pytest.mark.parametrize("earlier", ["run", "original"])
def test_a_cancel_of_a_file_that_is_no_job_whose_record_is_not_written_undoes_itself(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, earlier: str) -> None:
    # With an earlier failed record of the id (a run's, or a quarantine's beside its
    # original), a record write refused (ENOSPC) left the file's bytes in failed/x.orig
    # beside the earlier record, in place of the earlier original: the cancel raised,
    # yet the job was gone from pending/.  The cancel must not have happened.
    if earlier == "run":
        submit(spool, "x")
    else:
        spool.layout.job(P, "x").write_bytes(b'{"tool": "echo", "priority": "early"}')
    assert spool.cancel_pending("x") is not None
    before = _failed_bytes(spool)
    data = b'{"tool": "echo", "params": '
    spool.layout.job(P, "x").write_bytes(data)
    _refuse_failed_record(spool, monkeypatch, "x")
    with pytest.raises(SpoolIOError):
        spool.cancel_pending("x")
    assert spool.layout.job(P, "x").read_bytes() == data
    assert _failed_bytes(spool) == before
    assert listing(spool.layout.tmp) == []


def test_a_refused_cancel_of_no_job_keeps_an_earlier_original_beside_a_newer_drop(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The undo put the bytes back in pending/ and only then the earlier original back in
    # failed/x.orig; with a newer drop of x pending meanwhile neither happened, and the
    # earlier original's one other name (in tmp/) was removed: it was lost, and the
    # cancelled bytes sat in its place beside its record.  Now the earlier original is
    # back, and the cancelled bytes wait in stage/ for recovery to finish their cancel.
    spool.layout.job(P, "x").write_bytes(b'{"tool": "echo", "priority": "early"}')
    assert spool.cancel_pending("x") is not None
    before = _failed_bytes(spool)
    data = b'{"tool": "echo", "params": '
    spool.layout.job(P, "x").write_bytes(data)
    newer = b'{"tool": "echo", "params": {"newer": true}}'
    _refuse_failed_record(spool, monkeypatch, "x",
                          meanwhile=lambda: spool.layout.job(P, "x").write_bytes(newer))
    with pytest.raises(SpoolIOError):
        spool.cancel_pending("x")
    assert spool.layout.job(P, "x").read_bytes() == newer
    assert _failed_bytes(spool) == before
    [staged] = listing(spool.layout.stage)
    assert staged.startswith("cancel-x.") and (spool.layout.stage / staged).read_bytes() == data
    # Once this process is gone (as recovery sees it), a scan finishes that cancel.
    monkeypatch.setattr("spool.staged.pid_alive", lambda pid: False)
    assert Recovery(make_spool(spool.layout.root)).scan().restored == ["x"]
    assert spool.layout.original("x").read_bytes() == data
    record = read_json(spool.layout.job(F, "x"))
    assert record["error"]["type"] == "cancelled" and record["source"]["size"] == len(data)
    assert spool.layout.job(P, "x").read_bytes() == newer
    assert listing(spool.layout.tmp) == []


def test_a_cancel_whose_record_is_not_written_beside_an_earlier_one_undoes_itself(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same for a valid job: the undo ran only when no record of the id was there,
    # so with an earlier failed run's record a refused write (ENOSPC) left the job
    # staged in tmp/, out of the queue until a recovery scan, though the cancel raised.
    submit(spool, "x")
    assert spool.cancel_pending("x") is not None
    earlier = spool.layout.job(F, "x").read_bytes()
    submit(spool, "x", params={"again": 1})
    again = spool.layout.job(P, "x").read_bytes()
    _refuse_failed_record(spool, monkeypatch, "x")
    with pytest.raises(SpoolIOError):
        spool.cancel_pending("x")
    assert spool.layout.job(P, "x").read_bytes() == again
    assert spool.layout.job(F, "x").read_bytes() == earlier
    assert listing(spool.layout.tmp) == []


def test_a_cancel_that_cannot_keep_the_bytes_beside_a_directory_original_undoes_itself(
        spool: Spool) -> None:
    # A directory dropped as x.json is quarantined as failed/x.orig; a file that is no
    # job, dropped as x.json later, could not be renamed over it: the cancel raised
    # IsADirectoryError and left the file in tmp/, gone from pending/.
    spool.layout.folder(F).joinpath("x.orig").mkdir()
    (spool.layout.folder(F) / "x.orig" / "inner").write_bytes(b"kept")
    data = b'{"tool": "echo", "params": '
    spool.layout.job(P, "x").write_bytes(data)
    with pytest.raises(ConflictError, match=r"failed/x\.orig"):
        spool.cancel_pending("x")
    assert spool.layout.job(P, "x").read_bytes() == data
    assert (spool.layout.folder(F) / "x.orig" / "inner").read_bytes() == b"kept"
    assert listing(spool.layout.tmp) == []


def test_submit_conflicts_with_pending(spool: Spool) -> None:
    submit(spool, "dup", params={"a": 1})
    with pytest.raises(ConflictError):
        submit(spool, "dup", params={"a": 2})
    assert read_json(spool.layout.job(P, "dup"))["params"] == {"a": 1}
    assert all(not n.endswith(JOB_SUFFIX) for n in listing(spool.layout.tmp))


def test_submit_takes_a_job_file_of_exactly_the_limit_and_refuses_one_a_byte_over(
        spool: Spool) -> None:
    """SPOOL_MAX_JOB_BYTES is the largest job file taken (DESIGN section 7), as intake
    takes a drop of exactly that size: a submit refused one that intake would run."""
    job = Job.model_validate({"tool": "echo", "params": {"message": "x" * 100}})
    size = len(job_bytes(job.model_copy(update={"id": "at",
                                                "submitted_at": spool.clock.now()})))
    with pytest.raises(InvalidJob, match=f"would be {size} bytes, over "
                                         f"SPOOL_MAX_JOB_BYTES={size - 1}"):
        spool.submit(job, "at", max_bytes=size - 1)
    assert locate(spool.layout, "at") == []
    spool.submit(job, "at", max_bytes=size)
    assert len(spool.layout.job(P, "at").read_bytes()) == size


def test_a_retry_keeps_a_schedule_still_ahead_and_drops_one_past(
        spool: Spool, clock: FakeClock) -> None:
    """A cancelled job meant for later, retried, still waits for its ``not_before``; one
    whose time has passed goes back without it (it would only be noise on a pending
    job).  Kept when past and dropped when ahead, a retried job ran at once, hours
    before the time its submitter set."""
    later = clock.now() + timedelta(hours=2)
    submit(spool, "ahead", not_before=later)
    submit(spool, "past", not_before=later)
    assert spool.cancel_pending("ahead") is not None
    assert spool.cancel_pending("past") is not None
    assert spool.retry("ahead").not_before == later
    assert read_json(spool.layout.job(P, "ahead"))["not_before"] is not None
    clock.advance(3 * 3600)
    assert spool.retry("past").not_before is None
    assert read_json(spool.layout.job(P, "past")).get("not_before") is None


def test_submit_refuses_a_job_nested_deeper_than_intake_takes(spool: Spool) -> None:
    """What intake would quarantine is refused at submit, the client told at once: a
    job nested past MAX_NESTING was published, then failed ``invalid_job`` unrun."""
    deep: Any = "leaf"
    for _ in range(MAX_NESTING + 5):
        deep = [deep]
    with pytest.raises(InvalidJob, match="nested more than"):
        spool.submit(Job.model_validate({"tool": "echo", "params": {"d": deep}}), "deep")
    assert locate(spool.layout, "deep") == []
