"""A drop whose mtime is past year 9999 (or before year 1).

tmpfs, xfs and btrfs keep 64-bit file times, so any submitter can ``touch -d
@99999999999999`` a drop (and ``cp -p`` or ``rsync -t`` copy such a time). A job
without ``submitted_at`` is dated by its file's mtime, and ``datetime`` stops at
year 9999: the processor crashed on the claim, and again at every start
(recovery's record of the orphan); statusd could not start; ``spoolq ls`` and
``show`` failed. Such a time now reads as the nearest one ``datetime`` holds (and the
processor gives a drop whose mtime is ahead of its arrival that arrival as its mtime).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, make_spool, statusd_port, tmpfs, wait_record

from spool.clock import utc_from_ns

StartDaemon = Callable[..., Daemon]
FAR_NS = 99_999_999_999_999 * 10**9  # year 3,170,843


def test_file_times_past_what_datetime_holds_are_clamped() -> None:
    assert utc_from_ns(FAR_NS) == datetime.max.replace(tzinfo=UTC)
    assert utc_from_ns(-FAR_NS) == datetime.min.replace(tzinfo=UTC)
    assert utc_from_ns(1_700_000_000 * 10**9) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_a_drop_dated_past_year_9999_runs_and_the_spool_reads(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        root = mnt / "spool"
        make_spool(root)
        path = root / "pending" / "future.json"
        path.write_bytes(b'{"tool": "echo", "params": {"message": "late"}}')
        os.utime(path, ns=(FAR_NS, FAR_NS))
        if path.stat().st_mtime_ns != FAR_NS:
            pytest.skip("this filesystem cannot hold the time")
        daemons = [Daemon(root, tmp_path / "processor.log")]
        try:
            d = daemons[0].start()
            rec = wait_record(root, "future", 20)
            assert d.running(), "the processor crashed:\n" + d.logs()[-2000:]
            # Dated when it came (its mtime set to that as it was taken in), not 9999.
            assert rec["state"] == "done"
            assert rec["submitted_at"] <= rec["finished_at"], rec
            os.utime(root / "done" / "future.json", ns=(FAR_NS, FAR_NS))  # read there too
            env = {**os.environ, "SPOOL_DIR": str(root)}
            for args in (["ls"], ["show", "future"]):
                proc = subprocess.run([sys.executable, "-m", "spool.cli.main", *args],
                                      env=env, capture_output=True, text=True, check=False)
                assert proc.returncode == 0, (args, proc.stderr)
                assert "future" in proc.stdout
            daemons.append(Daemon(root, tmp_path / "statusd.log", module="statusd",
                                  STATUSD_HOST="127.0.0.1", STATUSD_PORT="0"))
            sd = daemons[1]
            sd.start(wait_ready=False)
            base = f"http://127.0.0.1:{statusd_port(sd)}"
            with urllib.request.urlopen(f"{base}/api/v1/tasks/future", timeout=10) as reply:
                assert orjson.loads(reply.read())["result"] == {"message": "late"}
            assert d.stop() == 0
        finally:
            for daemon in daemons:
                if daemon.running():
                    daemon.abort()
