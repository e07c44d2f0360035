"""A drop the processor may not read yet is waited for, as an unparsable one is.

``mv`` from another filesystem, ``cp -p`` and ``install`` create the file mode 0600,
write it, and only then set its mode: a processor that cannot read other users' files
(``spoolq init --system``: files owned by their submitter) found it in between about
half the time and failed it "permission denied", while the tool said it succeeded (QA:
93 of 200 ``mv`` drops).  Real daemon, root without the capabilities that pass over
file modes (``setpriv``), files owned by nobody.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest
from relkit import NO_DAC, Daemon, record, wait_for, wait_quarantined

NOBODY = 65534


def _private_drop(root: Path, job_id: str) -> Path:
    """A valid job in pending/, owned by nobody, mode 0600: what such a writer leaves for
    a moment."""
    staged = root / "tmp" / f"staged-{job_id}"
    staged.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": job_id}}))
    os.chown(staged, NOBODY, NOBODY)
    staged.chmod(0o600)
    dropped = root / "pending" / f"{job_id}.json"
    os.rename(staged, dropped)
    return dropped


def test_a_drop_readable_only_after_a_moment_runs(spool_root: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               SPOOL_SETTLE_S="2")
    try:
        d.start()
        late = _private_drop(spool_root, "late")
        time.sleep(0.5)  # looked at and refused meanwhile: an inotify event wakes it
        assert record(spool_root, "late") is None, "judged before its mode was set"
        late.chmod(0o644)  # the writer's fchmod
        rec = wait_for(lambda: record(spool_root, "late"), 10, "a record of late")
        assert rec["state"] == "done", rec
        assert rec["result"] == {"message": "late"}

        # One that stays unreadable is failed, once it has stayed so for SPOOL_SETTLE_S.
        started = time.monotonic()
        _private_drop(spool_root, "never")
        found = wait_quarantined(spool_root, ["never.json"], 15)
        assert time.monotonic() - started >= 2.0
        rec = found["never.json"]
        assert rec["error"]["type"] == "invalid_job"
        assert "permission denied" in rec["error"]["message"], rec
        assert d.stop() == 0
    finally:
        d.kill()
