"""A forkserver started without spoolq's preload (its files gone for a moment, as an
upgrade is installed over a running processor) ran on unsaid: no subreaper for its
workers' leftovers, and a SIGTERM to the process group ended it with every running
job (QA, h314).  The processor says so, once."""

from __future__ import annotations

from pathlib import Path

from daemonkit import Daemon, drop, wait_record

SAID = "started without spoolq's preload"


def test_a_forkserver_without_its_preload_is_said(spool_root: Path, tmp_path: Path) -> None:
    for module, said in (("processor", 0), ("unloaded_processor", 1)):
        d = Daemon(spool_root, tmp_path / f"{module}.log", module=module, JOB_NUM="1")
        try:
            d.start()
            drop(spool_root, module, {"tool": "sleep", "params": {"seconds": 0}})
            assert wait_record(spool_root, module, 30)["state"] == "done"
            assert d.stop() == 0
        finally:
            d.abort()
        assert d.logs().count(SAID) == said, d.logs()
