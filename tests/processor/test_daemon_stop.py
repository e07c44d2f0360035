"""What a stopping processor shows and leaves behind: its log lines, its status file,
the processes its tools started.  Real daemons, real signals (see daemonkit)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, alive, drop, wait_for, wait_record
from quick_processor import ADOPTED_GRACE_ENV

from processor.proctree import ADOPTED_GRACE_S, children_of
from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.reader import SpoolReader
from spool.settings import FsyncMode
from spool.states import JobState

StartDaemon = Callable[..., Daemon]
QUICK_ADOPTED_GRACE_S = 1.0
"""The orphan-reaping test's ADOPTED_GRACE_S (quick_processor)."""


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


def test_a_shutdown_requeue_drops_a_schedule_already_past(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A job that ran once its ``not_before`` came (a client's schedule, a retry's backoff)
    is requeued by a stop without it: the time is past and only noise on a pending job,
    and after the wall clock stepped back it would hold the job back again."""
    d = daemon(SPOOL_GRACE_S="0.5")
    due = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    drop(spool_root, "due", {"tool": "sleep", "params": {"seconds": 60}, "not_before": due})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    assert d.stop() == 0
    job = orjson.loads((spool_root / "pending" / "due.json").read_bytes())
    assert (job["attempts"], job.get("not_before")) == (0, None), job


def test_a_cancel_not_yet_acted_on_when_the_grace_ends_is_honoured_not_requeued(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A cancel asked as the processor stopped (SPOOL_GRACE_S=0, a second SIGTERM): the
    grace ended before the kill's outcome came, and the run was requeued as cut short,
    its cancel request dropped with it, so the job ran again though ``spoolq cancel``
    had said the request stays for its processor.  The cancel wins, as in recovery."""
    d = daemon(SPOOL_GRACE_S="0")
    drop(spool_root, "unwanted", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    layout = Layout(spool_root)
    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    os.kill(d.pid, signal.SIGSTOP)  # the request and the stop reach it together
    try:
        assert client.cancel("unwanted", wait_s=0).state is JobState.RUNNING
        os.kill(d.pid, signal.SIGTERM)
    finally:
        os.kill(d.pid, signal.SIGCONT)
    assert d.stop() == 0
    found = wait_record(spool_root, "unwanted")
    assert (found["state"], found["error"]["type"]) == ("failed", "cancelled")
    assert os.listdir(spool_root / "pending") == [] and os.listdir(spool_root / "cancel") == []


def test_the_status_file_says_stopping_during_the_grace_period(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Between SIGTERM and exit (up to SPOOL_GRACE_S while running jobs finish) the status
    file looked like that of a processor up and claiming, so `spoolq stats`, statusd and
    anything watching owners/ could not tell a drain from a stall."""
    d = daemon(SPOOL_GRACE_S="30")
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    before = d.status()
    assert before["stopping"] is False and before["grace_ends_at"] is None
    assert d.proc is not None
    # The deadline is bracketed by clock reads before the signal and after the file
    # said so: a stall of the host moves neither bound past it (within 2 s of the read
    # before failed when the processor took 2.5 s to take the signal in).
    asked = datetime.now(UTC)
    d.proc.send_signal(signal.SIGTERM)
    status = wait_for(lambda: (s := d.status())["stopping"] and s, 20,
                      "the status file to say stopping")
    seen = datetime.now(UTC)
    grace_ends = datetime.fromisoformat(status["grace_ends_at"])
    assert asked + timedelta(seconds=30) <= grace_ends <= seen + timedelta(seconds=30)
    assert status["busy_workers"] == 1, "the run goes on in the grace period"
    shown = SpoolReader(Layout(spool_root)).stats()  # what statusd and `spoolq stats` read
    assert shown["processor"]["alive"] is True
    assert [p["stopping"] for p in shown["processors"]] == [True]
    cli = subprocess.run([sys.executable, "-m", "spool.cli.main", "stats"], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "SPOOL_DIR": str(spool_root)}).stdout
    assert "; 1 stopping (grace ends in " in cli, cli
    # Heartbeats go on, and keep saying so: the next one is waited for, not looked for
    # 1.5 s on (a processor not scheduled for that long had written none).
    beat = datetime.fromisoformat(status["heartbeat_at"])
    later = wait_for(lambda: (s := d.status()) and datetime.fromisoformat(
        s["heartbeat_at"]) > beat and s, 20, "a heartbeat after the one that said stopping")
    assert later["stopping"] is True
    assert later["grace_ends_at"] == status["grace_ends_at"]
    d.proc.send_signal(signal.SIGTERM)  # a second signal: the grace period ends now
    assert d.proc.wait(10) == 0
    assert os.listdir(spool_root / "owners") == []


def _pid(path: Path) -> int:
    # A FAST job waits for the processor's background import of numpy and pandas to
    # end (FastLane.held): more than 10 s beside CPU hogs (load 25, helper h141).
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), 60,
                        f"the pid in {path.name}"))


def _zombie_children(pid: int) -> list[int]:
    """The zombies among ``pid``'s children (read as the processor's stop reads them, the
    main thread's list last: a thread's read first missed what it moved there)."""
    zombies = []
    for child in children_of(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError), \
                open(f"/proc/{child}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                zombies.append(child)
    return zombies


def test_processes_fast_tools_started_do_not_outlive_a_stop(
        spool_root: Path, tmp_path: Path, daemon: StartDaemon) -> None:
    """A FAST tool runs in the processor, so a process it started (and left running, or
    lost track of in a double fork) outlived the processor's stop outside systemd, where
    no cgroup kill ends it; COMPUTE workers' processes were killed."""
    d = daemon(SPOOL_TOOLS="ptools,stoptools", SPOOL_GRACE_S="1")
    pid_files = {name: tmp_path / f"{name}.pid" for name in ("child", "session", "orphan")}
    drop(spool_root, "child", {"tool": "s_fast_child",
                               "params": {"pid_file": str(pid_files["child"])}})
    drop(spool_root, "session", {"tool": "s_fast_child", "params": {
        "pid_file": str(pid_files["session"]), "new_session": True}})
    drop(spool_root, "orphan", {"tool": "s_fast_orphan",
                                "params": {"pid_file": str(pid_files["orphan"])}})
    left = {name: _pid(path) for name, path in pid_files.items()}
    bystander = subprocess.Popen(["sleep", "1000"])  # not the processor's: left alone
    try:
        assert all(alive(pid) for pid in left.values())
        assert d.stop() == 0
        # Killed before the processor exited: only their death is waited for here.
        wait_for(lambda: not any(alive(pid) for pid in left.values()), 20,
                 "the tools' processes to die")
        assert bystander.poll() is None
        killed = [e for e in d.events() if e.get("msg") == "killed processes FAST tools "
                  "left running"]
        assert [sorted(e["pids"]) for e in killed] == [sorted(left.values())]
    finally:
        bystander.kill()
        bystander.wait()
        for pid in left.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _sleeping(seconds: float) -> list[int]:
    """The pids of the ``sleep seconds`` processes running on the host."""
    wanted = f"sleep\0{seconds}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted and alive(int(entry)):
                    found.append(int(entry))
    return found


def test_processes_fast_tool_code_starts_after_the_stops_kill_do_not_outlive_it(
        spool_root: Path, daemon: StartDaemon) -> None:
    """FAST tool code can run on after the stop's kill of what FAST tools started (a thread
    a tool left; a run the grace period cut short, whose thread cannot be killed), until
    the process exits: what it started meanwhile outlived the processor outside
    systemd.  The rest of the stop is held 0.5 s here, and the rest of the exit after
    its own kill 0.5 s (a loaded host's exit: a CI run saw a process started in that
    window outlive the kill); a tool's thread starting a process every 20 ms left one
    or two running in six stops of six with neither held, and some each time with the
    exit held before the exit forbade new processes."""
    seconds = 1000 + int.from_bytes(os.urandom(3), "big") / 2**24  # these sleeps only
    d = daemon(module="held_close_processor", HELD_CLOSE_S="0.5", HELD_EXIT_S="0.5",
               SPOOL_TOOLS="ptools,stoptools", SPOOL_GRACE_S="1")
    drop(spool_root, "spawner", {"tool": "s_fast_spawner", "params": {"seconds": seconds}})
    try:
        wait_record(spool_root, "spawner")
        wait_for(lambda: _sleeping(seconds), 20, "the tool's thread to start processes")
        assert d.stop() == 0
        wait_for(lambda: not _sleeping(seconds), 20, "the tool's processes to die")
    finally:
        for pid in _sleeping(seconds):
            os.kill(pid, signal.SIGKILL)


def test_threads_fast_tools_left_do_not_hold_the_processors_exit(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A FAST tool runs in the processor: a thread it left that is no daemon (a
    ``threading.Timer`` armed for later, a helper sleeping), or a task still running on a
    ``ThreadPoolExecutor`` it keeps, kept the interpreter's exit waiting for it after the
    processor's "stopped" line, for good for one that never ends, and SIGTERM or Ctrl-C
    did nothing then (the early-stop handlers are back)."""
    d = daemon(SPOOL_TOOLS="ptools,stoptools")
    drop(spool_root, "threads", {"tool": "s_fast_thread", "params": {"seconds": 600}})
    assert wait_record(spool_root, "threads")["state"] == "done"
    assert d.stop(30) == 0


def test_orphans_of_fast_tools_are_reaped_once_they_exit(
        spool_root: Path, tmp_path: Path, daemon: StartDaemon) -> None:
    """The processor adopts its FAST tools' orphans (a child subreaper, so that a stop can
    kill them): one that exits must not stay a zombie while the processor runs."""
    # Reaped at a rescan (SPOOL_SCAN_S) once it has been a zombie for ADOPTED_GRACE_S,
    # which ships 10 s; quick_processor makes it 1 s, so the test does not wait it out.
    assert QUICK_ADOPTED_GRACE_S < ADOPTED_GRACE_S
    d = daemon(SPOOL_TOOLS="ptools,stoptools", SPOOL_SCAN_S="0.2", module="quick_processor",
               **{ADOPTED_GRACE_ENV: str(QUICK_ADOPTED_GRACE_S)})
    pid_file = tmp_path / "orphan.pid"
    drop(spool_root, "orphan", {"tool": "s_fast_orphan",
                                "params": {"pid_file": str(pid_file), "seconds": 0.2}})
    orphan = _pid(pid_file)
    wait_for(lambda: not alive(orphan), 20, "the orphan to exit")
    wait_for(lambda: _zombie_children(d.pid) == [], 15, "the exited orphan to be reaped")
    assert d.stop() == 0


def test_a_fast_tools_own_child_is_left_for_the_tool_to_wait_for(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The processor reaped every exited child listed under its main thread as an adopted
    orphan; a child a FAST tool started from a thread that has ended is listed there
    too, so the tool's own wait found it gone and Popen reported exit status 0, not 3."""
    daemon(SPOOL_TOOLS="ptools,stoptools", SPOOL_SCAN_S="0.1")
    drop(spool_root, "own", {"tool": "s_thread_child"})
    record = wait_record(spool_root, "own")
    assert (record["state"], record.get("result")) == ("done", {"returncode": 3})



OWN_GROUP = [sys.executable, "-c",
             "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"]
"""A prefix that starts the processor as the leader of a process group of its own."""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_sent_to_the_processors_whole_process_group_lets_jobs_finish(
        spool_root: Path, tmp_path: Path, signum: signal.Signals) -> None:
    """DESIGN section 9: SIGTERM lets running jobs finish for up to SPOOL_GRACE_S.  Sent
    to the processor's process group (`kill -TERM -PGID`, a shell's `kill %1`, systemd's
    default KillMode=control-group, a terminal's hangup) it also reached the COMPUTE
    forkserver, which died of it and took every worker with it: each running job failed
    `worker_crashed` at once, spending an attempt (with max_attempts 1, for good), while
    the processor itself drained and exited 0."""
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=OWN_GROUP, SPOOL_GRACE_S="30")
    try:
        d.start()
        # "short" runs until the processor says it is stopping, then 0.2 s more: in
        # flight at the signal however slow the host (a 2 s sleep waited its 2 s out).
        drop(spool_root, "short", {"tool": "t_until_stopping", "params": {
            "seconds": 60, "owners": str(spool_root / "owners")}})
        wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
        os.killpg(d.pid, signum)
        # Waited for, not d.stop(): its own SIGTERM, read apart from the group's (the
        # processor quick to its signal pipe), is a second stop signal and ends the
        # grace period at once, requeueing "short" (CI, 1 run in a few hundred).
        assert d.proc is not None and d.proc.wait(60) == 0, d.logs()
        found = wait_record(spool_root, "short")
        assert (found["state"], found["attempts"]) == ("done", 1), found
    finally:
        d.abort()


def test_a_sigterm_sent_to_the_processors_whole_process_group_requeues_what_the_grace_cut(
        spool_root: Path, tmp_path: Path) -> None:
    """The same group-wide SIGTERM past the grace period: the run cut short goes back to
    `pending/` with its attempt not counted, as for a SIGTERM to the processor alone."""
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=OWN_GROUP, SPOOL_GRACE_S="0.5")
    try:
        d.start()
        drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
        wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
        os.killpg(d.pid, signal.SIGTERM)
        # Waited for, not d.stop(), whose SIGTERM would end the grace period itself.
        assert d.proc is not None and d.proc.wait(60) == 0, d.logs()
        assert os.listdir(spool_root / "pending") == ["long.json"]
        job = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
        assert job["attempts"] == 0 and "error" not in job, job
    finally:
        d.abort()


