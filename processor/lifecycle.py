"""The processor's start-up and stop, in their order (STYLE 6 and 10).

Functions of the :class:`~processor.daemon.Processor` they start and stop: the
processor holds the state (its collaborators, the lease, the stop flags its loop
reads), this module the order of the steps.  :meth:`Processor.run
<processor.daemon.Processor.run>` calls :func:`take_hold`, :func:`start`, runs the
loop, and :func:`close` in a ``finally``.

Start-up: a short GIL switch interval; the processor becomes the subreaper of what
FAST tools start; the spool's folders are checked and the owner lease taken (most
often taken already, before the tools loaded: :func:`lease_before_tools`); stop
signals are read by the loop and the tools' stdout and stderr become JSON lines.
Then recovery's pass, before the first claim, the executor, the change feed and a
rescan; the status file says "up" (READY to systemd) before ``on_ready`` is called.
A spool the processor cannot write, read or watch is a broken environment:
:class:`~spool.errors.SpoolIOError` (one line, exit status 2), not a crash.

Stop (DESIGN section 9, "Shutdown"): :func:`begin_stop`, at the first stop signal,
sets ``stopping`` (no more intake or claims) and the grace period of
``SPOOL_GRACE_S``; a second signal ends the grace period at once.  Once nothing
runs or the grace period is over, :func:`stop_runs` kills what still runs and
requeues it without counting the attempt (a run whose cancel was asked fails
``cancelled``; one whose id has a newer drop pending fails ``abandoned``; one whose
end the disk fails, its cancel request's lookup say, is left in ``running/`` for
recovery).
:func:`close` then kills the processes FAST tools left, stops the feed, removes the
status file and the lease, and gives back what ``__init__`` and start-up opened.
:func:`restart` is such a stop with no grace period and exit status 75, for a process
whose modules are no longer to be trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from processor import capture, logs, noforks, proctree
from processor.executor import ComputeExecutor
from processor.finish import Finisher
from processor.inbox import InboxSink
from processor.run import Run
from spool.client import require_spool
from spool.errors import ErrorType, SpoolIOError
from spool.fsops import REFUSED, Mover, is_there, os_reason, sticky_owner, sticky_said
from spool.lease import OwnerLease, Standing
from spool.models import ErrorInfo
from spool.settings import Settings
from spool.states import JobState
from spool.transitions import Spool

if TYPE_CHECKING:
    from processor.daemon import Processor

log = logging.getLogger("spoolq.processor")

SWITCH_INTERVAL_S = 0.0001
STOP_MARGIN_S = 15.0
EXIT_RESTART = 75
"""The exit status of :func:`restart`: sysexits' ``EX_TEMPFAIL``, which the unit's
``Restart=on-failure`` starts again (as ``spool-processor``'s own for trouble that
passes at start-up)."""


def take_hold(processor: Processor) -> None:
    """What start-up takes first: the switch interval, the subreaper, the spool's
    folders and the owner lease (unless :func:`lease_before_tools` took it), the stop
    signals and stdio; a step that fails gives the lease back."""
    # The loop thread does many short blocking syscalls, and the pool's timer and a
    # displaced FAST run's thread must get the GIL at once when they wake: a short
    # switch interval keeps them from waiting long for it (0.1 ms).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        proctree.require_own_proc()
        # What FAST tools start stays below this process, double forks too, to be
        # killed at stop (see processor.proctree).
        proctree.prctl(proctree.PR_SET_CHILD_SUBREAPER, 1)
        require_spool(processor.layout)  # EACCES on the root: one line, exit 2
        processor.spool.mover.require_one_mount()
        if processor.lease is None:  # not taken before the tools loaded
            processor.lease = take_lease(processor.spool, processor.owner)
        processor.spool.mover.require_claimable()  # after the lease: a read-only spool's
        # error is the lease's, which says what to do
        # In the try too: out of descriptors for the signals' pipe (exit 75, restarted)
        # left the lock file, one more at each start, each taken by the others for a
        # start that may offer any tool for their grace; release gives back what they
        # installed so far.
        processor.signals.install()
        processor.saved_stdio = capture.install()  # FAST tools' print(): JSON lines
    except BaseException:
        if processor.lease is not None:  # its file left, it read as a start for a minute
            give_back(processor.spool.mover, processor.lease)
            processor.lease = None
        release(processor)
        raise


def start(processor: Processor, on_ready: Callable[[], None] | None) -> None:
    """Recovery, the executor, the change feed and a rescan; then the status file says
    "up" and ``on_ready`` is called."""
    if processor.spool.mover.staging_note is not None:
        log.warning("staging in tmp/, beside the clients' drops: no stage/ of its own",
                    extra={"fields": {"reason": processor.spool.mover.staging_note}})
    pending = processor.layout.folder(JobState.PENDING)
    if (owner := sticky_owner(pending)) is not None:
        # Its own drops run, so a smoke test as the spool user passes, while every other
        # user's waits in pending/ for good (QA: a root-owned 1777 drop folder).
        log.warning("pending/ keeps other users' drops from this processor: %s",
                    sticky_said(pending, owner))
    unless_unusable(processor.periodic.recover)
    # Up before its start: a start that fails part way (out of descriptors at the third
    # worker's pipes) leaves the workers started so far, which close must end too.
    processor.executor_up = True
    processor.executor.start(InboxSink(processor.inbox))
    unless_unusable(processor.discovery.start_feed)
    unless_unusable(processor.discovery.rescan)
    logs.flush()  # the recovery's lines are out before the status file says "up"
    processor.heartbeat()
    processor.notifier.ready(processor.ready_text())
    processor.log_pinger.start()
    log.info("started", extra={"fields": {"owner": processor.owner,
                                          "job_num": processor.executor.capacity(),
                                          "executor": processor.executor.name,
                                          "spool": str(processor.layout.root)}})
    logs.flush()
    if on_ready is not None:
        on_ready()


def lease_before_tools(settings: Settings) -> tuple[str, OwnerLease] | None:
    """An owner id and its lease, taken as the process starts, before its tools load
    (best effort; given to the processor, which then takes none of its own).  The others
    take a lock file with no status file beside it for a processor starting that may
    offer any tool (:mod:`processor.elsewhere`); taken after the tools loaded, half a
    second into the start or more, a processor started beside this one saw nothing of
    it, and failed the jobs of its tools ``unknown_tool`` (the rolling-upgrade soak).
    None when it cannot be taken now: :func:`take_hold` takes it then, after its checks
    of the spool, and says why not."""
    owner = owner_id()
    try:
        spool = Spool.from_settings(settings)
        if not os.path.isdir(spool.layout.owners):  # not a spool: take_hold says so
            return None
        return owner, take_lease(spool, owner)
    except Exception:  # whatever it is, take_hold meets it again and says it
        return None


def give_back(mover: Mover, lease: OwnerLease) -> None:
    """Remove (by ``mover``) and let go an owner lease whose processor does not start (a
    tools module that does not load, a check of the spool that fails); a lock file that
    cannot be removed is left to the next recovery."""
    with contextlib.suppress(OSError, SpoolIOError):
        mover.unlink(lease.path)
    lease.release()


def take_lease(spool: Spool, owner: str) -> OwnerLease:
    """This processor's lease; a spool it cannot write is a broken environment (one
    line, exit status 2), not a crash.  A lock file made but not locked (ENOLCK: a
    network filesystem's lock daemon down) is removed: nobody's, it stayed, and each
    restart while the trouble lasted left one more in ``owners/``.  One that was there
    before is another's: owner ids repeat across pid namespaces (containers sharing a
    host name) once in 65,536 starts, and a live processor's lock file was removed."""
    path = spool.layout.owner_lock(owner)
    try:
        os.lstat(path)
        made = False
    except FileNotFoundError:
        made = True
    except OSError:  # nothing known of it: not this start's to remove
        made = False
    try:
        return OwnerLease(path)
    except OSError as exc:
        with contextlib.suppress(OSError, SpoolIOError):  # the error said is the lease's
            # A regular file there that was not before can only be the one the lease
            # made; anything else there (a symlink) is not this process's to remove.
            if made and stat.S_ISREG(os.lstat(path).st_mode):
                spool.mover.unlink(path, tree=False)
        raise SpoolIOError(f"cannot take the owner lease {path}: {os_reason(exc)}") from exc


