"""The processor is ready before it imports numpy and pandas (its FAST quant tools need
them, its start-up does not), and its FAST quant tools work all the same."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, alive, drop, wait_for, wait_record
from quick_processor import IMPORT_SLOW_ENV

from processor import startup
from processor.proctree import descendants
from processor.quant.synth import write_synthetic

# The processor's background import of numpy and pandas, which the preload makes.
pytestmark = pytest.mark.preload_quant


def test_status_file_comes_before_pandas(daemon: Callable[..., Daemon],
                                         spool_root: Path) -> None:
    write_synthetic(spool_root / "data", symbols=1, bars=30, seed=3)
    d = daemon(tools="importwatch")
    drop(spool_root, "kline", {"tool": "get_kline", "params": {"symbol": "S0000",
                                                                 "limit": 2}})
    drop(spool_root, "factors", {"tool": "list_factors"})
    kline, factors = wait_record(spool_root, "kline"), wait_record(spool_root, "factors")
    assert kline["state"] == "done", kline
    assert len(kline["result"]["rows"]) == 2
    assert "momentum" in {f["name"] for f in factors["result"]["factors"]}

    # get_kline ran: pandas is imported now (by the tool's thread or in the background).
    drop(spool_root, "watch", {"tool": "import_watch"})
    seen = wait_record(spool_root, "watch")["result"]
    assert seen == {"loaded_with_the_tools": [], "status_file_when_pandas_imported": True}
    assert d.stop() == 0
    assert not [e for e in d.events() if e.get("level") in ("warning", "error")]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the COMPUTE forkserver, its workers, the resource
    tracker), read as the processor's kills read them."""
    return descendants(pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_does_not_wait_for_the_background_import(
        daemon: Callable[..., Daemon], spool_root: Path, tmp_path: Path,
        signum: signal.Signals) -> None:
    """A stop soon after start waited for the background import of numpy and pandas to
    end before the process exited (seconds on a loaded host; here it is held for an
    hour, mid-import, by slowimport).  The stop keeps every other promise all the same."""
    mark = tmp_path / "import-held"
    d = daemon(tools="ptools,slowimport", SPOOL_GRACE_S="0.5", SLOWIMPORT_MARK=str(mark))
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    assert wait_for(mark.exists, 10, "the background import held") is True
    assert mark.read_text() == "processor.quant.factors"
    # No FAST run starts beside the import (see processor.startup.BackgroundImports):
    # this one stays in pending/, unclaimed, through the stop.
    drop(spool_root, "held", {"tool": "import_held"})
    below = _descendants(d.pid)
    assert below, "the forkserver and its workers"
    assert d.proc is not None
    d.proc.send_signal(signum)
    assert d.stop(timeout=20) == 0
    wait_for(lambda: not any(alive(pid) for pid in below), 10,
             "the forkserver, its workers and the resource tracker to end")
    back = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert back["attempts"] == 0, "requeued, the run cut short not counted"
    assert sorted(os.listdir(spool_root / "pending")) == ["held.json", "long.json"]
    assert os.listdir(spool_root / "running") == [] and os.listdir(spool_root / "owners") == []
    lines = d.logs().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line JSON: nothing else printed
    assert [(e["event"], e.get("reason")) for e in events if e.get("id") == "long"] == [
        ("claimed", None), ("requeued", "shutdown")]
    assert events[-1]["msg"] == "stopped", "the last line is out"
    assert not [e for e in events if e.get("level") in ("warning", "error")]


SLOW_IMPORT = "FAST jobs wait for the background import, under way for %g s: importing %s"
QUICK_IMPORT_SLOW_S = 2.0
"""The warning's delay in the test (quick_processor): the shipped 10 s proves nothing more."""


def test_a_background_import_that_hangs_is_said_with_what_it_imports(
        daemon: Callable[..., Daemon], spool_root: Path, tmp_path: Path) -> None:
    """Every FAST job, echo too, waits for the background import of numpy and pandas.
    One that hangs (a slow NFS mount; here slowimport holds it for an hour, mid-import)
    held them with no line that said why.  A warning says so once it has taken
    ``IMPORT_SLOW_S`` (10 s; 2 s here), naming the module it is importing."""
    assert QUICK_IMPORT_SLOW_S < startup.IMPORT_SLOW_S
    mark = tmp_path / "import-held"
    d = daemon(tools="ptools,slowimport", SLOWIMPORT_MARK=str(mark), module="quick_processor",
               **{IMPORT_SLOW_ENV: str(QUICK_IMPORT_SLOW_S)})
    assert wait_for(mark.exists, 10, "the background import held") is True
    drop(spool_root, "echo", {"tool": "echo", "params": {"message": "hi"}})

    def said() -> list[dict[str, object]]:
        return [e for e in d.events() if e.get("level") == "warning"]

    [line] = wait_for(said, 30, "the warning of the import that hangs")
    assert line["msg"] == SLOW_IMPORT % (QUICK_IMPORT_SLOW_S, "processor.quant.factors"), line
    assert os.listdir(spool_root / "pending") == ["echo.json"]  # held, as before
    assert d.stop(timeout=20) == 0
    assert len(said()) == 1, d.logs()[-3000:]
