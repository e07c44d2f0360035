"""A claimed run for tests of :class:`processor.finish.Finisher` without a daemon: a
spool of its own, one job claimed and its running record, and a status stub."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from processor.run import Run
from processor.tools import BaseTool, ExecutionMode
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool


class NoStatus:
    """The finisher's status file, which counts nothing here."""

    def count(self, done: bool) -> None:
        pass


def new_spool(tmp_path: Path) -> Spool:
    layout = Layout(tmp_path / "spool")
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    spool.mover.make_folders()
    return spool


@contextlib.contextmanager
def claimed_run(spool: Spool, job: Job, tool: type[BaseTool], timeout_s: float
                ) -> Iterator[Run]:
    """``job`` submitted as ``j``, claimed, and its COMPUTE run under way; its claim let
    go at the end."""
    spool.submit(job, "j")
    claim = spool.claim("j")
    assert claim is not None
    record = record_from_job(job, "j", JobState.RUNNING, claim.mtime_ns, attempts=1)
    try:
        yield Run(claim, job, tool, record, time.monotonic(), timeout_s, ExecutionMode.COMPUTE)
    finally:
        claim.close()