def unless_unusable(step: Callable[[], None]) -> None:
    """A start-up step that reads the spool: a folder it cannot read or watch (wrong
    owners after a restore, say) is a broken environment (one line, exit status 2),
    not a crash whose restart every 2 s cannot fix it."""
    try:
        step()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise SpoolIOError(f"cannot use the spool: {exc.strerror or exc}{where}") from exc
    except SpoolIOError as exc:
        # A folder refused mid-run is a pause (fsops.no_access); at the start it is this.
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in REFUSED:
            raise SpoolIOError(f"cannot use the spool: {exc}") from cause
        raise


def begin_stop(processor: Processor, signum: int) -> None:
    """A stop signal, read by the loop: the first starts the grace period, another
    ends it."""
    if processor.stopping:
        # Asked again: the grace period ends now (what is left is killed and
        # requeued, without counting the attempt), as a second Ctrl-C does.
        if processor.grace_deadline > time.monotonic():
            processor.grace_deadline = time.monotonic()
            processor.grace_ends_at = processor.clock.now()
            processor.heartbeat()
            log.info("stopping now", extra={"fields": {
                "signal": signal.Signals(signum).name, "running": len(processor.runs)}})
        return
    processor.stopping = True
    processor.grace_deadline = time.monotonic() + processor.settings.grace_s
    processor.grace_ends_at = processor.clock.now() + timedelta(
        seconds=processor.settings.grace_s)
    processor.heartbeat()  # readers see it stopping now, not at the next heartbeat
    processor.notifier.stopping()
    # systemctl status said the READY line through the whole grace period (QA).
    processor.notifier.status(f"stopping: {len(processor.runs)} running, given up to "
                              f"{processor.settings.grace_s:g} s (SPOOL_GRACE_S)")
    # Let systemd's stop timeout follow SPOOL_GRACE_S, plus time to requeue.
    processor.notifier.extend_timeout(
        int((processor.settings.grace_s + STOP_MARGIN_S) * 1_000_000))
    log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name,
                                           "running": len(processor.runs),
                                           "grace_s": processor.settings.grace_s}})


