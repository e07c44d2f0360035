"""A spool folder the periodic scan cannot list is said once, and its end said too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record


def test_a_pending_folder_that_cannot_be_scanned_is_said_once_and_its_return_too(
        daemon: Callable[..., Daemon], spool_root: Path) -> None:
    """While ``pending/`` could not be listed (here: moved away; a mount put over it, out
    of descriptors), each scan logged the same ERROR (every ``SPOOL_SCAN_S``, 1 s
    here), and nothing said when scans worked again."""
    d = daemon()
    os.rename(spool_root / "pending", spool_root / "pending-away")
    time.sleep(4.5)  # four scans or more
    os.rename(spool_root / "pending-away", spool_root / "pending")
    drop(spool_root, "after", {"tool": "echo"})
    assert wait_record(spool_root, "after")["state"] == "done"
    time.sleep(1.5)  # a scan after the drop at least
    assert d.stop() == 0
    said = [e for e in d.events() if "pending/" in e.get("msg", "")]
    assert [(e["level"], e["msg"]) for e in said] == [
        ("error", "cannot scan pending/; said again only if the error changes"),
        ("info", "scanning pending/ again")], said
    assert "No such file or directory" in said[0]["error"]
