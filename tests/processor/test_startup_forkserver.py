"""The COMPUTE forkserver starts before the settings load when they can only say
``local`` (its imports are on the way to READY), and after them otherwise; either
way the processor runs COMPUTE jobs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_record

from processor.startup import executor_may_be_named
from spool.settings import load_settings

pytestmark = pytest.mark.preload_quant  # the forkserver's preload, what its workers share frozen

DASK = "dask://127.0.0.1:1"


def _start_order(spool_root: Path, tmp_path: Path, **env: str) -> list[str]:
    order = tmp_path / "order"
    d = Daemon(spool_root, tmp_path / "daemon.log", module="startorder",
               STARTORDER_LOG=str(order), **env)
    try:
        d.start()
        drop(spool_root, "c", {"tool": "sleep", "params": {"seconds": 0}})
        assert wait_record(spool_root, "c")["state"] == "done"
        assert d.stop() == 0
    finally:
        d.abort()
    return order.read_text().split()


def test_the_forkserver_starts_before_the_settings_load(spool_root: Path,
                                                         tmp_path: Path) -> None:
    assert _start_order(spool_root, tmp_path) == ["forkserver", "settings"]


def test_a_named_executor_is_read_before_the_forkserver_starts(spool_root: Path,
                                                                tmp_path: Path) -> None:
    """SPOOL_EXECUTOR=local: the settings could have said otherwise, so they come first."""
    order = _start_order(spool_root, tmp_path, SPOOL_EXECUTOR="local")
    assert order == ["settings", "forkserver"]


@pytest.mark.parametrize("name", ["SPOOL_EXECUTOR", "spool_executor", "EXECUTOR", "Executor"])
def test_every_variable_the_settings_read_the_executor_from_is_seen(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, DASK)
    assert load_settings().executor == DASK
    assert executor_may_be_named(None, os.environ)


def test_a_dotenv_or_an_option_may_name_the_executor(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {k: v for k, v in os.environ.items() if not k.upper().endswith("EXECUTOR")}
    for name in [k for k in os.environ if k not in environ]:
        monkeypatch.delenv(name)
    assert not executor_may_be_named(None, environ)
    assert load_settings().executor == "local"
    assert executor_may_be_named("local", environ)
    (tmp_path / ".env").write_text(f"SPOOL_EXECUTOR={DASK}\n")
    assert load_settings().executor == DASK
    assert executor_may_be_named(None, environ)


def test_workers_and_the_processor_collect_with_start_up_frozen(
        daemon: Callable[..., Daemon], spool_root: Path) -> None:
    """The collector is off during start-up's imports (the forkserver's preload, the
    processor's own) and on again after: each keeps what start-up made frozen, so a
    worker's collections never walk the modules it shares with the forkserver."""
    d = daemon(tools="gctools")
    drop(spool_root, "w", {"tool": "gc_in_worker"})
    drop(spool_root, "p", {"tool": "gc_in_processor"})
    worker, processor = wait_record(spool_root, "w"), wait_record(spool_root, "p")
    assert worker["state"] == processor["state"] == "done", (worker, processor)
    assert worker["result"]["enabled"] and processor["result"]["enabled"]
    assert worker["result"]["frozen"] > 100_000, "numpy, pandas, the tools: frozen"
    assert processor["result"]["frozen"] > 10_000
    assert d.stop() == 0
