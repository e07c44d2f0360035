"""The real processor keeps going when something that is no record sits where a record
goes: a directory at ``done/<id>.json`` or ``failed/<id>.json`` (an operator's or a
script's, with the spool user's rights).

Before, the rename of the record over it raised IsADirectoryError: the processor
logged "crashed" and exited 1 with the job left in ``running/``, and its next start
crashed the same way recovering that job, so one such entry stopped the spool for
good.  Now the record is written, the directory is kept whole as a quarantined
original ``failed/invalid-....orig`` beside a record naming where it stood, and the
daemon goes on with the next job.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from relkit import NO_DAC, Daemon, drop, quarantined, wait_for

StartDaemon = Callable[..., Daemon]


def _occupy(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("an operator's notes\n")


def _record(root: Path, job_id: str) -> dict[str, Any] | None:
    """The record of ``job_id`` once it is one (the directory at its name is none)."""
    for state in ("done", "failed"):
        path = root / state / f"{job_id}.json"
        if path.is_file() and not path.is_symlink():
            data: dict[str, Any] = orjson.loads(path.read_bytes())
            return data
    return None


def wait_record(root: Path, job_id: str) -> dict[str, Any]:
    rec: dict[str, Any] = wait_for(lambda: _record(root, job_id), 20, f"a record of {job_id}")
    return rec


def _kept(root: Path, where: str) -> dict[str, Any]:
    """The record of what stood at ``where``, its original checked whole."""
    rec = wait_for(lambda: quarantined(root).get(where), 10, f"the record of {where}")
    assert rec["error"]["type"] == "invalid_job" and rec["source"]["kind"] == "directory"
    original = root / "failed" / f"{rec['id']}.orig"
    assert (original / "notes.txt").read_text() == "an operator's notes\n"
    return dict(rec)


def test_a_record_lands_over_a_directory_and_the_daemon_goes_on(
        spool_root: Path, daemon: StartDaemon) -> None:
    _occupy(spool_root / "done" / "y.json")
    _occupy(spool_root / "failed" / "x.json")
    d = daemon()
    drop(spool_root, "y", {"tool": "echo", "params": {"message": "hi"}})
    drop(spool_root, "x", {"tool": "no-such-tool"})
    assert wait_record(spool_root, "y")["result"] == {"message": "hi"}
    assert wait_record(spool_root, "x")["error"]["type"] == "unknown_tool"
    _kept(spool_root, "done/y.json")
    _kept(spool_root, "failed/x.json")
    drop(spool_root, "after", {"tool": "echo", "params": {"message": 1}})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert not list((spool_root / "running").iterdir())
    assert d.running(), d.logs()
    assert "crashed" not in d.logs()
    assert d.stop() == 0


def test_recovery_records_an_orphan_over_a_directory_and_starts(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A processor that died mid-run (SIGKILL) left ``running/x.json``; ``failed/x.json``
    is a directory.  Before, every start crashed on recovering it."""
    _occupy(spool_root / "failed" / "x.json")
    (spool_root / "running" / "x.json").write_bytes(orjson.dumps(
        {"tool": "echo", "params": {"message": 1}, "id": "x", "attempts": 0}))
    d = daemon()
    rec = wait_record(spool_root, "x")
    assert rec["state"] == "failed" and rec["error"]["type"] == "abandoned"
    _kept(spool_root, "failed/x.json")
    assert not (spool_root / "running" / "x.json").exists()
    assert d.running(), d.logs()
    assert d.stop() == 0


def test_progress_is_written_over_a_directory(spool_root: Path, daemon: StartDaemon) -> None:
    """Before, every progress write of the run failed ('cannot write progress', Is a
    directory), so its progress was never seen; the directory went only at its end."""
    d = daemon()
    _occupy(spool_root / "progress" / "y.json")  # after the start-up pass: found by the run
    drop(spool_root, "y", {"tool": "sleep", "params": {"seconds": 5}})
    progress = spool_root / "progress" / "y.json"
    wait_for(lambda: progress.is_file() and not progress.is_symlink(), 4,
             "a progress file of y while it runs")
    assert (spool_root / "running" / "y.json").exists()
    _kept(spool_root, "progress/y.json")
    assert wait_record(spool_root, "y")["state"] == "done"
    assert "cannot write progress" not in d.logs()
    assert d.stop() == 0




