"""Helpers shared by the spool tests: a spool on a real directory, a clock the
test moves by hand, where a job sits, and the actor script for real processes.

Not a test module (no ``test_`` prefix); the tests import it by name, pytest
puts this folder on ``sys.path`` (rootdir-relative "prepend" import mode).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import grp
import io
import os
import pty
import pwd
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import psutil  # type: ignore[import-untyped]
import pytest

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import ErrorInfo, Job, Record
from spool.settings import FsyncMode
from spool.staged import STAGING_GRACE_S
from spool.states import JobState
from spool.transitions import Spool

ACTOR = Path(__file__).with_name("spool_actor.py")
REPO = Path(__file__).resolve().parents[2]


class SleepsClock:
    """Stands in for a module's ``time`` (``monkeypatch.setattr(module, "time", clock)``):
    ``monotonic()`` moves only by that module's own ``sleep()`` calls, which return at once,
    and by ``tick`` at each reading.  How long code waited, told apart from how long a
    loaded host took over it (what a wall-clock bound measured with it).  ``at``: (when,
    what), done once the clock has come to ``when``."""

    def __init__(self, *, tick: float = 0.0,
                 at: tuple[float, Callable[[], None]] | None = None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.tick = tick
        self.at = at

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.slept.append(seconds)  # a loop that never moves this clock on fails here
        assert len(self.slept) < 10_000, f"{len(self.slept)} sleeps; {self.now} s"
        self.now += seconds
        if self.at is not None and self.now >= self.at[0]:
            self.at[1]()
            self.at = None


class FakeClock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._now += timedelta(seconds=seconds)

    def step(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (back when negative); monotonic() stays."""
        self._now += timedelta(seconds=seconds)


def has_passwd_entry(uid: int) -> bool:
    """Whether ``uid`` has a user name (an entry in the passwd database)."""
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def make_spool(root: Path, mode: FsyncMode = FsyncMode.NEVER,
               clock: FakeClock | None = None, *, recycle: bool = False,
               follow: bool = False) -> Spool:
    """A fresh, initialised spool at ``root`` (``follow``: close it when done)."""
    layout = Layout(root)
    mover = Mover(layout, mode, recycle=recycle)
    mover.make_folders()
    return Spool(layout, mover, clock, follow=follow)


def a_grace_later(root: Path) -> Spool:
    """A spool at ``root`` whose clock is past the grace a staging file of no pid space
    (an older spoolq's) is kept (:data:`spool.staged.STAGING_GRACE_S`): its recovery
    settles such files of dead pids at once."""
    return make_spool(root, clock=FakeClock(
        datetime.now(UTC) + timedelta(seconds=STAGING_GRACE_S + 1)))


def make_client(root: Path, mode: FsyncMode = FsyncMode.NEVER) -> Client:
    """A client of a fresh, initialised spool at ``root``."""
    layout = Layout(root)
    mover = Mover(layout, mode)
    mover.make_folders()
    return Client(layout, mover)


def start_processor(root: Path, env: dict[str, str], log: Path, **extra: str
                    ) -> subprocess.Popen[bytes]:
    """A real ``python -m processor`` on the spool ``root`` (``env`` and ``extra``), its
    output in ``log``, once it has written its status file; stop it with
    :func:`stop_processor`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "processor"], env={**env, **extra},
                                cwd=log.parent, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not any(n.endswith(".json") and f"-{proc.pid}-" in n
                  for n in os.listdir(root / "owners")):
        if proc.poll() is not None:
            raise AssertionError(f"the processor exited {proc.returncode}")
        if time.monotonic() > deadline:
            stop_processor(proc)
            raise AssertionError("no status file from the processor in 30 s")
        time.sleep(0.02)
    return proc


def stop_processor(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a processor this test started and wait out its grace (30 s by default),
    then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def locate(layout: Layout, job_id: str) -> list[JobState]:
    """Every state folder holding ``<id>.json`` (a healthy spool has exactly one)."""
    return [s for s in JobState if os.path.lexists(layout.job(s, job_id))]


def read_json(path: Path) -> dict[str, Any]:
    obj = orjson.loads(path.read_bytes())
    assert isinstance(obj, dict)
    return obj


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def drop_raw(layout: Layout, name: str, data: bytes) -> Path:
    """Write ``pending/<name>`` in place, as a careless client would."""
    path = layout.folder(JobState.PENDING) / name
    path.write_bytes(data)
    return path


def submit(spool: Spool, job_id: str, tool: str = "echo", **fields: Any) -> Job:
    job = Job.model_validate({"tool": tool, **fields})
    spool.submit(job, job_id)
    return job


def done_record(claim: Claim, result: Any = None, state: JobState = JobState.DONE) -> Record:
    """The record a processor would write for ``claim``."""
    job = Job.model_validate_json(claim.data)
    record = record_from_job(job, claim.job_id, state, claim.mtime_ns)
    return record.model_copy(update={"result": result, "attempts": job.attempts + 1,
                                     "started_at": datetime.now(UTC),
                                     "finished_at": datetime.now(UTC), "pid": os.getpid()})


def run_to_end(spool: Spool, job_id: str, state: JobState = JobState.DONE,
               result: Any = None, message: str = "the tool failed") -> None:
    """Claim pending ``job_id`` and finish it as a processor would: done with ``result``,
    or failed (``tool_error``, ``message``)."""
    claim = spool.claim(job_id)
    assert claim is not None
    record = done_record(claim, result, state)
    if state is JobState.FAILED:
        record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message=message)
        spool.fail(claim, record)
    else:
        spool.complete(claim, record)


def age(path: Path, seconds: float = 7200) -> None:
    """Set ``path``'s times ``seconds`` back (a record that old, for purge)."""
    old = datetime.now(UTC).timestamp() - seconds
    os.utime(path, (old, old))


