"""Recovery's passes and the periodic scan of one processor, with the lines they log.

Recovery is an explicit start-up step: :meth:`PeriodicScan.recover` runs
:class:`~spool.recovery.Recovery` once before the first claim.  Every
``SPOOL_SCAN_S`` after that, :meth:`PeriodicScan.run` reaps the adopted orphans of
FAST tools' processes that exited (:class:`~processor.proctree.Reaper`), runs
recovery again (the runs of processors that died since: DESIGN section 9,
"Orphans") and rescans ``pending/`` (what the change feed lost).  Spool I/O
trouble in that recovery pass goes to the processor's ``io_trouble`` and the
rescan waits for the next scan.  A drop whose id has an orphan recovery cannot read
waits behind it (a claim never overwrites ``running/``): a warning says so once.

:func:`log_recovery` gives each orphan requeued, abandoned or cancelled a transition
line of its own (``"reason": "orphaned"``), then one ``recovery`` summary line whose
id lists are cut to :data:`RECOVERY_IDS_LOGGED` each (journald splits a line past
48 KiB); a pass that changed nothing logs nothing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from processor import logs, proctree
from processor.discovery import Discovery
from spool.clock import Clock
from spool.errors import ErrorType, SpoolIOError
from spool.fsops import failing_read
from spool.models import Job
from spool.orphans import StillOurs
from spool.recovery import Recovery, RecoveryReport
from spool.settings import Settings
from spool.states import JobState
from spool.transitions import Spool

log = logging.getLogger("spoolq.processor")

RECOVERY_IDS_LOGGED = 32
"""Ids of each kind named in a recovery summary line; each has a transition line too."""
SCAN_SPACING = 3.0
"""After a periodic pass, no other starts for this many times the CPU it took: passes
take a quarter of the loop's time at most, whatever the backlog."""


class PeriodicScan:
    """Recovery and the periodic scan of one processor (``max_attempts``: its policy;
    ``io_trouble``: starts its I/O pause; ``still_ours``: whether the spool is still the
    one it locks in, see :func:`spool.orphans.ours_checked`)."""

    def __init__(self, settings: Settings, spool: Spool, discovery: Discovery, *,
                 max_attempts: Callable[[Job], int],
                 io_trouble: Callable[[SpoolIOError], None],
                 still_ours: StillOurs = lambda: True) -> None:
        self.settings = settings
        self.discovery = discovery
        self.io_trouble = io_trouble
        self.recovery = Recovery(spool, max_attempts, still_ours)
        self.reaper = proctree.Reaper()  # adopted orphans of FAST tools' processes
        self.unreadable: set[str] = set()  # the orphans' read errors said, while they last
        self.layout = spool.layout
        self.blocked: set[str] = set()  # ids whose drop waits behind such an orphan, said
        # The pass under way: its start, its slices' time and CPU so far.
        self._started = self._busy = self._cpu = 0.0

    def recover(self) -> None:
        """The start-up pass, before the first claim."""
        report = self.recovery.scan()
        log_recovery(self._unsaid(report), self.recovery.spool.clock)
        self._say_blocked(report.unread_orphans)

    def _unsaid(self, report: RecoveryReport) -> RecoveryReport:
        """``report`` with only the orphans' read errors not said at the pass before."""
        errors, said = report.unreadable, self.unreadable
        self.unreadable = set(errors)
        report.unreadable = [error for error in errors if error not in said]
        return report

    def _say_blocked(self, orphans: list[str]) -> None:
        """A warning, once while it lasts, for each drop in ``pending/`` whose id's orphan
        recovery cannot read: never claimed while that orphan stays in ``running/``, it
        waited with no line but the orphan's one warning."""
        blocked = {job_id for job_id in orphans
                   if os.path.lexists(self.layout.job(JobState.PENDING, job_id))}
        for job_id in sorted(blocked - self.blocked):
            log.warning("a drop waits behind its id's orphan, which recovery cannot read; "
                        "claimed once that orphan is settled", extra={"fields": {
                            "id": job_id, "waits_behind": f"running/{job_id}.json"}})
        self.blocked = blocked

    def run(self) -> None:
        """One pass, whose rescan of ``pending/`` goes on in slices at the loop's later
        passes (:meth:`more`); the next pass is due ``SPOOL_SCAN_S`` after its end as if
        its slices had run in one go (or when asked sooner: events lost), and none
        starts before :data:`SCAN_SPACING`
        times its CPU (or its length, up to ``SPOOL_SCAN_S``) has gone by.
        Due from its start, a pass as long as ``SPOOL_SCAN_S`` (1.2 million drops in
        ``pending/``, each looked up) had the next begin as it ended: the loop scanned
        and scarcely judged or claimed (QA: 1.6 jobs/s, against 7,000 at 300,000)."""
        self._started, self._busy, self._cpu = time.monotonic(), 0.0, 0.0
        self.discovery.next_scan = math.inf  # a pass cut short is due SPOOL_SCAN_S on too
        self._timed(self._run)

    def more(self) -> None:
        """The next slice of the pass's rescan, while it goes on."""
        self._timed(self.discovery.scan_more)

    def _timed(self, step: Callable[[], None]) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            step()
        finally:
            # Its own slices' time, not the loop's between them: counted from the pass's
            # start, a sliced rescan that FAST runs and intake spread over seconds put a
            # rescan asked for at once (events lost, a drop to settle) off by up to
            # SPOOL_SCAN_S after it (QA h336).
            self._busy += time.monotonic() - started
            self._cpu += time.thread_time() - cpu
            if not self.discovery.scanning:
                self._schedule()

    def _schedule(self) -> None:
        """When the next pass may start, the pass over.  By its CPU: a pass a stalled
        mount or a SIGSTOP held for 10 s put every rescan off by 30 s on a spool of a few
        files (the review).  Its wall time too, up to one scan interval: a pass waiting on
        its reads (a cold cache, a network filesystem, a million names) ran back to back
        again (a review)."""
        ended = time.monotonic()
        spacing = max(SCAN_SPACING * self._cpu, min(self._busy, self.settings.scan_s))
        # Due as if its slices had run in one go: from its end, the loop's work between
        # them put orphans' recovery off by as much (seconds, under FAST load on a large
        # backlog), past DESIGN's "within SPOOL_SCAN_S".
        self.discovery.next_scan = min(self.discovery.next_scan,
                                       self._started + self._busy + self.settings.scan_s)
        self.discovery.scan_floor = ended + spacing

    def _run(self) -> None:
        self.reaper.reap(time.monotonic())  # orphans of FAST tools' processes that exited
        try:
            report = self.recovery.scan()
        except SpoolIOError as exc:
            self.io_trouble(exc)
            return
        except OSError as exc:  # out of descriptors, a failing disk: a pause, not a crash
            if (trouble := failing_read(exc, "recovery pass")) is None:
                raise
            self.io_trouble(trouble)
            return
        log_recovery(self._unsaid(report), self.recovery.spool.clock)
        self._say_blocked(report.unread_orphans)
        self.discovery.begin_rescan()
        self.discovery.scan_more()


