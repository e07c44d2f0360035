"""What older spoolq versions leave in a spool, settled by the current recovery.

docs/operations.md's upgrade promises that nothing is lost when a processor of an
earlier version is stopped (or killed) and the new one starts on its spool, and that
processors of both versions can share one spool for a while.  These tests build, byte
for byte, the leftovers of earlier versions that the current code once misread (found
by running the history's own processors against today's: h110).

* Until 0285dd3 (stage/) and b42cb8f (moves staged there), the processor's
  quarantines and the admin CLI's cancels and retries staged the job's file in
  ``tmp/`` as ``<action>-<id>.<pid>.<12 hex>.tmp``.  In a ``tmp/`` the submit group
  shares (``spoolq init --system``) recovery completes no move a submitter could have
  named, but the spool user's own file (a retry's record; a drop of its own) is no
  submitter's: it is completed or undone as the old version's own recovery did.
* Every version before this one named a file it writes afresh after that file
  (``<id>.<pid>.<hex>.tmp`` for ``done/<id>.json``, ``pending/<id>.json``, ...), so the
  record of job ``cancel-x`` cut short before its rename read as a cancel of ``x``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from spoolkit import (
    NOBODY,
    a_grace_later,
    listing,
    make_spool,
    needs_root,
    read_json,
    run_to_end,
    submit,
)

from spool.fsops import WRITE_TAG, Mover
from spool.layout import parse_staging
from spool.models import Record, record_bytes
from spool.recovery import Recovery
from spool.staged import ACTIONS
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, D, F = JobState.PENDING, JobState.DONE, JobState.FAILED


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def old_staging(folder: Path, tag: str, pid: int) -> Path:
    """A name an earlier spoolq staged under (``Layout.staging_str``: 6 random bytes)."""
    return folder / f"{tag}.{pid}.{os.urandom(6).hex()}.tmp"


def share_tmp(spool: Spool) -> None:
    spool.layout.tmp.chmod(0o3730)  # as spoolq init --system makes it


def test_an_older_spoolqs_moves_cut_short_in_a_shared_tmp_are_settled(tmp_path: Path) -> None:
    """An old ``spoolq retry R``, ``spoolq cancel C`` and a quarantine of its own drop
    Q, each killed between its two renames, before the upgrade of a shared spool.  The
    current recovery kept each as a quarantine under an id of its own: R's failed record
    and C's job were gone from their ids (``spoolq show R``: no such job), and Q's
    record named the staging file.  They are the spool user's own files: the retry and
    the cancel are undone and the quarantine completed, as the old version would have."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "R")
    run_to_end(spool, "R", F)
    submit(spool, "C", not_before="2099-01-01T00:00:00Z")
    failed_r = layout.job(F, "R").read_bytes()
    pending_c = layout.job(P, "C").read_bytes()
    share_tmp(spool)
    pid = dead_pid()
    os.rename(layout.job(F, "R"), old_staging(layout.tmp, "retry-R", pid))
    os.rename(layout.job(P, "C"), old_staging(layout.tmp, "cancel-C", pid))
    old_staging(layout.tmp, "quarantine-Q", pid).write_bytes(b'{"tool": ')

    report = Recovery(a_grace_later(layout.root)).scan()

    assert sorted(report.restored) == ["C", "Q", "R"]
    assert listing(layout.tmp) == []
    assert layout.job(F, "R").read_bytes() == failed_r
    assert layout.job(P, "C").read_bytes() == pending_c
    assert layout.original("Q").read_bytes() == b'{"tool": '
    record = read_json(layout.job(F, "Q"))
    assert record["id"] == "Q" and record["error"]["type"] == "invalid_job"
    assert listing(layout.folder(F)) == ["Q.json", "Q.orig", "R.json"]


