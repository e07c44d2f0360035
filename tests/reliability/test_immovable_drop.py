"""One file in ``pending/`` that refuses to move is that file's trouble.

``chattr +i`` (or a security label) makes the claim's rename fail EPERM while its
folders take writes: taken for the spool's trouble, it paused every claim for as long as
it stayed, retried first at each pause's end (QA: a job submitted beside it waited 11
minutes).  Real daemon, a real immutable file (root on a filesystem with the flag).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, drop, wait_record


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
