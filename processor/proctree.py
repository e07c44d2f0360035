"""The process tree below a pid, read from ``/proc``: for killing what a tool started.

Kept apart from :mod:`processor.worker` so that code which only walks processes (the
pool, the benchmarks) does not import the tools, and numpy with them.

The processor itself is a child subreaper too, for what its FAST tools start (they run
on its threads): an orphan of theirs (a double fork) is re-parented to it instead of to
init, is reaped by :class:`Reaper` once it exits, and is killed at stop with every
other process below the processor but the ``multiprocessing`` helpers
(:func:`kill_tool_processes`), as under systemd the cgroup kill would.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import select
import signal
from collections.abc import Collection

from spool.errors import ConfigError

log = logging.getLogger("spoolq.processor")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Out of descriptors, or under memory pressure (ENOMEM) or a failing kernel (EIO),
# ``/proc`` cannot be read now.  A walk then sees less (the kill of ``pid`` itself and of
# its group needs none), a pass of the reaper reaps nothing; the next ones see the rest.
# Raised, it crashed the processor's loop (QA, each errno in turn).


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)`` for this process, where the platform has it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def kill_descendants(pid: int, spare: Collection[int] = ()) -> list[int]:
    """SIGKILL every live descendant of ``pid`` but ``spare`` and those below them,
    whatever session or group it is in; the pids killed.

    For a worker about to be killed mid-job: a tool's child that started a session of
    its own is out of reach of the worker's ``killpg``, and once the worker is dead
    its descendants belong to init, out of reach of any walk.  Orphans of the tool's
    children were re-parented to the worker (a subreaper), so the walk finds them.

    Walked again until a walk finds no process alive, and only ones that had ended
    (zombies) at the walk before already: a process that ends while it is walked (one
    killed the walk before, still dying) hands its children to the nearest subreaper
    above it (``pid`` itself, for a worker or the processor), whose list may have been
    read already.  Such a walk found it ended and none alive, and the children outlived
    the kill; the next walk finds them.  A walk that finds none at all is the last.
    """
    killed: dict[int, None] = {}
    dead: set[int] = set()  # found ended (a zombie, or gone) by the walk before
    for _ in range(50):  # again until none is left: one may fork while it is walked
        found = descendants(pid, spare)
        live = [p for p in found if _alive(p)]
        if not live and dead.issuperset(found):
            break
        dead = set(found).difference(live)
        for child in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
                killed[child] = None
    return list(killed)


def kill_tree(pid: int, *, group: bool = True) -> bool:
    """SIGKILL ``pid`` and every process below it, descendants first (see
    :func:`kill_descendants`: once ``pid`` is dead they are out of reach); with
    ``group``, its process group too (a worker leads its own session).  False when
    ``pid`` itself could not be killed (gone, or not ours)."""
    kill_descendants(pid)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def descendants(pid: int, spare: Collection[int] = ()) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on; none of ``spare``
    nor of those below them."""
    found, todo = [], children_of(pid)
    while todo:
        child = todo.pop()
        if child not in spare:
            found.append(child)
            todo.extend(children_of(child))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (nor gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:
        return True  # hidden (see parent_of), zombie or not: killed, should it still run
    except OSError:
        return True  # a descendant just listed, untold (see parent_of): killed all the same


def children_of(pid: int | str) -> list[int]:
    """The child pids of ``pid`` (or ``"self"``), from every one of its threads: every
    child it had throughout the read (see :func:`_children_by_thread`); none when this
    process is out of descriptors (see the note above :func:`prctl`), or ``/proc`` fails
    to tell (see :func:`parent_of`)."""
    try:
        by_thread = _children_by_thread(pid)
    except OSError:
        return []
    # Once only: one whose thread ended between the reads of that thread's list and
    # the main thread's is in both.
    return list(dict.fromkeys(child for pids in by_thread.values() for child in pids))


def ignores(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` ignores ``signum`` (its ``SigIgn`` mask); None when it
    cannot be read (gone, hidden)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def parent_of(pid: int) -> int:
    """The parent pid of ``pid``; 0 when it is gone, or hidden from this process.

    Hidden: ``/proc`` mounted ``hidepid=noaccess`` (systemd's ``ProtectProc=noaccess``)
    lists another user's processes but refuses a look inside (EPERM).  Raised, it got
    out of the stop's old scan of every process's parent: the stop crashed, its status
    file and lease left, and what FAST tools started outlived it.  A child of this
    process runs as its user (the unit sets NoNewPrivileges=), but one below it that
    made itself non-dumpable (``ssh-agent``, ``gpg-agent``), or that ran a set-user-ID
    program, is hidden from it all the same, zombie or not: :func:`_read_children` lists
    none below it, :func:`_alive` takes it for running, :func:`_zombie` asks ``waitid``.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        # Gone, hidden, out of descriptors, or /proc failing to tell for now (ENOMEM
        # under memory pressure, EIO): raised, it ended the processor (QA).  Each caller
        # takes 0 for "not its child now" and looks again at its next pass.
        return 0


def kill_orphans(forkserver: int, workers: set[int]) -> None:
    """SIGKILL every child of ``forkserver`` that is not one of ``workers``, with all
    below it: what the tool of a worker that died had started (see
    :mod:`processor.forkserver_init`)."""
    for orphan in children_of(forkserver):
        if orphan not in workers:
            kill_tree(orphan, group=False)


def _zombie(pid: int) -> bool:
    """``pid``, a child of this process, has exited and waits to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:
        # Hidden (see parent_of): asked of the kernel as its parent, without reaping it.
        with contextlib.suppress(ChildProcessError):
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        return False
    except OSError:
        return False  # out of descriptors, /proc failing: reaped at a later pass


def mp_helpers() -> set[int]:
    """This process's ``multiprocessing`` forkserver and resource tracker: children that
    ``multiprocessing`` waits for itself (a pid reaped behind its back breaks its
    restart of them)."""
    pids = (getattr(getattr(multiprocessing.forkserver, "_forkserver", None),
                    "_forkserver_pid", None),
            getattr(getattr(multiprocessing.resource_tracker, "_resource_tracker", None),
                    "_pid", None))
    return {p for p in pids if isinstance(p, int) and p > 0}


ADOPTED_GRACE_S = 10.0
"""How long an exited child listed under the main thread is left for a tool to wait for."""
UNWAITED_S = 600.0
"""How long an exited child of a FAST tool's thread is left for the tool to wait for: far
past any run's end (FAST tools are short), it is a child the tool never waits for."""


class Reaper:
    """Reaps the orphans this process (a subreaper) adopted, once they have exited.

    The kernel gives an adopted orphan to the first live thread of the process, the
    main thread, which never runs a tool: its children are the ``multiprocessing``
    helpers, started from it, and adopted orphans, but also the children of any thread
    that has ended (a tool's thread pool, a displaced loop thread), which the tool may
    still wait for, from another thread.  So a child ever seen under another thread is
    never taken, nor one that has been a zombie for less than :data:`ADOPTED_GRACE_S`
    (a child whose thread ended between two looks) -- until it has been a zombie for
    :data:`UNWAITED_S`: the FAST lane's threads live as long as the processor, and a tool
    that started a child without waiting for it (``os.posix_spawn``, ``os.fork``) left a
    zombie a job, each holding a pid of the unit's, until the processor stopped (QA: 100
    jobs, 100 zombies).  Such a reap is logged once a pass, with how many.
    """

    def __init__(self) -> None:
        self.tools_children: set[int] = set()  # seen under a thread but the main one
        self.zombie_since: dict[int, float] = {}

    def reap(self, now: float) -> int:
        """Reap the adopted orphans that exited (``now``: ``time.monotonic()``); the count."""
        main = os.getpid()
        try:
            by_thread = _children_by_thread(main)
        except OSError:  # out of descriptors, /proc failing (see parent_of)
            return 0  # the next pass looks again: a partial look would forget tools' children
        below_main = by_thread.pop(main, [])
        others = {pid for pids in by_thread.values() for pid in pids}
        self.tools_children = (self.tools_children & set(below_main)) | others
        helpers = mp_helpers()
        zombie_since: dict[int, float] = {}
        reaped = unwaited = 0
        for pid in [*below_main, *others]:
            if pid in helpers or not _zombie(pid):
                continue
            since = self.zombie_since.get(pid, now)
            tools = pid in self.tools_children
            if now - since < (UNWAITED_S if tools else ADOPTED_GRACE_S):
                zombie_since[pid] = since
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped += 1
                    unwaited += tools
        self.zombie_since = zombie_since
        if unwaited:
            log.warning("reaped exited processes FAST tools started and never waited for",
                        extra={"fields": {"count": unwaited, "zombie_for_s": UNWAITED_S}})
        return reaped


_READS = 8
"""Reads of the lists at most, while each differs from the one before (a process that
forks and reaps without a pause): the last is taken."""


def _children_by_thread(pid: int | str) -> dict[int, list[int]]:
    """Each thread of ``pid`` (or ``"self"``) that has children -> their pids: every
    child ``pid`` had throughout the read is in one of the lists (two, if its thread
    ended mid-read), while its main thread (the thread group's leader) is alive, as
    that of a process running Python is.

    The kernel keeps a list of children per thread, and changes it while it is read:

    * a thread that ends has its children moved to the main thread's list.  Read in the
      order the threads are listed, the main thread first, a thread that ended after
      that list was read and before its own left its children in none (taken for "none
      left", they outlived a worker, or a stop).  The main thread's list is read last:
      the children of a thread that ended before that read are in it, those of one that
      ended after it were in its own list, read before.  (The kernel gives them to the
      oldest thread alive: should the main thread have ended, ``pthread_exit``, the
      others are read newest first.)
    * a list is read one child at a time, the next one found by its place in the list
      when the one before it is gone: a child reaped (or moved) while its list is read
      makes the read pass over as many of those behind it.  So the lists are read again
      until two reads agree (the child reaped is in the first, not in the second); a
      read that lists none needs no second, as no child it listed can have gone.
    """
    leader = os.getpid() if pid == "self" else int(pid)
    last: dict[int, list[int]] | None = None
    for _ in range(_READS):
        found = _read_children(pid, leader)
        if found == last or not found:
            return found
        last = found
    return found


def _read_children(pid: int | str, leader: int) -> dict[int, list[int]]:
    """One read of each thread's list (see :func:`_children_by_thread`); none when the
    process is gone, or hidden from this one (see :func:`parent_of`)."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    tids.reverse()  # listed oldest first: newest first, the main thread last
    tids.sort(key=lambda tid: tid == leader)
    found: dict[int, list[int]] = {}
    for tid in tids:
        # Gone: it ended since the listing, and left its children to the main thread.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError), \
                open(f"/proc/{pid}/task/{tid}/children") as fh:
            children = [int(p) for p in fh.read().split()]
            if children:  # a thread with none is left out: reads compare equal without it
                found[tid] = children
    return found


def kill_tool_processes() -> list[int]:
    """SIGKILL every process below this one but the ``multiprocessing`` helpers and theirs
    (the COMPUTE pool stops its workers itself); the pids killed.

    For the processor's stop: what its FAST tools started (and orphans of it, adopted
    by this subreaper) must not outlive it.  Nothing outside this process's tree is
    touched.  Not reaped: a tool's thread may still wait for its own child.

    The loop thread that ran the FAST tools ends as the processor stops: its children
    move to the main thread while they are looked for, which :func:`children_of` reads
    last (a scan of every process's parent pid stood in for it, some 18 us a process on
    the host at each of up to 50 looks, and it had to pass over processes that
    ``hidepid`` hides).
    """
    return kill_descendants(os.getpid(), spare=mp_helpers())


DEATH_UNTOLD_S = 3.0
"""A forkserver's child killed (or being started) whose end (or start) the forkserver
has not told in this long: whether the forkserver was stopped is looked at
(:func:`resume_stopped_child`)."""


def resume_stopped_child(pid: int) -> bool:
    """Resume process ``pid`` (SIGCONT) if it is this process's child (not a pid reused
    since) and a signal stopped it (not a debugger); whether it did.  A forkserver
    stopped so tells no child's end and starts none: the local pool and a Dask worker
    each waited for good (QA)."""
    if not pid or parent_of(pid) != os.getpid() or not stopped(pid):
        return False
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGCONT)
    return True


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (SIGSTOP), which SIGCONT resumes;
    one a debugger holds (``t``) is not."""
    return _state(pid) == b"T"


def idle(pid: int) -> bool:
    """Whether process ``pid`` is asleep (waiting: alive, doing nothing now)."""
    return _state(pid) == b"S"


NO_STATUS = 255
"""A forkserver's child's exit code when its forkserver could not tell one."""
FORKSERVER_END_S = 0.2
"""How long a death of status 255 waits to see whether its forkserver died."""


def ended_with_forkserver(exitcode: int | None, forkserver: int) -> bool:
    """Whether a forkserver's child that ended with ``exitcode`` ended because that
    forkserver died and took it along: its exit code is then multiprocessing's 255 for
    none known, and a job's record said "exited with status 255" (QA).  A forkserver
    asleep is alive (the status was the child's own): no wait then; one busy or exiting
    is given :data:`FORKSERVER_END_S` to end (its descriptors close before it is a
    zombie)."""
    return exitcode == NO_STATUS and bool(forkserver) and ends_within(
        forkserver, 0.0 if idle(forkserver) else FORKSERVER_END_S)


def ends_within(pid: int, wait_s: float) -> bool:
    """Whether process ``pid`` has ended, or ends within ``wait_s`` (a pidfd: a zombie
    has ended; one exiting, its descriptors closed before it is one, ends in a moment)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return _state(pid) in (None, b"Z", b"X")
    try:
        return bool(select.select([fd], [], [], wait_s)[0])
    finally:
        os.close(fd)


def _state(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[0] if fields else None


def require_own_proc(proc: str = "/proc") -> None:
    """ConfigError when ``proc`` is another pid namespace's (one made without a /proc of
    its own: ``unshare --pid --fork`` without ``--mount-proc``): the processes read
    there as this one's children would be another namespace's (the host's init's), and
    the kills of a stop would go to their numbers here.  Nothing without a /proc."""
    try:
        seen = int(os.readlink(f"{proc}/self"))
    except (OSError, ValueError):
        return
    if seen != os.getpid():
        raise ConfigError(f"{proc} is another pid namespace's ({proc}/self is pid {seen}, "
                          f"this process is pid {os.getpid()}): the processes a tool starts "
                          f"could not be told apart; mount a /proc of this namespace (in a "
                          "container, as its runtime does; with unshare, --mount-proc)")
