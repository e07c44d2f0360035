"""Shared bits of the scale-out tests: paths, the daemon kit of tests/processor, and
:func:`wait_replaced` for a test that SIGKILLed a worker of the module's cluster.

``python -m processor`` subprocesses load ``dask_tools`` from this folder, so
it goes on their ``PYTHONPATH`` (:data:`TOOLS_PATH`).
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOOLS_PATH = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])

if str(HERE.parent / "processor") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "processor"))  # daemonkit: one daemon runner

from daemonkit import (  # noqa: E402
    Daemon,
    alive,
    drop,
    locations,
    make_spool,
    read_line,
    record,
    run_daemons,
    wait_for,
    wait_record,
)

__all__ = ["HERE", "REPO", "TOOLS_PATH", "Daemon", "alive", "drop", "free_port", "locations",
           "make_spool", "read_line", "record", "run_daemons", "wait_for", "wait_record",
           "wait_replaced"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now, below the kernel's ephemeral range.

    A port of that range (what binding port 0 gives) is also what the kernel hands the
    next outgoing connection on this host, and a Dask cluster and its clients make many:
    one took a test's port before its scheduler bound it (the cluster's process exited,
    nothing printed, in a full run)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


REPLACE_S = 60.0
"""How long a killed worker's nanny gets to bring a new one: ~0.5 s idle, ~5 s at load 7."""


def wait_replaced(client: Any, killed: str, n_workers: int = 2,
                  timeout: float = REPLACE_S) -> None:
    """Wait until the worker at ``killed`` is gone from the scheduler and ``n_workers``
    run again (its nanny started a new one), so the module's next tests have them all.

    Not back in time: the cluster's missing nannies are started anew for those next
    tests, and this fails with what was missing (a nanny that gave up, or a slow one).
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info()["workers"]
        running = [w for w in workers.values() if w.get("status") == "running"]
        if killed not in workers and len(running) >= n_workers:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    cluster = client.cluster
    nannies = {name: str(getattr(nanny, "status", "?")) for name, nanny in
               cluster.workers.items()}
    cluster.scale(n_workers)  # starts a nanny for each name of the spec that has none
    try:
        client.wait_for_workers(n_workers, timeout=timeout)
        healed = "started anew"
    except Exception as exc:  # reported below, with what was missing
        healed = f"not started anew: {exc!r}"
    raise AssertionError(
        f"{len(running)}/{n_workers} workers running {timeout:.0f} s after {killed} was "
        f"killed (still listed: {killed in workers}); nannies {nannies} of "
        f"{sorted(cluster.worker_spec)}, the missing ones {healed}")
