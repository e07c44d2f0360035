"""The processor and Python's garbage collector, with the daemon as a subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]


def test_what_start_up_made_is_out_of_the_collectors_reach(spool_root: Path,
                                                           daemon: StartDaemon) -> None:
    """A full collection walked every module, tool and library object the daemon had
    loaded (some 70,000): 43 ms of the loop's CPU, and as long a stall of every job."""
    daemon()
    drop(spool_root, "frozen", {"tool": "t_gc_frozen"})
    rec = wait_record(spool_root, "frozen")
    assert rec["state"] == "done", rec.get("error")
    assert rec["result"] > 10_000
