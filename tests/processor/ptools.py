"""Tools that misbehave on purpose, loaded by the daemon under test via SPOOL_TOOLS."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str | None = None
    seconds: float = 0.0
    pid_file: str | None = None
    mb: int = 0
    retryable: bool = False
    new_session: bool = False
    release: str | None = None
    """A file whose creation ends the work of :class:`Record` or :class:`ProgressBurst`
    at once: a test knows the tool is still working whenever it looks."""
    acks: str | None = None
    """A folder: :class:`Progressive` goes on after its n-th report only once a file
    named n is in it, so a test sees every report however slow the host."""
    owners: str | None = None
    """The spool's owners folder, whose status files :class:`UntilStopping` watches."""


def _work(params: Params) -> None:
    """``seconds`` of work, ended early once the ``release`` file exists."""
    until = time.monotonic() + params.seconds
    while time.monotonic() < until:
        if params.release and os.path.exists(params.release):
            return
        time.sleep(min(0.02, max(0.0, until - time.monotonic())))


def _append(path: str | None, line: str) -> None:
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class Record(BaseTool):
    """Appends 'start <id> <pid>' and 'end <id>' around an optional sleep (see
    ``release``)."""

    name: ClassVar[str] = "t_record"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _append(params.log, f"start {ctx.job_id} {os.getpid()}")
        _work(params)
        _append(params.log, f"end {ctx.job_id}")
        return ToolResult.ok({"pid": os.getpid()})


class UntilStopping(BaseTool):
    """Works until a processor's status file in ``owners`` says it is stopping, then
    0.2 s more (``seconds`` at most): a job still running after a SIGTERM that ends
    within the grace period, however slow the host."""

    name: ClassVar[str] = "t_until_stopping"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        assert params.owners
        until = time.monotonic() + params.seconds
        while time.monotonic() < until and not _stopping(params.owners):
            time.sleep(0.01)
        time.sleep(0.2)
        return ToolResult.ok()


def _stopping(owners: str) -> bool:
    for name in os.listdir(owners):
        if name.endswith(".json"):
            try:
                with open(os.path.join(owners, name), "rb") as fh:
                    if json.load(fh).get("stopping"):
                        return True
            except (OSError, ValueError):  # replaced or half-written: looked at again
                continue
    return False


class FastRecord(Record):
    name: ClassVar[str] = "t_fast_record"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class Crash(BaseTool):
    name: ClassVar[str] = "t_crash"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _append(params.log, f"start {ctx.job_id} {os.getpid()}")
        os._exit(3)


class Segfault(BaseTool):
    name: ClassVar[str] = "t_segv"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        ctypes.string_at(0)
        return ToolResult.ok()


class StuckInC(BaseTool):
    """Blocks inside libc sleep(), with SIGTERM ignored: only SIGKILL ends it."""

    name: ClassVar[str] = "t_stuck"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 600.0
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctypes.CDLL(None).sleep(1000)
        return ToolResult.ok()


class StuckHoldingTheGil(BaseTool):
    """Blocks inside libc sleep() holding the GIL (a ``PyDLL`` call never releases it): no
    other thread of its worker runs, its Deadman included, so only the pool's timer can
    end it at its timeout."""

    name: ClassVar[str] = "t_stuck_gil"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 600.0
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        ctypes.PyDLL(None).sleep(1000)
        return ToolResult.ok()


class ShortLimit(Record):
    """:class:`Record` with a tool timeout of 1 s, which a job's ``timeout`` may only lower."""

    name: ClassVar[str] = "t_short_limit"
    execution_timeout: ClassVar[float] = 1.0


class SpawnAndHang(BaseTool):
    """Starts a child process (pid written to pid_file; in a session of its own with
    ``new_session``, out of reach of a kill of the worker's process group), then hangs."""

    name: ClassVar[str] = "t_spawn_hang"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _spawn_sleeper(params)
        time.sleep(1000)
        return ToolResult.ok()


