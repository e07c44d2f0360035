"""Helpers for the reliability suite: real daemons on temp spools, drops, records, sweeps.

Not a test module; the tests import it by name.  Every daemon started here
carries ``SPOOLQ_RELIABILITY=<token>`` in its environment, and so does every
process it starts (forkserver, workers, what tools spawn), which is how the
suite's autouse fixture finds anything left running after a test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "processor") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "processor"))

# The spool-level helpers are the processor suite's; this module adds daemons and sweeps.
from daemonkit import drop, locations, make_spool, record, wait_for, wait_record  # noqa: E402

__all__ = ["Daemon", "drop", "locations", "make_spool", "record", "wait_for", "wait_record"]

REPO = HERE.parents[1]
MARKER_ENV = "SPOOLQ_RELIABILITY"
SESSION_TOKEN = os.urandom(6).hex()
STATES = ("pending", "running", "done", "failed")


def quarantined(root: Path) -> dict[str, dict[str, Any]]:
    """Quarantine records by the original name they give (``source.name``)."""
    found = {}
    for path in (root / "failed").glob("*.json"):
        rec = orjson.loads(path.read_bytes())
        if rec.get("source"):
            found[rec["source"]["name"]] = rec
    return found


class Daemon:
    """``python -m processor`` (or another module) as a real subprocess; stop() by pid."""

    def __init__(self, root: Path, log: Path, *, module: str = "processor",
                 prefix: Sequence[str] = (), **env: str) -> None:
        self.root = root
        self.log_path = log
        self.env = {
            **os.environ,
            "SPOOL_DIR": str(root), "JOB_NUM": "2", "SPOOL_FSYNC": "never",
            "SPOOL_SCAN_S": "1", "SPOOL_SETTLE_S": "1", "SPOOL_GRACE_S": "5",
            "SPOOL_TOOLS": "rtools",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO),
                                           os.environ.get("PYTHONPATH", "")]),
            MARKER_ENV: SESSION_TOKEN,
            **env,
        }
        self.argv = [*prefix, sys.executable, "-m", module]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in abort()/stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.root.parent)
        if wait_ready:
            wait_for(self.ready, 60, "the processor's status file")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"processor exited {self.proc.returncode}:\n{self.logs()}")
        return any(n.endswith(".json") and f"-{self.proc.pid}-" in n
                   for n in os.listdir(self.root / "owners"))

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

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def abort(self) -> None:
        """Kill the daemon if it still runs (test teardown) and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
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


def marked_processes(token: str = SESSION_TOKEN) -> list[psutil.Process]:
    """Live processes whose environment carries this session's marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV) == token and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def with_cmdline(marker: str) -> list[psutil.Process]:
    """Live processes with ``marker`` in their command line."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(marker in arg for arg in proc.cmdline()) and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


LISTENING = re.compile(r"statusd listening on http://127\.0\.0\.1:(\d+)")


def statusd_port(daemon: Daemon, timeout: float = 30.0) -> int:
    """The port a ``python -m statusd`` started with STATUSD_PORT=0 logged."""
    def port() -> int | None:
        assert daemon.proc is not None
        if daemon.proc.poll() is not None:
            raise AssertionError(f"statusd exited {daemon.proc.returncode}:\n{daemon.logs()}")
        found = LISTENING.search(daemon.logs())
        return int(found.group(1)) if found else None

    value: int = wait_for(port, timeout, "statusd to listen")
    return value
