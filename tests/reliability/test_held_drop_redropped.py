"""A held drop replaced by a good job under the same name runs at once.

A drop whose quarantine the spool refuses (``failed/`` not writable) is held back until
the I/O backoff's end, its own events (the quarantine's give-back) ignored meanwhile.
A client that fixes its job and drops it again under the same name puts another file
there: that file is a new drop, judged on its own event, as the other good jobs are.
The processor runs as root without ``CAP_DAC_OVERRIDE`` (``setpriv --bounding-set``), so
the ``0555`` ``failed/`` refuses it as it would any user.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from relkit import NO_DAC, NO_JOB, Daemon, drop, quick_pause, record, wait_for

LONG_PAUSE_S = 30.0
"""The first I/O pause (0.5 s shipped) made as long as the backoff's cap: the refused
drop is held for that long, far beyond what the fixed job's run takes."""
QUICK = quick_pause(LONG_PAUSE_S)
FIXED = {"tool": "echo", "params": {"message": "fixed"}}
NO_INOTIFY = ["unshare", "--user", "--map-root-user", "sh", "-c",
              'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"', "sh"]
"""A command prefix: what follows has no inotify instance (a user namespace of its own
bounds it, not the host), so it finds drops by its rescans alone."""


def _tries(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.events() if e.get("msg") == "spool I/O trouble; pausing quarantines"]


@pytest.mark.parametrize("found_by", ["event", "rescan"])
def test_a_held_drop_dropped_again_fixed_is_not_held(spool_root: Path, found_by: str
                                                     ) -> None:
    """The fixed job's events were taken for the held drop's give-back and its rescans
    skipped the name: it waited in ``pending/`` until the held drop's pause was over (up
    to 30 s), the good job held up by the bad one it replaced.  ``rescan``: with no
    inotify (its limits reached), the rescans alone find it."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    prefix = NO_DAC
    if found_by == "rescan":
        tried = subprocess.run([*NO_INOTIFY, "true"], capture_output=True, text=True,
                               check=False)
        if shutil.which("unshare") is None or tried.returncode != 0:
            pytest.skip(f"cannot take inotify away in a user namespace: {tried.stderr}")
        prefix = [*NO_INOTIFY, *NO_DAC]
    locked = spool_root / "failed"
    locked.chmod(0o555)
    (spool_root / "pending" / "job.json").write_bytes(NO_JOB)
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=prefix, JOB_NUM="1",
               module="quick_processor", SPOOL_SCAN_S="0.5", **QUICK)
    try:
        d.start()
        first = wait_for(lambda: _tries(d), 10, "the refused quarantine")[0]
        assert first["pause_s"] == LONG_PAUSE_S, first
        if found_by == "rescan":
            assert any(str(e.get("msg", "")).startswith("inotify limit reached")
                       for e in d.events()), "the processor has a feed"
        drop(spool_root, "job", FIXED)  # the client's fix, under the same name
        rec = wait_for(lambda: record(spool_root, "job"), 2 * LONG_PAUSE_S + 30,
                       "the fixed job's record")
        assert rec["state"] == "done" and rec["result"] == {"message": "fixed"}, rec
        # The daemon's own timestamps: a test reading late cannot skew them.
        held_until = datetime.fromisoformat(first["ts"]) + timedelta(seconds=LONG_PAUSE_S)
        assert datetime.fromisoformat(rec["finished_at"]) < held_until, (
            "the fixed job waited for the held drop's pause", rec["finished_at"], first["ts"])
        assert len(_tries(d)) == 1, "the fixed job is no drop to quarantine"
        assert d.stop() == 0
    finally:
        locked.chmod(0o755)
        d.abort()
