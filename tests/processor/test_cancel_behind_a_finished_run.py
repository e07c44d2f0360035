"""A cancel request, in the processor, for a re-drop waiting behind a finished run.

The run's owner (another processor) has published its record and is stuck before it
removes ``running/<id>.json`` (a stalled disk).  The processor acting on the request for
the re-drop it holds ready waited for that owner (``spool.orphans.FINISHING_WAIT_S``),
then wrote its ``cancelled`` record over the run's; once that owner died, recovery found
no record of the run, requeued it and ran it again, over the cancel.  The cancel is put
off now (the re-drop stays pending, the request stays) until the running file is settled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, wait_for

StartDaemon = Callable[..., Daemon]

pytestmark = pytest.mark.timeout(120)

_STUCK_OWNER = Path(__file__).parents[1] / "spool" / "stuck_owner.py"
"""Claims ``daily``, publishes its record, and stays before the running file's removal."""


def test_a_cancel_request_behind_a_finished_run_not_yet_settled_waits_for_it(
        spool_root: Path, daemon: StartDaemon) -> None:
    drop(spool_root, "daily", {"tool": "echo", "params": {"run": 1}, "max_attempts": 25})
    owner = subprocess.Popen([sys.executable, str(_STUCK_OWNER), str(spool_root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "recorded"
        record = (spool_root / "done" / "daily.json").read_bytes()
        d = daemon(SPOOL_SCAN_S="0.5")
        drop(spool_root, "daily", {"tool": "echo", "params": {"run": 2}})
        (spool_root / "cancel" / "daily").write_bytes(b"{}")
        put_off = wait_for(lambda: [e for e in d.events() if e["msg"].startswith(
            "a cancel is put off")], 30, "the cancel to be put off")
        assert put_off[0]["id"] == "daily" and "try again" in put_off[0]["error"]
        assert (spool_root / "done" / "daily.json").read_bytes() == record
        assert os.listdir(spool_root / "failed") == []
        assert d.proc is not None and d.proc.poll() is None
        # (Asked again at each scan, it is staged for a moment each time.)
        wait_for(lambda: os.listdir(spool_root / "pending") == ["daily.json"], 10,
                 "the re-drop pending")
        assert os.listdir(spool_root / "cancel") == ["daily"]
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()

    # Its owner dead, the run is settled (finished), and the cancel goes on.
    failed = spool_root / "failed" / "daily.json"
    wait_for(failed.exists, 30, "the re-drop's cancel")
    wait_for(lambda: not os.listdir(spool_root / "cancel"), 10, "the request's removal")
    assert d.stop() == 0
    rec = orjson.loads(failed.read_bytes())
    assert (rec["error"]["type"], rec["params"]) == ("cancelled", {"run": 2})
    assert [os.listdir(spool_root / s) for s in ("pending", "running", "done")] == [[], [], []]
    ran = [e for e in d.events() if e.get("id") == "daily" and e.get("event") == "done"]
    assert ran == [], "the finished run ran again"
    said = [e for e in d.events() if e["msg"].startswith("a cancel is put off")]
    assert len(said) == 1, said  # once while it lasted, though asked at each scan
