"""A COMPUTE job's time limit starts once its worker has loaded the tools.

It started as the task was sent: a tool module slow to import counted against the new
worker's first job, and a module of 8 s under a tool of 5 s failed every COMPUTE job
``timeout``, for ever (QA), each timeout's kill taking the worker, and its import,
with it.  ``SPOOL_PRELOAD_TOOLS`` has the forkserver import them once instead; off by
default, since what a module makes at import is then every worker's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from daemonkit import Daemon, drop, wait_for, wait_record
from pydantic import ValidationError

from processor.startup import preload_tools_from
from spool.settings import Settings

StartDaemon = Callable[..., Daemon]


def _run(spool_root: Path, daemon: StartDaemon, jobs: int, **env: str
         ) -> list[dict[str, Any]]:
    d = daemon(SPOOL_TOOLS="ptools,slow_import_tools", **env)
    for n in range(jobs):
        drop(spool_root, f"quick-{n}", {"tool": "t_after_slow_import"})
    records = [wait_record(spool_root, f"quick-{n}", 60) for n in range(jobs)]
    assert [r["state"] for r in records] == ["done"] * jobs, records
    assert d.stop() == 0
    return [r["result"] for r in records]


def test_a_tool_module_slow_to_import_does_not_time_its_jobs_out(
        spool_root: Path, daemon: StartDaemon) -> None:
    # The tool's limit is 2 s; each worker's import takes 3 s (one job a worker).
    results = _run(spool_root, daemon, 3, SLOW_IMPORT_S="3", JOB_NUM="1",
                   SPOOL_WORKER_MAX_JOBS="1")
    assert all(r["loaded_by"] == r["runs_in"] for r in results)  # each worker's own


def test_by_default_each_worker_draws_its_own_random_numbers(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A module's generator made at import, in the forkserver, was every worker's: each
    job of a Monte Carlo tool drew the same numbers (a review of the preload)."""
    results = _run(spool_root, daemon, 4, JOB_NUM="2", SPOOL_WORKER_MAX_JOBS="1")
    assert len({r["runs_in"] for r in results}) == 4
    assert len({r["draw"] for r in results}) == 4, results


def test_preloaded_the_forkserver_imports_them_once(spool_root: Path,
                                                   daemon: StartDaemon) -> None:
    results = _run(spool_root, daemon, 2, SLOW_IMPORT_S="3", JOB_NUM="1",
                   SPOOL_PRELOAD_TOOLS="1")
    assert all(r["loaded_by"] != r["runs_in"] for r in results)