def actor(root: Path, command: str, args: dict[str, Any],
          mode: FsyncMode = FsyncMode.NEVER) -> subprocess.Popen[str]:
    """Start ``spool_actor.py`` as a real process (stdin/stdout pipes, text)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, str(ACTOR), str(root), mode.value, command,
         orjson.dumps(args).decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def await_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """The next stdout line of ``proc``, which must start with ``prefix``."""
    line = read_line(proc)
    if not line.startswith(prefix):
        stop(proc)
        raise AssertionError(f"actor said {line!r}, expected {prefix!r}")
    return line[len(prefix):].strip()


LINE_WAIT_S = 30.0
"""How long :func:`read_line` waits for a line: a child's start-up on a loaded host is
well within it."""


def read_line(proc: subprocess.Popen[Any], pipe: IO[Any] | None = None,
              timeout: float = LINE_WAIT_S) -> Any:
    """The next line ``proc`` writes to ``pipe`` (its stdout unless given): text or bytes
    as the pipe was opened, what came before the end of file if it closes first.

    A child that never writes fails the test within ``timeout`` seconds, saying so, and
    is stopped with what it started (:func:`stop`); ``pipe.readline()`` waited for ever,
    and pytest-timeout's one alarm then left the test's ``finally`` to wait for the child
    again.  Read a byte at a time from the descriptor, so nothing is left in the file
    object's buffer: every line of one pipe is to be read here."""
    pipe = proc.stdout if pipe is None else pipe
    assert pipe is not None
    fd = pipe.fileno()
    deadline = time.monotonic() + timeout
    got = bytearray()
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            stop(proc)
            raise AssertionError(f"no line from {proc.args!r} in {timeout:g} s "
                                 f"(it wrote {bytes(got)!r})")
        byte = os.read(fd, 1)
        if not byte:
            break
        got += byte
    if isinstance(pipe, io.TextIOBase):
        return got.decode(pipe.encoding or "utf-8").replace("\r\n", "\n")
    return bytes(got)


def stop(proc: subprocess.Popen[Any], timeout: float = 30.0) -> tuple[Any, Any]:
    """Kill ``proc`` if it still runs, and what it started (strace's tracee outlives a
    killed strace, holding its pipes: ``communicate()`` after ``kill()`` then waited as
    long as it ran, for ever for a ``submit --wait``); what was left on its pipes."""
    if proc.poll() is None:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        proc.kill()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # a grandchild that escaped holds a pipe
        raise AssertionError(f"{proc.args!r}'s pipes still open {timeout:g} s after it was "
                             "killed") from exc


def _nobody() -> tuple[int, int] | None:
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return None


NOBODY = _nobody()
"""The uid and gid of nobody / nogroup, for running the CLI as a user shut out."""
needs_root = pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None,
                                reason="needs root and the nobody user / nogroup group")

LOAD_SPOOL = (
    "import importlib, pathlib\n"
    "root = pathlib.Path(importlib.import_module('spool.layout').__file__).parent\n"
    "for path in sorted(root.rglob('*.py')):\n"
    "    parts = ('spool', *path.relative_to(root).with_suffix('').parts)\n"
    "    importlib.import_module('.'.join(parts).removesuffix('.__init__'))\n")
