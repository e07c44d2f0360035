"""A running job's progress file (its "where-file": the host, pid and owner readers show
of a run) whose write failed is tried again at the next heartbeat until one goes out.
The failed write was taken for written: a quiet tool's run had no progress file for as
long as it ran, even once the disk took writes again, and ``spoolq show`` or statusd
showed no host or pid of it."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import FakeClock, make_spool, submit

from processor.progress import WHERE_AFTER_S, ProgressFiles
from processor.run import Run
from processor.tools import BaseTool, ExecutionMode
from spool.errors import SpoolIOError
from spool.models import Job, Record
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")


class _Status:
    """What ProgressFiles asks of the processor's status file: its once-per-outage
    warning."""

    def __init__(self) -> None:
        self.failing_writes: set[str] = set()
        self.warned: list[str] = []

    def write_failed(self, what: str, exc: Exception) -> None:
        if what not in self.failing_writes:
            self.failing_writes.add(what)
            self.warned.append(what)


def _progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int
              ) -> tuple[ProgressFiles, Run, _Status, Path]:
    """A run of ``j1`` a while in, whose first ``failures`` progress writes fail (ENOSPC)."""
    spool = make_spool(tmp_path / "spool", clock=FakeClock())
    submit(spool, "j1")
    claim = spool.claim("j1")
    assert claim is not None
    run = Run(claim, Job(tool="echo"), BaseTool,
              Record(id="j1", state=JobState.RUNNING, tool="echo", attempts=1),
              started=time.monotonic() - 2 * WHERE_AFTER_S, timeout_s=60,
              mode=ExecutionMode.COMPUTE)
    status = _Status()
    files = ProgressFiles(spool, "owner-1", FakeClock(), {"j1": run}, status)  # type: ignore[arg-type]
    real = spool.publish_file
    left = [failures]

    def publish_file(*args: Any, **kw: Any) -> bool:
        if left[0]:
            left[0] -= 1
            raise SpoolIOError(f"cannot write: {os.strerror(errno.ENOSPC)}")
        return real(*args, **kw)

    monkeypatch.setattr(spool, "publish_file", publish_file)
    return files, run, status, spool.layout.progress_file("j1")


def test_a_where_file_whose_write_failed_is_written_at_the_next_heartbeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, run, status, where = _progress(tmp_path, monkeypatch, failures=2)
    try:
        for _ in range(2):  # two heartbeats while the disk is full: said once
            files.say_where(time.monotonic())
            assert not where.exists()
        assert len(status.warned) == 1
        files.say_where(time.monotonic())  # the disk takes writes again
        said = orjson.loads(where.read_bytes())
        assert said["owner"] == "owner-1" and said["pid"] == os.getpid()
        assert "fraction" not in said
        assert not status.failing_writes
    finally:
        run.claim.close()


def test_a_first_report_whose_write_failed_is_written_at_the_next_heartbeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool's one report went unwritten: the heartbeat writes it, not a bare
    where-file."""
    files, run, _, where = _progress(tmp_path, monkeypatch, failures=1)
    try:
        files.report("j1", 0.25, "a quarter")
        assert not where.exists()
        files.say_where(time.monotonic())
        said = orjson.loads(where.read_bytes())
        assert (said["fraction"], said["message"]) == (0.25, "a quarter")
    finally:
        run.claim.close()


def test_a_written_where_file_is_not_written_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, run, _, where = _progress(tmp_path, monkeypatch, failures=0)
    try:
        files.say_where(time.monotonic())
        first = where.stat().st_ino
        files.say_where(time.monotonic())
        assert where.stat().st_ino == first
    finally:
        run.claim.close()