def test_a_job_goes_to_a_ready_worker_not_to_one_still_importing(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A job went to the first free worker: after a crash, to the crashed worker's
    replacement, where it waited out that worker's import (4 s here) while the other
    worker sat idle and ready."""
    d = daemon(SPOOL_TOOLS="ptools,slow_import_tools", SLOW_IMPORT_S="4", JOB_NUM="2")
    for n in range(2):  # both workers, each one's first
        drop(spool_root, f"warm-{n}", {"tool": "t_after_slow_import"})
    warm = {wait_record(spool_root, f"warm-{n}", 60)["result"]["runs_in"] for n in range(2)}
    assert len(warm) == 2
    drop(spool_root, "crash", {"tool": "t_crash"})
    assert wait_record(spool_root, "crash")["error"]["type"] == "worker_crashed"
    drop(spool_root, "after", {"tool": "t_after_slow_import"})
    after = wait_record(spool_root, "after", 60)
    assert after["state"] == "done", after
    assert after["result"]["runs_in"] in warm  # the ready one, not the replacement
    assert d.stop() == 0


def test_workers_dying_as_they_load_their_tools_are_started_again_after_a_pause(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A worker that died loading its tools without a word (a module's import ending the
    process; a memory cap past what setrlimit takes) was forked again at once: hundreds
    a second, a traceback each (QA: 719 in 12 s).  Now once a second, said once."""
    starts = tmp_path / "starts"
    d = daemon(SPOOL_TOOLS="dying_import_tools", DYING_IMPORT_LOG=str(starts), JOB_NUM="2")
    time.sleep(4.0)
    assert d.running()
    count = len(starts.read_text().splitlines())
    assert 2 <= count <= 12, count  # two at start, then about two a second
    assert d.logs().count("before it loaded its tools") == 1, d.logs()
    assert d.stop() == 0


def test_a_job_held_for_a_worker_that_died_loading_its_tools_waits_for_the_next(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """Its task held for a worker that died before it loaded its tools, unsaid, the job
    failed at once as that worker's crash ("exited with status 3", its one attempt),
    never run: every COMPUTE job, while an upgrade's files were half there (QA).  It
    waits for the next worker, as when a worker says it cannot start, for its time limit
    at most, and then says why."""
    starts = tmp_path / "starts"
    daemon(SPOOL_TOOLS="dying_import_tools", DYING_IMPORT_LOG=str(starts), JOB_NUM="1")
    wait_for(lambda: starts.exists() and starts.read_text(), 30, "the first worker's start")
    before = len(starts.read_text().splitlines())
    drop(spool_root, "held", {"tool": "t_never_loaded", "timeout": 3})
    record = wait_record(spool_root, "held", 30)
    assert record["state"] == "failed", record
    message = record["error"]["message"]
    assert message.startswith("no worker could start in 3 s: a worker exited with status 3 "
                              "before it loaded its tools"), message
    # Tried again meanwhile (a start a second): at least once more while it was held.
    # Three starts in all, assumed, were two in a run under load (each start's fork and
    # import slower than the pause between them).
    assert len(starts.read_text().splitlines()) > before, (before, starts.read_text())


def test_a_job_whose_worker_dies_with_its_forkserver_while_loading_runs_on_the_next(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Claimed and handed to a worker still loading its tools when the forkserver died
    (killed from outside, the OOM killer's pick), the job never started: it runs on the
    next worker, and the line says the forkserver took the first, not that spoolq's
    files changed."""
    d = daemon(SPOOL_TOOLS="ptools,slow_import_tools", SLOW_IMPORT_S="3", JOB_NUM="1")
    drop(spool_root, "quick", {"tool": "t_after_slow_import"})
    wait_for((spool_root / "running" / "quick.json").exists, 20, "the claim")
    (server,) = [p for p in psutil.Process(d.pid).children()
                 if "forkserver" in " ".join(p.cmdline())]
    server.kill()
    record = wait_record(spool_root, "quick", 60)
    assert record["state"] == "done", record
    assert (f"a worker ended with the workers' forkserver (pid {server.pid}), which died, "
            "before it loaded its tools") in d.logs(), d.logs()[-3000:]
    assert d.stop() == 0


def test_a_worker_killed_while_it_loads_its_tools_is_not_said_to_be_changed_code(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A worker SIGKILLed as it loaded its tools (the OOM killer's pick) was said to
    have "exited with status -9 ... (spoolq or the tools changed or removed since the
    processor started?)": the line named the kill, and blamed an upgrade that never was.
    Its job runs on the next worker."""
    d = daemon(SPOOL_TOOLS="ptools,slow_import_tools", SLOW_IMPORT_S="3", JOB_NUM="1")
    drop(spool_root, "quick", {"tool": "t_after_slow_import"})
    wait_for((spool_root / "running" / "quick.json").exists, 20, "the claim")
    (server,) = [p for p in psutil.Process(d.pid).children()
                 if "forkserver" in " ".join(p.cmdline())]
    (worker,) = server.children()
    worker.kill()
    record = wait_record(spool_root, "quick", 60)
    assert record["state"] == "done", record
    logs = d.logs()
    assert ("a worker was killed by signal SIGKILL before it loaded its tools (the OOM "
            "killer, or a kill from outside)") in logs, logs[-3000:]
    assert "changed or removed" not in logs, logs[-3000:]
    assert d.stop() == 0


@pytest.mark.parametrize("environ", [
    {"SPOOL_PRELOAD_TOOLS": "1", "SPOOL_TOOLS": "a, b"}, {"SPOOL_TOOLS": "a"},
    {"spool_preload_tools": "yes", "Spool_Tools": "a,b"},  # any case, as the settings
    {"PRELOAD_TOOLS": "1", "TOOLS": "a"},  # the fields' own names (populate_by_name)
    {"SPOOL_PRELOAD_TOOLS": "0", "preload_tools": "1", "SPOOL_TOOLS": "a"},
    {"SPOOL_PRELOAD_TOOLS": "maybe", "SPOOL_TOOLS": "a"},  # refused by the settings
])
def test_an_early_forkserver_preloads_the_tools_the_settings_say(
        environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A forkserver started before the settings load reads SPOOL_PRELOAD_TOOLS and
    SPOOL_TOOLS as the settings do: read by their upper-case names alone,
    ``spool_preload_tools=1`` (or ``PRELOAD_TOOLS=1``) had the settings say on and the
    forkserver preload nothing, every slow tool module imported again by each worker."""
    for name in list(os.environ):
        if name.upper().endswith(("PRELOAD_TOOLS", "TOOLS")):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    try:
        settings = Settings()
    except ValidationError:
        assert preload_tools_from(os.environ) is None  # the processor stops, nothing runs
        return
    assert preload_tools_from(os.environ) == (
        settings.tool_modules if settings.preload_tools else None)
