"""Run ``spool-processor`` as a real subprocess on a temp spool, and drop jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

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
    """One ``python -m processor`` subprocess; stop() is always safe to call."""

    def __init__(self, root: Path, log: Path, **env: str) -> None:
        self.root = root
        self.log_path = log
        self.env = {
            **os.environ,
            "SPOOL_DIR": str(root), "JOB_NUM": "2", "SPOOL_FSYNC": "never",
            "SPOOL_SCAN_S": "1", "SPOOL_SETTLE_S": "1", "SPOOL_GRACE_S": "5",
            "SPOOL_TOOLS": "ptools",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO),
                                           os.environ.get("PYTHONPATH", "")]),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "processor"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.root.parent)
        if wait_ready:
            wait_for(self.ready, 30, "the processor's status file")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"processor exited {self.proc.returncode}:\n{self.logs()}")
        owners = self.root / "owners"
        return any(n.endswith(".json") and f"-{self.proc.pid}-" in n
                   for n in os.listdir(owners))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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
        if not self._log.closed:
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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    return True
