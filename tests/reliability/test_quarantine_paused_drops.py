"""Drops that are no job, arriving while quarantines are paused, wait without a try.

Once the spool refused a quarantine (``failed/`` not writable), quarantines pause for
the I/O backoff: a drop judged no job meanwhile is held back with the refused one, not
tried (and refused) at once.  The processor runs as root without ``CAP_DAC_OVERRIDE``
(``setpriv --bounding-set``), so the ``0555`` ``failed/`` refuses it as it would any
user, while the good jobs dropped beside them run.
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

FIRST_PAUSE_S = 5.0
"""The first I/O pause (0.5 s shipped), doubled at each try as shipped."""
QUICK = quick_pause(FIRST_PAUSE_S)
ROUNDS = 6


def _tries(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.events() if e.get("msg") == "spool I/O trouble; pausing quarantines"]


def _drop_bad(root: Path, name: str) -> None:
    tmp = root / "tmp" / f"drop-{name}"
    tmp.write_bytes(NO_JOB)
    tmp.rename(root / "pending" / name)


def test_bad_drops_during_a_quarantine_pause_are_held_untried(spool_root: Path) -> None:
    """Each bad drop that came during the pause was tried at once, refused, and said in
    an ERROR line that grew the backoff: one line a drop (39 in 4 s, a drop each 0.1 s),
    the pause at its 30 s cap after seven, and every held drop put off again by each."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    locked = spool_root / "failed"
    locked.chmod(0o555)
    _drop_bad(spool_root, "bad-first.json")
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               module="quick_processor", **QUICK)
    names = ["bad-first.json"]
    try:
        d.start()
        wait_for(lambda: _tries(d), 10, "the refused quarantine")
        for n in range(ROUNDS):  # each bad drop judged: the good job dropped after it ran
            names.append(f"bad-{n}.json")
            _drop_bad(spool_root, names[-1])
            drop(spool_root, f"good-{n}", {"tool": "echo", "params": {"message": n}})
            wait_for(lambda n=n: record(spool_root, f"good-{n}"), 30, f"good-{n}'s record")
        # Tried again after growing pauses, not once a drop (the daemon's timestamps: a
        # test reading the log late cannot skew them).
        tries = _tries(d)
        assert len(tries) <= most_backed_off_tries(tries, FIRST_PAUSE_S), (
            "a try for each bad drop", [(e["ts"], e["pause_s"]) for e in tries])
        locked.chmod(0o755)
        wait_quarantined_originals(spool_root, names, NO_JOB, 120)
        assert os.listdir(spool_root / "pending") == []
        assert d.stop() == 0
    finally:
        locked.chmod(0o755)
        d.abort()
