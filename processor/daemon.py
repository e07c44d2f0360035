"""The ``spool-processor`` daemon: watch, classify, run, record.

One thread owns every decision.  It reads the change feed itself (names
that moved in ``pending/`` and ``cancel/``, from inotify:
:mod:`processor.discovery`), the local pool's workers (their results and
deaths, :mod:`processor.pool`) and the stop signals (SIGTERM, SIGINT,
SIGHUP: see :mod:`processor.stop_signals`), and runs FAST tools in place,
handing the loop to a standby thread when one holds it
(:mod:`processor.relay`); everything else only posts events to its inbox: a
Dask executor (progress, outcomes, room again after a connect), a FAST tool's
thread once the loop has moved on.  The loop wakes on an event or on the
nearest timer (rescan, heartbeat, ``not_before`` or a backoff's end, FAST deadline,
shutdown grace), so it never polls busily.

Life of a job here: intake judges the file (:mod:`spool.intake`); a ready job
waits in the FAST or COMPUTE queue (highest priority, then oldest); it is
claimed only when the FAST lane or a COMPUTE worker has room, so other
processors can take what this one cannot start; its outcome becomes a record
in ``done/`` or ``failed/``, or a requeue with backoff while attempts remain
(DESIGN section 9, :mod:`processor.finish`).

This module owns the loop (its wake-ups, the inbox's events, the dispatch, the
outcomes) and the I/O pause; :mod:`processor.lifecycle` the order of start-up and
stop, on this module's :class:`Processor` and its stop flags.  The Processor holds
one of each of its collaborators, each owning its own fields:
:class:`~processor.discovery.Discovery` (what to look at),
:class:`~processor.queues.Queues` (ready jobs in priority order, delayed, blocked),
:class:`~processor.starter.Starter` (the claim and a run's start),
:class:`~processor.fast_lane.FastLane` (FAST runs on the loop thread, their
deadlines and stuck threads), :class:`~processor.finish.Finisher` (records),
:class:`~processor.cancel_requests.CancelRequests` (what ``cancel/`` asks),
:class:`~processor.periodic_scan.PeriodicScan` (recovery and the periodic scan),
:class:`~processor.status.StatusFile` and :class:`~processor.progress.ProgressFiles`
(the advisory files), :class:`~processor.stop_signals.StopSignals`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from processor import lifecycle, logs, signal_report
from processor.cancel_requests import CancelRequests
from processor.discovery import Discovery
from processor.elsewhere import RESTART_GRACE_S, OtherCatalogues
from processor.executor import ComputeExecutor
from processor.fast_lane import FastLane
from processor.fd_reserve import DescriptorReserve
from processor.finish import Finisher
from processor.inbox import Event, Inbox
from processor.notify import SystemdNotifier, WaitingLogPinger
from processor.periodic_scan import PeriodicScan
from processor.progress import ProgressFiles
from processor.queues import Queues
from processor.registry import Registry
from processor.relay import Relay
from processor.run import Run
from processor.runner import Outcome, Resources
from processor.starter import Starter
from processor.status import StatusFile
from processor.stop_signals import StopSignals
from processor.tools import ExecutionMode
from spool.claim import BackgroundCloser
from spool.clock import Clock, SystemClock
from spool.errors import QuarantineRefused, SpoolIOError, UnreadableDrop
from spool.ids import JOB_SUFFIX
from spool.intake import Candidate, Intake
from spool.large import HEAD_BYTES, found_fields, leading_fields, read_record
from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import MAX_ATTEMPTS_LIMIT, Job, record_bytes
from spool.settings import Settings
from spool.states import JobState
from spool.text import valid_text
from spool.transitions import Spool

log = logging.getLogger("spoolq.processor")


HEARTBEAT_S = 1.0
IO_BACKOFF_S = (0.5, 30.0)
_MOST_DOUBLINGS = 64
"""The doublings of the first pause counted at most: 2 ** 64 times it is past the longest."""
HANDOFF_S = 0.01
"""A FAST tool holding the loop thread this long moves the loop to its standby."""
DISPATCH_BUDGET_S = 0.05
"""The most one pass spends starting a lane's runs (see ``_dispatch_lane``)."""


_MODES = tuple(ExecutionMode)
"""Iterating an enum class runs a Python generator (0.6 us for two members, 0.15 here)."""


