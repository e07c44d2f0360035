"""A drop whose attempts already reach its max_attempts is failed, not run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_drop_with_its_attempts_spent_is_failed_without_a_run(spool_root: Path,
                                                                daemon: StartDaemon) -> None:
    # attempts counts runs started and a job runs while attempts < max_attempts (DESIGN
    # section 9): attempts 100 of 100 ran as attempt 101 before.
    drop(spool_root, "spent", {"tool": "echo", "params": {"message": "x"},
                               "attempts": 100, "max_attempts": 100})
    # No max_attempts of its own: the tool's (1 for echo) is the limit.
    drop(spool_root, "spent_default", {"tool": "echo", "params": {"message": "x"},
                                       "attempts": 1})
    drop(spool_root, "one_left", {"tool": "echo", "params": {"message": "x"},
                                  "attempts": 2, "max_attempts": 3})
    daemon()
    rec = wait_record(spool_root, "spent")
    assert rec["state"] == "failed" and "result" not in rec
    assert rec["error"]["type"] == "invalid_job"
    assert "attempts 100" in rec["error"]["message"]
    assert "max_attempts 100" in rec["error"]["message"]
    assert rec["attempts"] == 100  # no run began: it said 101, past the schema's maximum
    rec = wait_record(spool_root, "spent_default")
    assert rec["state"] == "failed" and "max_attempts 1" in rec["error"]["message"]
    assert rec["attempts"] == 1
    rec = wait_record(spool_root, "one_left")
    assert rec["state"] == "done" and rec["attempts"] == 3
