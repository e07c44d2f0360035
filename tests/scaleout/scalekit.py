"""Shared bits of the scale-out tests: paths, and the daemon kit of tests/processor.

``python -m processor`` subprocesses load ``dask_tools`` from this folder, so
it goes on their ``PYTHONPATH`` (:data:`TOOLS_PATH`).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

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
    record,
    run_daemons,
    wait_for,
    wait_record,
)

__all__ = ["HERE", "REPO", "TOOLS_PATH", "Daemon", "alive", "drop", "free_port", "locations",
           "make_spool", "record", "run_daemons", "wait_for", "wait_record"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