def log_recovery(report: RecoveryReport, clock: Clock) -> None:
    """A transition line for each orphan requeued, abandoned or cancelled, then a summary
    whose id lists are cut to RECOVERY_IDS_LOGGED each (journald splits a line past 48 KiB);
    ``clock``: the spool's, which the backoffs' ends are of."""
    for error in report.unreadable:
        # Its error names the file: an orphan in running/, its record, a move cut short
        # in stage/, a quarantine's original (said "an orphan in running/" of them all).
        log.warning("recovery cannot read a file; left there, tried at each pass",
                    extra={"fields": {"error": error}})
    if not report.changed:
        return
    def run_of(job_id: str) -> dict[str, Any]:
        tool, attempt = report.runs.get(job_id, (None, None))
        return {} if tool is None else {"tool": tool, "attempt": attempt}

    for job_id in report.requeued:
        logs.transition("requeued", id=job_id, **run_of(job_id), reason="orphaned",
                        error_type=ErrorType.ABANDONED.value,
                        **logs.retry_fields(report.backoffs[job_id], clock.now()))
    for job_id in report.abandoned:
        logs.transition("failed", id=job_id, **run_of(job_id),
                        error_type=ErrorType.ABANDONED.value, reason="orphaned")
    for job_id in report.cancelled:
        logs.transition("failed", id=job_id, **run_of(job_id),
                        error_type=ErrorType.CANCELLED.value, reason="orphaned")
    fields: dict[str, Any] = {}
    for name in ("requeued", "abandoned", "cancelled", "finished", "restored"):
        ids = getattr(report, name)
        fields[name] = ids[:RECOVERY_IDS_LOGGED]
        if len(ids) > RECOVERY_IDS_LOGGED:
            fields[f"{name}_count"] = len(ids)
    fields["removed"] = report.removed
    log.info("recovery", extra={"fields": fields})
