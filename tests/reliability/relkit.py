"""Helpers for the reliability suite: real daemons on temp spools, drops, records, sweeps.

Not a test module; the tests import it by name.  Every daemon started here
carries ``SPOOLQ_RELIABILITY=<token>`` in its environment, and so does every
process it starts (forkserver, workers, what tools spawn), which is how the
suite's autouse fixture finds anything left running after a test.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

HERE = Path(__file__).resolve().parent
for _kit in ("processor", "statusd", "spool"):  # daemonkit, statusd_daemonkit, spoolkit
    if str(HERE.parent / _kit) not in sys.path:
        sys.path.insert(0, str(HERE.parent / _kit))

# The spool-level helpers are the processor suite's; this module adds daemons and sweeps.
from daemonkit import Daemon as BaseDaemon  # noqa: E402
from daemonkit import (  # noqa: E402
    drop,
    locations,
    make_spool,
    record,
    tmpfs,
    wait_for,
    wait_record,
)
from statusd_daemonkit import strace_usable, wait_listening  # noqa: E402

from spool.errors import KEEPS_ORIGINAL  # noqa: E402

__all__ = ["NO_DAC", "NO_JOB", "Daemon", "drop", "locations", "make_spool",
           "most_backed_off_tries", "quick_pause", "record", "strace_usable", "tmpfs",
           "wait_for", "wait_quarantined", "wait_quarantined_originals", "wait_record"]

KEPT_BY_RUNS = {kind.value for kind in KEEPS_ORIGINAL}
REPO = HERE.parents[1]
MARKER_ENV = "SPOOLQ_RELIABILITY"
SESSION_TOKEN = os.urandom(6).hex()
STATES = ("pending", "running", "done", "failed")
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
"""A command prefix: root without the capabilities that pass over file modes, so a
folder made read-only refuses its writes."""
NO_JOB = b'{"tool": 5}'
"""Valid JSON but no job: quarantined at once, with no settle time to wait."""


def quick_pause(first_s: float) -> dict[str, str]:
    """The environment of tests/processor's quick_processor (``module="quick_processor"``)
    whose first pause after I/O trouble is ``first_s`` (0.5 s shipped), doubled at each
    try as shipped."""
    return {"PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "processor"),
                                           str(REPO), os.environ.get("PYTHONPATH", "")]),
            "QUICK_IO_PAUSE_S": str(first_s)}


def most_backed_off_tries(lines: Sequence[dict[str, Any]], first_pause_s: float) -> float:
    """How many of the log ``lines`` (each a refused try) a backoff of ``first_pause_s``,
    doubled at each try, lets pass in their span (their own timestamps: the test's clock,
    read late under load, could skew it): n tries span at least ``first_pause_s *
    (2 ** (n - 1) - 1)``, and one try more is let pass."""
    at = [datetime.fromisoformat(e["ts"]).timestamp() for e in lines]
    span_s = at[-1] - at[0] if at else 0.0
    return math.log2(span_s / first_pause_s + 1) + 2


def wait_quarantined_originals(root: Path, names: Sequence[str], original: bytes,
                               timeout: float) -> None:
    """Each of ``names`` lands in ``failed/``: its ``invalid_job`` record, and beside it
    its ``original`` bytes."""
    found = wait_quarantined(root, names, timeout)
    for name in names:
        rec = found[name]
        assert rec["state"] == "failed" and rec["error"]["type"] == "invalid_job", rec
        assert (root / "failed" / f"{rec['id']}.orig").read_bytes() == original


def quarantined(root: Path) -> dict[str, dict[str, Any]]:
    """Quarantine records by the original name they give (``source.name``): records with a
    ``source`` but a run's (an unknown tool's, invalid params') that kept its job file."""
    found = {}
    for path in (root / "failed").glob("*.json"):
        rec = orjson.loads(path.read_bytes())
        if rec.get("source") and rec["error"]["type"] not in KEPT_BY_RUNS:
            found[rec["source"]["name"]] = rec
    return found


def wait_quarantined(root: Path, names: Sequence[str], timeout: float = 10.0
                     ) -> dict[str, dict[str, Any]]:
    """:func:`quarantined` once each of ``names`` has its record.  ``pending/`` empties
    before the last record is published (the drop is moved first), so an empty
    ``pending/`` alone does not mean every record is there."""
    found: dict[str, dict[str, Any]] = wait_for(
        lambda: (q := quarantined(root)).keys() >= set(names) and q, timeout,
        f"quarantine records of {sorted(names)}")
    return found


class Daemon(BaseDaemon):
    """The processor suite's runner with this suite's tools and the stray marker."""

    def __init__(self, root: Path, log: Path, *, module: str = "processor",
                 prefix: Sequence[str] = (), **env: str) -> None:
        super().__init__(root, log, module=module, prefix=prefix, tools="rtools",
                         tools_dir=HERE, ready_timeout=60.0,
                         **{MARKER_ENV: SESSION_TOKEN, **env})


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


def statusd_port(daemon: Daemon, timeout: float = 30.0) -> int:
    """The port a ``python -m statusd`` started with STATUSD_PORT=0 logged."""
    assert daemon.proc is not None
    return wait_listening(daemon.proc, daemon.logs, timeout)