def restart(processor: Processor, why: str) -> None:
    """This process cannot be trusted to run tools any more (``why``: its background
    import of numpy and pandas was cut short, see
    :class:`processor.startup.BackgroundImports`): stop claiming, end what runs now and
    requeue it without counting the attempt, as a second stop signal does (a FAST run
    finishing on half-made modules could record a wrong result), and exit with
    :data:`EXIT_RESTART` for the service manager to start a fresh process."""
    if processor.exit_status == EXIT_RESTART:
        return
    processor.exit_status = EXIT_RESTART
    log.error("restarting: %s; the modules it left half-made would serve this process's "
              "tools, so what runs is requeued and the process exits %d to be started "
              "afresh", why, EXIT_RESTART, extra={"fields": {"running": len(processor.runs)}})
    _stop_now(processor)
    processor.heartbeat()


def _stop_now(processor: Processor) -> None:
    """Stop claiming, with no grace period: what runs is ended at the loop's next step."""
    if not processor.stopping:
        processor.stopping = True
        processor.notifier.stopping()
        processor.notifier.extend_timeout(int(STOP_MARGIN_S * 1_000_000))
    processor.grace_deadline = time.monotonic()
    processor.grace_ends_at = processor.clock.now()


def lease_stands(processor: Processor) -> bool:
    """Whether the owner lease still holds what others test; False once the spool moved
    under this processor (:func:`spool_moved`).

    Looked at with each heartbeat and before each periodic recovery pass.  Its lock file
    removed or replaced in the same spool (an operator's ``rm``), the lease is taken
    again: readers called the processor down meanwhile, but its claims' locks are on the
    same files and held, so no recovery took its jobs."""
    standing = _looked_at(processor)
    if standing is None or standing is Standing.MOVED:
        return not processor.spool_moved
    lease = processor.lease
    if standing is Standing.GONE and lease is not None:
        try:
            lease.take_again()
        except (OSError, RuntimeError) as exc:
            if not processor.lease_trouble:  # one line, not one a heartbeat
                log.warning("its owner lock file is gone and could not be locked again "
                            "(tried at each heartbeat); readers call this processor down "
                            "until it is", extra={"fields": {
                                "path": str(lease.path), "error": str(exc)}})
            processor.lease_trouble = True
        else:
            processor.lease_trouble = False
            log.warning("its owner lock file was removed or replaced: locked again",
                        extra={"fields": {"path": str(lease.path)}})
    return True


