"""Something that is no record where a record goes: a directory, FIFO, socket or symlink
at ``done/<id>.json`` or ``failed/<id>.json`` (made by an operator or a script with the
spool user's rights), or at a run's sidecar (``progress/<id>.json``, ``cancel/<id>``).

The record is written all the same, and what stood at its name is moved aside by
rename (never copied, deleted nor followed) into ``failed/`` as a quarantined original
``failed/<generated id>.orig`` beside a record saying what it was and where it stood.
Before, the rename of the record over a directory raised IsADirectoryError (the
processor crashed, and again at each restart, on its recovery of the run), a FIFO,
socket or symlink vanished under the record, and a directory at the id's other
terminal name or at a sidecar was removed with everything in it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spoolkit import FakeClock, done_record, locate, make_spool, read_json, submit

from spool.client import Client
from spool.errors import SpoolIOError
from spool.layout import pid_space
from spool.recovery import Recovery
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

D, F, R = JobState.DONE, JobState.FAILED, JobState.RUNNING


def _plant(kind: str, path: Path, outside: Path) -> Callable[[Path], None]:
    """Make a ``kind`` at ``path``; returns a check that ``moved`` is that same thing."""
    if kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("an operator's notes\n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))
        finally:
            sock.close()
    else:
        outside.write_text("outside the spool\n")
        path.symlink_to(outside)
    ino = os.lstat(path).st_ino

    def check(moved: Path) -> None:
        st = os.lstat(moved)
        assert st.st_ino == ino, f"{moved} is not what stood at {path.name}"
        if kind == "directory":
            assert (moved / "keep.txt").read_text() == "an operator's notes\n"
        elif kind == "symlink":
            assert os.readlink(moved) == str(outside)
            assert outside.read_text() == "outside the spool\n"
    return check


KINDS = ["directory", "fifo", "socket", "symlink"]


def _aside(spool: Spool, where: str) -> tuple[Path, dict[str, Any]]:
    """The one quarantined original moved aside from ``where`` and its record."""
    found = []
    for path in spool.layout.folder(F).glob("invalid-*.json"):
        rec = read_json(path)
        if rec.get("source", {}).get("name") == where:
            found.append((spool.layout.original(rec["id"]), rec))
    assert len(found) == 1, f"no single record of what stood at {where}: {found}"
    return found[0]


def _check_aside(spool: Spool, where: str, kind: str, for_id: str,
                 check: Callable[[Path], None]) -> None:
    original, rec = _aside(spool, where)
    check(original)
    assert rec["state"] == "failed"
    assert rec["error"]["type"] == "invalid_job"
    assert where in rec["error"]["message"] and for_id in rec["error"]["message"]
    assert rec["source"]["kind"] == kind


def _run(spool: Spool, job_id: str, tool: str = "echo") -> Any:
    submit(spool, job_id, tool=tool)
    claim = spool.claim(job_id)
    assert claim is not None
    return claim


def _finish_y(spool: Spool, state: JobState) -> None:
    """Run job ``y`` and finish it into ``state`` (done or failed); it is there alone."""
    claim = _run(spool, "y")
    record = done_record(claim, {"message": "hi"}, state)
    if state is D:
        spool.complete(claim, record)
    else:
        spool.fail(claim, record)
    assert locate(spool.layout, "y") == [state]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", [D, F])
def test_a_record_is_written_over_what_is_no_record_and_that_is_kept(
        spool: Spool, tmp_path: Path, kind: str, state: JobState) -> None:
    check = _plant(kind, spool.layout.job(state, "y"), tmp_path / "outside")
    _finish_y(spool, state)
    assert stat.S_ISREG(os.lstat(spool.layout.job(state, "y")).st_mode)
    assert read_json(spool.layout.job(state, "y"))["id"] == "y"
    _check_aside(spool, f"{state.value}/y.json", kind, "y", check)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", [D, F])
def test_what_stands_at_the_other_terminal_name_is_kept_not_removed(
        spool: Spool, tmp_path: Path, kind: str, state: JobState) -> None:
    other = F if state is D else D
    check = _plant(kind, spool.layout.job(other, "y"), tmp_path / "outside")
    _finish_y(spool, state)
    _check_aside(spool, f"{other.value}/y.json", kind, "y", check)


def test_a_cancel_writes_its_record_over_a_directory(spool: Spool, tmp_path: Path) -> None:
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    submit(spool, "x")
    record = spool.cancel_pending("x")
    assert record is not None and record.error is not None
    assert read_json(spool.layout.job(F, "x"))["error"]["type"] == "cancelled"
    _check_aside(spool, "failed/x.json", "directory", "x", check)


def test_recovery_fails_an_orphan_over_a_directory(tmp_path: Path, clock: FakeClock) -> None:
    """The processor's start-up pass: before, it raised IsADirectoryError every time."""
    spool = make_spool(tmp_path / "spool", clock=clock)
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    claim = _run(spool, "x")
    claim.close()  # its processor died: the lease is free
    report = Recovery(spool).scan()
    assert report.abandoned == ["x"]
    assert read_json(spool.layout.job(F, "x"))["error"]["type"] == "abandoned"
    assert locate(spool.layout, "x") == [F]
    _check_aside(spool, "failed/x.json", "directory", "x", check)


