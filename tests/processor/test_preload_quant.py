"""``SPOOL_PRELOAD_QUANT``: on (the default), the processor imports numpy and pandas for its
FAST quant tools once it is ready and the COMPUTE forkserver preloads them for its workers;
off, neither process loads them, and the quant tools still run, FAST and COMPUTE alike.

Whether a process has numpy is read from its memory map (``/proc/PID/maps`` lists
numpy's shared objects once it is imported), for the processor, its forkserver and a
worker.  The settings are read on two paths: by the forkserver itself from the
environment when it starts before the settings load (no variable names an executor),
and from the loaded settings otherwise (``SPOOL_EXECUTOR=local``)."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

from processor import worker as worker_module
from processor.quant.synth import write_synthetic
from processor.registry import load_registry
from processor.startup import QUANT_PRELOAD, preload_quant_from
from spool.settings import Settings


def _has_numpy(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "/numpy/" in maps.read()


def _forkserver_and_worker(pid: int) -> tuple[int, int]:
    """The processor's COMPUTE forkserver, and one of its workers, once it has one."""
    def found() -> tuple[int, int] | None:
        for child in psutil.Process(pid).children():
            if "forkserver" in " ".join(child.cmdline()) and (workers := child.children()):
                return child.pid, workers[0].pid
        return None
    pids: tuple[int, int] = wait_for(found, 30, "the forkserver and a worker")
    return pids


@pytest.mark.parametrize("env", [
    {"SPOOL_PRELOAD_QUANT": "0"},
    {"spool_preload_quant": "Off"},  # the forkserver reads it as the settings do
    {"SPOOL_PRELOAD_QUANT": "false", "SPOOL_EXECUTOR": "local"},  # from the settings
], ids=["early", "early-any-case", "from-settings"])
def test_off_no_process_loads_numpy_and_the_quant_tools_still_run(
        daemon: Callable[..., Daemon], spool_root: Path, monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str]) -> None:
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT", raising=False)  # the suite's own word
    write_synthetic(spool_root / "data", symbols=2, bars=120, seed=5)
    d = daemon(JOB_NUM="1", **env)
    forkserver, worker = _forkserver_and_worker(d.pid)
    # The processor's background import would have ended long before a worker is up (it
    # ends 0.4 to 0.8 s after READY); a job's own import would come later than this look.
    drop(spool_root, "echo", {"tool": "echo", "params": {"message": "hi"}})
    assert wait_record(spool_root, "echo")["state"] == "done"
    assert {p: _has_numpy(p) for p in (d.pid, forkserver, worker)} == {
        d.pid: False, forkserver: False, worker: False}

    drop(spool_root, "kline", {"tool": "get_kline", "params": {"symbol": "S0000",
                                                                 "limit": 3}})
    drop(spool_root, "bt", {"tool": "run_backtest", "params": {
        "symbols": ["S0000", "S0001"], "fast": 5, "slow": 20}})
    kline, bt = wait_record(spool_root, "kline"), wait_record(spool_root, "bt", 60)
    assert kline["state"] == "done", kline
    assert len(kline["result"]["rows"]) == 3
    print({k: v for k, v in bt.items() if k != "result"})
    assert bt["state"] == "done", bt
    assert set(bt["result"]["symbols"]) == {"S0000", "S0001"}
    assert _has_numpy(d.pid), "get_kline imported them as it ran"
    assert not _has_numpy(forkserver), "a worker's import is its own"
    assert d.stop() == 0


@pytest.mark.preload_quant
@pytest.mark.parametrize("env", [{}, {"SPOOL_EXECUTOR": "local"}],
                         ids=["early", "from-settings"])
def test_on_by_default_the_forkserver_and_the_processor_load_numpy(
        daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str]) -> None:
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT")  # the default, whatever the suite says
    d = daemon(JOB_NUM="1", **env)
    forkserver, worker = _forkserver_and_worker(d.pid)
    assert _has_numpy(forkserver) and _has_numpy(worker)
    wait_for(lambda: _has_numpy(d.pid), 30, "the processor's background import")
    assert d.stop() == 0


