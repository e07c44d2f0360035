"""A Dask worker process's job processes, for :mod:`processor.dask_task`.

Owns, per Dask worker process, the children that run COMPUTE jobs: the idle
ones kept for the next job (per :data:`Pool`: the processor start that asked for
them and its :class:`~processor.executor.WorkerConfig`), the ones being
started, and the runs in progress (:class:`Host`, made on
first use by :func:`this_host`: Dask tasks are plain functions, so that state
cannot be passed down from a ``main()``).  Each child runs the same
:func:`~processor.worker.worker_main` as the local pool, started from a
forkserver with numpy, pandas and the tools preloaded.

Guarantees: a child dies with the Dask worker that made it (its lifeline),
every child is killed with every process below it when this worker process
exits, and a child that dies leaves no orphan running (the forkserver adopts
them and they are swept).  A child serves one processor start only: the
``SPOOL_TOOLS`` modules it imported are that start's, so a processor
restarted after they changed gets new children, as the local pool's workers
are new at each start; a start that is over has its idle children killed
(:meth:`Host.retire`).  What the children write is logged as
``spoolq.output`` JSON lines on this process's stderr.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize

from processor import capture
from processor.executor import WorkerConfig
from processor.logs import JsonFormatter
from processor.proctree import (
    DEATH_UNTOLD_S,
    kill_orphans,
    kill_tree,
    parent_of,
    resume_stopped_child,
)
from processor.startup import DASK_PRELOAD
from processor.stdio_pipes import StdioPipes

log = logging.getLogger("spoolq.dask")

LOST = "lost"  # kill reason: the Dask side gave the task up

Pool = tuple[str, WorkerConfig]
"""Whose children: the processor start that asked for them (its event topic, its own at
each start) and the settings they run tools with."""


@dataclass(slots=True)
class Child:
    """One job process of this Dask worker, idle or running a job."""

    process: BaseProcess
    conn: Connection
    lifeline: Connection  # the child dies when this end closes, with this process
    output: StdioPipes  # the read ends of its fds 1 and 2
    jobs: int = 0
    retiring: bool = False  # said so with its last result (max jobs, out of memory)
    ready: bool = False  # it said it loaded its tools (its "ready" was read)

    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed


@dataclass(slots=True)
class Run:
    """One job in progress here, from its task's start to its outcome."""

    key: str
    child: Child | None = None  # None until it has one (a new one may take a second)
    reason: str | None = None
    fatal: str | None = None
    started: float = field(default_factory=time.monotonic)
    expired: bool = False  # its supervisor's own deadline passed (not the processor's kill)


KILLED_KEPT = 4096
"""How many keys killed before their run began a worker remembers (see Host.kill)."""


