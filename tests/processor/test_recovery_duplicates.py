"""A running processor settles, within a few scans, what another process's transition
cut short left in ``done/`` and ``failed/`` (a record of the id in each, an original
without its quarantine record), with a ``done/`` of thousands of records that its
periodic scans do not list (see tests/spool/test_recovery_cost.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, wait_for, wait_record
from quick_processor import RACY_ENV

from spool import recheck

pytestmark = pytest.mark.timeout(90)

StartDaemon = Callable[..., Daemon]
QUICK_RACY_NS = 500_000_000


def _where(root: Path, job_id: str) -> list[str]:
    return [s for s in ("done", "failed") if os.path.lexists(root / s / f"{job_id}.json")]


def _aged(path: Path, data: bytes, seconds: float) -> None:
    path.write_bytes(data)
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_running_processor_settles_duplicates_left_by_others(
        spool_root: Path, daemon: StartDaemon) -> None:
    root = spool_root
    d = daemon(SPOOL_SCAN_S="0.2")
    drop(root, "real", {"tool": "echo", "params": {"message": "m"}})
    done_bytes = orjson.dumps(wait_record(root, "real"))
    failed_bytes = done_bytes.replace(b'"state":"done"', b'"state":"failed"')
    assert failed_bytes != done_bytes
    for n in range(3000):
        (root / "done" / f"old-{n:05d}.json").write_bytes(done_bytes)
    for n in range(3):
        (root / "failed" / f"bad-{n}.json").write_bytes(failed_bytes)
    time.sleep(1.0)  # scans that see done/ this large

    _aged(root / "failed" / "redone.json", failed_bytes, 100)  # a run done after it
    (root / "done" / "redone.json").write_bytes(done_bytes)
    _aged(root / "done" / "cancelled.json", done_bytes, 100)  # a cancel after it
    (root / "failed" / "cancelled.json").write_bytes(failed_bytes)
    (root / "failed" / "lost.orig").write_bytes(b"what a client sent")  # no record yet

    wait_for(lambda: _where(root, "redone") == ["done"]
             and _where(root, "cancelled") == ["failed"]
             and _where(root, "lost") == ["failed"], 10.0, "the leftovers settled")
    assert (root / "failed" / "cancelled.json").read_bytes() == failed_bytes
    lost = orjson.loads((root / "failed" / "lost.json").read_bytes())
    assert lost["error"]["type"] == "invalid_job"
    assert (root / "failed" / "lost.orig").read_bytes() == b"what a client sent"
    assert d.running()
    assert d.stop() == 0


def test_a_duplicate_left_after_many_quiet_scans_is_still_settled(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The periodic scans of a quiet spool check no name of failed/ (see
    tests/spool/test_recovery_quiet.py); a record another processor then publishes in
    done/ alone, beside an older failed one of its id, is still settled by the scans'
    rotation over failed/ (within ceil(2,500 / 1,000) + 1 scans)."""
    root = spool_root
    # The folders' stamps are trusted 0.5 s after their last change, not 2 s
    # (quick_processor): the same 20 quiet scans come 1.5 s sooner.
    assert QUICK_RACY_NS < recheck.RACY_NS
    d = daemon(SPOOL_SCAN_S="0.1", module="quick_processor", **{RACY_ENV: str(QUICK_RACY_NS)})
    drop(root, "real", {"tool": "echo", "params": {"message": "m"}})
    done_bytes = orjson.dumps(wait_record(root, "real"))
    failed_bytes = done_bytes.replace(b'"state":"done"', b'"state":"failed"')
    for n in range(2500):
        _aged(root / "failed" / f"bad-{n:04d}.json", failed_bytes, 100)
    # Scans that find failed/ and done/ unchanged, dozens of them: about 20 once the
    # stamps are trusted, as 4 s gave with the shipped 2 s.
    time.sleep(QUICK_RACY_NS / 1e9 + 2.0)

    (root / "done" / "bad-2400.json").write_bytes(done_bytes)
    wait_for(lambda: _where(root, "bad-2400") == ["done"], 10.0, "the duplicate settled")
    assert len(os.listdir(root / "failed")) == 2499
    assert d.running()
    assert d.stop() == 0
