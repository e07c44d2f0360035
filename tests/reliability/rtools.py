"""Hostile tools for the reliability suite, loaded by the daemon under test (SPOOL_TOOLS=rtools).

Every process a tool starts carries the job's ``marker`` in its command line,
so a test can prove with psutil that none of them survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

_SLEEPER = "import sys, time\nwhile True: time.sleep(1)"


class AbuseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    marker: str = "rtools"
    seconds: float = 0.0
    mb: int = 0
    path: str | None = None


def _sleeper(marker: str, *, new_session: bool = False) -> subprocess.Popen[bytes]:
    """A python child that sleeps forever and ignores SIGTERM, ``marker`` in its argv."""
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + _SLEEPER
    return subprocess.Popen([sys.executable, "-c", code, marker],
                            start_new_session=new_session, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class ForkAndReturn(BaseTool):
    """Leaves behind a child, a child in a new session, a bare fork() and a double-forked
    daemon (each ignoring SIGTERM), then returns at once."""

    name: ClassVar[str] = "r_fork_return"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        pids = [_sleeper(params.marker).pid, _sleeper(params.marker, new_session=True).pid]
        pid = os.fork()
        if pid == 0:  # a bare fork: becomes a marked sleeper through exec
            os.execv(sys.executable, [sys.executable, "-c", _SLEEPER, params.marker])
        pids.append(pid)
        daemonizer = subprocess.Popen(  # double fork: the grandchild is orphaned at once
            ["sh", "-c", f"{sys.executable} -c '{_SLEEPER}' {params.marker} "
                         ">/dev/null 2>&1 </dev/null & echo $!"],
            stdout=subprocess.PIPE)
        out, _ = daemonizer.communicate()
        pids.append(int(out.decode().strip()))
        return ToolResult.ok({"pids": pids})


class IgnoreTerm(BaseTool):
    """Ignores SIGTERM (and so does a child it starts), then sleeps in Python."""

    name: ClassVar[str] = "r_ignore_term"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 600.0
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _sleeper(params.marker)
        deadline = time.monotonic() + params.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return ToolResult.ok()


class Allocate(BaseTool):
    """Allocates ``mb`` MiB in 64 MiB blocks, touching every page."""

    name: ClassVar[str] = "r_allocate"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        blocks = []
        for _ in range(params.mb // 64):
            blocks.append(b"\x01" * (64 << 20))
        return ToolResult.ok({"allocated_mb": 64 * len(blocks)})


class AllocateNumpy(BaseTool):
    """One numpy array of ``mb`` MiB (a C-level allocation)."""

    name: ClassVar[str] = "r_allocate_numpy"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        import numpy as np  # noqa: PLC0415 - preloaded by the forkserver anyway

        array = np.ones(params.mb << 17, dtype=np.float64)
        return ToolResult.ok({"allocated_mb": array.nbytes >> 20})


_HOARD: list[bytes] = []
"""What :class:`Hoard` keeps: its worker's module global, never freed."""


class Hoard(BaseTool):
    """Allocates ``mb`` MiB in 64 MiB blocks and keeps them (a cache that only grows)."""

    name: ClassVar[str] = "r_hoard"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        for _ in range(params.mb // 64):
            _HOARD.append(b"\x01" * (64 << 20))
        return ToolResult.ok({"hoarded_mb": 64 * len(_HOARD)})


class AllocateInChild(BaseTool):
    """Starts a marked child that allocates ``mb`` MiB; reports how the child ended."""

    name: ClassVar[str] = "r_allocate_child"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        code = f"x = bytearray({params.mb} << 20)"
        child = subprocess.run([sys.executable, "-c", code, params.marker],
                               capture_output=True, check=False)
        if child.returncode != 0:
            tail = child.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return ToolResult.error(f"child failed ({child.returncode}): {tail}")
        return ToolResult.ok()


class CloseStdout(BaseTool):
    """Closes its stdout and stderr (the worker's fds 1 and 2), then returns."""

    name: ClassVar[str] = "r_close_stdout"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.close(fd)
        return ToolResult.ok({"closed": [1, 2]})


class Chatty(BaseTool):
    """Opens ``path`` for writing, then prints to stdout and stderr; returns the file's size.

    Run after :class:`CloseStdout` in the same worker: if fd 1 or 2 were left
    closed, the file would take that number and the prints would land in it.
    """

    name: ClassVar[str] = "r_chatty"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        assert params.path
        with open(params.path, "w") as fh:
            print("chatty on stdout", flush=True)
            print("chatty on stderr", file=sys.stderr, flush=True)
            fd = fh.fileno()
        return ToolResult.ok({"fd": fd, "size": os.path.getsize(params.path),
                              "pid": os.getpid()})


class CloseEverything(BaseTool):
    """Closes every descriptor of the worker, its pipe to the processor included."""

    name: ClassVar[str] = "r_close_all"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        os.closerange(0, 65536)
        return ToolResult.ok()


class Silent(BaseTool):
    """Writes its pid to ``path``, then sleeps ``seconds`` without a word (no progress)."""

    name: ClassVar[str] = "r_silent"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 600.0
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        assert params.path
        with open(params.path, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(params.seconds)
        return ToolResult.ok()


class Pid(BaseTool):
    name: ClassVar[str] = "r_pid"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"pid": os.getpid()})


