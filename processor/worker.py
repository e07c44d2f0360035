"""The body of one COMPUTE worker process.

Started by :class:`~processor.pool.LocalPool` through a forkserver that has
numpy, pandas and the tools preloaded (with ``SPOOL_PRELOAD_QUANT`` off, a worker
imports numpy and pandas before its first quant job, outside that job's time:
:func:`load_quant`).  Each worker:

* leads its own session, so a timeout kills it *and* what its tool started
  with one ``killpg``;
* dies with the processor (``PR_SET_PDEATHSIG``), so no job runs unowned;
* is a child subreaper, so after each job it can kill every process the tool
  left behind, however deeply forked;
* optionally caps its address space (``SPOOL_WORKER_MEMORY_MB``) and exits
  after ``SPOOL_WORKER_MAX_JOBS`` jobs, after a job that ran out of memory, or,
  under a cap, after a job that left less than half the headroom it had when ready
  (what its jobs keep would fail a later one: :mod:`processor.address_space`), to be
  replaced with a fresh one;
* writes its tool's output (``print``, C code, child processes) to the pipes its
  parent gave it as fds 1 and 2 (the local pool, or the Dask task that started
  it), and its own log lines to a copy of its stderr (:mod:`processor.stdio_pipes`);
  its stdin is ``/dev/null``;
* puts back after each job what its tool changed in the process (descriptors,
  streams, working directory, umask, logging, timers, signal handlers:
  :mod:`processor.process_state`), and logs what threads it left running print
  as that job's (:mod:`processor.stray_threads`);
* keeps its own deadline for each job (:class:`Deadman`): should whoever
  enforces it stop (a Dask worker frozen by ``SIGSTOP``, a stopped
  processor), the job still dies :data:`DEADMAN_GRACE_S` after its time is up,
  before the processor's backstop records it ``timeout`` and retries it
  elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import os
import pickle
import resource
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

from processor.address_space import MIB, MemoryBudget
from processor.executor import WorkerConfig
from processor.logs import repair as repair_logging
from processor.logs import setup_logging, tag_lines_with
from processor.mp_children import ToolForkserver, allow_children
from processor.process_state import ProcessState
from processor.proctree import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    children_of,
    kill_descendants,
    prctl,
)
from processor.quant.tools import COMPUTE_TOOLS
from processor.registry import load_registry
from processor.runner import (
    DEADMAN_EXIT,
    WORKER_CAP_MB,
    Context,
    Outcome,
    Resources,
    raised,
    ran_out_of_memory,
    run_tool,
)
from processor.startup import QUANT_PRELOAD, stdin_from_devnull
from processor.stdio_pipes import redirect
from processor.stray_threads import StrayThreads
from spool.early_stops import REPORT_SIGNALS, STOP_SIGNALS
from spool.errors import ErrorType, SpoolError

log = logging.getLogger("spoolq.worker")

PROGRESS_INTERVAL_S = 0.05
# Past a job's timeout, how long its worker waits for the parent's kill before killing
# itself: well inside the Dask executor's backstop (processor.dask_events.BACKSTOP_S).
DEADMAN_GRACE_S = 2.0
_LONGEST_WAIT_S = 86_400.0


def prepare_process(memory_mb: int) -> None:
    """Session, parent-death signal, subreaper and memory cap for this worker."""
    with contextlib.suppress(OSError):
        os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Sent to the whole unit (``systemctl kill -s HUP``, ``-s USR1``: every process of its
    # cgroup), these are the processor's to act on: it stops after its grace period, or
    # reports, while the job runs on.  By their default action they ended every busy
    # worker, each job failed ``worker_crashed`` (QA).  A handler that does nothing, not
    # SIG_IGN (the forkserver's, for these): a program a tool starts gets the default
    # action back at exec.  SIGKILL, the pool's own, still ends a worker.
    for signum in _LEFT_TO_THE_PROCESSOR:
        signal.signal(signum, _unheeded)
    # Not for a child a tool forks without exec (``multiprocessing``'s ``fork``): its
    # ``terminate()`` did nothing, and a fork Pool's exit hung (a review).  Blocked
    # across the fork, so one sent before the child puts the default back (a
    # ``terminate()`` right after ``start()``) meets the default, not the handler.
    os.register_at_fork(before=_block_for_fork, after_in_parent=_unblock_after_fork,
                        after_in_child=_heed_again)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        WORKER_CAP_MB[0] = memory_mb


_LEFT_TO_THE_PROCESSOR = (*STOP_SIGNALS - {signal.SIGINT}, *REPORT_SIGNALS)


def _unheeded(signum: int, frame: FrameType | None) -> None:
    """A worker's handler of the signals meant for its processor (see prepare_process)."""


