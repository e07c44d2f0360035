"""A processor whose background import of numpy and pandas fails for lack of a resource
(descriptors, memory) restarts rather than run its FAST tools on a half-made numpy."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, record, wait_for, wait_record

from processor.quant.synth import write_synthetic
from processor.startup import BackgroundImports, cut_short

# The processor's background import of numpy and pandas, which the preload makes.
pytestmark = pytest.mark.preload_quant


def test_a_background_import_cut_short_by_emfile_restarts_the_processor(
        daemon: Callable[..., Daemon], spool_root: Path) -> None:
    """Retried in the same process, such an import "works" on what the failed one left:
    a numpy whose modules loaded before the failure are not those it uses after it (a
    pandas Series printed without its dtype line, seen by hand).  The processor requeues
    what runs, without counting the attempt, and exits 75 (EX_TEMPFAIL), which the
    unit's ``Restart=on-failure`` restarts; the grace period (60 s here) is not waited
    for, since what would finish in it is what the broken modules may spoil."""
    # FAST quant jobs there at start: one that ran beside the failing import failed
    # tool_error "cannot import name 'CATALOGUE' from partially initialized module",
    # its attempt spent.  FAST runs wait for the import now, so these are never claimed.
    write_synthetic(spool_root / "data", symbols=1, bars=30, seed=3)
    early = {"factors": {"tool": "list_factors"},
             "kline": {"tool": "get_kline", "params": {"symbol": "S0000", "limit": 2}}}
    for job_id, body in early.items():
        drop(spool_root, job_id, body)
    gate = spool_root.parent / "refuse-now"
    d = daemon(tools="ptools,slowimport", SPOOL_GRACE_S="60",
               SLOWIMPORT_REFUSE="numpy._core._type_aliases", SLOWIMPORT_GATE=str(gate))
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    # The import fails only once the job runs: refused before its claim, the job was
    # left as dropped (CI saw that once, on a slow host).
    wait_for((spool_root / "running" / "long.json").exists, 30, "the job to run")
    gate.touch()
    assert d.proc is not None
    d.proc.wait(30)
    assert d.proc.returncode == 75, d.logs()
    back = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert back["attempts"] == 0, "requeued, the run cut short not counted"
    assert sorted(os.listdir(spool_root / "pending")) == ["factors.json", "kline.json",
                                                          "long.json"]
    assert os.listdir(spool_root / "failed") == [] and os.listdir(spool_root / "done") == []
    assert os.listdir(spool_root / "running") == [] and os.listdir(spool_root / "owners") == []
    events = d.events()
    restart = [e for e in events if e.get("msg", "").startswith("restarting")]
    assert len(restart) == 1 and restart[0]["level"] == "error", events
    assert "numpy._core._type_aliases" in restart[0]["msg"]
    assert "Too many open files" in restart[0]["msg"]
    assert events[-1]["msg"] == "stopped", "the last line is out"

    # Started afresh (as systemd would), the same processor runs the job and a FAST
    # quant tool on a whole numpy and pandas.  Its stop requeues the job still running
    # after a short grace period, not the kit's 5 s.
    d = daemon(tools="ptools", SPOOL_GRACE_S="0.5")
    for job_id in early:
        assert wait_record(spool_root, job_id)["state"] == "done"
    assert len(record(spool_root, "kline")["result"]["rows"]) == 2
    wait_for((spool_root / "running" / "long.json").exists, 30, "the job to run")
    assert d.stop() == 0


def test_only_an_import_its_host_cut_short_counts_as_one() -> None:
    """A restart helps an import that lacked descriptors or memory, not a module's own
    failure (it would fail again at each start, for ever)."""
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE), "numpy/_core/x.py")
    dlopen = ImportError("libopenblas.so.0: cannot open shared object file: "
                         + os.strerror(errno.ENFILE))
    wrapped = ImportError("numpy failed to import")
    wrapped.__cause__ = emfile
    assert cut_short(emfile) and cut_short(dlopen) and cut_short(wrapped)
    assert cut_short(MemoryError())
    assert not cut_short(ModuleNotFoundError("No module named 'numpy'"))
    assert not cut_short(ValueError("a tool module's own bug"))
    assert not cut_short(OSError(errno.ENOENT, os.strerror(errno.ENOENT), "data.csv"))


def test_an_import_cut_short_by_a_failing_disk_or_under_a_guard_counts_as_one() -> None:
    """A read the disk failed (EIO) cuts an import short as a want of descriptors does,
    and so does the ImportError a module's guard raises while handling such an error
    with no ``from`` (the cause is then only the exception's context)."""
    eio = OSError(errno.EIO, os.strerror(errno.EIO), "pandas/core/frame.py")
    guarded = ImportError("pandas failed to import")
    guarded.__context__ = OSError(errno.EMFILE, os.strerror(errno.EMFILE), "numpy/x.py")
    assert cut_short(eio)
    assert cut_short(guarded)
    unrelated = ImportError("No module named 'tables'")
    unrelated.__context__ = ValueError("a module's own bug")
    assert not cut_short(unrelated)


@pytest.mark.parametrize(("body", "outcome"), [
    ("raise OSError(errno.EMFILE, 'Too many open files')", "broken"),
    ("raise ValueError('its own bug')", "done"),
    ("raise SystemExit(3)", "done"),
    ("VALUE = 1", "done"),
], ids=["emfile", "own-error", "system-exit", "fine"])
def test_the_fast_runs_held_for_the_import_are_released_or_the_processor_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, outcome: str) -> None:
    """Whatever the import does, exactly one of on_done (FAST runs released) and
    on_broken (restart) is called: a module that raised SystemExit ended the thread
    with neither, and the FAST jobs would have waited for good."""
    name = f"bgmod_{outcome.replace('-', '_')}_{abs(hash(body))}"
    (tmp_path / f"{name}.py").write_text(f"import errno\n{body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[str] = []
    imports = BackgroundImports([name], on_done=lambda: calls.append("done"),
                                on_broken=lambda why: calls.append("broken"))
    imports.start()
    imports._thread.join(30)
    assert calls == [outcome]
