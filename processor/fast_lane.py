"""The FAST lane: FAST runs on the loop thread, their deadlines, and their stuck threads.

A FAST tool is light I/O, under 100 ms (DESIGN section 4).  A claimed FAST run
waits here until the top of the loop thread's next step, then runs on that thread
itself (:meth:`processor.relay.Relay.run_inline`); should it hold the thread for
long, the loop moves to a standby and the old thread posts the outcome as an event.

Guarantees:

* at most ``SPOOL_FAST_THREADS`` FAST runs are in flight at once;
* a run past its deadline fails ``timeout`` at once, by the loop, whatever its tool
  is doing; its thread cannot be killed, so it is *abandoned*: its outcome is ignored,
  and until its tool returns the id stays blocked (a retry or a newer drop of it never
  runs beside it) and the thread counts apart from the in-flight bound, up to
  :data:`STUCK_FAST_PER_THREAD` x the bound;
* an outcome that comes late (the run timed out, was cancelled, or a newer run of its
  id replaced it) is ignored.

The loop thread alone calls this lane; a tool's thread only posts events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from processor import capture
from processor.inbox import Inbox
from processor.registry import SHIPPED_TOOLS
from processor.relay import Relay
from processor.run import Run
from processor.runner import Context, Outcome, run_tool
from processor.tools import BaseTool, ExecutionMode
from spool.clock import Clock
from spool.errors import ErrorType
from spool.text import seconds_text

log = logging.getLogger("spoolq.processor")

SLOW_FAST_S = 1.0
"""A FAST run this long or longer is said in a warning, once per tool a processor runs:
FAST tools are light I/O, under 100 ms (DESIGN section 4)."""

STUCK_FAST_PER_THREAD = 4
"""Abandoned FAST threads (tools still running after their runs ended) allowed, per
SPOOL_FAST_THREADS, beside the lane's in-flight bound; past that the lane waits."""


