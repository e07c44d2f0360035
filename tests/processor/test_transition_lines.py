"""The processor's log against its records: every transition a record shows has its
line, with the record's attempt, error type and duration (docs/operations.md, Logs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, record, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_fast_tool_that_ends_the_processor_takes_no_earlier_lines_with_it(
        spool_root: Path, daemon: StartDaemon) -> None:
    """FAST runs run one after another on the loop thread, and their lines waited for
    the end of the pass: a FAST tool that ended the processor (os._exit, a crash in C)
    took the ``done`` lines of the runs recorded before it with it, six records in
    ``done/`` that the log never told of."""
    for n in range(6):  # claimed in one pass (SPOOL_FAST_THREADS=8), run first
        drop(spool_root, f"echo-{n}", {"tool": "echo", "params": {"message": n},
                                       "priority": 5})
    drop(spool_root, "dies", {"tool": "t_fast_os_exit", "priority": -1})
    d = daemon(wait_ready=False)
    assert d.proc is not None
    assert d.proc.wait(60) == 7
    lines = {e["id"]: e for e in d.events() if e.get("event") == "done"}
    finished = sorted(name[:-5] for name in os.listdir(spool_root / "done"))
    assert finished == [f"echo-{n}" for n in range(6)]
    for job_id in finished:
        rec = record(spool_root, job_id)
        assert rec is not None and job_id in lines, (job_id, d.logs())
        assert (lines[job_id]["attempt"], lines[job_id]["duration_s"]) == (
            rec["attempts"], rec["duration_s"])


def test_a_failed_line_says_how_long_the_run_took_as_its_record_does(
        spool_root: Path, daemon: StartDaemon) -> None:
    """``done`` lines carried ``duration_s`` and ``failed`` lines did not, so a
    journal query for slow failures (a timeout's 2 s against a crash's instant) had to
    read every record."""
    d = daemon()
    drop(spool_root, "fails", {"tool": "t_fail"})
    drop(spool_root, "stuck", {"tool": "t_stuck", "timeout": 1, "max_attempts": 1})
    drop(spool_root, "fast", {"tool": "t_fast_base_exc"})
    for job_id in ("fails", "stuck", "fast"):
        wait_record(spool_root, job_id)
    assert d.stop() == 0
    lines = {e["id"]: e for e in d.events() if e.get("event") == "failed"}
    for job_id in ("fails", "stuck", "fast"):
        rec = record(spool_root, job_id)
        assert rec is not None and rec["state"] == "failed", rec
        assert (lines[job_id]["attempt"], lines[job_id].get("duration_s")) == (
            rec["attempts"], rec["duration_s"]), lines[job_id]
    assert lines["stuck"]["duration_s"] >= 1.0, "the timeout's run lasted its second"


def test_a_job_failed_at_its_claim_has_its_claimed_line(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A job failed as it was claimed (a tool the processor does not have, attempts
    already spent) moved pending -> running -> failed with only the failed line: one
    line a transition (issue 3), and ``select(.id==ID)`` in docs/operations.md showed
    no claim for a record that has one (its ``started_at``, ``attempts`` 1)."""
    d = daemon()
    drop(spool_root, "nosuch", {"tool": "no_such_tool"})
    drop(spool_root, "spent", {"tool": "echo", "attempts": 3, "max_attempts": 3})
    for job_id in ("nosuch", "spent"):
        assert wait_record(spool_root, job_id)["state"] == "failed"
    assert d.stop() == 0
    for job_id, error_type in (("nosuch", "unknown_tool"), ("spent", "invalid_job")):
        rec = record(spool_root, job_id)
        assert rec is not None and rec["error"]["type"] == error_type, rec
        mine = [(e["event"], e.get("tool"), e.get("attempt"), e.get("error_type"))
                for e in d.events() if e.get("id") == job_id and "event" in e]
        assert mine == [("claimed", rec["tool"], rec["attempts"], None),
                        ("failed", rec["tool"], rec["attempts"], error_type)], mine