@pytest.mark.parametrize("sidecar", ["progress", "cancel"])
def test_a_directory_at_a_sidecar_is_kept_when_the_run_ends(
        tmp_path: Path, clock: FakeClock, sidecar: str) -> None:
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True, follow=True)
    try:
        path = (spool.layout.progress_file("y") if sidecar == "progress"
                else spool.layout.cancel_request("y"))
        check = _plant("directory", path, tmp_path / "outside")
        claim = _run(spool, "y")
        spool.complete(claim, done_record(claim, {"message": "hi"}))
        assert locate(spool.layout, "y") == [D]
        assert not os.path.lexists(path)
        where = f"{sidecar}/{path.name}"
        _check_aside(spool, where, "directory", "y", check)
    finally:
        spool.mover.drop_spares()
        spool.close()


# -- recovery's own writes and removals --------------------------------------------------


def _dead_name(tag: str) -> str:
    """A staging name of this pid space whose process is gone (pid 999999 is past
    pid_max here)."""
    return f"{tag}.999999.{pid_space() or ''}abcdefabcdef.tmp"


def _dead_staging(spool: Spool, tag: str, data: bytes) -> Path:
    """A staging file of a process that is gone (pid 999999 is past pid_max here)."""
    path = spool.layout.tmp / _dead_name(tag)
    path.write_bytes(data)
    return path


def test_recovery_finishes_a_quarantine_over_a_directory(spool: Spool, tmp_path: Path) -> None:
    """A quarantine cut short (its processor died with the drop staged): before, the
    start-up pass raised IsADirectoryError writing the record, and later passes left
    ``failed/x.orig`` without one."""
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    _dead_staging(spool, "quarantine-x", b"not json")
    Recovery(spool).scan()
    rec = read_json(spool.layout.job(F, "x"))
    assert rec["error"]["type"] == "invalid_job" and rec["source"]["name"] == "x.json"
    assert spool.layout.original("x").read_bytes() == b"not json"
    _check_aside(spool, "failed/x.json", "directory", "x", check)
    assert os.listdir(spool.layout.tmp) == []


def test_recovery_writes_the_record_of_an_original_over_a_directory(
        spool: Spool, tmp_path: Path) -> None:
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    spool.layout.original("x").write_bytes(b"not json")
    Recovery(spool).scan()
    rec = read_json(spool.layout.job(F, "x"))
    assert rec["error"]["type"] == "invalid_job" and rec["source"]["name"] == "x.json"
    assert spool.layout.original("x").read_bytes() == b"not json"
    _check_aside(spool, "failed/x.json", "directory", "x", check)