@pytest.mark.parametrize(("environ", "on"), [
    ({}, True), ({"SPOOL_PRELOAD_QUANT": "1"}, True), ({"SPOOL_PRELOAD_QUANT": "0"}, False),
    ({"Spool_Preload_Quant": " NO "}, False), ({"SPOOL_PRELOAD_QUANT": "f"}, False),
    ({"SPOOL_PRELOAD_QUANT": "maybe"}, True),  # refused by the settings: the default here
    ({"SPOOL_PRELOAD_QUANTITY": "0"}, True),
    # The settings take the field's own name too (populate_by_name, as for EXECUTOR: see
    # executor_may_be_named), after SPOOL_PRELOAD_QUANT: the forkserver preloaded where
    # the processor skipped its import.
    ({"PRELOAD_QUANT": "0"}, False), ({"preload_quant": "no"}, False),
    ({"PRELOAD_QUANT": "0", "SPOOL_PRELOAD_QUANT": "1"}, True),
    ({"SPOOL_PRELOAD_QUANT": "1", "Preload_Quant": "0"}, True),
    ({"SPOOL_PRELOAD_QUANT": "0", "PRELOAD_QUANT": "1"}, False),
])
def test_the_forkserver_reads_the_variable_as_the_settings_do(
        environ: dict[str, str], on: bool) -> None:
    assert preload_quant_from(environ) is on


