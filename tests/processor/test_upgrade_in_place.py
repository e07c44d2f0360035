"""spoolq installed over a running processor (``pip install -U``, then the restart a while
later), or its files gone for the half second a reinstall takes.

Started as the console script, as the unit starts it, each COMPUTE worker the forkserver
started ran that script file again: with it gone or changed, every COMPUTE job on a new
worker failed ``worker_crashed`` ("status 1", a raw traceback on stderr) until the
processor was restarted (QA, h314).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from daemonkit import Daemon, drop, wait_record

SCRIPT = """\
import re
import sys
from processor.__main__ import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
"""What pip writes for the ``spool-processor`` entry point (its shebang aside)."""


def test_compute_jobs_run_on_after_the_console_script_is_gone(spool_root: Path,
                                                              tmp_path: Path) -> None:
    script = tmp_path / "bin" / "spool-processor"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    d = Daemon(spool_root, tmp_path / "daemon.log", JOB_NUM="1", SPOOL_WORKER_MAX_JOBS="1")
    d.argv = [sys.executable, str(script)]
    try:
        d.start()
        drop(spool_root, "before", {"tool": "sleep", "params": {"seconds": 0}})
        assert wait_record(spool_root, "before", 30)["state"] == "done"
        os.rename(script, tmp_path / "bin" / "spool-processor.aside")  # a reinstall's moment
        for n in range(3):  # the first on the worker started before the move, then new ones
            drop(spool_root, f"after-{n}", {"tool": "sleep", "params": {"seconds": 0}})
            record = wait_record(spool_root, f"after-{n}", 30)
            assert record["state"] == "done", (record, d.logs())
        assert d.stop() == 0
    finally:
        d.abort()
    assert "Traceback" not in d.logs()
