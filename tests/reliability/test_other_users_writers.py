"""A slow writer of another user's file is waited for, as the processor's own are.

A writer that creates its job in ``pending/`` and then waits on its source (``wget -O``
from a slow server, a shell's ``{ sleep 3; cat job; } >``) holds the file open past the
settle time.  The processor asks the kernel with a read lease, which it may take only
of its own files (or with CAP_LEASE): under the shipped units' user, another user's
such drop was failed "empty file" while its writer went on writing the job into the
quarantine, told all was well.  The change feed sees any user's file created and not
yet closed after writing.  Real daemon: root without CAP_LEASE (``setpriv``), files
owned by nobody.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, record, wait_for, wait_quarantined

NOBODY = 65534
NO_LEASE = ["setpriv", "--bounding-set", "-lease", "--"]
SETTLE_S = 0.5


def test_another_user_s_slow_writer_is_waited_for_until_it_closes(
        spool_root: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_LEASE")
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=NO_LEASE, JOB_NUM="1",
               SPOOL_SETTLE_S=str(SETTLE_S))
    try:
        d.start()
        job = orjson.dumps({"tool": "echo", "params": {"message": "slow"}})
        with (spool_root / "pending" / "slow.json").open("wb") as writer:
            os.fchown(writer.fileno(), NOBODY, NOBODY)  # not the processor's to lease
            time.sleep(SETTLE_S * 6)  # the source is slow: nothing yet
            writer.write(job[:10])
            writer.flush()
            time.sleep(SETTLE_S * 6)  # half of it, unchanged for many settle times
            assert record(spool_root, "slow") is None, "judged while its writer wrote"
            writer.write(job[10:])
        rec = wait_for(lambda: record(spool_root, "slow"), 10, "a record of slow")
        assert rec["state"] == "done", rec
        assert rec["result"] == {"message": "slow"}

        # Closed half-written, it is judged on the settle time as ever.
        started = time.monotonic()
        with (spool_root / "pending" / "half.json").open("wb") as writer:
            os.fchown(writer.fileno(), NOBODY, NOBODY)
            writer.write(job[:10])
        found = wait_quarantined(spool_root, ["half.json"], 10)
        assert time.monotonic() - started >= SETTLE_S
        assert "malformed JSON" in found["half.json"]["error"]["message"]
        assert "still open for writing" not in found["half.json"]["error"]["message"]
        assert d.stop() == 0
    finally:
        d.kill()
