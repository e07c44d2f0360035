"""processor.stdio_pipes on the pool's side, without a daemon: what a task's end reads."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from typing import Any

import pytest

from processor import logs
from processor.stdio_pipes import READ_BYTES, StdioPipes

LINE = "a line from a thread the tool left running"


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every output line StdioPipes logs: (msg, fields)."""
    lines: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logs, "info", lambda logger, msg, fields: lines.append((msg, fields)))
    return lines


def read_until_settled(pipes: StdioPipes) -> int:
    """What the loop does: one budgeted read per readable pipe per pass."""
    passes = 0
    while pipes.draining:
        for stream in pipes.streams:
            pipes.read(stream)
        passes += 1
        assert passes < 10_000
    return passes


def test_a_task_ending_with_a_full_pipe_is_read_within_the_budget_and_stays_its_own(
        logged: list[tuple[str, dict[str, Any]]]) -> None:
    """A task's end formatted all its pipes held at once, outside the loop's budget for
    output: COMPUTE jobs that each printed 64 KiB of short lines and returned held the
    loop 6 ms at every end (FAST echo p50 10 ms against 2 before the pipes).  Now the
    end only notes what is owed; the budgeted reads take it, every line still the
    task's, and the slot waits (``draining``) until they have."""
    pipes = StdioPipes()
    stdout, stderr = pipes.hand_over()
    try:
        pipes.begin("job", "tool")
        lines = [f"line {n}" for n in range(3000)]
        os.write(stdout.fileno(), ("\n".join(lines) + "\nno newline").encode())
        pipes.end()
        assert logged == []
        assert pipes.draining
        assert read_until_settled(pipes) >= 20  # 28 KiB, 1 KiB at a time
        assert [msg for msg, _ in logged] == [*lines, "no newline"]
        assert {fields.get("id") for _, fields in logged} == {"job"}
        os.write(stdout.fileno(), b"later\n")
        pipes.read(pipes.streams[0])
        assert logged[-1] == ("later", {"stream": "stdout"})  # no job's
    finally:
        stdout.close()
        stderr.close()
        pipes.close()


def test_a_tasks_end_owes_what_the_pipe_holds_not_what_a_writer_keeps_adding(
        logged: list[tuple[str, dict[str, Any]]]) -> None:
    """A task's end read its worker's pipes up to 16 times 64 KiB while anything kept
    them full (a thread a tool left running): with such a thread, every later job's end
    formatted a megabyte of its lines on the loop, about 100 ms.  Now it owes the pipe's
    capacity at most, which is all the task can have written."""
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
        read_until_settled(pipes)
        mine = [fields for _, fields in logged if fields.get("id") == "job"]
        assert 0 < len(mine) <= (capacity + READ_BYTES) // (len(LINE) + 1) + 1
    finally:
        writer.kill()
        writer.wait()
        pipes.close()
