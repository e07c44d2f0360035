"""What the record of a retried job tells, as ``spoolq show`` prints it beside a real
``spool-processor`` (DESIGN section 9, retries).

* The backoff before a retry is the retry's, kept on the error it follows
  (``error.retry_at`` in the requeued job file, named by the ``requeued`` line): the
  record's ``not_before`` stays what the client set, or absent.  Before, the requeue
  wrote the backoff's end into the job's ``not_before``, and every later record of the
  job (done, failed) showed a "not before" the client never set.
* ``show`` says "attempts N of M" for a job that sets no ``max_attempts`` when its tool's
  limit is known (the live processor's catalogue), and no limit at all when it is not
  (no processor running): before, the tool's limit was never shown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]
CLI = [sys.executable, "-m", "spool.cli.main"]


def show(root: Path, job_id: str, *more: str) -> list[str]:
    """``spoolq show job_id``'s lines (exit 0)."""
    proc = subprocess.run([*CLI, "show", job_id, *more], capture_output=True, text=True,
                          timeout=60, check=False, cwd=root.parent,
                          env={**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def field(lines: list[str], name: str) -> list[str]:
    """The values of the lines of ``show`` labelled ``name``."""
    return [line[12:] for line in lines if line[:12].rstrip() == name]


def test_a_retried_jobs_record_keeps_the_clients_not_before_and_tells_its_backoff(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon()
    log = str(spool_root.parent / "starts.log")
    asked = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    drop(spool_root, "flaky", {"tool": "t_flaky", "params": {"log": log}})
    drop(spool_root, "scheduled", {"tool": "t_flaky", "params": {"log": log},
                                   "not_before": asked.isoformat()})
    drop(spool_root, "failing", {"tool": "t_fail", "max_attempts": 2,
                                 "params": {"retryable": True}})
    flaky = wait_record(spool_root, "flaky", 60)
    scheduled = wait_record(spool_root, "scheduled", 60)
    failing = wait_record(spool_root, "failing", 60)
    assert (flaky["state"], flaky["attempts"]) == ("done", 2), flaky
    assert (scheduled["state"], scheduled["attempts"]) == ("done", 2), scheduled
    assert (failing["state"], failing["attempts"]) == ("failed", 2), failing
    # No not_before the client did not set; the one it set, as set.
    assert "not_before" not in flaky and "not_before" not in failing, (flaky, failing)
    assert datetime.fromisoformat(scheduled["not_before"]) == asked, scheduled
    # The backoff went with the run it delayed: its requeue line names it.
    assert d.stop() == 0
    requeued = {e["id"]: e for e in d.events() if e.get("event") == "requeued"}
    for job_id, rec in (("flaky", flaky), ("scheduled", scheduled), ("failing", failing)):
        retry_at = datetime.fromisoformat(requeued[job_id]["retry_at"])
        assert retry_at <= datetime.fromisoformat(rec["started_at"]), (requeued, rec)
    d = daemon()  # the catalogue of a running processor, for the limit of t_flaky
    lines = show(spool_root, "flaky")
    assert field(lines, "attempts") == ["2 of 3 (the tool's limit)"], lines
    assert field(lines, "not before") == [], lines
    lines = show(spool_root, "scheduled")
    assert field(lines, "not before") == [asked.strftime("%Y-%m-%d %H:%M:%SZ")], lines
    lines = show(spool_root, "failing")
    assert field(lines, "attempts") == ["2 of 2"], lines
    assert field(lines, "not before") == [], lines
    # --json is the record as stored, nothing added.
    as_json = orjson.loads("\n".join(show(spool_root, "flaky", "--json")))
    assert as_json == orjson.loads((spool_root / "done" / "flaky.json").read_bytes())

    assert d.stop() == 0
    # No processor, no catalogue: the limit is not known, and not made up.
    assert field(show(spool_root, "flaky"), "attempts") == ["2"]
    assert field(show(spool_root, "failing"), "attempts") == ["2 of 2"]


def test_show_says_a_timeout_past_the_tools_limit_is_clamped_to_it(
        spool_root: Path, daemon: StartDaemon) -> None:
    """DESIGN section 9: a job's timeout above its tool's ``execution_timeout`` is clamped
    to it.  ``show`` printed "timeout 50 s" beside a failure at the tool's 1 s (QA); it
    says the clamp when the live processor's catalogue tells the tool's limit."""
    d = daemon()
    drop(spool_root, "long", {"tool": "echo", "timeout": 50})
    drop(spool_root, "short", {"tool": "echo", "timeout": 2})
    assert wait_record(spool_root, "long", 60)["state"] == "done"
    assert wait_record(spool_root, "short", 60)["state"] == "done"
    assert field(show(spool_root, "long"), "timeout") == ["50 s (clamped to the tool's 10 s)"]
    assert field(show(spool_root, "short"), "timeout") == ["2 s"]
    assert d.stop() == 0
    assert field(show(spool_root, "long"), "timeout") == ["50 s"]  # no catalogue: not said