@pytest.mark.parametrize("environ", [
    {"PRELOAD_QUANT": "0"}, {"preload_quant": "off"}, {"PRELOAD_QUANT": "1"},
    {"PRELOAD_QUANT": "0", "SPOOL_PRELOAD_QUANT": "1"},
    {"SPOOL_PRELOAD_QUANT": "0", "Preload_Quant": "1"},
    {"spool_preload_quant": "1", "SPOOL_PRELOAD_QUANT": "0"},
])
def test_the_forkserver_and_the_settings_agree(environ: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What an early forkserver preloads is what the settings then say: with
    ``PRELOAD_QUANT=0`` (the field's own name, which the settings take) the processor
    skipped its import and the forkserver still preloaded numpy and pandas."""
    for name in list(os.environ):
        if "PRELOAD_QUANT" in name.upper():
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert preload_quant_from(os.environ) is Settings().preload_quant


def _first_on_path(folder: Path, sitecustomize: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sitecustomize`` run at the start of every process the test starts (the daemon,
    its forkserver, its workers): a folder that holds it, first on ``PYTHONPATH``."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(sitecustomize)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(folder), os.environ.get("PYTHONPATH", "")]))


_SLOW_PANDAS = '''\
import sys, time
class _SlowPandas:
    """pandas' import, once, 2 s slower (as on a loaded host: 3.1 s has been seen)."""
    slowed = False
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and not _SlowPandas.slowed:
            _SlowPandas.slowed = True
            time.sleep(2.0)
        return None
sys.meta_path.insert(0, _SlowPandas())
'''


def test_off_a_first_fast_quant_job_waits_for_the_import_outside_its_time(
        daemon: Callable[..., Daemon], spool_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, the first FAST quant job has the processor import numpy and pandas on its
    background thread (as at the start, with the preload on) and waits for it, outside
    its time.  Run by the tool itself, the import counted against the job's timeout (a
    get_kline of 0.1 s failed ``timeout`` and left its thread behind, as did every FAST
    job that came during that import), and one cut short by the host (out of
    descriptors) left half-made numpy and pandas to every later FAST job of the process,
    which then failed or crashed it, where the background import restarts it.

    The import is made 2 s slower than it is here, so that a timeout of 1 s tells the
    import counted from a run slowed by a loaded host: with 0.1 s against an import of
    0.23 to 0.3 s, a run of 4 ms took 0.17 s under CI's load and failed ``timeout``."""
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT", raising=False)
    _first_on_path(tmp_path / "slow", _SLOW_PANDAS, monkeypatch)
    write_synthetic(spool_root / "data", symbols=2, bars=120, seed=5)
    d = daemon(JOB_NUM="1", SPOOL_PRELOAD_QUANT="0")
    drop(spool_root, "echo", {"tool": "echo", "params": {"message": "hi"}})
    assert wait_record(spool_root, "echo")["state"] == "done"
    assert not _has_numpy(d.pid)
    for n in range(3):
        drop(spool_root, f"kline{n}", {"tool": "get_kline", "timeout": 1.0,
                                       "params": {"symbol": "S0000", "limit": 3}})
    for n in range(3):
        kline = wait_record(spool_root, f"kline{n}", 60)
        assert kline["state"] == "done", kline
        assert len(kline["result"]["rows"]) == 3
    assert _has_numpy(d.pid)
    assert d.stop() == 0


def test_off_a_compute_quant_job_has_its_worker_import_them_outside_its_time(
        daemon: Callable[..., Daemon], spool_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, a worker imports numpy, pandas and the quant computations before its first
    COMPUTE quant job, outside that job's time (it tells the pool, which gives the job
    READY_WAIT_S meanwhile and starts its time once the import is over), as a slow tool
    module's import at the worker's start is.  Imported by the job's own run, they took
    its time limit: in a worker, 0.3 to 0.85 s on the 2-CPU host here (loaded), where
    this backtest's run takes 0.05 to 0.1 s (a first run's, pandas' lazy imports most
    of it); so it failed ``timeout`` at 0.25 s, on each attempt, each on a fresh worker
    that imported them again.  Its second attempt only spares a host stalled past its
    time a false failure.

    Each worker's import of pandas is made 2 s slower than it is here (the forkserver
    never imports it, so each worker it forks slows its own), so that a timeout of 1 s
    tells the import counted from a run slowed by a loaded host, on both attempts: with
    0.25 s against a run of 0.05 to 0.1 s, the margin was the one a loaded CI host ate
    in the FAST test above (a 4 ms run took 0.17 s)."""
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT", raising=False)
    _first_on_path(tmp_path / "slow", _SLOW_PANDAS, monkeypatch)
    write_synthetic(spool_root / "data", symbols=1, bars=60, seed=5)
    d = daemon(JOB_NUM="1", SPOOL_PRELOAD_QUANT="0")
    _, worker = _forkserver_and_worker(d.pid)
    assert not _has_numpy(worker)
    drop(spool_root, "bt", {"tool": "run_backtest", "timeout": 1.0, "max_attempts": 2,
                            "params": {"symbols": ["S0000"], "fast": 5, "slow": 20}})
    bt = wait_record(spool_root, "bt", 60)
    assert bt["state"] == "done", bt
    assert set(bt["result"]["symbols"]) == {"S0000"}
    if bt["attempts"] == 1:  # else the first one's worker was killed: this one is gone
        assert _has_numpy(worker), "imported by the worker that ran the job"
    assert d.stop() == 0


def test_off_a_worker_measures_its_room_under_the_cap_after_the_import(
        daemon: Callable[..., Daemon], spool_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, a worker's room under ``SPOOL_WORKER_MEMORY_MB`` is measured again once it has
    imported the quant modules, as a preloaded worker's is when ready.  Measured before,
    at the smallest cap (384 MB), the import's 130 MB (182 MB when ready, 309 after) put
    every quant job's worker past half its room (310 MB used of a 283 MB line): it
    retired after each job, and each job's fresh worker imported them again."""
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT", raising=False)
    write_synthetic(spool_root / "data", symbols=1, bars=60, seed=5)
    d = daemon(JOB_NUM="1", SPOOL_PRELOAD_QUANT="0", SPOOL_WORKER_MEMORY_MB="384")
    pids = []
    for n in range(2):
        drop(spool_root, f"bt{n}", {"tool": "run_backtest",
                                    "params": {"symbols": ["S0000"], "fast": 5, "slow": 20}})
        bt = wait_record(spool_root, f"bt{n}", 60)
        assert bt["state"] == "done", bt
        pids.append(bt["pid"])
    assert d.stop() == 0
    retired = [line for line in d.logs().splitlines() if "worker retires" in line]
    assert retired == [], retired
    assert len(set(pids)) == 1, pids


def _said(tool: str) -> list[tuple[object, ...]]:
    """What a worker sends before it runs a task of ``tool``."""
    ours, theirs = mp.Pipe()
    if worker_module.quant_to_load(load_registry([]), tool):
        worker_module.load_quant(ours)
    said = []
    while theirs.poll():
        said.append(pickle.loads(theirs.recv_bytes()))
    return said


@pytest.mark.parametrize("tool", ["run_backtest", "analyze_factor", "sleep", "echo",
                                  "no_such_tool"])
def test_with_them_loaded_a_worker_says_nothing_more_before_a_job(tool: str) -> None:
    """The preload on (or an earlier job's import), a task costs not one message more."""
    for name in QUANT_PRELOAD:
        importlib.import_module(name)
    assert _said(tool) == []


def test_a_worker_that_imports_them_says_so_before_and_after(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It sends "loading" (the pool gives the task READY_WAIT_S) before the import,
    "ready" (its time starts) after; other tools' tasks send none.  A module that is
    not there, or fails as it is imported, fails nothing here (the job's run fails with
    its own import), as in the forkserver's preload."""
    (tmp_path / "fails_at_import.py").write_text("raise MemoryError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(worker_module, "QUANT_PRELOAD",
                        (*QUANT_PRELOAD, "tests.no_such_module", "fails_at_import"))
    assert _said("run_backtest") == [("loading",), ("ready",)]
    assert _said("analyze_factor") == [("loading",), ("ready",)]
    assert _said("sleep") == []


_SQUEEZE = '''\
import os, sys
class _Squeeze:
    """pandas' import cut short once, part way (as by a MemoryError under the worker's
    cap), in the first worker whose import gets there: that worker's marker file."""
    def find_spec(self, name, path=None, target=None):
        marker = os.environ.get("QA_SQUEEZED")
        if name == "pandas._libs.interval" and marker and not os.path.exists(marker):
            open(marker, "w").close()
            raise MemoryError("squeezed")
        return None
sys.meta_path.insert(0, _Squeeze())
'''


def test_off_an_import_cut_short_fails_its_job_and_retires_the_worker(
        daemon: Callable[..., Daemon], spool_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's import of numpy and pandas before a quant job fails part way (a
    MemoryError under SPOOL_WORKER_MEMORY_MB, out of descriptors): the job fails with
    that error, not run, and the worker retires.  It ran before, over the half-made
    modules left in sys.modules: its own import failed "partially initialized module
    'pandas'" (or "numpy._core.multiarray failed to import", or the worker crashed
    SIGSEGV), the memory it said nothing of, and the worker stayed: every later quant job
    it took failed the same way, with memory to spare (h354)."""
    monkeypatch.delenv("SPOOL_PRELOAD_QUANT", raising=False)
    _first_on_path(tmp_path / "squeeze", _SQUEEZE, monkeypatch)
    write_synthetic(spool_root / "data", symbols=1, bars=60, seed=5)
    d = daemon(JOB_NUM="1", SPOOL_PRELOAD_QUANT="0", QA_SQUEEZED=str(tmp_path / "squeezed"))
    _, worker = _forkserver_and_worker(d.pid)
    job = {"tool": "run_backtest", "timeout": 30,
           "params": {"symbols": ["S0000"], "fast": 5, "slow": 20}}
    drop(spool_root, "bt1", job)
    first = wait_record(spool_root, "bt1", 60)
    assert first["state"] == "failed", first
    assert first["error"]["type"] == "tool_error"
    assert first["error"]["message"].startswith("out of memory (MemoryError: squeezed)"), first
    drop(spool_root, "bt2", job)
    second = wait_record(spool_root, "bt2", 60)
    assert second["state"] == "done", second
    assert second["pid"] != worker, "run by a fresh worker"
    assert d.stop() == 0
