"""The processor's status file (``owners/<owner>.json``), its marks of the tools it
offers (``offers/``, :mod:`spool.offer_marks`), and what it counts for them.

:class:`StatusFile` owns the heartbeat's contents (OwnerStatus's fields, in its
order), the done and failed counts of the last 60 seconds, and the warn-once
rule for the advisory files (status and progress): a write that fails warns
once per outage, not on every write.  The status file is advisory: it is
swapped in whole (:meth:`spool.fsops.Mover.publish_advisory`), so readers only
ever see a complete file, and a failure to write it never stops a job.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from datetime import datetime
from typing import Any

import orjson

from processor.executor import ComputeExecutor
from spool.clock import Clock
from spool.errors import SpoolIOError
from spool.offer_marks import OfferMarks
from spool.transitions import Spool
from spool.version import version

log = logging.getLogger("spoolq.processor")

STATUS_BLOCK = 4096
STATUS_HEADROOM = 2048
"""The status file's room to grow (its I/O trouble, its counts) without a new block."""


VERSION = version()
STATUS_WRITE = "cannot write status file"
OFFER_MARK = "cannot mark the tools offered"


class StatusFile:
    """One processor's status file, its finished-job counts and its advisory-write warnings."""

    def __init__(self, spool: Spool, owner: str, executor: ComputeExecutor, clock: Clock,
                 catalogue: list[dict[str, Any]]) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.owner = owner
        self.executor = executor
        self.clock = clock
        self.started_at = clock.now()
        self.catalogue_json = orjson.Fragment(orjson.dumps(catalogue))
        self.marks = OfferMarks(spool.mover, [entry["name"] for entry in catalogue])
        # Finished runs by second of the monotonic clock: [second, done, failed].  One
        # entry a run (a tuple each) held 13,000 at 220 jobs/s, 360,000 (some 30 MB) at
        # W1's 6,000; a second's entry is one list, 61 of them at most.
        self.finished_at: deque[list[int]] = deque()
        self.finished_last_60s = {True: 0, False: 0}
        self.failing_writes: set[str] = set()
        self.size = 0  # what the file is padded to (see write)

    def count(self, ok: bool) -> None:
        second = int(time.monotonic())
        finished = self.finished_at
        if finished and finished[-1][0] == second:
            finished[-1][1 if ok else 2] += 1
        else:
            finished.append([second, int(ok), int(not ok)])
            self.forget_old_counts()
        self.finished_last_60s[ok] += 1

    def forget_old_counts(self) -> None:
        """Drop the seconds that ended more than 60 s ago: the counts cover the last 60
        to 61 s."""
        now = time.monotonic()
        finished = self.finished_at
        while finished and now - (finished[0][0] + 1) > 60:
            _, done, failed = finished.popleft()
            self.finished_last_60s[True] -= done
            self.finished_last_60s[False] -= failed

    def write(self, fast_running: int, stopping: bool, grace_ends_at: datetime | None,
              io_trouble: dict[str, Any] | None = None,
              left_to_others: dict[str, int] | None = None) -> None:
        """Write the status file now (the caller's heartbeat decides when);
        ``left_to_others``: the jobs left to the processors that offer their tool, by
        tool (:meth:`processor.queues.Queues.left_counts`)."""
        self.forget_old_counts()
        # OwnerStatus's fields in its order, as a plain dict: what model_construct and
        # model_dump made, for a fifth of their CPU (tests/processor/test_status_file.py).
        status = {
            "owner": self.owner, "pid": os.getpid(), "host": self.spool.host,
            "version": VERSION, "started_at": self.started_at,
            "heartbeat_at": self.clock.now(), "executor": self.executor.name,
            "job_num": self.executor.capacity(), "busy_workers": self.executor.busy(),
            "fast_running": fast_running, "done_last_60s": self.finished_last_60s[True],
            "failed_last_60s": self.finished_last_60s[False], "stopping": stopping,
            "grace_ends_at": grace_ends_at, "io_trouble": io_trouble,
            "compute_room": self.executor.room(),
            "left_to_others": left_to_others or {},
            "tools": self.catalogue_json}  # serialised once: it never changes
        data = orjson.dumps(status, option=orjson.OPT_UTC_Z)
        # Padded with spaces (JSON's whitespace) to a size that only grows, with room to
        # spare: rewritten in place, the file then needs no new block.  When I/O trouble
        # came, the status grew by its text into one more block on a full ext4, the
        # rewrite failed, and readers called the live processor down a minute later, the
        # trouble unsaid (QA, h315; tmpfs, which allocates no blocks, showed it up).
        if len(data) > self.size:
            self.size = -(-(len(data) + STATUS_HEADROOM) // STATUS_BLOCK) * STATUS_BLOCK
        try:
            self.spool.mover.publish_advisory(self.layout.owner_status(self.owner),
                                              data.ljust(self.size))
        except (SpoolIOError, OSError) as exc:
            self.write_failed(STATUS_WRITE, exc)
        else:
            self.failing_writes.discard(STATUS_WRITE)
        if not stopping:  # offered until now (spool.offer_marks), for a restart's grace
            try:
                self.marks.touch()
            except (SpoolIOError, OSError) as exc:
                self.write_failed(OFFER_MARK, exc)
            else:
                self.failing_writes.discard(OFFER_MARK)

    def write_failed(self, what: str, exc: Exception) -> None:
        """Advisory files (status, progress) warn once per outage, not on every write."""
        if what not in self.failing_writes:
            self.failing_writes.add(what)
            log.warning(what, extra={"fields": {"error": str(exc)}})
