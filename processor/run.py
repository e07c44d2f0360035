"""A claimed job while it runs here: :class:`Run`, the processor's one record of it.

The loop thread alone reads and changes a Run (a FAST tool's thread only carries it
back in an event); the flags say how far the run has come, so that an outcome that
comes late (a timeout or a cancel got there first) is recognised and ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from processor.tools import BaseTool, ExecutionMode
from spool.claim import Claim
from spool.clock import Clock
from spool.models import Job, Record


@dataclass(slots=True)
class Run:
    """A claimed job while it runs here."""

    claim: Claim
    job: Job
    tool: type[BaseTool]
    record: Record
    started: float
    timeout_s: float  # the limit itself (deadline - started is off by the clock's rounding)
    mode: ExecutionMode
    abandoned: bool = False
    finishing: bool = False  # its outcome is known; only the record is still to write
    executing: bool = False  # a FAST run's tool is running on some thread
    begun: bool = False  # a FAST run's tool was started: its time runs from then
    stuck: bool = False  # ended (timeout, cancel) while its FAST tool still ran
    last_progress_write: float = 0.0
    progress_written: bool = False  # a progress file of this run went out (say_where's)
    progress: tuple[float, str] | None = None
    requeue: Job | None = None  # the job a requeue wrote or tried to: the same once more
    ended: tuple[float, datetime] | None = None
    """When its outcome came (monotonic, and the clock's): its record's duration_s and
    finished_at, the same however long a full disk then kept the record from being
    written (they grew by each pause, 15 s on an echo job, QA)."""

    def end(self, clock: Clock, at: float | None = None) -> tuple[float, datetime]:
        """:attr:`ended`, taken now unless it was already; as of ``at`` when given
        (monotonic, a moment past: a FAST tool's return that the loop reads late)."""
        if self.ended is None:
            now = time.monotonic()
            self.ended = (now, clock.now()) if at is None else (
                at, clock.now() - timedelta(seconds=now - at))
        return self.ended

    @property
    def deadline(self) -> float:
        """When the run's time is up (monotonic)."""
        return self.started + self.timeout_s