@pytest.mark.parametrize("delay_s", [0.3, 0.6])
def test_a_stop_while_the_processor_starts_is_a_clean_stop(spool_root: Path, tmp_path: Path,
                                                           delay_s: float) -> None:
    """DESIGN section 9: SIGTERM ends the processor with exit status 0.  One sent in its
    first 0.8 s or so (systemd stopping a unit it has just started) found Python's default
    action still in place, and the processor died of it (-15, no line logged; helper
    h106's soak).  It is noted from the start of ``main`` and acted on as the loop begins,
    and a job dropped meanwhile stays pending, untouched.  (What is left is the start of
    the interpreter and the imports before ``main``: about 0.15 s here.)  The delay counts
    from when ``main`` has taken the signal (its SIGTERM handler is in place), not from
    the fork nor from the interpreter's start: a loaded host stretched what is left past
    0.3 s (load 18) and past 0.6 s (load 25, helper h141), and the signal came in it."""
    drop(spool_root, "waits", {"tool": "echo", "params": {"message": "later"}})
    d = Daemon(spool_root, tmp_path / "daemon.log")
    try:
        d.start(wait_ready=False)
        pid = d.pid
        wait_for(lambda: _catches(pid, signal.SIGTERM), 60, "main to take SIGTERM")
        time.sleep(delay_s)
        assert d.stop(60) == 0, d.logs()
        assert "Traceback" not in d.logs(), d.logs()
        assert os.listdir(spool_root / "running") == []
        assert os.listdir(spool_root / "pending") == ["waits.json"] or (
            wait_record(spool_root, "waits")["state"] == "done")  # claimed before the stop
    finally:
        d.abort()


def _catches(pid: int | None, signum: int) -> bool:
    """Process ``pid`` has a handler of its own for ``signum`` (its status's SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False
