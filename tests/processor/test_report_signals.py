"""SIGUSR1 and SIGUSR2 are no stop: the processor logs what it runs and goes on.

Their default action ends a process at once.  An ops person who sends one (Celery's
workers dump their threads' stacks on SIGUSR1; a logrotate ``postrotate`` written for
another daemon; ``systemctl kill -s USR1``) killed the processor mid-run: its jobs
stayed in ``running/``, the next start's recovery counted the run, and a job of one
attempt was failed ``abandoned``.  Real daemons, real signals (see daemonkit).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

OWN_GROUP = [sys.executable, "-c",
             "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"]
"""A prefix that starts the processor as the leader of a process group of its own."""


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
@pytest.mark.parametrize("to_group", [False, True], ids=["processor", "group"])
def test_a_usr_signal_logs_the_runs_and_the_job_finishes(
        spool_root: Path, tmp_path: Path, signum: signal.Signals, to_group: bool) -> None:
    """Sent to the processor, or to its whole process group (``kill -USR1 -PGID``, which
    reached the COMPUTE forkserver too, and with it every worker), the signal leaves the
    running job to finish: done at its first attempt, one line in the log naming the
    signal and the job, the processor still up and stopping cleanly after."""
    release = tmp_path / "release"
    # At level WARNING too: the report is what was asked for.
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=OWN_GROUP,
               SPOOL_LOG_LEVEL="WARNING")
    try:
        d.start()
        drop(spool_root, "long", {"tool": "t_record", "max_attempts": 1, "params": {
            "seconds": 60, "release": str(release)}})
        wait_for(lambda: os.listdir(spool_root / "running"), 20, "the job to run")
        if to_group:
            os.killpg(d.pid, signum)
        else:
            os.kill(d.pid, signum)

        def reported() -> bool:
            assert d.running(), f"the processor died of {signum.name}:\n{d.logs()}"
            return any(e.get("signal") == signum.name and e.get("msg") == "running"
                       for e in d.events())

        wait_for(reported, 20, f"the processor's line for {signum.name}")
        line = next(e for e in d.events() if e.get("signal") == signum.name)
        assert [r["id"] for r in line["runs"]] == ["long"], line
        assert line["runs"][0]["tool"] == "t_record", line
        release.touch()
        found = wait_record(spool_root, "long", 30)
        assert (found["state"], found["attempts"]) == ("done", 1), found
        assert d.running(), d.logs()
        assert d.stop(60) == 0, d.logs()
    finally:
        d.abort()


def test_a_usr_signal_while_the_processor_starts_does_nothing(spool_root: Path,
                                                              tmp_path: Path) -> None:
    """From the moment ``main`` takes the signals (EarlyStops, see the stop test of
    test_daemon_stop) until the loop reads them, a report signal does nothing: the
    processor comes up, runs a job and stops cleanly, no report logged (nothing ran yet
    to report).  What is left before then is the interpreter's own start and some 20 ms
    of imports, as for SIGTERM."""
    d = Daemon(spool_root, tmp_path / "daemon.log")
    try:
        d.start(wait_ready=False)
        pid = d.pid
        wait_for(lambda: _catches(pid, signal.SIGUSR1), 60, "main to take SIGUSR1")
        os.kill(pid, signal.SIGUSR1)
        wait_for(d.ready, 60, "the processor's status file")
        drop(spool_root, "after", {"tool": "echo", "params": {"message": "up"}})
        assert wait_record(spool_root, "after", 30)["state"] == "done"
        assert d.stop(60) == 0, d.logs()
        assert not any(e.get("signal") == "SIGUSR1" for e in d.events()), d.logs()
    finally:
        d.abort()


def _catches(pid: int, signum: int) -> bool:
    """Process ``pid`` has a handler of its own for ``signum`` (its status's SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP,
                                    signal.SIGTERM])
def test_a_signal_to_the_whole_unit_leaves_the_compute_job_running(
        spool_root: Path, tmp_path: Path, signum: signal.Signals) -> None:
    """``systemctl kill -s <sig>`` sends to every process of the unit's cgroup: the
    processor and, below it, the forkserver and the COMPUTE workers (each in a session of
    its own, out of reach of a process group's kill).  By the signal's default action
    every busy worker died and its job failed ``worker_crashed`` (QA), where the docs
    promise a report (USR1, USR2) or a stop after the grace period (HUP, TERM).  The
    job finishes, done at its first attempt."""
    import psutil  # noqa: PLC0415 - as the suite's other process-tree tests

    release, started = tmp_path / "release", tmp_path / "started"
    d = Daemon(spool_root, tmp_path / "daemon.log", SPOOL_GRACE_S="60")
    try:
        d.start()
        drop(spool_root, "long", {"tool": "t_record", "max_attempts": 1, "params": {
            "seconds": 60, "release": str(release), "log": str(started)}})
        wait_for(started.exists, 20, "the job to run in its worker")
        tree = psutil.Process(d.pid)
        pids = [d.pid, *(p.pid for p in tree.children(recursive=True))]
        assert len(pids) >= 3, pids  # the processor, its forkserver, a worker at least
        for pid in pids:
            os.kill(pid, signum)
        time.sleep(0.5)  # a worker's death is noticed well within it
        release.touch()
        found = wait_record(spool_root, "long", 30)
        assert (found["state"], found["attempts"]) == ("done", 1), found
        if signum in (signal.SIGUSR1, signal.SIGUSR2):
            assert d.running(), d.logs()
            assert d.stop(60) == 0, d.logs()
        else:
            assert d.proc.wait(30) == 0, d.logs()
    finally:
        d.abort()
