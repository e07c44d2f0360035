"""A FAST tool runs in the processor: what it forks is not the processor.

A forked child kept the processor's wakeup fd and its handlers that ignore the stop
signals: a SIGTERM to the child (a ``multiprocessing.Pool``'s ``terminate()``, at the
end of its ``with``; an operator's ``kill`` of a process that looks like the processor
in ``ps``) was written into the processor's signal pipe and read as its own stop.  The
processor stopped, exit 0, which ``Restart=on-failure`` never restarts.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, alive, drop, locations, wait_for, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_fast_tools_pool_does_not_stop_the_processor(spool_root: Path,
                                                       daemon: StartDaemon) -> None:
    d = daemon()
    drop(spool_root, "pool", {"tool": "t_fast_pool"})
    assert wait_record(spool_root, "pool")["result"] == [1, 2]
    time.sleep(1.0)  # the stop, read from the pipe, came within the loop's next pass
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still here"}})
    assert wait_record(spool_root, "after")["result"] == {"message": "still here"}
    assert d.running(), d.logs()
    assert '"stopping"' not in d.logs()
    assert d.stop() == 0


def test_a_sigterm_to_a_fast_tools_child_ends_the_child_not_the_processor(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    d = daemon()
    pid_file = tmp_path / "child.pid"
    drop(spool_root, "fork", {"tool": "t_fast_fork",
                              "params": {"seconds": 60, "pid_file": str(pid_file)}})
    assert wait_record(spool_root, "fork")["state"] == "done"
    child = int(pid_file.read_text())
    os.kill(child, signal.SIGTERM)

    def ended() -> bool:  # dead: gone, or a zombie its parent (the processor) keeps
        try:
            return Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(ended, 10, "the child to die of its SIGTERM")
    time.sleep(1.0)
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still here"}})
    try:  # twice in full runs under load, no record in 20 s: its log then, to tell why
        record = wait_record(spool_root, "after", 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the processor's log:\n{d.logs()[-5000:]}") from None
    assert record["result"] == {"message": "still here"}
    assert d.running() and '"stopping"' not in d.logs(), d.logs()
    assert d.stop() == 0


def test_a_sigterm_that_reaches_a_fast_tools_child_before_its_fork_handlers_ends_it(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The child's handlers are put back by an after-fork handler, which a loaded host
    may run only later: a SIGTERM sent at once (CI: the processor stopped, its log said
    so 8 ms after the tool forked) met the processor's handler, which wrote it into the
    processor's pipe.  Blocked across the fork, it waits for the default action."""
    d = daemon()
    drop(spool_root, "fork", {"tool": "t_fast_fork_killed", "params": {"seconds": 5}})
    assert wait_record(spool_root, "fork", 30)["result"] == {"signal": signal.SIGTERM}
    time.sleep(1.0)  # the stop, read from the pipe, came within the loop's next pass
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still here"}})
    assert wait_record(spool_root, "after", 30)["result"] == {"message": "still here"}
    assert d.running() and '"stopping"' not in d.logs(), d.logs()
    assert d.stop() == 0


def test_what_a_fast_tool_changed_is_put_back_while_an_abandoned_tool_runs_on(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A FAST tool past its timeout is abandoned, its thread running on (a socket read with
    no timeout).  It counted as a FAST job running, and what tools change is put back
    only when none runs: a later tool's chdir and logging.disable stood for every job
    after, and the processor's log went dark, until the stuck tool returned (QA: 3.5
    minutes)."""
    d = daemon()
    drop(spool_root, "stuck", {"tool": "t_fast_hang", "params": {"seconds": 30}})
    assert wait_record(spool_root, "stuck")["error"]["type"] == "timeout"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop(spool_root, "meddles", {"tool": "t_fast_meddle", "params": {"log": str(elsewhere)}})
    assert wait_record(spool_root, "meddles")["state"] == "done"
    drop(spool_root, "finds", {"tool": "t_fast_state"})
    found = wait_record(spool_root, "finds")["result"]
    assert found == {"cwd": str(spool_root.parent), "log_disabled": 0}
    wait_for(lambda: '"finds"' in d.logs(), 10, "the processor's log lines of the later job")
    assert d.stop() == 0


def test_an_error_whose_str_raises_a_base_exception_is_the_jobs_tool_error(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Its message could not be made: a KeyboardInterrupt out of ``__str__`` crashed the
    processor (FAST: exit 130, the job abandoned at the next start) or its worker
    (COMPUTE: ``worker_crashed``, retried), where an ordinary error out of it was noted."""
    d = daemon()
    for job_id, tool in (("fast", "t_fast_weird_error"), ("compute", "t_weird_error")):
        drop(spool_root, job_id, {"tool": tool})
        error = wait_record(spool_root, job_id)["error"]
        assert error["type"] == "tool_error", error
        assert error["message"] == "_StrRaises: <_StrRaises whose str() raised>", error
    assert d.running(), d.logs()
    assert d.stop() == 0


def test_a_fast_tools_child_does_not_keep_the_running_jobs_from_recovery(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A child a FAST tool forks (no exec) got a copy of every claim lease's descriptor
    open at its fork, and a flock stays held while any copy is open: once the processor
    was SIGKILLed, the next one's recovery took the jobs it had been running (the
    forking job's own too) for a live owner's and left them in ``running/`` for as long
    as the child lived (h416: 12 s here, a child that never ends for good).  The child
    closes its copies: they are recovered at once, the child still alive."""
    first = daemon()
    drop(spool_root, "other", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for((spool_root / "running" / "other.json").exists, 20, "the COMPUTE job to run")
    pid_file = tmp_path / "child.pid"
    drop(spool_root, "forks", {"tool": "t_fast_fork_stays",
                               "params": {"seconds": 60, "pid_file": str(pid_file)}})
    wait_for(pid_file.exists, 20, "the FAST tool's child")
    child = int(pid_file.read_text())  # written whole (renamed into place)
    try:
        assert locations(spool_root) == {"other": ["running"], "forks": ["running"]}
        first.kill()
        assert alive(child)
        daemon()
        for job_id in ("other", "forks"):
            try:
                error = wait_record(spool_root, job_id, 30)["error"]
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {locations(spool_root)}") from None
            assert error["type"] == "abandoned", error
            assert "its processor died mid-run" in error["message"], error
        assert alive(child), "recovered only once the child had ended"
    finally:
        os.kill(child, signal.SIGKILL)
