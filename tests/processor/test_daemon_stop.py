"""What a stopping processor shows and leaves behind: its log lines, its status file,
the processes its tools started.  Real daemons, real signals (see daemonkit)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
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


def _status(root: Path, d: Daemon) -> dict[str, Any]:
    """The daemon's status file, ``owners/<owner>.json``."""
    owners = root / "owners"
    name = next(n for n in os.listdir(owners) if n.endswith(".json") and f"-{d.pid}-" in n)
    data: dict[str, Any] = orjson.loads((owners / name).read_bytes())
    return data


def test_the_status_file_says_stopping_during_the_grace_period(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Between SIGTERM and exit (up to SPOOL_GRACE_S while running jobs finish) the status
    file looked like that of a processor up and claiming, so `spoolq stats`, statusd and
    anything watching owners/ could not tell a drain from a stall."""
    d = daemon(SPOOL_GRACE_S="30")
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    before = _status(spool_root, d)
    assert before["stopping"] is False and before["grace_ends_at"] is None
    assert d.proc is not None
    asked = datetime.now(UTC)
    d.proc.send_signal(signal.SIGTERM)
    status = wait_for(lambda: (s := _status(spool_root, d))["stopping"] and s, 5,
                      "the status file to say stopping")
    grace_ends = datetime.fromisoformat(status["grace_ends_at"])
    assert abs((grace_ends - asked).total_seconds() - 30) < 2
    assert status["busy_workers"] == 1, "the run goes on in the grace period"
    time.sleep(1.5)  # heartbeats go on, and keep saying so
    later = _status(spool_root, d)
    assert later["stopping"] is True and later["heartbeat_at"] > status["heartbeat_at"]
    d.proc.send_signal(signal.SIGTERM)  # a second signal: the grace period ends now
    assert d.proc.wait(10) == 0
    assert os.listdir(spool_root / "owners") == []
