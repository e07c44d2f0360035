"""The workers' forkserver's socket removed under a running processor (a cleaner of
temporary files, an ``rm -rf /tmp/*``): no worker can be forked again, and each second's
"cannot start worker" line said only "[Errno 2] No such file or directory", naming no
file, while every COMPUTE job waited in pending/ (h408).  The line names the socket and
what to do."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.processor.daemonkit import Daemon, drop, wait_for, wait_record

StartDaemon = Callable[..., Daemon]


def test_a_removed_forkserver_socket_is_named_in_the_respawn_error(
        spool_root: Path, daemon: StartDaemon) -> None:
    # Short: a socket's path is at most 107 bytes, and tmp_path may be longer.
    temp = Path(tempfile.mkdtemp(prefix="h408-"))
    try:
        _check(spool_root, daemon, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _check(spool_root: Path, daemon: StartDaemon, temp: Path) -> None:
    # One worker, fresh after each job: the next job needs a fork from the forkserver.
    d = daemon(TMPDIR=str(temp), JOB_NUM="1", SPOOL_WORKER_MAX_JOBS="1")
    drop(spool_root, "first", {"tool": "t_pid"})
    assert wait_record(spool_root, "first")["state"] == "done"
    sockets = list(temp.glob("pymp-*/listener-*"))
    assert sockets, list(temp.iterdir())
    for folder in temp.glob("pymp-*"):
        shutil.rmtree(folder)
    drop(spool_root, "second", {"tool": "t_pid"})

    def said() -> list[str]:
        return [e["msg"] for e in d.events() if str(e.get("msg", "")).startswith(
            "cannot start worker")]

    lines = wait_for(said, 30, "a 'cannot start worker' line")
    assert str(sockets[0]) in lines[0] and "is gone" in lines[0], lines[0]
    assert "TMPDIR" in lines[0], lines[0]
