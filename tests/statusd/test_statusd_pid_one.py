"""statusd as PID 1 of its pid namespace (a container's only process, no ``--init``)
adopts every orphan there: the children a ``docker exec`` or an exec probe left when it
ended.  It never reaped them, and they stayed zombies for good, each holding one of the
container's pids (h408).  It reaps them as they end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from statusd_daemonkit import statusd_daemon

from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
    reason="needs root, unshare and nsenter (util-linux) for a pid namespace")


def _zombies_of(pid: int) -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            zombies.append(int(entry))
    return zombies


@needs_namespaces
def test_statusd_as_pid_one_reaps_the_orphans_it_adopts(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    with statusd_daemon(root, prefix=["unshare", "--pid", "--fork", "--mount-proc"]) as (
            _port, proc):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        statusd = int(children[0])
        assert "NSpid:" in (status := Path(f"/proc/{statusd}/status").read_text())
        assert status.split("NSpid:")[1].split("\n")[0].split()[-1] == "1", status
        # As `docker exec` does: a process joins the namespace, starts two children and
        # ends first; they go to PID 1.
        subprocess.run(["nsenter", "-t", str(statusd), "-p", "sh", "-c",
                        "sleep 0.2 & sleep 0.3 & exit 0"], check=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if not _zombies_of(statusd) and not Path(
                    f"/proc/{statusd}/task/{statusd}/children").read_text().split():
                break
        zombies = _zombies_of(statusd)
        # unshare passes no signal on: statusd is stopped itself, and unshare exits with it.
        os.kill(statusd, signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not zombies, "statusd left its adopted orphans zombies"
