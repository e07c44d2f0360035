"""The processor is ready before it imports numpy and pandas (its FAST quant tools need
them, its start-up does not), and its FAST quant tools work all the same."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

from processor.quant.synth import write_synthetic


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
