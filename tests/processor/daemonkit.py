"""Run ``spool-processor`` as a real subprocess on a temp spool, and drop jobs."""

from __future__ import annotations

import contextlib
import io
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def make_spool(root: Path) -> Layout:
    layout = Layout(root)
    Mover(layout, FsyncMode.NEVER).make_folders()
    return layout


def drop(root: Path, job_id: str, job: dict[str, Any]) -> None:
    """The safe drop: write into tmp/, rename into pending/."""
    tmp = root / "tmp" / f"drop-{job_id}"
    tmp.write_bytes(orjson.dumps(job))
    os.rename(tmp, root / "pending" / f"{job_id}.json")


def record(root: Path, job_id: str) -> dict[str, Any] | None:
    for state in ("done", "failed"):
        path = root / state / f"{job_id}.json"
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
            return data
        except (FileNotFoundError, orjson.JSONDecodeError):
            continue
    return None


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_line(proc: subprocess.Popen[Any], timeout: float = 60.0) -> Any:
    """The next line ``proc`` writes to its stdout (text or bytes as the pipe was opened),
    read a byte at a time from the descriptor within ``timeout`` seconds: a child that
    never writes it is killed and fails the test saying so, where ``readline()`` waited
    until pytest-timeout's alarm, the child then left running.  Every line of that pipe
    is to be read here (nothing is left in the file object's buffer)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    got = bytearray()
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"no line from {proc.args!r} in {timeout:g} s "
                                 f"(it wrote {bytes(got)!r})")
        byte = os.read(fd, 1)
        if not byte:
            break
        got += byte
    if isinstance(proc.stdout, io.TextIOBase):
        return got.decode(proc.stdout.encoding or "utf-8")
    return bytes(got)


def wait_record(root: Path, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(lambda: record(root, job_id), timeout,
                                      f"a record of {job_id}")
    return result


def locations(root: Path) -> dict[str, list[str]]:
    """Every job id -> the state folders it is in."""
    where: dict[str, list[str]] = {}
    for state in ("pending", "running", "done", "failed"):
        for name in os.listdir(root / state):
            if name.endswith(".json"):
                where.setdefault(name[:-5], []).append(state)
    return where


class Daemon:
    """``python -m processor`` (or ``module``) as a real subprocess; stop() is always safe.

    ``tools`` names the SPOOL_TOOLS module and ``tools_dir`` the folder that holds it,
    so other suites run their own misbehaving tools with the same runner.
    """

    def __init__(self, root: Path, log: Path, *, module: str = "processor",
                 prefix: Sequence[str] = (), tools: str = "ptools", tools_dir: Path = HERE,
                 ready_timeout: float = 30.0, **env: str) -> None:
        self.root = root
        self.log_path = log
        self.ready_timeout = ready_timeout
        self.env = {
            **os.environ,
            "SPOOL_DIR": str(root), "JOB_NUM": "2", "SPOOL_FSYNC": "never",
            "SPOOL_SCAN_S": "1", "SPOOL_SETTLE_S": "1", "SPOOL_GRACE_S": "5",
            "SPOOL_TOOLS": tools,
            "PYTHONPATH": os.pathsep.join([str(tools_dir), str(REPO),
                                           os.environ.get("PYTHONPATH", "")]),
            **env,
        }
        self.argv = [*prefix, sys.executable, "-m", module]
        self.stdin: int | None = None  # the processor's stdin: inherited unless set
        self.output: int | None = None  # its stdout and stderr: the log file unless set
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in abort()/stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=self.stdin,
                                     stdout=self._log if self.output is None
                                     else self.output, stderr=subprocess.STDOUT,
                                     cwd=self.root.parent)
        if wait_ready:
            wait_for(self.ready, self.ready_timeout, "the processor's status file")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"processor exited {self.proc.returncode}:\n{self.logs()}")
        owners = self.root / "owners"
        return any(n.endswith(".json") and f"-{self.proc.pid}-" in n
                   for n in os.listdir(owners))

    def status(self) -> dict[str, Any]:
        """This processor's status file, ``owners/<owner>.json``."""
        owners = self.root / "owners"
        name = next(n for n in os.listdir(owners) if n.endswith(".json") and f"-{self.pid}-" in n)
        data: dict[str, Any] = orjson.loads((owners / name).read_bytes())
        return data

    def wait_started(self, timeout: float = 60.0) -> None:
        """Wait for the "started" log line (for spools where the status file cannot be
        written)."""
        def started() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.logs()}")
            return any(e.get("msg") == "started" for e in self.events())

        wait_for(started, timeout, "the processor to start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return lines

    def abort(self) -> None:
        """Kill the daemon if it still runs (test teardown) and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        self._log.close()
        return self.proc.returncode


def run_daemons(spool_root: Path, tmp_path: Path, runner: Callable[..., Daemon] = Daemon
                ) -> Iterator[Callable[..., Daemon]]:
    """The body of a ``daemon`` fixture: a starter, then every daemon it started killed."""
    started: list[Daemon] = []

    def start(wait_ready: bool = True, root: Path | None = None, **env: str) -> Daemon:
        d = runner(root or spool_root, tmp_path / f"daemon-{len(started)}.log", **env)
        started.append(d)
        return d.start(wait_ready)

    yield start
    for d in started:
        d.abort()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between kill and read
        return False


@contextmanager
def tmpfs(mnt: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted on ``mnt`` (made here) for the block; skips the test where
    mounting is not allowed."""
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs",
                           str(mnt)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@contextmanager
def bindfs_spool(tmp_path: Path) -> Iterator[Path]:
    """A fresh spool's root on a bindfs mount (a FUSE filesystem on libfuse's high-level
    API) of a folder of ``tmp_path``; skips where bindfs cannot mount (Debian's bindfs is
    installed by ``.ci/run``)."""
    if shutil.which("bindfs") is None or shutil.which("fusermount") is None:
        pytest.skip("needs bindfs (Debian's bindfs)")
    under, mnt = tmp_path / "under", tmp_path / "mnt"
    under.mkdir()
    mnt.mkdir()
    done = subprocess.run(["bindfs", str(under), str(mnt)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount bindfs here: {done.stderr.strip()}")
    try:
        root = mnt / "spool"
        make_spool(root)
        yield root
    finally:
        with contextlib.suppress(psutil.Error, ValueError):
            bindfs_daemon(mnt).resume()  # a test that stopped it: unmounted all the same
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)


def bindfs_daemon(mnt: Path) -> psutil.Process:
    """The bindfs process serving the mount at ``mnt``."""
    (found,) = [p for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "bindfs" and str(mnt) in (p.info["cmdline"] or [])]
    return found
