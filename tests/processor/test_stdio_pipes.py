"""processor.stdio_pipes on the pool's side, without a daemon: what a task's end reads."""

from __future__ import annotations

import fcntl
import subprocess
import time
from typing import Any

import pytest

from processor import logs
from processor.stdio_pipes import StdioPipes

LINE = "a line from a thread the tool left running"


def test_a_tasks_end_reads_what_the_pipe_holds_not_what_a_writer_keeps_adding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's end reads its worker's pipes before the slot takes another task.  It
    read on, up to 16 times 64 KiB, while anything kept the pipe full (a thread a tool
    left running): with such a thread, every later job's end formatted a megabyte of
    its lines on the loop, about 100 ms.  Now one read of the pipe's capacity, which
    is all the task can have written: a writer that never stops costs no more."""
    logged: list[dict[str, Any]] = []
    monkeypatch.setattr(logs, "info", lambda logger, msg, fields: logged.append(fields))
    pipes = StdioPipes()
    stdout, stderr = pipes.hand_over()
    try:
        writer = subprocess.Popen(["yes", LINE], stdout=stdout.fileno())
    finally:
        stdout.close()
        stderr.close()
    try:
        capacity = fcntl.fcntl(pipes.streams[0].fd, fcntl.F_GETPIPE_SZ)
        pipes.begin("job", "tool")
        time.sleep(0.2)  # the pipe is full long before: `yes` writes gigabytes a second
        pipes.end()
        mine = [fields for fields in logged if fields.get("id") == "job"]
        assert 0 < len(mine) <= capacity // (len(LINE) + 1) + 1
    finally:
        writer.kill()
        writer.wait()
        pipes.close()