def test_recovery_puts_back_a_retry_over_a_directory(spool: Spool, tmp_path: Path) -> None:
    """A retry cut short with the failed record staged: before, a directory at its name
    read as a newer record, and the staged record was removed."""
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    spool.fail(claim, done_record(claim, None, F))
    data = spool.layout.job(F, "x").read_bytes()
    os.rename(spool.layout.job(F, "x"), spool.layout.tmp / _dead_name("retry-x"))
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    Recovery(spool).scan()
    assert spool.layout.job(F, "x").read_bytes() == data
    _check_aside(spool, "failed/x.json", "directory", "x", check)


@pytest.mark.parametrize("kind", KINDS)
def test_recovery_keeps_what_is_no_file_in_the_sidecar_folders(
        spool: Spool, tmp_path: Path, kind: str) -> None:
    """Progress files and cancel requests of jobs not running go; before, a directory
    among them went whole, and a FIFO, socket or symlink went too."""
    checks = {
        "progress/zz.json": _plant(kind, spool.layout.progress_file("zz"), tmp_path / "o1"),
        "cancel/zz": _plant(kind, spool.layout.cancel_request("zz"), tmp_path / "o2"),
    }
    spool.layout.progress_file("old").write_bytes(b"{}")  # a stale file: removed as before
    Recovery(spool).scan()
    assert os.listdir(spool.layout.progress) == [] and os.listdir(spool.layout.cancel) == []
    for where, check in checks.items():
        _check_aside(spool, where, kind, "zz", check)


def test_a_cancel_request_is_written_over_a_directory(spool: Spool, tmp_path: Path) -> None:
    """``spoolq cancel`` of a running job with a directory at ``cancel/<id>``: before,
    'Is a directory (tmp/...)' and exit 1."""
    check = _plant("directory", spool.layout.cancel_request("y"), tmp_path / "outside")
    claim = _run(spool, "y")
    try:
        record = Client(spool.layout, spool.mover).cancel("y", wait_s=0)
        assert record.state is R
        running = os.lstat(spool.layout.job(R, "y")).st_ino  # the run it is for
        assert spool.layout.cancel_request("y").read_bytes() == b'{"run_inode": %d}' % running
        _check_aside(spool, "cancel/y", "directory", "y", check)
    finally:
        claim.close()


def test_a_cancel_whose_setting_aside_fails_puts_all_back(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of what is set aside refused (ENOSPC: a processor's record may be
    written into a recycled inode, that one needs a new one): the cancel did not happen,
    so the job is back in pending/ and the directory back at its name.  Before, the
    directory stayed set aside without its record and the job staged in tmp/."""
    _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    submit(spool, "x")
    publish = spool.mover.publish

    def full(dest: Any, payload: bytes, **kwargs: Any) -> bool:
        if os.path.basename(dest).startswith("invalid-"):
            raise SpoolIOError("cannot publish: No space left on device")
        return publish(dest, payload, **kwargs)

    monkeypatch.setattr(spool.mover, "publish", full)
    with pytest.raises(SpoolIOError):
        spool.cancel_pending("x")
    assert locate(spool.layout, "x") == [JobState.PENDING, F]
    assert (spool.layout.job(F, "x") / "keep.txt").exists()
    assert sorted(os.listdir(spool.layout.folder(F))) == ["x.json"]
    assert os.listdir(spool.layout.tmp) == []


def test_recovery_finishes_a_cut_short_cancel_over_a_directory(
        spool: Spool, tmp_path: Path) -> None:
    """A cancel whose canceller died with the job staged, a newer drop of the id pending
    since, and failed/x.json a directory: the pass finishes the cancel.  Before, it
    raised IsADirectoryError, at every start of the processor."""
    check = _plant("directory", spool.layout.job(F, "x"), tmp_path / "outside")
    submit(spool, "x")
    os.rename(spool.layout.job(JobState.PENDING, "x"),
              spool.layout.tmp / _dead_name("cancel-x"))
    submit(spool, "x", params={"newer": True})
    Recovery(spool).scan()
    assert read_json(spool.layout.job(F, "x"))["error"]["type"] == "cancelled"
    assert read_json(spool.layout.job(JobState.PENDING, "x"))["params"] == {"newer": True}
    _check_aside(spool, "failed/x.json", "directory", "x", check)
    assert os.listdir(spool.layout.tmp) == []
