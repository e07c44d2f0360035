"""What the processor says at SIGUSR1 or SIGUSR2: its runs, its queues, its threads' stacks.

Neither signal stops anything (see :mod:`processor.stop_signals`): an ops person who
sends one, as Celery's workers are sent SIGUSR1 to dump their threads, gets log lines
instead of a processor killed mid-run.  One ``running`` line names the
signal, whether a stop is under way, the runs in flight (the first
:data:`MOST_RUNS_LISTED`; ``runs_total`` counts them all) and how many ready jobs
wait in each lane or until they are due; then one ``thread`` line per thread of the
processor with its stack, innermost call last, cut to :data:`MOST_STACK_CHARS`
from the end.  The lines are warnings, so that ``SPOOL_LOG_LEVEL=WARNING`` shows what
was asked for too.  Called on the loop thread, which alone reads the runs and queues.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from processor.tools import ExecutionMode

if TYPE_CHECKING:
    from processor.daemon import Processor

log = logging.getLogger("spoolq.processor")

MOST_RUNS_LISTED = 100
MOST_STACK_CHARS = 8_000


def report(processor: Processor, signum: int) -> None:
    """Log the ``running`` line and each thread's ``thread`` line for ``signum``; a
    report that fails is one error line, never the loop's end."""
    try:
        _report(processor, signal.Signals(signum).name)
    except Exception:
        log.exception("cannot report the runs for %s", signal.Signals(signum).name)


def _report(processor: Processor, name: str) -> None:
    now = time.monotonic()
    runs = [{"id": job_id, "tool": run.job.tool, "mode": run.mode.value,
             "attempt": run.record.attempts, "running_s": round(now - run.started, 3)}
            for job_id, run in list(processor.runs.items())[:MOST_RUNS_LISTED]]
    queues = processor.queues
    waiting = {mode.value: len(queues.live(queues.lanes[mode])) for mode in ExecutionMode}
    log.warning("running", extra={"fields": {
        "signal": name, "stopping": processor.stopping, "runs": runs,
        "runs_total": len(processor.runs), "queued": waiting,
        "delayed": len(queues.live(queues.delayed)), "blocked": len(queues.blocked),
        "left_to_others": {tool: sum(queues.ready.get(c.job_id) is c for c in parked)
                           for tool, parked in queues.parked.items()}}})
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))[-MOST_STACK_CHARS:]
        log.warning("thread", extra={"fields": {
            "signal": name, "thread": names.get(ident, str(ident)), "stack": stack}})
