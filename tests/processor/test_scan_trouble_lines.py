"""A spool folder the periodic scan cannot list is said once, and its end said too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_for, wait_record

SCAN_S = 0.25
"""The scan interval here: the scans that would repeat a line come four times a second."""


def test_a_pending_folder_that_cannot_be_scanned_is_said_once_and_its_return_too(
        daemon: Callable[..., Daemon], spool_root: Path) -> None:
    """While ``pending/`` could not be listed (here: moved away; a mount put over it, out
    of descriptors), each scan logged the same ERROR (every ``SPOOL_SCAN_S``, 0.25 s
    here), and nothing said when scans worked again."""
    d = daemon(SPOOL_SCAN_S=str(SCAN_S))

    def said(level: str) -> list[dict[str, str]]:
        return [e for e in d.events() if "pending/" in e.get("msg", "")
                and e.get("level") == level]

    os.rename(spool_root / "pending", spool_root / "pending-away")
    wait_for(lambda: said("error"), 30, "the first scan that cannot list pending/")
    time.sleep(5 * SCAN_S)  # five scans or more that repeated the line
    os.rename(spool_root / "pending-away", spool_root / "pending")
    drop(spool_root, "after", {"tool": "echo"})
    assert wait_record(spool_root, "after")["state"] == "done"
    wait_for(lambda: said("info"), 30, "a scan after the return")
    time.sleep(3 * SCAN_S)  # more scans, which say nothing
    assert d.stop() == 0
    lines = [e for e in d.events() if "pending/" in e.get("msg", "")]
    assert [(e["level"], e["msg"]) for e in lines] == [
        ("error", "cannot scan pending/; said again only if the error changes"),
        ("info", "scanning pending/ again")], lines
    assert "No such file or directory" in lines[0]["error"]