class Host:
    """This worker process's idle children, children being started, and running jobs."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.idle: dict[Pool, list[Child]] = {}
        self.starting: dict[Pool, int] = {}
        self.runs: dict[str, Run] = {}
        # Keys killed before their run began here (a queued job's cancel): such a task,
        # started later, never runs (see begin).
        self.killed: OrderedDict[str, str] = OrderedDict()
        self._retired: set[str] = set()  # processor starts that are over
        self._ctx: ForkServerContext | None = None
        self._children: set[int] = set()  # every live child's pid (under _SPAWN_LOCK)
        self._forkserver = 0  # their parent's pid, once one was started
        _log_output_as_json()
        # Run by multiprocessing's exit handler before it SIGTERMs the children and waits
        # for them: for good (or until a nanny kills this worker) for one whose tool
        # ignored SIGTERM.  (A Dask worker is a multiprocessing child: atexit is later.)
        Finalize(None, self.end, exitpriority=10)

    def take(self, pool: Pool, beat: Callable[[], object] | None = None,
             every: float = 2.0) -> Child:
        """An idle child (waiting for one being prestarted), else a new one; ``beat`` is
        called every ``every`` seconds while it waits for a child to start.

        The job's time starts once its child loaded its tools, and the processor's backstop
        counts from the job's last word: a start (a forkserver preloading numpy and pandas
        on a loaded host: 3 to 10 s at load 16) said nothing, and one longer than the
        timeout and the backstop failed the job ``timeout`` before it ran."""
        with _beating(beat, every) as waiting:
            dead: list[Child] = []
            try:
                with self.lock:
                    while True:
                        idle = self.idle.setdefault(pool, [])
                        while idle:
                            child = idle.pop()
                            if child.alive():
                                return child
                            dead.append(child)
                        if not self.starting.get(pool):
                            break
                        waiting()
                        self.lock.wait(timeout=1.0)
            finally:
                for child in dead:
                    self.discard(child)
            waiting()
            return self.spawn(pool[1])

    def give_back(self, pool: Pool, child: Child) -> None:
        config = pool[1]
        reusable = child.alive() and not child.retiring and not (
            config.max_jobs and child.jobs >= config.max_jobs)
        with self.lock:
            if reusable and pool[0] not in self._retired:
                self.idle.setdefault(pool, []).append(child)
                self.lock.notify_all()
                return
        self.discard(child)

    def prestart(self, pool: Pool, wanted: int) -> None:
        with self.lock:
            have = sum(c.alive() for c in self.idle.get(pool, []))
            count = max(0, wanted - have - self.starting.get(pool, 0))
            self.starting[pool] = self.starting.get(pool, 0) + count
        for _ in range(count):
            try:
                child = self.spawn(pool[1])
            finally:
                with self.lock:
                    self.starting[pool] -= 1
                    self.lock.notify_all()
            self.give_back(pool, child)

    def retire(self, *, over: str | None = None, live: frozenset[str] | None = None) -> int:
        """Kill the idle children of processor starts that are over: ``over`` (for good:
        a child it gives back later goes too), or every one not in ``live``; how many.
        Children running a job are left to their runs."""
        with self.lock:
            if over is not None:
                self._retired.add(over)
            pools = [pool for pool in self.idle
                     if pool[0] == over or (live is not None and pool[0] not in live)]
            children = [child for pool in pools for child in self.idle.pop(pool)]
        for child in children:
            self.discard(child)
        return len(children)

    def spawn(self, config: WorkerConfig) -> Child:
        ctx = self._context()
        parent, child_end = ctx.Pipe(duplex=True)
        life_r, life_w = ctx.Pipe(duplex=False)
        output = StdioPipes()
        output_ends = output.hand_over()  # the child dups them to its fds 1 and 2
        process = ctx.Process(target=child_main, name="spoolq-dask-child", daemon=True,
                              args=(child_end, life_r, config, output_ends))
        try:
            with _SPAWN_LOCK:
                # Dask worker processes are daemonic by default and multiprocessing
                # refuses children of a daemonic process, to spare them orphans.
                # This child cannot be orphaned: it dies when its lifeline closes
                # (see child_main), at the latest when this process ends.
                me = mp.current_process()
                daemonic = me.daemon
                me.daemon = False
                # A stopped forkserver never answers: the start waited for good (QA).
                watch = threading.Timer(DEATH_UNTOLD_S, self.resume_forkserver)
                watch.daemon = True
                watch.start()
                try:
                    process.start()
                finally:
                    watch.cancel()
                    me.daemon = daemonic
                if process.pid:
                    self._children.add(process.pid)
                    self._forkserver = parent_of(process.pid) or self._forkserver
        except BaseException:
            for end in (parent, life_w):
                end.close()
            output.close()
            raise
        finally:  # the child has its copies (or never started)
            for end in (child_end, life_r, *output_ends):
                end.close()
        return Child(process, parent, life_w, output)

    def _context(self) -> ForkServerContext:
        if self._ctx is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(DASK_PRELOAD)
            self._ctx = ctx
        return self._ctx

    @property
    def forkserver(self) -> int:
        """The pid of the job processes' forkserver, once one was started (else 0)."""
        return self._forkserver

    def resume_forkserver(self) -> None:
        """Resume this Dask worker's forkserver if a signal stopped it (SIGSTOP): stopped,
        it forks no job process and tells no death, so a job's start, or a killed job's
        end, was waited for for good and the jobs behind it with it (QA).  As the local
        pool does (:meth:`processor.pool.Pool._resume_forkserver`)."""
        if resume_stopped_child(self._forkserver):
            log.error("the forkserver of this Dask worker's job processes (pid %d) is "
                      "stopped, so no job process starts and no end is told: resuming it "
                      "(SIGCONT)", self._forkserver)

    def discard(self, child: Child) -> None:
        """Kill and forget a child, and whatever a dead child's tool left running (the
        forkserver adopts it: see :mod:`processor.forkserver_init`)."""
        discard_child(child)
        with _SPAWN_LOCK:  # no child is being started meanwhile, unknown to the sweep
            self._children.discard(child.process.pid or 0)
            if self._forkserver:
                kill_orphans(self._forkserver, self._children)
        child.output.close()  # after the sweep: what its orphans wrote is in the pipes

    def end(self) -> None:
        """This Dask worker process exits: kill every child now, idle or running."""
        with self.lock:
            children = [c for pool in self.idle.values() for c in pool]
            children += [r.child for r in self.runs.values() if r.child is not None]
            self.idle.clear()
        for child in children:
            kill_child(child)
        for child in children:
            child.process.join(timeout=2)

    def begin(self, key: str, run: Run) -> str | None:
        """Register ``run`` of ``key``; the reason instead when ``key`` was killed before
        it began here (its run is not registered, and must not go on)."""
        with self.lock:
            reason = self.killed.pop(key, None)
            if reason is None:
                self.runs[key] = run
            return reason

    def kill(self, key: str, reason: str) -> bool:
        """Kill ``key``'s run here; False when none runs, and then a task of ``key``
        that begins later never runs: a queued job's cancel is told to every worker with
        the scheduler's (:func:`processor.dask_link._cancel`), as the kill that frees
        the job's thread may reach the worker before the scheduler's word (QA h393)."""
        with self.lock:
            run = self.runs.get(key)
            if run is None:
                self.killed[key] = reason
                if len(self.killed) > KILLED_KEPT:
                    self.killed.popitem(last=False)
                return False
            run.reason = run.reason or reason
            child = run.child  # None: it never gets the job (see dask_task.run_task)
        if child is not None:
            kill_child(child)
        return True