def test_an_empty_directory_it_may_not_move_is_removed(spool_root: Path,
                                                       daemon: StartDaemon) -> None:
    """An operator's ``sudo mkdir`` at a sidecar's or a record's name: a directory of
    another user, mode 0555, which the spool user may remove (it is empty) but not move
    into failed/ (a directory changing parent needs write permission on itself, for its
    '..').  Before, its move aside raised EACCES: the start-up pass exited 2 on one at
    progress/y.json ('cannot move y.json to failed/: Permission denied'), where the
    removal before d07f887 went on; one at a record's name paused claims for good.
    Empty, it holds nothing to keep: it is removed (a processor without CAP_DAC_OVERRIDE
    stands for the spool user)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    for path in (spool_root / "progress" / "y.json", spool_root / "done" / "w.json"):
        path.mkdir(mode=0o555)
    d = daemon(prefix=NO_DAC)
    drop(spool_root, "w", {"tool": "echo", "params": {"message": 1}})
    assert wait_record(spool_root, "w")["state"] == "done"
    assert not (spool_root / "progress" / "y.json").exists()
    drop(spool_root, "after", {"tool": "echo", "params": {"message": 2}})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert "I/O trouble" not in d.logs()
    assert d.stop() == 0


def test_a_directory_of_another_user_it_may_neither_move_nor_remove_is_kept_in_place(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A non-empty directory of another user at a record's or a sidecar's name: the spool
    user may not move it into failed/ (it may not write its '..') nor remove it (it holds
    files).  Before, one at progress/y.json made the start-up pass exit 2 ('cannot move
    y.json to failed/: Permission denied'), and one at done/w.json paused claims for
    good (the finish retried after each I/O pause).  Now each is renamed within its own
    folder to a name every reader and pass ignores, beside a record saying where it stood,
    where it is and that an operator must remove it; the records land, the daemon goes
    on, and a restart leaves them alone."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root (to make another user's directory) and setpriv")
    places = ("done/w.json", "progress/y.json", "cancel/v")
    for where in (*places, "failed/x.json"):
        _occupy(spool_root / where)
        for each in (spool_root / where / "notes.txt", spool_root / where):
            os.chown(each, 65534, 65534)
    d = daemon(prefix=NO_DAC)
    drop(spool_root, "w", {"tool": "echo", "params": {"message": "hi"}})
    drop(spool_root, "x", {"tool": "no-such-tool"})
    assert wait_record(spool_root, "w")["result"] == {"message": "hi"}
    assert wait_record(spool_root, "x")["error"]["type"] == "unknown_tool"
    kept = {where: _kept_in_place(spool_root, where) for where in places}
    # One in failed/ moves to failed/<id>.orig as any other: no folder to change.
    kept["failed/x.json"] = _kept(spool_root, "failed/x.json")
    d = _runs_on_and_after_a_restart(spool_root, daemon, d)
    assert quarantined(spool_root) == kept
    assert d.stop() == 0


def _runs_on_and_after_a_restart(spool_root: Path, daemon: StartDaemon, d: Daemon) -> Daemon:
    """The next job runs on ``d``, which then stops with 0, and one more on a processor
    started again (no I/O trouble either time); that one is returned, still running."""
    drop(spool_root, "after", {"tool": "echo", "params": {"message": 1}})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert "I/O trouble" not in d.logs()
    assert d.stop() == 0
    d = daemon(prefix=NO_DAC)
    drop(spool_root, "later", {"tool": "echo", "params": {"message": 2}})
    assert wait_record(spool_root, "later")["state"] == "done"
    assert "I/O trouble" not in d.logs()
    return d


def _kept_in_place(root: Path, where: str) -> dict[str, Any]:
    """The record of the directory that stood at ``where``, kept in its own folder."""
    rec = wait_for(lambda: quarantined(root).get(where), 10, f"the record of {where}")
    assert rec["error"]["type"] == "invalid_job" and rec["source"]["kind"] == "directory"
    assert "operator" in rec["error"]["message"], rec
    kept = root / rec["source"]["kept_at"]
    assert kept.parent == (root / where).parent and kept.name.startswith("."), rec
    assert kept.name.endswith(rec["id"]), rec
    assert (kept / "notes.txt").read_text() == "an operator's notes\n"
    return dict(rec)


def test_a_directory_of_another_user_in_running_is_kept_in_place(
        spool_root: Path, daemon: StartDaemon) -> None:
    """An operator's directory at running/r.json, not the spool user's to write: recovery
    moves what is no file out of running/ to quarantine it, and a directory may change
    folder only if its mover may write it.  Before, every start exited 2 ('cannot move
    r.json to tmp/: Permission denied').  Now it is kept in running/ under a name no
    pass looks at, beside a record saying an operator must remove it."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root (to make another user's directory) and setpriv")
    where = spool_root / "running" / "r.json"
    _occupy(where)
    for each in (where / "notes.txt", where):
        os.chown(each, 65534, 65534)
    d = daemon(prefix=NO_DAC)
    kept = _kept_in_place(spool_root, "running/r.json")
    d = _runs_on_and_after_a_restart(spool_root, daemon, d)
    assert quarantined(spool_root) == {"running/r.json": kept}
    assert d.stop() == 0
