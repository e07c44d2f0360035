"""The processor out of processes (a cgroup's ``pids.max``, as systemd's ``TasksMax``
sets it, or ``RLIMIT_NPROC``): the jobs that run go on, and the pool is whole again
once the limit is lifted.

Before, a worker that died while no process could be forked took the forkserver
with it (``multiprocessing``'s loop let the fork's EAGAIN end it), and with the
forkserver every other worker (their parent-death signal): a job running fine in
another worker failed ``worker_crashed``, "exited with status 255".

Needs root and a cgroup v1 ``pids`` hierarchy (skipped elsewhere): the limit is the
cgroup's, which binds root too, where RLIMIT_NPROC does not.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import Daemon, drop, wait_for, wait_record

PIDS = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    if os.geteuid() != 0 or not (PIDS / "cgroup.procs").exists():
        pytest.skip("needs root and a cgroup v1 pids hierarchy")
    group = PIDS / f"spoolq-test-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup: {exc}")
    try:
        yield group
    finally:
        (group / "pids.max").write_text("max")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # empty once every process of the test ended
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.1)


def _tasks(group: Path) -> int:
    return int((group / "pids.current").read_text())


def test_a_worker_that_cannot_be_forked_again_fails_no_other_job(
        spool_root: Path, tmp_path: Path, pids_cgroup: Path) -> None:
    enter = f'echo $$ > {pids_cgroup / "cgroup.procs"}; exec "$@"'
    d = Daemon(spool_root, tmp_path / "p.log", prefix=["sh", "-c", enter, "sh"], JOB_NUM="2")
    try:
        d.start()
        drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 3}})
        wait_for((spool_root / "running" / "long.json").exists, 20, "long running")
        time.sleep(0.3)  # its worker has it
        # Fewer tasks than now: once a worker dies, none can be forked in its place.
        (pids_cgroup / "pids.max").write_text(str(_tasks(pids_cgroup) - 4))
        drop(spool_root, "exits", {"tool": "r_exit"})
        assert wait_record(spool_root, "exits")["error"]["type"] == "worker_crashed"
        time.sleep(1.5)  # the pool's attempts to replace it are refused meanwhile
        (pids_cgroup / "pids.max").write_text("max")
        long = wait_record(spool_root, "long", 30)
        assert long["state"] == "done", long
        for i in range(3):  # both workers again
            drop(spool_root, f"after{i}", {"tool": "sleep", "params": {"seconds": 0.1}})
        for i in range(3):
            assert wait_record(spool_root, f"after{i}", 30)["state"] == "done"
        assert d.running()
        assert d.stop() == 0
    finally:
        d.abort()
