"""What a stopping processor shows and leaves behind: its log lines, its status file,
the processes its tools started.  Real daemons, real signals (see daemonkit)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_for

StartDaemon = Callable[..., Daemon]


def test_the_shutdown_requeue_line_names_the_attempt_as_every_transition_does(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The `requeued` line of a run cut short by shutdown said `attempts` (the job's count
    before the run) where every other transition line says `attempt`, so a
    `select(.attempt)` query missed it."""
    d = daemon(SPOOL_GRACE_S="0.5")
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    assert d.stop() == 0
    transitions = [e for e in d.events() if "event" in e]
    assert [e for e in transitions if "attempts" in e] == []
    lines = [(e["event"], e.get("reason"), e["attempt"]) for e in transitions
             if e.get("id") == "long"]
    assert lines == [("claimed", None, 1), ("requeued", "shutdown", 1)]