def _spawn_sleeper(params: Params) -> None:
    """``sleep 1000`` (in a session of its own with ``new_session``), its pid to pid_file."""
    child = subprocess.Popen(["sleep", "1000"], start_new_session=params.new_session)
    assert params.pid_file
    with open(params.pid_file, "w") as fh:
        fh.write(str(child.pid))


class SpawnTreeAndHang(BaseTool):
    """Starts a shell in a session of its own that starts a ``sleep 1000`` of its own
    (the shell's pid to ``pid_file``, the sleep's to ``pid_file``.child), then hangs: a
    grandchild, two levels below the worker."""

    name: ClassVar[str] = "t_spawn_tree_hang"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        assert params.pid_file
        shell = subprocess.Popen(["sh", "-c", 'sleep 1000 & echo $! > "$1.tmp"; '
                                  'mv "$1.tmp" "$1.child"; wait', "sh", params.pid_file],
                                 start_new_session=True)
        with open(params.pid_file, "w") as fh:
            fh.write(str(shell.pid))
        time.sleep(1000)
        return ToolResult.ok()


class SpawnAndCrash(BaseTool):
    """Starts a child process (as :class:`SpawnAndHang`), then its worker dies by itself."""

    name: ClassVar[str] = "t_spawn_crash"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _spawn_sleeper(params)
        os._exit(3)


class SpawnAndReturn(BaseTool):
    """Leaves a grandchild behind (double fork) and returns at once."""

    name: ClassVar[str] = "t_spawn_return"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        proc = subprocess.Popen(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"],
                                stdout=subprocess.PIPE)
        out, _ = proc.communicate()
        assert params.pid_file
        with open(params.pid_file, "w") as fh:
            fh.write(out.decode().strip())
        return ToolResult.ok()


class Hog(BaseTool):
    name: ClassVar[str] = "t_hog"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        block = bytearray(params.mb * 1024 * 1024)
        return ToolResult.ok({"allocated": len(block)})


class Fail(BaseTool):
    name: ClassVar[str] = "t_fail"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _append(params.log, f"start {ctx.job_id} {os.getpid()}")
        return ToolResult.error("failed on purpose", retryable=params.retryable)


class Flaky(BaseTool):
    """Fails (retryably) the first time a job runs, by ``log``; succeeds after that.  Its
    own limit of 3 attempts holds for a job that sets no ``max_attempts``."""

    name: ClassVar[str] = "t_flaky"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    max_attempts: ClassVar[int] = 3
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        assert params.log is not None
        _append(params.log, f"start {ctx.job_id} {os.getpid()}")
        with open(params.log) as log:
            starts = [line for line in log if line.split()[1] == ctx.job_id]
        if len(starts) == 1:
            return ToolResult.error("failed on purpose, the first time", retryable=True)
        return ToolResult.ok({"starts": len(starts)})


class FlakyKinds(BaseTool):
    """Fails a job's first run by outlasting its 1 s timeout and its second by killing its
    worker (counted by ``log``); succeeds from the third, its own limit of attempts."""

    name: ClassVar[str] = "t_flaky_kinds"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 1.0
    max_attempts: ClassVar[int] = 3
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        assert params.log is not None
        _append(params.log, f"start {ctx.job_id} {os.getpid()}")
        with open(params.log) as log:
            starts = [line for line in log if line.split()[1] == ctx.job_id]
        if len(starts) == 1:
            time.sleep(60)  # killed at its timeout
        if len(starts) == 2:
            os._exit(3)
        return ToolResult.ok({"starts": len(starts)})


class Raise(BaseTool):
    name: ClassVar[str] = "t_raise"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        raise ValueError("boom")


class FastBaseException(BaseTool):
    """Raises a BaseException that is no Exception (asyncio's CancelledError) on the loop."""

    name: ClassVar[str] = "t_fast_base_exc"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        raise asyncio.CancelledError("cancelled inside the tool")


class FastHang(BaseTool):
    name: ClassVar[str] = "t_fast_hang"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 0.5
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        time.sleep(params.seconds)
        return ToolResult.ok()