def others_at_start(settings: Settings, owner: str) -> OtherCatalogues:
    """The tools the other processors on the spool offer, first read now: as the lease is
    taken, before the tools load, so that one offering a tool this processor does not load
    and stopping while they load is remembered for a restart's grace (its stop's grace,
    taken to be this one's, then RESTART_GRACE_S).  Read first once they had loaded, a
    processor slow to load them knew nothing of one that stopped cleanly meanwhile (or
    died, its files removed by a recovery) and failed the waiting jobs of its tool
    ``unknown_tool`` at once (h414: the rolling-upgrade soak, --processors 3, seed 3:
    46 and 260 of 825)."""
    return OtherCatalogues(Layout(settings.spool_dir), owner, HEARTBEAT_S,
                           settings.grace_s + RESTART_GRACE_S)


class Processor:
    """One processor on one spool; :meth:`run` returns the exit status."""

    def __init__(self, settings: Settings, registry: Registry, executor: ComputeExecutor, *,
                 clock: Clock | None = None, notifier: SystemdNotifier | None = None,
                 lease: tuple[str, OwnerLease] | None = None,
                 others: OtherCatalogues | None = None) -> None:
        """``lease``: an owner id and its lease taken before the tools loaded
        (:func:`lifecycle.lease_before_tools`); else they are made at the start.
        ``others``: the others' catalogues read as that lease was taken
        (:func:`others_at_start`); else read now."""
        self.settings = settings
        self.data_dir = settings.data_dir  # a property that joins a path on each call
        self.registry = registry
        self.executor = executor
        self.clock: Clock = clock or SystemClock()
        self.notifier = notifier or SystemdNotifier.from_env({})
        self.log_pinger = WaitingLogPinger(self.notifier, logs.waiting_since)
        self.spool = Spool.from_settings(settings, self.clock, recycle=True)
        self.closer = BackgroundCloser()
        self.reserve = DescriptorReserve()  # for records, when descriptors run out
        self.spool.closer = self.closer.close
        self.layout = self.spool.layout
        self.inbox = Inbox()
        self.owner = lifecycle.owner_id() if lease is None else lease[0]
        self.lease: OwnerLease | None = None if lease is None else lease[1]
        self.relay = Relay(self._step, HANDOFF_S, on_lead=logs.set_loop_thread)
        self.runs: dict[str, Run] = {}
        self.queues = Queues(self._mode_of)
        self.stopping = False  # this and the grace period: set by lifecycle.begin_stop
        self.exit_status = 0  # lifecycle.restart's EXIT_RESTART once it asked for one
        self.spool_moved = False  # see lifecycle.spool_moved
        self.lease_trouble = False  # its lock file gone, not made again yet
        self.grace_deadline = 0.0
        self.grace_ends_at: datetime | None = None  # the status file's copy of the deadline
        self.next_heartbeat = 0.0
        self.next_watchdog = 0.0
        self.io_pause_until = 0.0
        self.io_failures = 0
        self.io_trouble: dict[str, Any] | None = None  # the status file's (IoTrouble)
        self.executor_up = False  # started (or starting), not shut down: close shuts it
        self.resources: dict[str, Any] = Resources()  # FAST jobs share it, on threads
        self.fast = FastLane(settings.fast_threads, self.relay, self.inbox, self.runs,
                             data_dir=self.data_dir, resources=self.resources,
                             finish=self._finish, unblock=self._release_blocked,
                             clock=self.clock)
        self.discovery = Discovery(settings, self.layout, self.inbox, Intake(
            self.spool, max_job_bytes=settings.max_job_bytes, settle_s=settings.settle_s,
            clock=self.clock), ready=self.queues.ready, enqueue=self.queues.add,
            withdraw=self.queues.withdraw)
        self.status = StatusFile(self.spool, self.owner, executor, self.clock,
                                 registry.catalogue())
        # A restart of the processor that offers a tool: its stop's grace (taken to be
        # this one's), then its start (RESTART_GRACE_S).
        if others is None:
            self.others = others_at_start(settings, self.owner)
        else:  # read again, before the recovery removes what crashes left meanwhile
            self.others = others
            others.read_now()
        self.finisher = Finisher(self.spool, self.clock, self.status, self.max_attempts,
                                 self._end)
        self.starter = Starter(self.spool, self.clock, registry, self.discovery,
                               runs=self.runs, fast=self.fast, executor=executor,
                               data_dir=self.data_dir, max_attempts=self.max_attempts,
                               finish=self._finish)
        self.cancel_requests = CancelRequests(self.spool, self.discovery, self.queues,
                                              runs=self.runs, fast=self.fast,
                                              executor=executor, finish=self._finish,
                                              io_trouble=self._io_trouble)
        self.periodic = PeriodicScan(settings, self.spool, self.discovery,
                                     max_attempts=self.max_attempts,
                                     io_trouble=self._io_trouble,
                                     still_ours=lambda: lifecycle.spool_still_ours(self))
        self.progress = ProgressFiles(self.spool, self.owner, self.clock, self.runs,
                                      self.status)
        self.unfinished: list[tuple[Run, Outcome]] = []
        # Outcomes held until their processes are surely over (see _on_finished).
        self.lingering: list[tuple[float, Run, Outcome]] = []
        self.freed: list[Outcome] = []
        self.signals = StopSignals(self.inbox, self._begin_stop, self._report)
        self.saved_stdio: tuple[Any, Any] | None = None  # sys.stdout/stderr before capture

    # -- policy -------------------------------------------------------------------------

    def max_attempts(self, job: Job) -> int:
        if job.max_attempts is not None:
            return job.max_attempts
        if job.tool in self.registry:
            return self.registry.get(job.tool).max_attempts
        # Another processor's tool (a rolling upgrade), met by this one's recovery: an
        # orphan that processor left.  Its limit as that one publishes it; else not this
        # processor's to judge: requeued, and the one that claims it applies its own (the
        # limit of 1 failed it "attempt 1 of 1" though its tool allowed 3: h402).  Its run
        # here fails unknown_tool, which is never retried.
        return self.others.max_attempts(job.tool) or MAX_ATTEMPTS_LIMIT

    # -- life cycle ---------------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Run until stopped; ``on_ready`` is called once the status file says "up"."""
        lifecycle.take_hold(self)
        try:
            lifecycle.start(self, on_ready)
            self.relay.start()
            self.relay.wait()
        finally:
            lifecycle.close(self)
        return self.exit_status

    def ready_text(self) -> str:
        """What systemd's STATUS= says while all is well."""
        return f"{self.executor.name} executor, JOB_NUM={self.executor.capacity()}"

    def request_restart(self, why: str) -> None:
        """Stop now and exit for a fresh start (:func:`processor.lifecycle.restart`);
        from any thread."""
        self.inbox.post(("restart", why))

    def release_fast(self) -> None:
        """FAST runs may start again (see ``FastLane.held``); from any thread."""
        self.inbox.post(("release_fast",))

    def _begin_stop(self, signum: int) -> None:
        lifecycle.begin_stop(self, signum)

    def _report(self, signum: int) -> None:
        signal_report.report(self, signum)

    def _step(self) -> bool:
        """One step of the loop, on the loop thread (see :mod:`processor.relay`).

        A FAST run waiting to start runs now, at the top of the loop thread's
        stack: should the loop move to the standby meanwhile, this thread holds
        no daemon state and simply returns.  Otherwise one pass.  False once the
        loop is over.
        """
        if self.spool_moved:
            # First: a FAST run waiting to start would still run and write its record
            # into a spool this process holds no lock in (the review).
            lifecycle.abandon_runs(self)
            return False
        if self.fast.run_next():
            # Its line is out now, not at the end of the next pass: that pass may first
            # wait (100 ms after a run, up to a heartbeat), and the next FAST tool, run
            # in this process, may end it (os._exit, a crash in C) with the line unsaid.
            logs.flush()
            return True
        if self.stopping and (not self.runs or time.monotonic() >= self.grace_deadline
                              or self._none_running()):
            self._finish_lingering(all_of_them=True)  # the lease goes with this process
            self._record_unfinished_now()
            self.executor_up = False  # stop_runs shuts it down first
            lifecycle.stop_runs(self.runs, self.executor, self.spool, self.finisher)
            return False
        self._pass()
        return True

    def _none_running(self) -> bool:
        """Every run left waits for a worker that could not start (out of processes, its
        tools not importable there), or has ended and waits out an I/O pause for its
        record: nothing runs that the grace period would let finish, and the stop goes
        on now, not once it is over."""
        unstarted = self.executor.unstarted()
        ended = {run.claim.job_id for run, _ in self.unfinished}
        return bool(unstarted or ended) and all(
            job_id in unstarted or job_id in ended for job_id in self.runs)

    def _record_unfinished_now(self) -> None:
        """At the stop: the records of runs that ended while the disk refused them are
        tried once more, pause or not; only those refused again are requeued with the
        runs cut short.  All were requeued, as cut short, and a job that had finished
        ran again after the restart (a review: the disk was fine again by then)."""
        if not self.unfinished:
            return
        waiting, self.unfinished = self.unfinished, []
        self.reserve.give_up()  # their leases may hold the descriptors the records need
        for run, outcome in waiting:
            try:
                self.finisher.record(run, outcome)
            except SpoolIOError as exc:
                if not self._recorded_all_the_same(run, exc):
                    self.unfinished.append((run, outcome))
        if self.unfinished:
            # Requeued as cut short, they run again: said, as nothing else did (QA).
            log.warning("runs that finished while the disk refused their records are "
                        "requeued with the runs the stop cuts short: each runs again after "
                        "the restart", extra={"fields": {
                            "ids": [run.claim.job_id for run, _ in self.unfinished][:32],
                            "count": len(self.unfinished)}})

    def _recorded_all_the_same(self, run: Run, exc: SpoolIOError) -> bool:
        """Whether the run's record, whose write raised ``exc`` at the stop, stands in
        ``done/`` or ``failed/`` all the same (its rename landed, then the folder's sync
        failed: EIO, ENOSPC).  Then it is not requeued: requeued, the job was in
        ``pending/`` beside its record, and ran again after the restart (QA, h356).  Its
        running file stays (or its removal's staging, where the sync that failed was that
        removal's), its lease let go, for the next start's recovery, which finds the
        record and drops the file: the record's entry is not known durable, and
        removed now (durably, should ``running/`` sync), a power cut could leave the job
        in no folder at all."""
        job_id = run.claim.job_id
        if run.record.state not in (JobState.DONE, JobState.FAILED):
            return False  # a retry's requeue: known as its own when written again
        try:
            mine, _ = leading_fields(record_bytes(run.record)[:HEAD_BYTES])
            data = read_record(self.layout.job_str(run.record.state, job_id))
            if data is None:
                return False
            there = found_fields(data)
        except (OSError, ValueError):  # not JSON (orjson.JSONDecodeError is a ValueError)
            return False
        if not isinstance(there, dict) or any(
                there.get(key) != mine.get(key)
                for key in ("state", "attempts", "started_at", "host", "pid")):
            return False  # not this run's record: an earlier one of the id, or none
        self.runs.pop(job_id, None)
        run.claim.close()
        # Its running file stands, or its removal's staging (the sync that failed came
        # after the record's): either is recovery's to settle (h376).
        log.warning("a run's record stands though a sync after it failed; not requeued: "
                    "its running file, or what its removal left, is for the next start's "
                    "recovery", extra={
                        "fields": {"id": job_id, "error": str(exc)}})
        return True

    def _pass(self) -> None:
        """One pass: wait for work or a timer, then intake, cancels, dispatch, status."""
        self._wait_and_drain(self._next_wake())
        if self.freed:
            self._after_results()
        now = time.monotonic()
        if self.lingering:
            self._finish_lingering()
        if self.unfinished and now >= self.io_pause_until:
            # First: their leases may hold what the scan's reads need (out of
            # descriptors, a scan that failed first started the pause again, for good).
            self._retry_unfinished()
        if (now >= max(self.discovery.next_scan, self.discovery.scan_floor)
                and not self.discovery.scanning and not self.stopping
                and time.monotonic() >= self.io_pause_until and lifecycle.lease_stands(self)):
            self.periodic.run()  # its writes would only fail again while paused
        self._intake()
        if time.monotonic() >= self.io_pause_until:
            self.cancel_requests.handle()
        self.fast.expire(now)
        if self.progress.due:
            self.progress.write_due(now)
        if not self.stopping and time.monotonic() >= self.io_pause_until:
            self._dispatch()  # never while the records of finished runs cannot be written
            if self.discovery.scanning and not self.spool_moved:
                # A slice of the rescan a pass, once this pass's drops are judged and
                # claimed: a FAST job waits one slice at most (see Discovery.scan_more).
                self.periodic.more()
        if now >= self.next_heartbeat:
            self.heartbeat()
        if now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + (self.notifier.watchdog_interval_s or 3600.0)
        logs.flush()

    def _next_wake(self) -> float:
        now = time.monotonic()
        discovery = self.discovery
        intake = discovery.waiting and not self.stopping  # stopping: drops wait for the next start
        scanning = discovery.scanning and not self.stopping and not self.spool_moved
        if now >= self.io_pause_until and (intake or scanning or discovery.cancels
                                           or self._can_dispatch()):
            return 0.0  # (intake, cancels and claims wait out an I/O pause)
        wakes = [self.next_heartbeat, self.next_watchdog]
        if not self.stopping:
            wakes.append(max(discovery.next_scan, discovery.scan_floor, self.io_pause_until))
            if discovery.held:
                wakes.append(max(discovery.held_until, self.io_pause_until))
        else:
            wakes.append(self.grace_deadline)
        if (due := self.queues.next_due()) is not None and not self.stopping:
            wakes.append(max(now + due, self.io_pause_until))  # stopping: no more claims
        if self.progress.due:
            wakes.append(min(self.progress.due.values()))
        if self.io_pause_until > now:
            wakes.append(self.io_pause_until)
        wakes.extend(self.fast.deadlines())
        wakes.extend(until for until, _, _ in self.lingering)
        return max(0.0, min(wakes) - now)

    def _can_dispatch(self) -> bool:
        """A lane has queued work and room for it (a run that ends inline posts nothing)."""
        lanes = self.queues.lanes
        return not self.stopping and any(lanes[mode] and self._has_room(mode)
                                         for mode in _MODES)

    def _wait_and_drain(self, timeout: float) -> None:
        self.inbox.wait(timeout)  # reads the polled feed too: see Discovery.on_change
        while (event := self.inbox.get()) is not None:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        kind = event[0]
        if kind == "fs":
            self.discovery.on_change(event[1], event[2])
        elif kind == "progress":
            self.progress.report(event[1], event[2], event[3], *event[4:])
        elif kind == "finished":
            self.freed.append(event[1])  # handled after the pass: see _after_results
        elif kind == "fast_done":
            self.fast.returned(event[1], event[2], event[3])
        elif kind == "restart":
            lifecycle.restart(self, event[1])
        elif kind == "release_fast":
            self.fast.held = False  # this pass dispatches
        # "slots" (the executor has room again: connected, workers joined) only wakes
        # the loop: this pass dispatches, as every pass does.

    def _after_results(self) -> None:
        """Workers came free: give them work first, then write the finished runs' records.

        A worker idles from its result until its next task arrives; claiming and
        sending the next task before the records are written keeps that gap to
        the claim alone (W3 in docs/benchmarks.md).
        """
        try:
            if (not self.stopping and not self.unfinished
                    and time.monotonic() >= self.io_pause_until):
                self._dispatch()
        finally:
            freed, self.freed = self.freed, []
            for outcome in freed:
                self._on_finished(outcome)

    # -- discovery ----------------------------------------------------------------------

    def _intake(self) -> None:
        discovery = self.discovery
        if self.stopping or time.monotonic() < self.io_pause_until:
            return
        discovery.release_held(time.monotonic())
        if not discovery.waiting:
            return
        try:
            discovery.intake_batch()
        except QuarantineRefused as exc:
            # That drop's trouble, and it waits: claims go on (a refused record pauses
            # them itself), so the good jobs dropped beside it do not wait behind it.
            discovery.held_until = time.monotonic() + self._trouble(
                exc, "spool I/O trouble; pausing quarantines")
        except SpoolIOError as exc:
            self._io_trouble(exc)

    def _mode_of(self, tool: str) -> ExecutionMode:
        # Unknown tools fail at once: the FAST lane does that without a worker.
        if tool in self.registry:
            return self.registry.get(tool).execution_mode
        return ExecutionMode.FAST

    # -- dispatch -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.discovery.catching_up():
            return  # the start-up's backlog is judged first: it runs in its order
        if not self.reserve.full and not self.reserve.refill():
            return  # short of descriptors: a claim now could leave none for its record
        self._take_back_left()
        self.queues.promote_due()
        try:
            self._dispatch_lane(ExecutionMode.FAST)
            self._dispatch_lane(ExecutionMode.COMPUTE)
        except SpoolIOError as exc:
            self._io_trouble(exc)

    def _has_room(self, mode: ExecutionMode) -> bool:
        """The lane may start another run: FAST below its in-flight bound, a free worker."""
        if mode is ExecutionMode.FAST:
            return self.fast.has_room()
        return self.executor.free_slots() > 0

    def _dispatch_lane(self, mode: ExecutionMode) -> None:
        """Start the lane's queued runs while it has room, for DISPATCH_BUDGET_S at most:
        a start that fails at once (no such tool) frees its room, and one pass failed
        every job taken in while the intake, first come first served, waited, so a
        priority job dropped after 5,000 of them waited for all (QA).  The next pass
        comes at once (:meth:`_can_dispatch`)."""
        queues, lane = self.queues, self.queues.lanes[mode]
        ends = time.monotonic() + DISPATCH_BUDGET_S
        while lane and self._has_room(mode) and time.monotonic() < ends:
            cand = queues.pop(mode, self._running)
            if cand is None:
                return
            if self._left_to_others(cand):
                continue
            try:
                self.starter.start(cand)
            except UnreadableDrop as exc:  # given back: found again at the next scan
                self.discovery.unreadable_file(cand.job_id + JOB_SUFFIX, exc)
            except SpoolIOError:
                queues.add(cand)  # not claimed: it waits for the trouble to pass
                raise

    def _left_to_others(self, cand: Candidate) -> bool:
        """``cand``'s tool is not this processor's but another live processor offers it
        (:mod:`processor.elsewhere`): left in ``pending/`` for that one, parked until no
        other one offers it (:meth:`_take_back_left`), instead of failing ``unknown_tool``
        here."""
        tool = cand.job.tool
        if tool in self.registry or self.others.offered_by(tool) is None:
            return False
        self.queues.park(cand, tool)  # (not looked at again each heartbeat: see Queues)
        return True

    def _take_back_left(self) -> None:
        """The jobs left to others of a tool no other live processor offers any more
        (the catalogues are read once a heartbeat, and afresh before a job fails) go
        back to their lane, to fail ``unknown_tool`` here."""
        for tool in [t for t in self.queues.parked if self.others.offered_by(t) is None]:
            self.queues.unpark(tool)

    def _running(self, job_id: str) -> bool:
        """A run of ``job_id`` goes on here: in this processor's runs, or still on an
        abandoned FAST thread."""
        return job_id in self.runs or job_id in self.fast.stuck

    def _release_blocked(self, job_id: str) -> None:
        """Queue the drop that waited for ``job_id``'s runs to end, once none is left."""
        if not self._running(job_id):
            self.queues.unblock(job_id)

    # -- outcomes -----------------------------------------------------------------------

    def _on_finished(self, outcome: Outcome) -> None:
        """A COMPUTE run's outcome, from the executor."""
        run = self.runs.get(outcome.job_id)
        if run is None or run.mode is not ExecutionMode.COMPUTE:
            return
        if run.abandoned:
            return  # already finished as timeout or cancelled
        until = self.executor.linger_until(outcome.job_id)
        if until is not None and until > time.monotonic() and not self.stopping:
            # A kill no worker confirmed (a Dask worker frozen by SIGSTOP): the job's
            # process may run on until its Deadman ends it.  Recorded now, its running
            # file went, and a retry or the requeued run ran the id twice at once (QA:
            # 9.7 s); held, the id stays claimed, here and for every processor, and the
            # outcome is recorded once that process is surely over.
            run.finishing = True  # a cancel now asks for nothing more
            self.lingering.append((until, run, outcome))
            log.warning("a killed job's worker does not answer: its end is recorded once "
                        "its process is surely over (its own time limit)",
                        extra={"fields": {"id": outcome.job_id, "tool": run.job.tool,
                                          "in_s": round(until - time.monotonic(), 1)}})
            return
        self._finish(run, outcome)

    def _finish_lingering(self, *, all_of_them: bool = False) -> None:
        """Record the held outcomes whose processes are surely over (at a stop: all)."""
        now = time.monotonic()
        due = [item for item in self.lingering if all_of_them or item[0] <= now]
        self.lingering = [item for item in self.lingering if item not in due]
        for _, run, outcome in due:
            self._finish(run, outcome)

    def _finish(self, run: Run, outcome: Outcome) -> None:
        run.finishing = True
        # Its duration ends now, not when a full disk lets it be written; a COMPUTE run's
        # when its worker sent its result, not when the loop (held, say) read it.
        run.end(self.clock, outcome.ended)
        if time.monotonic() < self.io_pause_until:
            self.unfinished.append((run, outcome))  # the disk is in trouble: wait in line
            return
        try:
            self.finisher.record(run, outcome)
        except SpoolIOError:
            self.unfinished.append((run, outcome))  # kept with its claim; retried after a pause

    def _retry_unfinished(self) -> None:
        waiting, self.unfinished = self.unfinished, []
        # Out of descriptors, these runs' leases may hold the last ones: the reserve's
        # are what lets their records be written, and the leases go back.
        self.reserve.give_up()
        for run, outcome in waiting:
            self._finish(run, outcome)
        self.reserve.refill()  # or at the next dispatch, once the closer closed the leases

    def _end(self, run: Run, action: Any) -> None:
        """Apply a finishing transition; on disk trouble keep the run and retry later."""
        job_id = run.claim.job_id
        try:
            action()
        except SpoolIOError as exc:
            self._io_trouble(exc)
            raise
        self.runs.pop(job_id, None)
        self.progress.due.pop(job_id, None)
        if self.queues.blocked:
            self._release_blocked(job_id)
        self.next_heartbeat = min(self.next_heartbeat, time.monotonic() + 0.1)

    def _io_trouble(self, exc: SpoolIOError) -> None:
        self.io_pause_until = time.monotonic() + self._trouble(
            exc, "spool I/O trouble; pausing claims")

    def _trouble(self, exc: SpoolIOError, line: str) -> float:
        """Say ``exc`` (the log ``line``, the status file's io_trouble); the pause, in
        seconds, of what it refused: the outage's backoff, grown at each refusal."""
        self.io_failures += 1
        # The doublings stop counting once past any longest pause: the count is reset
        # only once the outage is over, and at its 1025th try (some 8 h of 30 s pauses)
        # 2 ** 1024 was no float, and the processor crashed.
        doublings = min(self.io_failures - 1, _MOST_DOUBLINGS)
        pause: float = min(IO_BACKOFF_S[1], IO_BACKOFF_S[0] * 2 ** doublings)
        log.error(line, extra={"fields": {"error": str(exc), "pause_s": pause}})
        self.notifier.status(f"{line}: {exc}")  # systemctl status, until it is over
        now = self.clock.now()  # and the status file says so at once
        since = self.io_trouble["since"] if self.io_trouble else now
        # Escaped as the log line's is: a path not UTF-8 (the spool's own, say) gives
        # the message lone surrogates, and orjson would refuse the whole status file.
        self.io_trouble = {"error": valid_text(str(exc)), "since": since,
                           "retry_at": now + timedelta(seconds=pause)}
        self.next_heartbeat = min(self.next_heartbeat, time.monotonic() + 0.1)
        return pause

    def _outage_over(self) -> bool:
        """No pause, no record waiting, and no refusal for as long as any refused write
        takes to be tried again: claims and records at the end of a pause, recovery at its
        next scan, a quarantine once its file has settled.  (A pause over with nothing
        tried since told nothing: a refused recovery or quarantine set and cleared it at
        every try, and an alert on it never fired.)"""
        now = time.monotonic()
        paused_until = max(self.io_pause_until, self.discovery.held_until)
        retried_by = paused_until + max(self.settings.scan_s, self.settings.settle_s) + (
            2 * HEARTBEAT_S)
        return now >= retried_by and not self.unfinished and not self.discovery.held

    # -- status -------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Write the status file now (start-up and the stop call this too)."""
        self.next_heartbeat = time.monotonic() + HEARTBEAT_S
        if not lifecycle.lease_stands(self):
            return  # the status file would go into a spool this process holds no lock in
        self.discovery.rewatch()  # watched again: what came meanwhile is found by a rescan
        if self.io_trouble is not None and self._outage_over():
            # The backoff is the outage's, and starts again with the next one.  (A dispatch
            # that raised nothing reset it: one that claimed nothing, or claimed into
            # running/ while failed/ refused a quarantine, so each retry of the refused
            # write paused claims for the first pause again, and was tried at that pace.)
            self.io_trouble = None
            self.io_failures = 0
            if not self.stopping:
                self.notifier.status(self.ready_text())
        if not self.stopping:
            # A local pool starts here the workers that could not start before, and hands
            # them the tasks that waited (no dispatch asks while no job is queued).
            self.executor.free_slots()
        self.progress.say_where(time.monotonic())
        self.others.refresh()  # remembered while they run, for their restart's grace
        self.status.write(self.fast.running, self.stopping, self.grace_ends_at, self.io_trouble,
                          self.queues.left_counts())
