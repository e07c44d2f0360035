"""The other writers of ``bench/chaos.py --meddle``: the meddler processes and statusd.

:class:`Writers` starts ``meddlers`` processes ``python -m bench.chaos_meddle`` (their
plan, the planned jobs by id, written to ``plan.json`` beside the spool; each its own
log, ``meddle-<n>.log``; the first one also purges) and, with ``statusd``, a
``python -m statusd`` on a loopback port of the kernel's choosing with a token, whose
``POST /api/v1/tasks`` the meddler uses for half its re-drops.  Both run with the
soak's environment (its marker included, so a survivor counts as a stray).  The
meddlers are stopped with SIGTERM (each ends the action under way), statusd
likewise; all by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.chaos_fleet import REPO
from bench.chaos_report import PlannedJob
from statusd.listening import said

STOP_TIMEOUT_S = 30.0


class Writers:
    """The meddlers and statusd of one soak (none until :meth:`start`)."""

    def __init__(self, base: Path, root: Path, env: Callable[[], dict[str, str]]) -> None:
        self.base = base
        self.root = root
        self.env = env
        self.meddle_logs: list[Path] = []
        self.meddlers: list[subprocess.Popen[bytes]] = []
        self.statusd: subprocess.Popen[bytes] | None = None
        self._termed: set[int] = set()

    def start(self, planned: list[PlannedJob], seed: int, fsync: str, *,
              meddlers: int, statusd: bool, hot: int) -> None:
        plan = self.base / "plan.json"
        plan.write_bytes(orjson.dumps({p.job_id: orjson.loads(p.body) for p in planned}))
        env = {**self.env(), "STATUSD_TOKEN": os.urandom(12).hex()}
        extra = ["--statusd", self._start_statusd(env)] if statusd else []
        for n in range(meddlers):
            self.meddle_logs.append(self.base / f"meddle-{n}.log")
            args = [sys.executable, "-m", "bench.chaos_meddle", str(self.root), str(plan),
                    str(self.meddle_logs[-1]), str(seed + n), "--fsync", fsync,
                    "--hot", str(hot), *extra,
                    *(["--purges"] if n == 0 else [])]
            with open(self.base / "logs" / f"meddler-{n}.log", "wb") as log:
                self.meddlers.append(subprocess.Popen(args, env=env, cwd=REPO, stdout=log,
                                                      stderr=subprocess.STDOUT))

    def _start_statusd(self, env: dict[str, str]) -> str:
        # Port 0: statusd binds a port the kernel gives it and logs it.  A port picked
        # here, let go and bound by statusd only after its start-up could be taken
        # meanwhile (another process's bind or outgoing connection).
        env = {**env, "STATUSD_HOST": "127.0.0.1", "STATUSD_PORT": "0"}
        path = self.base / "logs" / "statusd.log"
        with open(path, "wb") as log:
            self.statusd = subprocess.Popen([sys.executable, "-m", "statusd"], env=env,
                                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        url = None
        deadline = time.monotonic() + 60
        while True:
            if url is None and (found := said(path.read_text(errors="replace"),
                                                         "127.0.0.1")):
                url = found.url
            try:
                if url is not None:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                        return url
            except OSError:
                pass
            if self.statusd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("statusd did not start (see logs/statusd.log)")
            time.sleep(0.1)

    def stop_meddlers(self) -> list[int]:
        """SIGTERM the meddlers and wait for them; their exit statuses."""
        for proc in self.meddlers:
            self._term(proc)
        return [_wait(proc) for proc in self.meddlers]

    def stop(self) -> None:
        self.stop_meddlers()
        if self.statusd is not None:
            self._term(self.statusd)
            _wait(self.statusd)

    def _term(self, proc: subprocess.Popen[bytes]) -> None:
        """One SIGTERM per process: a second one could land while its interpreter is
        exiting, after it put back the default action (a meddler ended -15 so)."""
        if proc.pid not in self._termed and proc.poll() is None:
            self._termed.add(proc.pid)
            os.kill(proc.pid, signal.SIGTERM)


def _wait(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()