class FastExit(BaseTool):
    """Calls sys.exit() on the processor's loop thread."""

    name: ClassVar[str] = "t_fast_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        sys.exit(3)


class FastOsExit(BaseTool):
    """Ends the processor itself: os._exit(7) on its loop thread (as a crash in C would)."""

    name: ClassVar[str] = "t_fast_os_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        os._exit(7)


class Pid(BaseTool):
    name: ClassVar[str] = "t_pid"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"pid": os.getpid()})


class Progressive(BaseTool):
    name: ClassVar[str] = "t_progress"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        for i in range(1, 11):
            time.sleep(params.seconds / 10)
            ctx.progress(i / 10, f"step {i}")
            if params.acks:
                ack, until = os.path.join(params.acks, str(i)), time.monotonic() + 60
                while not os.path.exists(ack) and time.monotonic() < until:
                    time.sleep(0.01)
        return ToolResult.ok()


class ProgressBurst(BaseTool):
    """Two reports in quick succession, then ``seconds`` of silent work (ended early
    once the ``release`` file exists: the test knows the tool is still working on
    whenever it looks, however slow the host)."""

    name: ClassVar[str] = "t_progress_burst"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        ctx.progress(0.1, "loading")
        ctx.progress(0.5, "computing")
        _work(params)
        return ToolResult.ok()


class FastProgressBurst(ProgressBurst):
    name: ClassVar[str] = "t_fast_progress_burst"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class Logs(BaseTool):
    """Logs an info and a warning line through ``logging``, in its worker."""

    name: ClassVar[str] = "t_log"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        log = logging.getLogger("ptools.t_log")
        log.info("tool info line")
        log.warning("tool warning line")
        return ToolResult.ok()


class LogsFast(Logs):
    """The same lines from a FAST tool, on the processor's own thread."""

    name: ClassVar[str] = "t_log_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class Big(BaseTool):
    """A result of ``mb`` MiB: many reads of the worker's socket before it is whole."""

    name: ClassVar[str] = "t_big"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        time.sleep(params.seconds)
        _append(params.pid_file, str(os.getpid()))  # the result is on its way
        return ToolResult.ok({"blob": "x" * (params.mb << 20), "pid": os.getpid()})


class GcFrozen(BaseTool):
    """How many objects the processor running it froze out of the collector's reach."""

    name: ClassVar[str] = "t_gc_frozen"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(gc.get_freeze_count())


class TimerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timer: str = "alarm"
    """``alarm``: ``signal.alarm(1)``; ``real``, ``virtual``, ``prof``: that
    ``signal.setitimer`` timer, repeating every 50 ms, then 0.2 s of CPU work (which the
    last two count)."""


class FastTimer(BaseTool):
    """Arms a process-wide timer from a FAST tool (the processor's thread) and returns."""

    name: ClassVar[str] = "t_fast_timer"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = TimerParams

    def execute(self, params: TimerParams, ctx: ToolContext) -> ToolResult:
        if params.timer == "alarm":
            signal.alarm(1)
            return ToolResult.ok()
        which = {"real": signal.ITIMER_REAL, "virtual": signal.ITIMER_VIRTUAL,
                 "prof": signal.ITIMER_PROF}[params.timer]
        signal.setitimer(which, 0.05, 0.05)
        # Work until the processor has disarmed the timer (its signal came), 5 s of CPU at
        # most: a fixed 0.2 s of CPU time was, on a loaded VM, too little of the user time
        # ITIMER_VIRTUAL counts (sampled at the scheduler's ticks) for its first 50 ms.
        until = time.process_time() + 5
        while time.process_time() < until and signal.getitimer(which) != (0.0, 0.0):
            pass
        return ToolResult.ok()


class FastPool(BaseTool):
    """A ``multiprocessing.Pool`` of the fork context in a FAST tool: leaving its ``with``
    SIGTERMs the pool's workers (``terminate()``)."""

    name: ClassVar[str] = "t_fast_pool"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return ToolResult.ok(pool.map(abs, [-1, -2]))