_mask_before_fork: list[set[int | signal.Signals]] = []


def _block_for_fork() -> None:
    _mask_before_fork.append(signal.pthread_sigmask(signal.SIG_BLOCK,
                                                    _LEFT_TO_THE_PROCESSOR))


def _unblock_after_fork() -> None:
    if _mask_before_fork:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork.pop())


def _heed_again() -> None:
    """In a child forked from a worker: the default action of those signals back, then
    any of them sent meanwhile delivered (they were blocked across the fork)."""
    for signum in _LEFT_TO_THE_PROCESSOR:
        if signal.getsignal(signum) is _unheeded:
            signal.signal(signum, signal.SIG_DFL)
    _unblock_after_fork()


def worker_main(conn: Connection, config: WorkerConfig, lifeline: Connection,
                output: tuple[Connection, Connection]) -> None:
    """Serve tasks from ``conn``; ``output``: the write ends of the pipes the parent reads
    as this worker's stdout and stderr (see :mod:`processor.stdio_pipes`).  Then exit at
    once: returning, multiprocessing joins every non-daemon thread a job left running,
    and one that sleeps for ever held a retiring worker, and its slot, for good (a review:
    JOB_NUM=1, SPOOL_WORKER_MAX_JOBS=1, every later COMPUTE job pending for ever)."""
    _work(conn, config, lifeline, output)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def _work(conn: Connection, config: WorkerConfig, lifeline: Connection,
          output: tuple[Connection, Connection]) -> None:
    prepare_process(config.memory_mb)
    allow_children()  # a tool's own Pool or ProcessPoolExecutor (see processor.mp_children)
    stdin_from_devnull()
    # Everything written to fds 1 and 2 (print, C code, child processes) goes to the
    # parent, which logs it as the job's; this worker's own log lines do not.
    ends = [os.dup(end.fileno()) for end in output]
    for end in output:
        end.close()
    # A tool's log lines: JSON on stderr like the processor's, each written at once.
    strays = StrayThreads()
    strays.watch_starts()
    setup_logging(config.log_level, redirect(ends[0], ends[1], strays), buffered=False)
    try:
        held = HeldReports(lifeline)  # the lifeline's thread sends held reports too
        deadman = Deadman()
    except RuntimeError as exc:  # out of threads (RLIMIT_NPROC, the cgroup's pids.max)
        # Before its first task is read: the pool gives that task to another worker
        # (see processor.pool), where a crash here failed it as worker_crashed.
        _send(conn, ("fatal", f"cannot start its threads: {exc}"))
        return
    try:
        registry = load_registry(list(config.tool_modules))
    except SpoolError as exc:
        _send(conn, ("fatal", str(exc)))
        return
    repair_logging()  # a tool module's dictConfig or basicConfig at import
    # Only now is it offered a task, whose time limit starts as it is sent: a tool module
    # slow to import (a model file, torch) counted against the worker's first job, and
    # failed every COMPUTE job timeout, for ever (each timeout took the worker and its
    # import with it).
    _send(conn, ("ready",))
    try:
        _serve(conn, registry, config, strays, deadman=deadman, held=held)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the processor is gone: so is this worker, quietly
    finally:
        reap_leftovers()