_HOST: list[Host] = []
_HOST_LOCK = threading.Lock()
_SPAWN_LOCK = threading.Lock()


def this_host() -> Host:
    with _HOST_LOCK:
        if not _HOST:
            _HOST.append(Host())
        return _HOST[0]


def kill_child(child: Child) -> None:
    if child.process.pid is not None:
        kill_tree(child.process.pid)


def discard_child(child: Child) -> None:
    kill_child(child)
    child.process.join(timeout=2)
    child.conn.close()
    child.lifeline.close()


def child_main(conn: Connection, lifeline: Connection, config: WorkerConfig,
               output: tuple[Connection, Connection]) -> None:
    """The local pool's worker body, dying with the Dask worker that made it.

    A forkserver child's parent is the forkserver, which outlives the Dask
    worker while any of its children runs, so ``PR_SET_PDEATHSIG`` alone
    would let a job run on after its worker died.  The lifeline's write end
    is held only by the Dask worker: ``worker_main`` kills this child's
    session when it reads end of file.
    """
    # Imported here: the forkserver has it preloaded, the Dask worker needs none of it.
    from processor.worker import worker_main  # noqa: PLC0415

    worker_main(conn, config, lifeline, output)


class _OutputHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The children's output, as JSON lines on this Dask worker's stderr."""


def _log_output_as_json() -> None:
    """Have ``spoolq.output`` lines (what the children write to fds 1 and 2, read by the
    supervisors) written as JSON lines on this process's stderr, the processor's shape;
    distributed configures no handler for them.  Left as it is in a process whose
    logging spoolq set up already (a cluster inside the processor, in tests)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        return
    out = capture.log
    if not any(isinstance(h, _OutputHandler) for h in out.handlers):
        handler = _OutputHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        out.addHandler(handler)
        out.setLevel(logging.INFO)
        out.propagate = False


@contextlib.contextmanager
def _beating(beat: Callable[[], object] | None, every: float
             ) -> Iterator[Callable[[], None]]:
    """:meth:`Host.take`'s beats: ``beat`` called every ``every`` seconds from the block's
    start, on a thread of its own started by the first call of the function given (a
    wait for a child, or its spawn: a child idle at once costs no thread), until the
    block ends; nothing without a beat."""
    started_at = time.monotonic()
    done = threading.Event()
    thread: threading.Thread | None = None

    def beating() -> None:
        wait_s = max(0.0, started_at + every - time.monotonic())
        while not done.wait(wait_s):
            assert beat is not None
            beat()
            wait_s = every

    def waiting() -> None:
        nonlocal thread
        if beat is not None and thread is None:
            thread = threading.Thread(target=beating, name="spoolq-start-beat", daemon=True)
            thread.start()

    try:
        yield waiting
    finally:
        done.set()
