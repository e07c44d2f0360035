"""Progress files: what a running job reports of itself, written to ``progress/<id>.json``.

:class:`ProgressFiles` owns the reports' pacing: a run's report is written at once
when its last was at least PROGRESS_WRITE_S ago (or it says 1.0), otherwise it is
held back, never dropped: the latest held-back report is written once the interval
is up, unless a newer one comes first.  Reports of runs that ended, were abandoned
or were replaced by a newer run of their id are ignored.  Progress files are
advisory: written without fsync, and a failure to write one only warns, once per
outage (:meth:`processor.status.StatusFile.write_failed`).
"""

from __future__ import annotations

import time

import orjson

from processor.run import Run
from processor.status import StatusFile
from spool.clock import Clock
from spool.errors import SpoolIOError
from spool.models import Progress
from spool.transitions import Spool

PROGRESS_WRITE_S = 0.2
PROGRESS_WRITE = "cannot write progress"
WHERE_AFTER_S = 1.0
"""A run that has reported nothing this long after its start gets a progress file all
the same, without a fraction: until a report, readers (``spoolq show``, statusd) had no
host or pid of a running job, a tool that reports nothing never, and after a requeue
another processor claimed they showed none until its first report.  Shorter runs are
spared the write (W1's no-op jobs: one more file each)."""


class ProgressFiles:
    """The progress files of one processor's runs (``runs``: the processor's own dict)."""

    def __init__(self, spool: Spool, owner: str, clock: Clock, runs: dict[str, Run],
                 status: StatusFile) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.owner = owner
        self.clock = clock
        self.runs = runs
        self.status = status
        self.due: dict[str, float] = {}  # job id -> when its held-back report is due

    def report(self, job_id: str, fraction: float, message: str,
               source: Run | None = None) -> None:
        """A progress report (``source``: the FAST run it came from, if any)."""
        run = self.runs.get(job_id)
        if run is None or run.abandoned or (source is not None and source is not run):
            return
        # The first 1.0 is written at once, later ones paced as any (a FAST tool saying
        # 1.0 20,000 times had a file written for each, the loop slowed for seconds, QA).
        done = fraction >= 1.0 and not (run.progress and (run.progress[0] or 0.0) >= 1.0)
        run.progress = (fraction, message)
        if time.monotonic() - run.last_progress_write >= PROGRESS_WRITE_S or done:
            self.write(run, fraction, message)
        else:  # too soon: written once the interval is up, unless a newer one comes first
            self.due.setdefault(job_id, run.last_progress_write + PROGRESS_WRITE_S)

    def write_due(self, now: float) -> None:
        """Write the latest progress of runs whose last report was held back."""
        for job_id, due in list(self.due.items()):
            if due > now:
                continue
            del self.due[job_id]
            run = self.runs.get(job_id)
            if run is not None and run.progress is not None and not (
                    run.abandoned or run.finishing):
                self.write(run, *run.progress)

    def say_where(self, now: float) -> None:
        """A progress file without a fraction for each run :data:`WHERE_AFTER_S` in that
        has reported nothing (the heartbeat calls this), or its latest report for one
        whose every write failed so far: taken for written, a run whose first write failed
        (a full disk for a moment) had no progress file for as long as its tool said
        nothing, readers showing no host or pid of it, never for a quiet tool."""
        for run in self.runs.values():
            if (not run.progress_written and now - run.started >= WHERE_AFTER_S
                    and not (run.abandoned or run.finishing)):
                self.write(run, *(run.progress or (None, "")))

    def write(self, run: Run, fraction: float | None, message: str) -> None:
        self.due.pop(run.claim.job_id, None)
        run.last_progress_write = time.monotonic()
        progress = Progress(fraction=fraction, message=message, updated_at=self.clock.now(),
                            started_at=run.record.started_at, attempt=run.record.attempts,
                            host=self.spool.host, pid=self.spool.pid, owner=self.owner)
        job_id = run.claim.job_id
        data = orjson.dumps(progress.model_dump(exclude_none=True), option=orjson.OPT_UTC_Z)
        try:
            # Over the run's last report; anything there that is no file (a directory an
            # operator made, say) is set aside into failed/, kept with a record.
            self.spool.publish_file(self.layout.progress_str(job_id), data, job_id,
                                    "progress", durable=False)
        except (SpoolIOError, OSError) as exc:
            self.status.write_failed(PROGRESS_WRITE, exc)
        else:
            run.progress_written = True
            self.status.failing_writes.discard(PROGRESS_WRITE)