class QuickFast(BaseTool):
    """A FAST echo with a 1 s timeout (so a test can outlast it)."""

    name: ClassVar[str] = "r_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = 1.0
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"marker": params.marker})


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of the exception raised")


class MisreportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str


def _holds_itself() -> object:
    looped: dict[str, object] = {}
    looped["me"] = looped
    return looped


_ODD_KEYS: dict[str, Callable[[], object]] = {
    "holds_itself": _holds_itself,
    "keys_collide": lambda: {"table": {1: "a", "1": "b"}},  # both "1" in JSON
    # no failure: keys that are not strings, none colliding
    "int_keys": lambda: {"by_day": {1: "mon", 2: "tue"}, "by_flag": {None: 0}},
}


_ODD_ERRORS: dict[str, ToolResult] = {
    "int_message": ToolResult(error_message=404),  # type: ignore[arg-type]  # the point
    "error_empty": ToolResult.error(""),
    "error_and_value": ToolResult(value={"rows": 3}, error_message="half done"),
}


def _misreport(case: str) -> ToolResult:
    if case == "unprintable":
        raise _Unprintable()
    if case == "error_none":
        return ToolResult.error(None)  # type: ignore[arg-type]  # the point
    if case == "huge_message":
        raise ValueError("M" * 1_000_000)
    if case == "too_deep":
        nested: list[object] = []
        for _ in range(300):
            nested = [nested]
        return ToolResult.ok(nested)
    if case in _ODD_KEYS:
        return ToolResult.ok(_ODD_KEYS[case]())
    if case in _ODD_ERRORS:
        return _ODD_ERRORS[case]
    if case == "numpy_views":  # no failure: numpy arrays that are views of another
        import numpy as np  # noqa: PLC0415 - only this case needs it
        table = np.arange(12).reshape(3, 4)
        return ToolResult.ok({"column": table[:, 1], "every_other": table[0, ::2],
                              "transposed": table.T, "whole": table})
    return ToolResult.ok(case)


class MisreportFast(BaseTool):
    """Fails in ways a careless tool does (``case``): a non-str error message, an
    exception whose ``__str__`` raises, one with a 1 MB message."""

    name: ClassVar[str] = "r_misreport_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = MisreportParams

    def execute(self, params: MisreportParams, ctx: ToolContext) -> ToolResult:
        return _misreport(params.case)


class MisreportCompute(MisreportFast):
    name: ClassVar[str] = "r_misreport_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE


class Chdir(BaseTool):
    """Changes the working directory to ``path`` and leaves it so (a FAST tool's is the
    processor's)."""

    name: ClassVar[str] = "r_chdir"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        os.chdir(params.path or "/")
        return ToolResult.ok(os.getcwd())


class BrokenValidatorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str

    @field_validator("case")
    @classmethod
    def _check(cls, value: str) -> str:
        if value == "runtime":
            raise RuntimeError("the validator's own bug")
        if value == "exit":
            raise SystemExit(4)
        return value


