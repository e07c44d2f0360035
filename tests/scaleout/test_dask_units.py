"""The Dask units in docs/scaling.md, run as written (on 127.0.0.1, one worker process).

A unit's ``ExecStart=`` is run as a real subprocess with the address, port
and folders swapped for the test's; what systemd would do next is judged
from the unit's ``Restart=`` and the exit status, as systemd.service(5)
defines them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from scalekit import REPO, TOOLS_PATH, free_port

SCALING = REPO / "docs" / "scaling.md"


def _unit(name: str) -> str:
    """The ``ini`` block that follows the line naming ``name`` in docs/scaling.md."""
    text = SCALING.read_text()
    found = re.search(re.escape(name) + r"[^\n]*\n+```ini\n(.*?)```", text, re.S)
    assert found, f"no unit {name} in {SCALING}"
    return found.group(1)


def _setting(unit: str, key: str) -> list[str]:
    joined = unit.replace("\\\n", " ")
    return [line.split("=", 1)[1].strip() for line in joined.splitlines()
            if line.startswith(key + "=")]


def _restarts(unit: str, returncode: int) -> bool:
    """Would systemd restart a service of this unit that ended so (systemd.service(5))?"""
    policy = (_setting(unit, "Restart") or ["no"])[-1]
    clean = returncode == 0
    return policy == "always" or (policy == "on-failure" and not clean) or (
        policy == "on-abnormal" and returncode < 0)


def _command(unit: str, address: str, port: int, folder: Path) -> list[str]:
    """``ExecStart=`` of the unit, for this test: our Python, loopback, our port."""
    argv = shlex.split(_setting(unit, "ExecStart")[-1])
    assert argv[0].endswith("/dask")
    argv = [sys.executable, "-m", "dask", *argv[1:]]
    swapped = {"10.0.0.5": "127.0.0.1", "10.0.0.6": "127.0.0.1", "8786": str(port),
               "10.0.0.5:8787": "127.0.0.1:0", "10.0.0.6:0": "127.0.0.1:0",
               "tcp://10.0.0.5:8786": address, "/var/lib/dask-worker": str(folder)}
    argv = [swapped.get(arg, arg) for arg in argv]
    if "--nworkers" in argv:  # one worker process is enough here
        argv[argv.index("--nworkers") + 1] = "1"
    return argv


def _env(unit: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": TOOLS_PATH}
    for assignment in _setting(unit, "Environment"):
        key, _, value = assignment.partition("=")
        env[key] = value
    return env


@contextlib.contextmanager
def _started(argv: list[str], env: dict[str, str], log: Path
             ) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {log.name}"
        time.sleep(0.1)


def _listening(pid: int) -> set[str]:
    """The addresses process ``pid`` and its descendants listen on."""
    psutil = pytest.importorskip("psutil")
    top = psutil.Process(pid)
    return {conn.laddr.ip for proc in [top, *top.children(recursive=True)]
            for conn in proc.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN}


def test_workers_come_back_after_their_scheduler_restarts(tmp_path: Path) -> None:
    # A worker whose scheduler goes away closes at once, and `dask worker` then exits
    # 0: with Restart=on-failure no worker came back after a scheduler restart, and every
    # COMPUTE job waited in pending/ for good.
    scheduler_unit, worker_unit = _unit("dask-scheduler.service"), _unit("dask-worker.service")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched_log, worker_log = tmp_path / "scheduler.log", tmp_path / "worker.log"
    with _started(_command(scheduler_unit, address, port, tmp_path),
                  _env(scheduler_unit), sched_log) as scheduler:
        _wait_log(sched_log, "Scheduler at:", scheduler, 60)
        with _started(_command(worker_unit, address, port, tmp_path / "w"),
                      _env(worker_unit), worker_log) as worker:
            _wait_log(worker_log, "Registered to:", worker, 60)
            time.sleep(3.0)  # the nanny's own start ends after its worker's registration
            # Each port on the unit's address (here loopback): the scheduler's HTTP
            # server and the workers' code-running ports listened on every interface
            # with the units' flags as they were (QA).
            assert _listening(scheduler.pid) | _listening(worker.pid) == {"127.0.0.1"}
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait(30)
            assert _restarts(scheduler_unit, scheduler.returncode)
            returncode = worker.wait(60)
    assert _restarts(worker_unit, returncode), (
        f"dask worker exited {returncode} when its scheduler went away, and its unit's "
        f"Restart={_setting(worker_unit, 'Restart')} leaves it down")