def spool_still_ours(processor: Processor) -> bool:
    """Whether the spool's path still names the directory this processor locks its
    owner file and runs in, asked by its recovery pass once it has locked a file there
    and before it changes it (see :func:`spool.orphans.ours_checked`).  Stricter than
    :func:`lease_stands`: a root that cannot be looked at (unmounted, not yet mounted
    again) is not taken for ours; one known to be another stops the processor (as
    :func:`lease_stands` would at its next heartbeat)."""
    standing = _looked_at(processor)
    if standing is None:
        return not processor.spool_moved
    return standing in (Standing.HELD, Standing.GONE)


def _looked_at(processor: Processor) -> Standing | None:
    """The owner lease's standing, the processor stopped (:func:`spool_moved`) when it
    is MOVED; None with no lease to look at (none yet, or the spool moved already)."""
    lease = processor.lease
    if processor.spool_moved or lease is None:
        return None
    standing = lease.standing()
    if standing is Standing.MOVED:
        spool_moved(processor)
    return standing


def spool_moved(processor: Processor) -> None:
    """The spool's root is another directory than the one this processor locked its
    owner file and claims in (the spool remounted: a FUSE mount's locks are its own; or
    unmounted lazily): nobody sees those locks, so another processor's recovery, or this
    one's, may take its running jobs and run them again beside it.  It stops at once:
    its runs are killed and left as they are, not requeued nor recorded (their files may
    be another's claims by now), and it exits :data:`EXIT_RESTART`; the next start's
    recovery requeues them, their attempts counted, as after a crash."""
    processor.spool_moved = True
    processor.exit_status = EXIT_RESTART
    log.error("the spool at %s is no longer the directory this processor holds its locks "
              "in (remounted, or unmounted): nobody sees them there, and another's "
              "recovery may take its jobs; it stops now, leaves its runs to recovery "
              "(their attempts counted) and exits %d to be started afresh",
              processor.layout.root, EXIT_RESTART,
              extra={"fields": {"running": len(processor.runs)}})
    _stop_now(processor)


def abandon_runs(processor: Processor) -> None:
    """The stop after :func:`spool_moved`: kill what runs and let its leases go, writing
    nothing into the spool."""
    processor.executor_up = False
    processor.executor.shutdown()
    # A run waiting for its record (unfinished, lingering) is in runs too: once each.
    runs = {id(run): run for run in [*processor.runs.values(),
                                     *(run for run, _ in processor.unfinished),
                                     *(run for _, run, _ in processor.lingering)]}
    processor.runs.clear()
    processor.unfinished, processor.lingering = [], []
    for run in runs.values():
        run.claim.close()
    log.info("runs left to recovery", extra={"fields": {
        "ids": sorted(run.claim.job_id for run in runs.values())[:32], "count": len(runs)}})