def _serve(conn: Connection, registry: Any, config: WorkerConfig, strays: StrayThreads, *,
           deadman: Deadman, held: HeldReports) -> None:
    resources: dict[str, Any] = Resources()  # (a tool's own threads may ask too)
    state = ProcessState(strays)  # what a job may change in this process, put back after it
    done = 0
    # Lines logged while a job runs are that job's, and a thread a job left running
    # logs as that job's (see StrayThreads.job_of).
    running: list[tuple[str, str] | None] = [None]
    tag_lines_with(lambda: strays.job_of(running[0]))
    tool_forkserver = ToolForkserver()
    budget = MemoryBudget(config.memory_mb)  # ready: what the worker uses before any job
    while True:
        task = conn.recv()  # Task.fields(): plain data, as the result goes back
        job_id, tool, _, timeout_s, _, _ = task
        running[0] = (job_id, tool)
        spoiled = None
        if quant_to_load(registry, tool):
            # Outside the job's time, as a tool module's import is at the worker's start;
            # its room under the cap is measured again after, as a preloaded worker's is
            # when ready (measured before, the 130 MB the import maps took half of a
            # 384 MB cap's room: a worker retired after each quant job, its successor
            # importing again).
            spoiled = load_quant(conn)
            budget = MemoryBudget(config.memory_mb)
        deadman.arm(timeout_s + DEADMAN_GRACE_S)
        progress = Progress(conn, job_id, held)
        strays.job_started()
        try:
            # Failed by the import's own error, as its run's own import failed it.
            outcome = (_run(progress, registry, task, resources) if spoiled is None
                       else raised(job_id, spoiled))
            if outcome.error_type is ErrorType.INVALID_PARAMS and outcome.message:
                outcome.message += _params_differ(registry, tool, config.params)
        finally:
            progress.close()  # no report goes out after this: the result comes next
            fired = deadman.disarm()
        if fired:
            # Past its deadline, the Deadman is killing what the tool started (a child it
            # waited on: so the tool came back, with the child's -9) and then this worker:
            # a result now is no run's, and it was recorded done (QA h395).  Wait for
            # the end; the job fails timeout.
            threading.Event().wait()
        strays.job_ended(job_id, tool)
        # Logged as the job's: running[0] still names it.  Not of multiprocessing's
        # forkserver, which a tool's closed Pool or ProcessPoolExecutor leaves each job.
        if killed := reap_leftovers(not_named=tool_forkserver.started()):
            # Killed without a word, a tool's helper process (a server it meant to
            # keep, a pool it did not close) just vanished (h395).
            log.info("processes the job left running were killed at its end",
                     extra={"fields": {"count": len(killed), "processes": killed[:32]}})
        running[0] = None
        tool_forkserver.forget()  # killed with the rest: the next job's pool starts one
        done += 1
        # An import cut short (spoiled) left half-made modules behind: never run on.
        retiring = spoiled is not None or bool(
            config.max_jobs and done >= config.max_jobs) or _spent(budget, outcome, tool)
        # A retiring worker is never offered again.
        # With the moment it went out: the processor's loop may read it seconds later
        # (held in a write to a log nobody reads), and the record's times are the run's.
        _send(conn, ("done", outcome.fields(), retiring, time.monotonic()))
        if retiring:
            return
        # Put back what the job changed while the processor claims the next one: that
        # job is read only after this, so it still starts in the state the first did.
        state.restore()


def quant_to_load(registry: Any, name: str) -> bool:
    """A run of tool ``name`` needs numpy, pandas and the quant tools' computations
    (:data:`QUANT_PRELOAD`) imported first (:func:`load_quant`): a built-in quant COMPUTE
    tool (:data:`~processor.quant.tools.COMPUTE_TOOLS`) while they are not loaded yet
    (``SPOOL_PRELOAD_QUANT`` off: the forkserver did not preload them).  Loaded (the
    preload on, or an earlier job's), or another tool: False, and nothing is sent.  (A
    Dask executor's job processes have them preloaded always; its supervisor passes
    over both messages.)"""
    try:
        tool = registry.get(name)
    except SpoolError:
        return False  # _run says so
    return issubclass(tool, COMPUTE_TOOLS) and not all(m in sys.modules
                                                        for m in QUANT_PRELOAD)


