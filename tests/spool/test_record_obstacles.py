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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", [D, F])
def test_a_record_is_written_over_what_is_no_record_and_that_is_kept(
        spool: Spool, tmp_path: Path, kind: str, state: JobState) -> None:
    check = _plant(kind, spool.layout.job(state, "y"), tmp_path / "outside")
    claim = _run(spool, "y")
    record = done_record(claim, {"message": "hi"}, state)
    if state is D:
        spool.complete(claim, record)
    else:
        spool.fail(claim, record)
    assert locate(spool.layout, "y") == [state]
    assert stat.S_ISREG(os.lstat(spool.layout.job(state, "y")).st_mode)
    assert read_json(spool.layout.job(state, "y"))["id"] == "y"
    _check_aside(spool, f"{state.value}/y.json", kind, "y", check)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", [D, F])
def test_what_stands_at_the_other_terminal_name_is_kept_not_removed(
        spool: Spool, tmp_path: Path, kind: str, state: JobState) -> None:
    other = F if state is D else D
    check = _plant(kind, spool.layout.job(other, "y"), tmp_path / "outside")
    claim = _run(spool, "y")
    record = done_record(claim, {"message": "hi"}, state)
    if state is D:
        spool.complete(claim, record)
    else:
        spool.fail(claim, record)
    assert locate(spool.layout, "y") == [state]
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