def stop_runs(runs: dict[str, Run], executor: ComputeExecutor, spool: Spool,
              finisher: Finisher) -> None:
    """Grace is over: kill what still runs and requeue it without counting the attempt
    (a run with a cancel request fails ``cancelled`` instead).  A run whose end the disk
    fails (its cancel request's lookup, its requeue, its record) is left in ``running/``,
    its lease let go, for recovery, and the others are ended all the same: raised, that
    one run's trouble left every run after it in ``running/`` (their attempts then
    counted by the next start's recovery, a job of one attempt failed ``abandoned``) and
    the clean stop exited 75."""
    leftovers = list(runs.values())
    unconfirmed = executor.shutdown()
    for run in leftovers:
        runs.pop(run.claim.job_id, None)
        try:
            _stop_run(run, spool, finisher, unconfirmed.get(run.claim.job_id))
        except SpoolIOError as exc:
            run.claim.close()
            log.error("a run the stop cut short is left in running/ for recovery: the "
                      "disk failed its end", extra={"fields": {
                          "id": run.claim.job_id, "tool": run.job.tool, "error": str(exc)}})


def _stop_run(run: Run, spool: Spool, finisher: Finisher, live_until: float | None = None
              ) -> None:
    """End one run the stop cut short: failed ``cancelled`` when its cancel was asked,
    else requeued (failed ``abandoned`` when a newer drop of its id is pending).

    ``live_until``: its kill was not confirmed (a frozen Dask worker), and its process
    may run until then (``time.monotonic``): it is requeued not before then, on the wall
    clock.  Due at once, the next start ran it beside the first run (QA: 13.7 s).

    The request is looked up with :func:`~spool.fsops.is_there`, which raises when the
    disk cannot say (EIO, a stale NFS handle): recovery's pass then cancels the run once
    the request can be looked up (see :mod:`spool.orphans`), at the price of the attempt
    counted.  ``os.path.lexists`` took the error for no request: the run was requeued as
    cut short into a new file, the request (naming the run's file) was dropped as
    another run's, and the job ran again though ``spoolq cancel`` had told the client
    the request stays."""
    job_id = run.claim.job_id
    if is_there(spool.layout.cancel / job_id, f"cannot look up the cancel request of {job_id}"):
        # Its cancel was asked and not yet acted on (the kill's outcome still on the way
        # when the grace ended): the cancel wins over a requeue, as in recovery;
        # requeued, the request would go with the run.
        finisher.fail(run, ErrorInfo(type=ErrorType.CANCELLED,
                                     message="cancelled while running"))
        return
    error = run.job.error  # the end of a backoff already past goes as not_before does
    held = None if live_until is None else spool.clock.now() + timedelta(
        seconds=max(0.0, live_until - time.monotonic()))
    back = run.job.model_copy(update={"not_before": held,
                                      "submitted_at": run.record.submitted_at,
                                      "error": error and error.model_copy(
                                          update={"retry_at": None})})
    if spool.requeue_cut_short(run.claim, back):
        # The attempt cut short, as its claimed line named it (not counted: the job in
        # pending/ keeps its attempts as they were).
        later = {} if held is None else {"not_before": held.isoformat()}
        logs.transition("requeued", id=job_id, tool=run.job.tool, reason="shutdown",
                        attempt=run.record.attempts, **later)
        if held is not None:
            log.warning("a killed job's worker does not answer: requeued to run once its "
                        "process is surely over (its own time limit)", extra={"fields": {
                            "id": job_id, "tool": run.job.tool,
                            "not_before": held.isoformat()}})
    else:
        finisher.fail(run, ErrorInfo(type=ErrorType.ABANDONED, message="processor shut "
                                     "down and a newer drop of the id is pending"))


