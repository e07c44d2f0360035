"""One file in ``pending/`` that refuses to move is that file's trouble.

``chattr +i`` (or a security label) makes the claim's rename fail EPERM while its
folders take writes: taken for the spool's trouble, it paused every claim for as long as
it stayed, retried first at each pause's end (QA: a job submitted beside it waited 11
minutes).  Real daemon, a real immutable file (root on a filesystem with the flag).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, drop, wait_for, wait_record


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True,
                          check=False).returncode == 0


def test_an_immovable_drop_holds_up_no_other_job(spool_root: Path, tmp_path: Path) -> None:
    stuck = spool_root / "pending" / "stuck.json"
    stuck.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": "stuck"}}))
    if not _chattr("+i", stuck):
        pytest.skip("chattr +i is not available here (root, a filesystem with the flag)")
    d = Daemon(spool_root, tmp_path / "daemon.log", JOB_NUM="1")
    try:
        d.start()
        drop(spool_root, "free", {"tool": "echo", "params": {"message": "free"}})
        rec = wait_record(spool_root, "free", 10)
        assert rec["state"] == "done", rec
        lines = d.events()
        assert not [e for e in lines if e.get("msg") == "spool I/O trouble; pausing claims"]
        said = [e for e in lines if e.get("name") == "stuck.json"]
        assert said and "cannot move the file of stuck" in said[0]["error"], said
        assert stuck.exists()  # left where it is, tried again at each scan
        _chattr("-i", stuck)
        assert wait_record(spool_root, "stuck", 15)["state"] == "done"
        assert d.stop() == 0
    finally:
        _chattr("-i", stuck)
        d.kill()


PAUSED = "spool I/O trouble; pausing claims"


def test_an_immovable_running_file_holds_up_no_other_job(spool_root: Path,
                                                         tmp_path: Path) -> None:
    """The run's record is written, its running file refuses its removal: the record
    stands and the file is left (said once by the processor, once by recovery), where
    the record was written again after each pause and every claim waited (QA)."""
    probe = spool_root / "tmp" / "probe"
    probe.write_bytes(b"")
    if not _chattr("+i", probe):
        pytest.skip("chattr +i is not available here (root, a filesystem with the flag)")
    _chattr("-i", probe)
    running = spool_root / "running" / "r1.json"
    d = Daemon(spool_root, tmp_path / "daemon.log", JOB_NUM="1", SPOOL_SCAN_S="0.5")
    try:
        d.start()
        drop(spool_root, "r1", {"tool": "sleep", "params": {"seconds": 1.0}})
        wait_for(running.exists, 10, "r1 running")
        assert _chattr("+i", running)
        assert wait_record(spool_root, "r1", 15)["state"] == "done"
        drop(spool_root, "after", {"tool": "echo", "params": {"message": "after"}})
        assert wait_record(spool_root, "after", 10)["state"] == "done"
        time.sleep(1.5)  # a few recovery passes over the file left
        lines = d.events()
        assert not [e for e in lines if e.get("msg") == PAUSED], lines[-5:]
        assert any("refuses its removal" in e.get("msg", "") for e in lines)
        assert running.exists()
        _chattr("-i", running)  # the flag gone, recovery's next pass removes it
        wait_for(lambda: not running.exists(), 10, "the running file removed")
        assert d.stop() == 0
    finally:
        _chattr("-i", running)
        d.kill()


def test_an_immovable_earlier_record_holds_up_no_other_job(spool_root: Path,
                                                           tmp_path: Path) -> None:
    """A re-drop of an id whose earlier record was made immutable (kept from purge): the
    new record stands beside it, where every claim paused for as long as the flag
    stayed and the id was in running/, done/ and failed/ at once (QA)."""
    old = spool_root / "failed" / "f2.json"
    d = Daemon(spool_root, tmp_path / "daemon.log", JOB_NUM="1")
    try:
        d.start()
        drop(spool_root, "f2", {"tool": "echo", "params": {"bad": 1}})
        assert wait_record(spool_root, "f2", 10)["state"] == "failed"
        if not _chattr("+i", old):
            pytest.skip("chattr +i is not available here (root, a filesystem with the flag)")
        drop(spool_root, "f2", {"tool": "echo", "params": {"message": "again"}})
        wait_for((spool_root / "done" / "f2.json").exists, 10, "the new record")
        drop(spool_root, "after", {"tool": "echo", "params": {"message": "after"}})
        assert wait_record(spool_root, "after", 10)["state"] == "done"
        lines = d.events()
        assert not [e for e in lines if e.get("msg") == PAUSED], lines[-5:]
        assert any("refuses its removal" in e.get("msg", "") for e in lines)
        assert not (spool_root / "running" / "f2.json").exists()
        assert d.stop() == 0
    finally:
        _chattr("-i", old)
        d.kill()
