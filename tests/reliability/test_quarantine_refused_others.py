"""A drop whose quarantine the spool refuses holds up no other job.

The processor runs as root without ``CAP_DAC_OVERRIDE`` (``setpriv --bounding-set``), so
a ``failed/`` made ``0555`` refuses it as it would refuse any user: a drop that is no
job cannot be quarantined, while ``running/`` and ``done/`` take the good jobs'
claims and records as ever.  The refused drop stays in ``pending/`` and is tried
again with a growing pause, and once ``failed/`` takes it, it lands there with its
record.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    NO_DAC,
    NO_JOB,
    Daemon,
    drop,
    most_backed_off_tries,
    quick_pause,
    record,
    wait_for,
    wait_quarantined_originals,
)

QUICK_PAUSE_S = 0.2
"""The first pause after I/O trouble (0.5 s shipped), doubled at each try as shipped."""
QUICK_PAUSE = quick_pause(QUICK_PAUSE_S)
GOOD = {**{f"fast-{n}": {"tool": "echo", "params": {"message": n}} for n in range(4)},
        **{f"compute-{n}": {"tool": "sleep", "params": {"seconds": 0.05}} for n in range(2)}}


def _tries(d: Daemon) -> list[dict[str, Any]]:
    """The daemon's lines for spool I/O trouble, each a refused try and its pause."""
    return [e for e in d.events() if str(e.get("msg", "")).startswith("spool I/O trouble")]


def test_good_drops_run_while_a_bad_one_cannot_be_quarantined(spool_root: Path) -> None:
    """Each pass judged the refused drop first, paused claims, and skipped the dispatch:
    the good jobs dropped beside it waited in ``pending/`` for as long as ``failed/``
    refused it (an unwritable folder, a full disk), however long that was."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    locked = spool_root / "failed"
    locked.chmod(0o555)
    (spool_root / "pending" / "nojob.json").write_bytes(NO_JOB)
    early = dict(list(GOOD.items())[::2])  # judged in one batch with the bad drop
    for job_id, job in early.items():
        drop(spool_root, job_id, job)
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               module="quick_processor", **QUICK_PAUSE)
    try:
        d.start()
        wait_for(lambda: _tries(d), 10, "the refused quarantine")
        for job_id, job in GOOD.items():  # and the others while it is refused
            if job_id not in early:
                drop(spool_root, job_id, job)
        wait_for(lambda: all(record(spool_root, i) for i in GOOD), 30,
                 "the good jobs' records while failed/ refuses the bad drop")
        assert all(record(spool_root, i)["state"] == "done" for i in GOOD)  # type: ignore[index]
        wait_for(lambda: len(_tries(d)) >= 3, 30, "the refused quarantine tried again")
        assert (spool_root / "pending" / "nojob.json").read_bytes() == NO_JOB, "still there"
        # Tried again after growing pauses, not at each pass (the daemon's own
        # timestamps: a test reading the log late cannot skew them).
        tries = _tries(d)
        pauses = [e["pause_s"] for e in tries]
        assert pauses == sorted(pauses) and pauses[-1] > pauses[0], pauses
        assert len(tries) <= most_backed_off_tries(tries, QUICK_PAUSE_S), pauses
        locked.chmod(0o755)
        wait_quarantined_originals(spool_root, ["nojob.json"], NO_JOB, 60)
        assert os.listdir(spool_root / "pending") == []
        assert d.stop() == 0
    finally:
        locked.chmod(0o755)
        d.abort()