def load_quant(conn: Connection) -> BaseException | None:
    """Import :data:`QUANT_PRELOAD` before a task's run (:func:`quant_to_load`), outside
    the job's time, as a slow tool module's import at the worker's start is:
    ``("loading",)`` first, on which the pool gives the task
    :data:`~processor.executor.READY_WAIT_S` more, then ``("ready",)``, on which its
    time starts again.  Imported by the job's own run, they took 0.3 to 0.85 s of its
    time limit (a busy 2-CPU host): a quick ``run_backtest`` of ``"timeout": 0.25``
    failed ``timeout`` as a worker's first quant job, and again on the fresh worker of
    each retry.

    An error of the import is returned, the first (None when there was none): raised
    here, it ended the worker and failed the job ``worker_crashed``.  The job fails with
    it (:func:`~processor.runner.raised`), not run, and the worker retires: an import
    cut short leaves half-made modules in ``sys.modules`` (pandas' compiled ones, after
    a MemoryError under ``SPOOL_WORKER_MEMORY_MB``), and the run's own import then
    failed "partially initialized module 'pandas'", or crashed the worker with
    SIGSEGV, on that job and on every later quant job the worker took (h354)."""
    _send(conn, ("loading",))
    spoiled: BaseException | None = None
    for module in QUANT_PRELOAD:
        try:
            importlib.import_module(module)
        except Exception as exc:
            spoiled = spoiled or exc
    _send(conn, ("ready",))
    return spoiled