def close(processor: Processor) -> None:
    """The end of :meth:`Processor.run <processor.daemon.Processor.run>`: what FAST
    tools left is killed, the feed stopped, the status file and lease removed.

    The executor is shut down here when the loop did not get to it (its own start, or a
    start-up step after it, that failed; a loop that crashed): each worker waits for the
    processor's end of its pipe to close, which the pool holds, and ``multiprocessing``
    joins its children at exit, so the error line was printed and the process never
    ended."""
    processor.log_pinger.stop()
    if processor.executor_up:
        processor.executor_up = False
        processor.executor.shutdown()
    killed = proctree.kill_tool_processes()  # the pool's workers are gone already
    if killed:
        log.info("killed processes FAST tools left running", extra={"fields": {
            "pids": killed[:32], "count": len(killed)}})
    processor.discovery.stop_feed()
    processor.discovery.end_rescan()
    processor.spool.mover.drop_spares()
    _flush(processor)
    _remove_own(processor, processor.layout.owner_status(processor.owner))
    if processor.lease is not None:
        _remove_own(processor, processor.layout.owner_lock(processor.owner))
        processor.lease.release()
    processor.signals.say_unsaid()  # the timer signals not said yet: before "stopped"
    log.info("stopped", extra={"fields": {"owner": processor.owner}})
    logs.flush()
    release(processor)


def _flush(processor: Processor) -> None:
    """Make the last group of writes durable (``SPOOL_FSYNC=batch``) at the stop; a sync
    the disk fails (EIO, ENOSPC) leaves them made, only not known durable: said in a
    warning, and the stop goes on.  Raised, it ended the stop before its status file and
    lock were removed and its "stopped" line said, with exit status 75 (QA: strace's EIO
    on every ``syncfs``)."""
    try:
        processor.spool.mover.flush()
    except SpoolIOError as exc:
        log.warning("cannot make the spool's last writes durable at the stop; they are "
                    "made, as under SPOOL_FSYNC=never", extra={"fields": {"error": str(exc)}})


def _remove_own(processor: Processor, path: Path) -> None:
    """Remove this processor's status or lock file at its stop; one that cannot be (its
    ``owners/`` made unwritable meanwhile) is left, said in a warning: unlocked, it is a
    dead owner's, which the next recovery removes.  Raised, it ended a stop whose runs
    had all finished with exit status 2, which systemd does not restart (QA)."""
    try:
        processor.spool.mover.unlink(path)
    except SpoolIOError as exc:
        log.warning("cannot remove its own file in owners/; the next recovery removes it",
                    extra={"fields": {"error": str(exc)}})


def kill_late_tool_processes() -> None:
    """The processor's last step, as it exits: forbid this process to start processes
    (:mod:`processor.noforks`), then kill what FAST tool code started since
    :func:`close`'s kill of what FAST tools left.  Python threads cannot be killed, so a
    thread a tool left, or a FAST run the grace period cut short, runs on until the process
    exits; a process it started meanwhile (the rest of the stop, the exit's own steps) was
    found by no walk and outlived the processor outside systemd.  Without the ban a kill
    here still left a window up to the exit (a CI run at load saw one survive it).  An
    ``atexit`` function registered once the daemon has run, so the first of the exit's
    (they run last registered first), before even the log is shut."""
    sealed = noforks.forbid_new_processes()
    killed = proctree.kill_tool_processes()
    if killed:
        log.info("killed processes FAST tools started during the stop", extra={"fields": {
            "pids": killed[:32], "count": len(killed), "new_processes_forbidden": sealed}})
        logs.flush()


def release(processor: Processor) -> None:
    """Close what __init__ opened: the closer thread, the inbox pipe, the spool's watch;
    and give the signals back (on the main thread, where run() installed them)."""
    processor.closer.stop()
    processor.reserve.give_up()
    processor.spool.close()
    processor.inbox.close()
    if processor.saved_stdio is not None:
        capture.uninstall(processor.saved_stdio)
        processor.saved_stdio = None
    processor.signals.restore()


def owner_id() -> str:
    """``<host>-<pid>-<12 hex digits>``: containers share host names and pids (two "box",
    pid 1), and 4 hex digits met in 1 of 65,536 starts, the second processor refused
    its lease (QA).  The host is cut so the random part is never cut off."""
    host = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "-"
                   for c in socket.gethostname())  # "héllo": no valid id (review)
    return f"{host.strip('.-_')[:96] or 'host'}-{os.getpid()}-{os.urandom(6).hex()}"