class BrokenValidatorFast(BaseTool):
    """Params whose validator raises what pydantic does not take for a validation error
    (anything but ValueError and AssertionError): it reaches the caller."""

    name: ClassVar[str] = "r_validator_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = BrokenValidatorParams

    def execute(self, params: BrokenValidatorParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(params.case)


class BrokenValidatorCompute(BrokenValidatorFast):
    name: ClassVar[str] = "r_validator_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE


class ForkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    child_first: bool = False
    """The child returns at once and the parent 0.5 s later (else the other way)."""
    child_exits: int | None = None
    """The child calls ``sys.exit`` with this, and the parent answers its status."""


def _fork_and_both_return(params: ForkParams) -> ToolResult:
    """Forks and forgets ``os._exit`` in the child: both return from ``execute``."""
    pid = os.fork()
    if pid == 0 and params.child_exits is not None:
        sys.exit(params.child_exits)
    if params.child_exits is not None:
        return ToolResult.ok({"child": pid, "status": os.waitstatus_to_exitcode(
            os.waitpid(pid, 0)[1])})
    if pid == 0:
        time.sleep(0 if params.child_first else 0.5)
        return ToolResult.error("the forked child's outcome")
    time.sleep(0.5 if params.child_first else 0)
    return ToolResult.ok({"child": pid})


class ForkBothReturnFast(BaseTool):
    name: ClassVar[str] = "r_fork_both_return_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = ForkParams

    def execute(self, params: ForkParams, ctx: ToolContext) -> ToolResult:
        return _fork_and_both_return(params)


class ForkBothReturnCompute(ForkBothReturnFast):
    name: ClassVar[str] = "r_fork_both_return_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE


class WhereParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chdir: str | None = None
    umask: int | None = None


class Where(BaseTool):
    """Answers the worker's working directory and umask, after changing them for good
    when asked."""

    name: ClassVar[str] = "r_where"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = WhereParams

    def execute(self, params: WhereParams, ctx: ToolContext) -> ToolResult:
        if params.chdir is not None:
            os.chdir(params.chdir)
        mask = os.umask(0o022 if params.umask is None else params.umask)
        if params.umask is None:
            os.umask(mask)  # only looked
        return ToolResult.ok({"cwd": os.getcwd(), "umask": mask, "pid": os.getpid()})


class WhereFast(Where):
    name: ClassVar[str] = "r_where_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class SlowCheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str

    @model_validator(mode="after")
    def _wait(self) -> SlowCheckParams:
        """A check that waits on something slow (a file server, a database): here until
        ``release`` exists, 30 s at most."""
        until = time.monotonic() + 30
        while not os.path.exists(self.release) and time.monotonic() < until:
            time.sleep(0.01)
        return self


class SlowCheck(BaseTool):
    name: ClassVar[str] = "r_slow_check"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = SlowCheckParams

    def execute(self, params: SlowCheckParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok()


class LeaveTimers(BaseTool):
    """Returns with its timers still set (``signal.alarm``, a profiling and a virtual
    interval timer), as a tool that timed itself with them and returned early does."""

    name: ClassVar[str] = "r_leave_timers"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        signal.alarm(1)
        signal.setitimer(signal.ITIMER_PROF, 0.5)
        signal.setitimer(signal.ITIMER_VIRTUAL, 0.5)
        return ToolResult.ok()


class IgnoreChildren(BaseTool):
    """Sets SIGCHLD to SIG_IGN (children reaped by the kernel) and leaves it so."""

    name: ClassVar[str] = "r_ignore_sigchld"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        return ToolResult.ok()


class ChildStatus(BaseTool):
    """Runs ``false`` and answers its exit status."""

    name: ClassVar[str] = "r_child_status"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(subprocess.run(["false"], check=False).returncode)


class Environ(BaseTool):
    """Answers ``SPOOLQ_TEST_VAR`` from its environment, after setting it to ``path``
    for good when asked."""

    name: ClassVar[str] = "r_environ"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        if params.path is not None:
            os.environ["SPOOLQ_TEST_VAR"] = params.path
        return ToolResult.ok(os.environ.get("SPOOLQ_TEST_VAR"))


class StrictParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strict: bool = False


def _strict_or_warn(params: StrictParams) -> ToolResult:
    """Makes warnings and numpy's floating-point errors raise, for good (``strict``);
    else warns and divides by zero, as everyday numeric code does."""
    import warnings  # noqa: PLC0415 - only these tools

    import numpy as np  # noqa: PLC0415
    if params.strict:
        warnings.simplefilter("error")
        np.seterr(all="raise")
        return ToolResult.ok("strict")
    warnings.warn("a harmless warning", UserWarning, stacklevel=1)
    return ToolResult.ok(float(np.float64(1.0) / np.float64(0.0)))


class StrictCompute(BaseTool):
    name: ClassVar[str] = "r_strict_compute"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = StrictParams

    def execute(self, params: StrictParams, ctx: ToolContext) -> ToolResult:
        return _strict_or_warn(params)


class StrictFast(StrictCompute):
    name: ClassVar[str] = "r_strict_fast"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST


class TimeZone(BaseTool):
    """Answers the worker's time zone offset (``time.timezone``), after moving it to
    ``path`` (a TZ value) with ``time.tzset`` when asked."""

    name: ClassVar[str] = "r_timezone"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        if params.path is not None:
            os.environ["TZ"] = params.path
            time.tzset()
        return ToolResult.ok(time.timezone)


_HELD_FDS: list[int] = []


class HoldDescriptors(BaseTool):
    """Takes every descriptor the processor has left, and gives them back ``seconds``
    later (from a timer thread): a FAST tool that leaks them, a full file table."""

    name: ClassVar[str] = "r_hold_fds"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        import threading  # noqa: PLC0415 - only this tool needs it

        def give_back() -> None:
            while _HELD_FDS:
                os.close(_HELD_FDS.pop())

        threading.Timer(params.seconds, give_back).start()
        try:
            while True:
                _HELD_FDS.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass
        return ToolResult.ok({"held": len(_HELD_FDS)})


class LeakDescriptors(BaseTool):
    """Starts a thread that, for ``seconds``, takes every descriptor the processor frees
    (a leak that goes on: a handler opened per use and never closed), then gives them all
    back; returns at once."""

    name: ClassVar[str] = "r_leak_fds"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        import threading  # noqa: PLC0415 - only this tool needs it

        def leak() -> None:
            held: list[int] = []
            until = time.monotonic() + params.seconds
            while time.monotonic() < until:
                try:
                    held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    time.sleep(0.001)
            while held:
                os.close(held.pop())

        threading.Thread(target=leak, daemon=True).start()
        return ToolResult.ok()


class ExitWorker(BaseTool):
    """Ends its worker at once (``os._exit``), as a segfault would."""

    name: ClassVar[str] = "r_exit"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = AbuseParams

    def execute(self, params: AbuseParams, ctx: ToolContext) -> ToolResult:
        os._exit(3)