def _spent(budget: MemoryBudget, outcome: Outcome, tool: str) -> bool:
    """The job ran out of memory, or left less than half the headroom the worker had
    when ready: what it kept (a module's cache, a fragmented heap) holds the address
    space, and would fail the next jobs of this worker.  Logs one line if so."""
    fields: dict[str, Any] = {"id": outcome.job_id, "tool": tool, "pid": os.getpid()}
    if budget.cap:
        fields["cap_mb"] = budget.cap // MIB
    if ran_out_of_memory(outcome):
        log.info("worker retires: its job ran out of memory", extra={"fields": fields})
        return True
    used = budget.exhausted()
    if not used:
        return False
    fields.update(used_mb=used // MIB, ready_mb=budget.ready // MIB)
    log.info("worker retires: %d MB of its address space in use after the job, of a "
             "%d MB cap (%d MB when ready): less than half its headroom is left",
             used // MIB, budget.cap // MIB, budget.ready // MIB, extra={"fields": fields})
    return True


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    """``conn.send(message)`` with plain pickle: a worker's messages are plain data, and
    multiprocessing's pickler (reducers for sockets and descriptors) is a Python-level
    class, 2 us more a message."""
    conn.send_bytes(pickle.dumps(message))


class Deadman:
    """Kills every process below this worker, then the worker (exit status
    :data:`DEADMAN_EXIT`), once an armed deadline passes: the job's own time limit,
    for when the parent that enforces it cannot act.

    One thread, woken only when a deadline comes sooner than the one it sleeps
    towards: with one timeout for every job, arming costs a lock, not a wake-up.
    Disarmed, it still sleeps towards the latest deadline armed while that is ahead:
    a job over before the thread looked (it needs the GIL, which the job's thread
    holds until it waits for its next task) would otherwise leave it asleep for
    good, and the next job's arming would have to wake it, one wake-up per job.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline = math.inf  # the armed deadline (monotonic), inf when disarmed
        self._latest = -math.inf  # the latest deadline armed so far
        self._wake_at = math.inf  # when the thread next looks, at the latest
        self._fired = False  # the armed deadline passed: the kill is under way
        threading.Thread(target=self._watch, name="deadman", daemon=True).start()

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._latest = max(self._latest, self._deadline)
            if self._deadline < self._wake_at:
                self._cond.notify()

    def disarm(self) -> bool:
        """No deadline armed; True when the armed one had passed already (too late: the
        kill is under way, and ends this worker)."""
        with self._cond:
            self._deadline = math.inf  # the thread finds it so when it next looks
            return self._fired

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                if now >= self._deadline:
                    break
                self._wake_at = min(self._deadline,
                                    self._latest if self._latest > now else math.inf)
                # Bounded: a lock's wait overflows on a timeout of 1e300 s.
                self._cond.wait(None if math.isinf(self._wake_at)
                                else min(self._wake_at - now, _LONGEST_WAIT_S))
            self._fired = True  # (under the lock: a disarm from now on knows)
        # Everything below this worker (it is their subreaper, so that is every process
        # its tools started), then the worker itself, with a status that says why.  Not
        # reaped: the forkserver, a subreaper too, reaps what this worker leaves.  The
        # worker ends whatever the walk raises: an error out of it ended this thread,
        # and the job ran on past its limit.
        try:
            kill_descendants(os.getpid())
        finally:
            os._exit(DEADMAN_EXIT)


class HeldReports:
    """Sends a held progress report once its interval is up, from the thread that
    watches the lifeline (``lifeline``; none in tests): no report starts a thread, and
    the worker has no thread more for it (each thread of a worker takes a stack and a
    64 MB malloc arena of its address space, under ``SPOOL_WORKER_MEMORY_MB`` too)."""

    def __init__(self, lifeline: Connection | None = None) -> None:
        self._lock = threading.Lock()
        self._due: tuple[float, Progress] | None = None
        self._lifeline = lifeline
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        threading.Thread(target=self._serve, name="lifeline", daemon=True).start()

    def schedule(self, progress: Progress, at: float) -> None:
        """Send ``progress``' held report at ``at`` (monotonic) unless cancelled."""
        with self._lock:
            self._due = (at, progress)
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self._wake_w, b"\0")

    def cancel(self, progress: Progress) -> None:
        with self._lock:
            if self._due is not None and self._due[1] is progress:
                self._due = None

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self._lifeline is not None:
            poller.register(self._lifeline.fileno(), select.POLLIN)
        while True:
            send = None
            with self._lock:
                timeout: float | None = None
                if self._due is not None:
                    left = self._due[0] - time.monotonic()
                    if left <= 0:
                        send, self._due = self._due[1], None
                    else:
                        timeout = min(left, _LONGEST_WAIT_S)
            if send is not None:
                with contextlib.suppress(Exception):  # one failed send ends no later ones
                    send.send_held()
                continue
            for fd, _ in poller.poll(None if timeout is None else math.ceil(timeout * 1000)):
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                else:
                    assert self._lifeline is not None
                    _die_with_processor(self._lifeline)


class Progress:
    """A tool's progress reports to the processor, at most one per
    :data:`PROGRESS_INTERVAL_S`: one that comes sooner is held, and sent by ``held``
    (:class:`HeldReports`) when the interval is up unless a newer one replaces it, so the
    last report before a silent stretch of work is never lost (with no ``held``, it goes
    with the next report past the interval).  Sends happen under a lock, from the tool's
    thread or ``held``'s, and none after :meth:`close`."""

    def __init__(self, conn: Connection, job_id: str, held: HeldReports | None) -> None:
        self.conn, self.job_id, self.held = conn, job_id, held
        self._lock = threading.Lock()
        self._last = 0.0
        self._held: tuple[float, str] | None = None
        self._scheduled = False
        self._closed = False
        self._done_sent = False  # the last report sent said 1.0: the next 1.0s are paced

    def report(self, fraction: float, message: str) -> None:
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            # The first 1.0 goes at once; each one after it did too, and a tool saying
            # 1.0 100,000 times ("saving...") blocked on each send: 20 s, not 0.13 (QA).
            if now - self._last >= PROGRESS_INTERVAL_S or (
                    fraction >= 1.0 and not self._done_sent):
                self._held = None
                self._send(now, fraction, message)
                return
            self._held = (fraction, message)
            if not self._scheduled and self.held is not None:
                self._scheduled = True
                self.held.schedule(self, self._last + PROGRESS_INTERVAL_S)

    def send_held(self) -> None:
        """Send the report held, if any is (:class:`HeldReports` calls this); one that
        went out directly since it was scheduled has its interval waited out first (two
        reports went 5 ms apart, a review)."""
        with self._lock:
            self._scheduled = False
            if self._held is None or self._closed:
                return
            now, due = time.monotonic(), self._last + PROGRESS_INTERVAL_S
            if now < due and self.held is not None:  # as scheduled: the same sum
                self._scheduled = True
                self.held.schedule(self, due)
                return
            held, self._held = self._held, None
            self._send(now, *held)

    def _send(self, now: float, fraction: float, message: str) -> None:
        self._last = now
        self._done_sent = fraction >= 1.0
        with contextlib.suppress(OSError):  # the processor is gone: the worker follows
            _send(self.conn, ("progress", self.job_id, fraction, message))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.held is not None:
                self.held.cancel(self)


def _run(progress: Progress, registry: Any, task: tuple[Any, ...],
         resources: dict[str, Any]) -> Outcome:
    """Run ``task`` (:meth:`Task.fields <processor.executor.Task.fields>`)."""
    job_id, name, params, _, data_dir, _ = task
    try:
        tool = registry.get(name)
    except SpoolError as exc:
        # The processor knew it, or it would not be here: this worker's modules are not
        # the processor's (a module edited since the processor started; QA).
        return Outcome(job_id, ErrorType.UNKNOWN_TOOL, f"{exc} (in this worker: its tool "
                       "modules differ from the processor's, changed since it started? "
                       "restart the processor)")
    ctx = Context(job_id, _data_dir(data_dir), progress.report, resources)
    return run_tool(tool, job_id, params, ctx)


def _params_differ(registry: Any, name: str, theirs: tuple[tuple[str, str], ...]) -> str:
    """A note for a job's ``invalid_params`` when this worker's tool takes other params
    than the processor's (a module edited since the processor loaded it): the
    processor's catalogue (``spoolq tools``) then shows params the tool no longer takes,
    and the error said nothing of it.  By the params' JSON Schema, not the module's
    time: a worker still running the old code, or a module touched but unchanged, was
    told to restart the processor over params that were simply wrong (h329)."""
    processors = dict(theirs).get(name)
    try:
        mine = registry.params_digest(name)
    except KeyError:
        return ""
    if processors is None or processors == mine:
        return ""
    return (" (in this worker: the tool takes other params than the processor's, whose "
            "catalogue shows the ones it loaded; its module changed since the processor "
            "started? restart the processor)")


@functools.lru_cache(maxsize=4)
def _data_dir(path: str) -> Path:
    return Path(path)  # the same folder for every task: parse it once


def _die_with_processor(lifeline: Connection) -> None:
    """Block on the lifeline; EOF means the processor is gone: end everything below this
    worker (its subreaper: what its tools started, in sessions of their own too, which
    would otherwise run on beside the job's next run), then this session, now."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    with contextlib.suppress(OSError):
        kill_descendants(os.getpid())
    with contextlib.suppress(OSError):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os._exit(1)


def reap_leftovers(not_named: frozenset[int] = frozenset()) -> list[str]:
    """Kill and reap every process a tool left behind (this worker is their subreaper);
    they are named (``pid (name)``) in the list returned, but those in ``not_named``
    (``multiprocessing``'s forkserver: named, it was said of every job whose tool ran a
    pool and closed it, as if the tool had left it running).

    Done when the kernel says no child is left (``waitpid``): in the usual case that is
    one syscall, and no ``/proc`` read.  Each round kills the children and waits for
    them; their own children come to this worker (their subreaper), killed next round.
    """
    killed: list[str] = []
    for _ in range(50):
        try:
            os.waitpid(-1, os.WNOHANG)  # reaps one that already exited, if any
        except ChildProcessError:
            return killed  # no child (left)
        children = children_of("self")  # none: just reaped, by the line above or a tool
        for pid in children:
            if pid not in not_named:
                killed.append(f"{pid} ({_name_of(pid)})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return killed


def _name_of(pid: int) -> str:
    """A process's name (``/proc/PID/comm``), "?" when gone or not told."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as comm:
            return comm.read().decode(errors="replace").strip() or "?"
    except OSError:
        return "?"