class FastLane:
    """FAST runs of one processor.  ``runs``: the processor's runs by id (shared);
    ``finish``: records a run's outcome; ``unblock``: an id may run again (its last
    stuck thread returned)."""

    def __init__(self, threads: int, relay: Relay, inbox: Inbox, runs: dict[str, Run], *,
                 data_dir: Path, resources: dict[str, Any],
                 finish: Callable[[Run, Outcome], None],
                 unblock: Callable[[str], None], clock: Clock) -> None:
        self.threads = threads
        self.clock = clock
        self.relay = relay
        self.inbox = inbox
        self.runs = runs
        self.data_dir = data_dir
        self.resources = resources
        self.finish = finish
        self.unblock = unblock
        self.busy = 0  # in flight: waiting for the loop thread, or running
        # Ids whose ended runs still execute on abandoned threads (see abandon).
        self.stuck: Counter[str] = Counter()
        self.waiting: deque[tuple[Run, type[BaseTool], dict[str, Any]]] = deque()
        # No run starts while set: the processor's background import of numpy and pandas
        # is under way (see processor.startup.BackgroundImports), whose failure would
        # leave a tool that imports them beside it half-made modules.
        self.held = False
        # With SPOOL_PRELOAD_QUANT off: asked with the next run's tool before it starts;
        # True when it started the background import that tool needs (held now, the run
        # waits for it, outside its time).  Run by the tool itself, that import counted
        # against the job's timeout, and one cut short (out of descriptors) left numpy
        # and pandas half-made for every later FAST job, or crashed the processor.
        self.import_for: Callable[[type[BaseTool]], bool] | None = None
        self.said_slow: set[str] = set()  # tools whose slow runs were said (note_slow)

    @property
    def running(self) -> int:
        """FAST runs in flight (claimed, waiting for the loop thread or running): the
        status file's ``fast_running``.  An abandoned thread's run is over, recorded
        ``timeout`` or ``cancelled``: it is no FAST job running, and its tool may never
        return (the warning that abandoned it counts those threads)."""
        return self.busy - (self.stuck.total() if self.stuck else 0)

    def has_room(self) -> bool:
        """Another run may start: not held, in flight below the bound, and not too many
        stuck."""
        if self.held:
            return False
        stuck = self.stuck.total() if self.stuck else 0  # usually empty: no sum then
        return (self.busy - stuck < self.threads
                and stuck < STUCK_FAST_PER_THREAD * self.threads)

    def start(self, run: Run, tool: type[BaseTool], params: dict[str, Any]) -> None:
        """Run ``run`` at the top of the loop thread's next step (after this pass's
        flush); ``params``: its own copy, as a tool may change them."""
        self.busy += 1  # run_tool validates its params, as it does in a worker
        self.waiting.append((run, tool, params))

    def run_next(self) -> bool:
        """Run the first waiting run on this (the loop) thread; False when none waits."""
        if not self.waiting or self.held:
            return False
        if self.import_for is not None and self.import_for(self.waiting[0][1]):
            return False
        self._run_inline(*self.waiting.popleft())
        return True

    def returned(self, run: Run, outcome: Outcome, at: float) -> None:
        """A run's tool returned, at ``at`` (monotonic), on a thread the loop had moved
        away from.  Judged by that time, not this one: the loop, held meanwhile (a write
        to a log nobody read, 4 s), failed a tool that had returned in 0.2 of its 0.5 s
        ``timeout`` (h358).  The loop reads the event before it next looks for runs past
        their time (``expire``, after the pass's drain of the inbox)."""
        self.busy -= 1
        self._unstick(run)
        if not self._pending(run):
            return
        run.end(self.clock, at)  # its record's duration_s and finished_at too
        if not self.timed_out(run, at):
            self.note_slow(run, outcome)
            self.finish(run, outcome)

    def note_slow(self, run: Run, outcome: Outcome) -> None:
        """Say, once per tool, a FAST run of :data:`SLOW_FAST_S` or more that ended in
        time.  A FAST tool that took seconds was done without a word, while the FAST jobs
        beside it waited on the processor (an ``echo`` took 1.4 s instead of 0.4 s): its
        author had nothing telling them it is COMPUTE work (QA h395)."""
        tool = run.job.tool
        if (outcome.duration_s < SLOW_FAST_S or tool in self.said_slow
                or run.tool in SHIPPED_TOOLS):
            return  # (a built-in's first get_kline of a large file: nothing to declare)
        self.said_slow.add(tool)
        log.warning("a FAST tool ran for over a second; FAST tools run in the processor "
                    "and must stay light (under 100 ms): declare execution_mode = "
                    "ExecutionMode.COMPUTE to run it in a worker (said once per tool)",
                    extra={"fields": {"id": run.claim.job_id, "tool": tool,
                                      "duration_s": round(outcome.duration_s, 3)}})

    def deadlines(self) -> Iterator[float]:
        """The deadlines the loop must wake for: those of runs still awaiting an outcome."""
        return (r.deadline for r in self.runs.values() if r.mode is ExecutionMode.FAST
                and r.begun and not r.abandoned and not r.finishing)

    def expire(self, now: float) -> None:
        """Fail ``timeout`` every run past its deadline."""
        for run in list(self.runs.values()):
            if (run.mode is ExecutionMode.FAST and run.begun and not run.abandoned
                    and not run.finishing):
                self.timed_out(run, now)

    def timed_out(self, run: Run, now: float) -> bool:
        """True, with the run failed ``timeout``, once ``now`` is past its deadline."""
        if now < run.deadline:
            return False
        self.abandon(run)  # a thread still running it cannot be killed
        self.finish(run, Outcome(run.claim.job_id, ErrorType.TIMEOUT,
                                 f"FAST tool past its {seconds_text(run.timeout_s)} "
                                 "timeout (its thread is abandoned)", retryable=True,
                                 duration_s=now - run.started))
        return True

    def abandon(self, run: Run) -> None:
        """End a run whose tool may still be running: its result will be ignored."""
        run.abandoned = True
        if run.executing and not run.stuck:
            run.stuck = True
            self.stuck[run.claim.job_id] += 1
            if capture.installed():  # no FAST job runs, for what tools change (capture)
                capture.abandoned(run.claim.job_id, run.job.tool)
            log.warning("a FAST tool is still running after its run ended; its thread is "
                        "abandoned", extra={"fields": {"id": run.claim.job_id,
                                                       "tool": run.job.tool,
                                                       "abandoned_threads":
                                                       self.stuck.total()}})

    def _run_inline(self, run: Run, tool: type[BaseTool], params: dict[str, Any]) -> None:
        """Run a FAST tool on the loop thread; its outcome is posted if the loop moved on."""
        job_id = run.claim.job_id
        if not self._pending(run):
            self.busy -= 1  # ended (cancelled) before it started
            return
        # Its time runs from here, as a COMPUTE job's from its worker's start: counted
        # from the claim, a loop held up before it (a log reader that stopped reading, a
        # SIGSTOP) failed runs that never began ``timeout``, their threads "abandoned" (QA).
        run.started = time.monotonic()
        run.begun = True

        def report(fraction: float, message: str) -> None:
            self.inbox.post(("progress", job_id, fraction, message, run))

        ctx = Context(job_id, self.data_dir, report, self.resources,
                      abandoned=lambda: run.abandoned)
        run.executing = True
        still_loop, outcome = self.relay.run_inline(run_tool, tool, job_id, params, ctx)
        at = time.monotonic()
        run.executing = False
        if not still_loop:
            # This thread is no longer the loop's: the loop judges the run by ``at``.
            self.inbox.post(("fast_done", run, outcome, at))
            return
        self.busy -= 1
        # Still pending: only the loop ends a run, and it was this thread's the whole time
        # (no other thread led meanwhile); it may have run late.
        if not self.timed_out(run, at):
            self.note_slow(run, outcome)
            self.finish(run, outcome)

    def _pending(self, run: Run) -> bool:
        """The run still awaits its outcome: not timed out or cancelled, nor replaced by a
        newer run of its id."""
        return self.runs.get(run.claim.job_id) is run and not (run.abandoned or run.finishing)

    def _unstick(self, run: Run) -> None:
        """An abandoned run's tool returned at last: its id may run again."""
        if not run.stuck:
            return
        run.stuck = False
        job_id = run.claim.job_id
        self.stuck[job_id] -= 1
        if self.stuck[job_id] <= 0:
            del self.stuck[job_id]
            self.unblock(job_id)
