"""A processor whose start-up meets a failing disk, a stale NFS handle or NFS's lock
daemon down exits 75.

Spool trouble that passes exits ``EX_TEMPFAIL`` (75), which the unit restarts after;
2, a configuration error, it does not restart.  An NFS spool whose handle went stale
(ESTALE: the folder replaced on the server) exited 2 and stayed down, where a restart
looks every path up afresh.  strace fails the recovery scan's open of ``running/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def _start_under_strace(tmp_path: Path, *faults: str) -> subprocess.CompletedProcess[str]:
    """A processor started on a fresh spool under strace with ``faults`` (its options)."""
    strace = shutil.which("strace")
    if strace is None or subprocess.run([strace, "-o", os.devnull, "true"], check=False,
                                        capture_output=True, timeout=30).returncode:
        pytest.skip("strace is not available here")
    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never", "JOB_NUM": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    # In a session of its own: a processor the faults did not stop (it started, and would
    # run for good) goes with strace at the timeout, where it outlived the test (twice, as
    # this session wrote a test that injected the wrong call).
    proc = subprocess.Popen(
        [strace, "-f", "-qq", "-o", os.devnull, *faults, sys.executable, "-m", "processor"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


def _exit_75_and_one_line(proc: subprocess.CompletedProcess[str], text: str) -> None:
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("spool-processor: error: ") and text in last, proc.stderr
    assert proc.returncode == 75, proc.stderr


@pytest.mark.parametrize(("error", "text"), [("EIO", "Input/output error"),
                                             ("ESTALE", "Stale file handle")])
def test_start_up_on_a_failing_disk_is_exit_75_and_one_line(
        tmp_path: Path, error: str, text: str) -> None:
    proc = _start_under_strace(tmp_path, "-P", str(tmp_path / "spool" / "running"),
                               "-e", "trace=openat",
                               "-e", f"inject=openat:error={error}:when=1")
    _exit_75_and_one_line(proc, text)


def test_start_up_with_the_lock_daemon_down_is_exit_75_and_one_line(tmp_path: Path) -> None:
    """A start-up that cannot take a lock because a network filesystem's lock daemon is
    down (ENOLCK: NFS's lockd or rpc.statd stopped) exits 75, which the unit restarts
    after: the lock daemon comes back by itself.  It exited 2, a configuration error the
    unit does not restart, and the processor stayed down until someone started it by
    hand.  strace fails every ``flock`` (the owner lease's, recovery's claims).

    The lock file it made is removed: left, nobody's, each restart while the lock daemon
    stayed down (every few seconds under systemd) added one to ``owners/``, until a
    processor started at last and its recovery removed them."""
    proc = _start_under_strace(tmp_path, "-e", "trace=flock", "-e", "inject=flock:error=ENOLCK")
    _exit_75_and_one_line(proc, "No locks available")
    assert os.listdir(tmp_path / "spool" / "owners") == []


def test_a_spool_this_user_may_not_enter_is_exit_2_and_one_line(tmp_path: Path) -> None:
    """A spool root the spool user may not enter (EACCES: a parent at 0750 of another
    owner) ended the start with a traceback and exit 1, which the unit restarts every
    2 s for good (QA); as ``spoolq`` does, it says so in one line and exits 2, a
    configuration error.  strace fails every stat of the root."""
    proc = _start_under_strace(tmp_path, "-P", str(tmp_path / "spool"),
                               "-e", "trace=newfstatat", "-e", "inject=newfstatat:error=EACCES")
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "this user may not enter it" in last and proc.returncode == 2, proc.stderr