"""Python that imports every module of the ``spool`` package.  A test that runs the CLI
as nobody in a process started as root runs this first: the CLI imports most modules
where a command needs them, and nobody may not read this interpreter's install (under
/root, mode 0700), which a real user of the CLI can.  (Files, not ``pkgutil``: run in a
folder holding a spool named ``spool``, ``import spool`` finds that folder first, as a
namespace package, and the editable install's modules only through its finder.)"""


def load_spool() -> None:
    """:data:`LOAD_SPOOL` in this process (before it forks a child that drops to nobody)."""
    exec(LOAD_SPOOL, {})


CLI = [sys.executable, "-m", "spool.cli.main"]
Proc = subprocess.CompletedProcess[str]


def run_all(env: dict[str, str], *commands: list[str], stdin: str | None = None,
            cli: list[str] = CLI) -> list[Proc]:
    """Run several ``spoolq`` commands at once (in the spool's parent folder); their
    results in order."""
    procs = [subprocess.Popen([*cli, *args], env=env, cwd=Path(env["SPOOL_DIR"]).parent,
                              stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(stdin, timeout=60)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def spoolq(env: dict[str, str], *args: str, stdin: str | None = None) -> Proc:
    """One ``spoolq`` command, text in and out."""
    return run_all(env, list(args), stdin=stdin)[0]


# -- the CLI in bytes, and on a terminal ---------------------------------------------------

BytesProc = subprocess.CompletedProcess[bytes]


def spoolq_bytes(env: dict[str, str], *args: str | bytes, cwd: Path | None = None
                 ) -> BytesProc:
    """One ``spoolq`` command, bytes out (arguments may be bytes that are not UTF-8)."""
    return subprocess.run([*CLI, *args], env=env, cwd=cwd or Path(env["SPOOL_DIR"]).parent,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)


def refused_bytes(proc: BytesProc, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, one error line naming ``words`` (not a bug)."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.args, proc.returncode, err)
    assert proc.stdout == b"", proc.stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), err
    assert "Traceback" not in err and "a bug in spoolq" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def open_pty(columns: int = 160) -> tuple[int, int]:
    """A terminal of 24 rows and ``columns`` columns: (master, slave)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, slave


def read_until(fd: int, wanted: bytes, seen: bytearray, deadline_s: float = 30) -> None:
    """Read the terminal ``fd`` into ``seen`` until ``wanted`` shows (or the deadline)."""
    deadline = time.monotonic() + deadline_s
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                return


CRASH_ACTOR = Path(__file__).with_name("crash_actor.py")


class Holders:
    """Actor processes holding claims; every one is reaped at the end of the test."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.procs: list[subprocess.Popen[str]] = []

    def hold(self, **args: Any) -> subprocess.Popen[str]:
        proc = actor(self.spool.layout.root, "hold", args)
        self.procs.append(proc)
        held = orjson.loads(await_line(proc, "READY "))
        assert held == args.get("ids", [])
        return proc

    def sigkill(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

    def tell(self, proc: subprocess.Popen[str], line: str, reply: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        await_line(proc, reply)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def kill_in_actor(root: Path, command: str, arg: str, *, syscalls: str, nth: int = 1,
                  path: Path | None = None, inject: str | None = None,
                  mode: FsyncMode = FsyncMode.ALWAYS) -> None:
    """Run crash_actor.py's ``command arg`` on the spool at ``root`` under strace,
    SIGKILLed on entering its ``nth`` syscall of ``inject`` (default ``syscalls``, the
    ones traced), counting only those that name ``path`` when given."""
    strace = strace_path()
    assert strace is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    only = [] if path is None else ["-P", str(path)]
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, *only, "-e", f"trace={syscalls}",
         "-e", f"inject={inject or syscalls}:signal=SIGKILL:when={nth}",
         sys.executable, str(CRASH_ACTOR), str(root), mode.value, command, arg],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


@functools.cache
def strace_path() -> str | None:
    """strace, if it is installed and may trace here (ptrace can be forbidden)."""
    found = shutil.which("strace")
    if found is None:
        return None
    probe = subprocess.run([found, "-o", os.devnull, "true"], check=False, capture_output=True,
                           timeout=30)
    return found if probe.returncode == 0 else None


def nest_dirs(top: Path, depth: int, *, files_every: int = 0) -> None:
    """``top``/d/d/... ``depth`` directories deep, made by descriptor (the path is past
    PATH_MAX); ``files_every``: at every that many levels, a file and names a tree's
    removal might pick for itself (``.rm0``, ``.rm1``)."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            if files_every and level % files_every == 0:
                for name in ("f", ".rm0", ".rm1"):
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
