"""A processor that restarts itself (exit 75, :func:`processor.lifecycle.restart`) while
COMPUTE jobs run on Dask: its background import cut short (``heldimport``, told when)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("distributed")

from scalekit import Daemon, drop, locations, record, wait_for

StartDaemon = Callable[..., Daemon]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.preload_quant  # the background import heldimport cuts short is the preload's
def test_a_restart_requeues_the_dask_jobs_uncounted_and_stops_their_runs(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, tmp_path: Path) -> None:
    """As a SIGTERM's end of grace does: the runs on the workers are killed, the jobs
    requeued without counting the attempt, and the process exits 75 at once (a grace
    period of 60 s is not waited for).  Nothing of theirs runs on afterwards to write a
    result or a record beside the next processor's runs."""
    env = {"SPOOL_EXECUTOR": dask_cluster.scheduler_address.replace("tcp://", "dask://"),
           "JOB_NUM": "2"}
    go = tmp_path / "go"
    d = daemon(tools="dask_tools,heldimport", HELDIMPORT_GO=str(go), SPOOL_GRACE_S="60",
               **env)
    beats = {name: tmp_path / f"{name}.beats" for name in ("a", "b")}
    for name, path in beats.items():
        drop(spool_root, name, {"tool": "d_heartbeat", "max_attempts": 1,
                                "params": {"path": str(path), "seconds": 60}})
    wait_for(lambda: all(len(_lines(p)) >= 3 for p in beats.values()), 60,
             "both jobs running on the cluster")
    go.touch()  # the background import fails now: EMFILE
    assert d.proc is not None
    d.proc.wait(30)
    assert d.proc.returncode == 75, d.logs()
    for name in beats:
        job = orjson.loads((spool_root / "pending" / f"{name}.json").read_bytes())
        assert job.get("attempts", 0) == 0, "a run cut short by the restart does not count"
    sizes = {name: len(_lines(path)) for name, path in beats.items()}
    time.sleep(0.6)  # 12 beats
    assert {name: len(_lines(path)) for name, path in beats.items()} == sizes, \
        "a run went on on the cluster after the restart"
    # Started afresh (as systemd would), a processor runs them again: max_attempts 1 is
    # not spent by the run the restart cut short.  Its stop cuts the 60 s runs short
    # after a grace of 1 s (daemonkit's 5 s were waited out in full).
    again = daemon(SPOOL_GRACE_S="1", **env)
    wait_for(lambda: all(len(_lines(p)) >= sizes[n] + 3 for n, p in beats.items()), 60,
             "both jobs running again")
    assert all(record(spool_root, name) is None for name in beats)
    assert again.stop() == 0
    assert locations(spool_root) == {"a": ["pending"], "b": ["pending"]}
