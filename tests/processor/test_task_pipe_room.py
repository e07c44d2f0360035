"""A task of a few hundred KiB to a worker that is not reading yet (starting, putting
its process back, stopped) does not hold the processor's loop: the task pipe has room
for it, as the socket pair it replaced had (processor.channel)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, record, wait_for, wait_record

from processor.channel import open_channel

StartDaemon = Callable[..., Daemon]


def test_a_task_of_200_kib_goes_in_without_a_reader() -> None:
    parent, child = open_channel()
    try:
        os.set_blocking(parent.write_fd, False)  # would block: BlockingIOError
        parent.sendall(b"x" * 200_000)
    finally:
        parent.close()
        child.close()


def test_a_stopped_worker_sent_a_large_task_does_not_hold_fast_jobs(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon(JOB_NUM="1")
    drop(spool_root, "warm", {"tool": "t_pid"})
    # FAST runs wait for the processor's background import of numpy and pandas, seconds
    # on a loaded host: over before the FAST job below is timed.
    drop(spool_root, "warm-fast", {"tool": "t_fast_record"})
    worker = wait_record(spool_root, "warm")["result"]["pid"]
    wait_record(spool_root, "warm-fast", 60)
    os.kill(worker, signal.SIGSTOP)
    try:
        # 150 kB of params: more than a pipe's default 64 KiB, less than the socket
        # pair's buffer took before 3b87006.
        drop(spool_root, "large", {"tool": "t_record", "timeout": 60,
                                   "params": {"release": "x" * 150_000}})
        wait_for(lambda: any("large" in e.get("id", "") for e in d.events()
                             if e.get("event") == "claimed"), 20, "the claim of large")
        started = time.monotonic()
        drop(spool_root, "fast", {"tool": "t_fast_record"})
        # The loop was held in its write to the stopped worker until the task's deadline
        # (60 s on): far from the 20 s left for a loaded host.
        wait_for(lambda: record(spool_root, "fast"), 20, "the FAST job")
        assert time.monotonic() - started < 20
    finally:
        os.kill(worker, signal.SIGKILL)
    rec = wait_record(spool_root, "large")
    assert rec["state"] == "failed" and rec["error"]["type"] == "worker_crashed"
    drop(spool_root, "after", {"tool": "t_pid"})
    assert wait_record(spool_root, "after")["state"] == "done"
