"""A recorded run's lease is let go: the processor holds no descriptor of a job file it
has finished with (the running file, unlinked once the record is written), however
the run ended and whichever lane ran it (closed on the closer thread: see
``spool.claim.BackgroundCloser``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_for, wait_record

StartDaemon = Callable[..., Daemon]


def running_files_held(pid: int, root: Path) -> list[str]:
    """What process ``pid`` has open under ``root/running`` (unlinked ones too)."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(f"{root / 'running'}/"):
            held.append(target)
    return held


def test_recorded_runs_hold_no_descriptor(spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon()
    assert d.proc is not None
    jobs = {}
    for i in range(8):
        jobs[f"compute-{i}"] = {"tool": "t_record"}
        jobs[f"fast-{i}"] = {"tool": "echo", "params": {"message": i}}
        jobs[f"failed-{i}"] = {"tool": "t_fail"}
    for job_id, job in jobs.items():
        drop(spool_root, job_id, job)
    for job_id in jobs:
        wait_record(spool_root, job_id)
    # Held while its run was going on: a lease is a descriptor of the running file.
    wait_for(lambda: not running_files_held(d.proc.pid, spool_root), 10,
             "the processor to let go of every finished run's file")
    # A run going on holds its lease (what the look above would have seen).
    release = spool_root.parent / "release"
    drop(spool_root, "held", {"tool": "t_record",
                             "params": {"release": str(release), "seconds": 30}})
    assert wait_for(lambda: running_files_held(d.proc.pid, spool_root), 10, "its lease")
    release.touch()
    assert wait_record(spool_root, "held")["state"] == "done"
    wait_for(lambda: not running_files_held(d.proc.pid, spool_root), 10,
             "the processor to let go of the last run's file")