class FastFork(BaseTool):
    """A bare ``os.fork()`` in a FAST tool, its child left asleep ``seconds`` (its pid in
    ``pid_file``)."""

    name: ClassVar[str] = "t_fast_fork"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _fork_asleep(params)
        return ToolResult.ok()


def _fork_asleep(params: Params) -> None:
    """A bare ``os.fork()``, its child asleep ``seconds``, its pid in ``pid_file`` (written
    whole: renamed into place)."""
    pid = os.fork()
    if pid == 0:
        time.sleep(params.seconds)
        os._exit(0)
    assert params.pid_file is not None
    with open(params.pid_file + ".tmp", "w") as out:
        out.write(str(pid))
    os.rename(params.pid_file + ".tmp", params.pid_file)


class FastForkStays(BaseTool):
    """A bare ``os.fork()`` in a FAST tool, its child left asleep ``seconds`` (its pid in
    ``pid_file``, written whole), the tool itself still running (as :class:`Record`,
    for ``seconds`` or until ``release``)."""

    name: ClassVar[str] = "t_fast_fork_stays"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 120.0
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _fork_asleep(params)
        _work(params)
        return ToolResult.ok()


_SLOW_CHILD = threading.local()


def _slow_after_fork() -> None:
    """In a child :class:`FastForkKilled` forked: a pause before the processor's own
    after-fork handler runs (registered at this module's import, before the processor
    installs its signals, so it runs first), the window a loaded host leaves."""
    if getattr(_SLOW_CHILD, "on", False):
        time.sleep(0.3)


os.register_at_fork(after_in_child=_slow_after_fork)


class FastForkKilled(BaseTool):
    """A bare ``os.fork()`` in a FAST tool, its child SIGTERMed at once, before its
    after-fork handlers have run (they pause it 0.3 s): the child's fate is the result,
    ``{"signal": n}`` or ``{"exit": n}``.  Its sleep is ``seconds``."""

    name: ClassVar[str] = "t_fast_fork_killed"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        _SLOW_CHILD.on = True
        try:
            pid = os.fork()
        finally:
            _SLOW_CHILD.on = False
        if pid == 0:
            time.sleep(params.seconds)
            os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return ToolResult.ok({"signal": os.WTERMSIG(status)})
        return ToolResult.ok({"exit": os.WEXITSTATUS(status)})


class FastMeddle(BaseTool):
    """Changes what a FAST tool may change in the processor and leaves it so: the working
    directory (to ``log``, a folder) and logging (turned off)."""

    name: ClassVar[str] = "t_fast_meddle"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        assert params.log is not None
        os.chdir(params.log)
        logging.disable(logging.CRITICAL)
        return ToolResult.ok()


class FastState(BaseTool):
    """What a FAST tool finds: the working directory and logging's disable level."""

    name: ClassVar[str] = "t_fast_state"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"cwd": os.getcwd(),
                              "log_disabled": logging.root.manager.disable})


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


class WeirdError(BaseTool):
    """Raises an exception whose ``__str__`` raises KeyboardInterrupt (COMPUTE)."""

    name: ClassVar[str] = "t_weird_error"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        raise _StrRaises


class FastWeirdError(WeirdError):
    name: ClassVar[str] = "t_fast_weird_error"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class StrayThread(BaseTool):
    """Leaves a non-daemon thread sleeping for ever, and returns (COMPUTE)."""

    name: ClassVar[str] = "t_stray_thread"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        threading.Thread(target=time.sleep, args=(10**6,), name="stray").start()
        return ToolResult.ok({"pid": os.getpid()})


class _HangingStdout:
    """A stand-in for sys.stdout whose flush never returns (a lock a tool's thread holds)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        time.sleep(3600)


class HangAtExit(BaseTool):
    """Leaves its worker a sys.stdout that hangs the worker's last flush on its way out."""

    name: ClassVar[str] = "t_hang_at_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        sys.stdout = _HangingStdout()  # type: ignore[assignment]
        return ToolResult.ok(os.getpid())