@needs_root
def test_a_submitters_file_named_like_a_cancel_in_a_shared_tmp_is_no_more_than_a_drop(
        tmp_path: Path) -> None:
    """A submitter's file (an old cancel of her drop, or her own naming) is never
    completed over the id it names; a cancel's goes back to ``pending/`` when the name
    is free, as she could rename it there herself.  Else it is kept under an id of its
    own."""
    assert NOBODY is not None
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "free")
    pending_free = layout.job(P, "free").read_bytes()
    submit(spool, "taken")
    share_tmp(spool)
    pid = dead_pid()
    cut = old_staging(layout.tmp, "cancel-free", pid)
    os.rename(layout.job(P, "free"), cut)
    other = old_staging(layout.tmp, "cancel-taken", pid)
    other.write_bytes(b'{"tool": "echo"}')
    for path in (cut, other):
        os.chown(path, NOBODY[0], NOBODY[1])

    report = Recovery(a_grace_later(layout.root)).scan()

    assert layout.job(P, "free").read_bytes() == pending_free
    (kept,) = [j for j in report.restored if j != "free"]
    assert layout.original(kept).read_bytes() == b'{"tool": "echo"}'
    assert "named like a move" in read_json(layout.job(F, kept))["error"]["message"]
    assert listing(layout.tmp) == []


def record_of(job_id: str) -> bytes:
    return record_bytes(Record.model_validate({
        "id": job_id, "tool": "echo", "state": "done", "result": {"message": job_id},
        "submitted_at": "2026-12-01T00:00:00Z", "finished_at": "2026-12-01T00:00:01Z",
        "attempts": 1, "host": "h", "pid": 1}))


@pytest.mark.parametrize("folder", ["tmp", "stage"])
def test_a_write_cut_short_under_its_own_name_is_no_move_of_another_id(
        tmp_path: Path, folder: str) -> None:
    """The record (or job file, or status) of an id that begins like a move, staged under
    its own name by an earlier spoolq (in ``tmp/``) or by this one before WRITE_TAG (in
    ``stage/``), its writer killed before the rename.  Recovery took ``cancel-abc``'s
    record for a cancel of ``abc``: it went to ``pending/abc.json``, was quarantined, and
    that replaced abc's done record; ``retry-abc``'s replaced abc's record byte for
    byte; a client's ``submit --id cancel-abc`` ran as ``abc``."""
    spool = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "abc")
    run_to_end(spool, "abc", D, result="mine")
    done_abc = layout.job(D, "abc").read_bytes()
    pid = dead_pid()
    where = layout.root / folder
    writes = {
        "cancel-abc": record_of("cancel-abc"),
        "retry-abc": record_of("retry-abc"),
        "quarantine-abc": record_of("quarantine-abc")[:60],  # cut mid-write: its id told
        "kept-abc": b'{"id": "kept-abc", "tool": "echo", "submitted_at": 1}',  # a drop
        "purge-done-abc": record_of("purge-done-abc"),
        "superseded-done-abc": record_of("superseded-done-abc"),
        "cancel-host-1-ab12": b'{"owner": "cancel-host-1-ab12", "pid": 1}',  # a status
    }
    for tag, data in writes.items():
        old_staging(where, tag, pid).write_bytes(data)
    # The mid-write one names its id before the cut: a record's fields come in order.
    assert b'"id":"quarantine-abc"' in writes["quarantine-abc"]

    report = Recovery(a_grace_later(layout.root)).scan()

    assert layout.job(D, "abc").read_bytes() == done_abc
    assert listing(layout.folder(P)) == []
    assert not layout.original("abc").exists()
    assert listing(where) == []
    # Those whose moves hold anybody's bytes are kept, under ids of their own.
    kept = {read_json(layout.job(F, j))["source"]["name"].split(".")[0]: j
            for j in report.restored}
    assert sorted(kept) == ["cancel-abc", "cancel-host-1-ab12", "kept-abc", "quarantine-abc"]
    for tag, job_id in kept.items():
        assert layout.original(job_id).read_bytes() == writes[tag]
        message = read_json(layout.job(F, job_id))["error"]["message"]
        assert f"holding a file of {tag} itself" in message


def test_publish_stages_under_a_name_no_move_has(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool")
    staged: list[str] = []
    move = Mover.move

    def spy(self: Mover, src: object, dst: object, **kwargs: object) -> bool:
        staged.append(os.path.basename(os.fspath(src)))  # type: ignore[arg-type]
        return move(self, src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Mover, "move", spy)
    for action in sorted(ACTIONS):
        spool.mover.publish(spool.layout.job_str(D, f"{action}-abc"), record_of("x"))
    assert len(staged) == len(ACTIONS)
    for name in staged:
        parsed = parse_staging(name)
        assert parsed is not None and parsed[0].startswith(WRITE_TAG)
        assert parsed[0].partition("-")[0] not in ACTIONS
    assert orjson.loads(spool.layout.job(D, "cancel-abc").read_bytes())["id"] == "x"
