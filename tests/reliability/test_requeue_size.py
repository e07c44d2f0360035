"""A retry of a job near SPOOL_MAX_JOB_BYTES is run, not quarantined as too large.

A requeue adds ``submitted_at``, ``attempts``, ``not_before`` and the run's
``error`` to the job file: a 1,990-byte drop under a 2,000-byte limit that timed
out with ``max_attempts`` 2 came back as 2,172 bytes, and intake quarantined its
retry as "too large" (``invalid_job``, attempts 0, the timeout forgotten). The
limit is on what the client sent: a requeue's own fields do not count, and a
drop that only carries such fields is measured without them too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
from relkit import Daemon, wait_for, wait_quarantined, wait_record

StartDaemon = Callable[..., Daemon]
LIMIT = 2000


def _padded(job: dict[str, object], size: int) -> bytes:
    job["meta"] = {"pad": ""}
    job["meta"] = {"pad": "x" * (size - len(orjson.dumps(job)))}
    data = orjson.dumps(job)
    assert len(data) == size
    return data


def test_a_retry_near_the_limit_runs(spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon(SPOOL_MAX_JOB_BYTES=str(LIMIT), JOB_NUM="1")
    near = _padded({"tool": "sleep", "params": {"seconds": 5}, "timeout": 0.3,
                    "max_attempts": 2}, LIMIT - 10)
    # Over the limit by what a requeue adds, but what the client sent is over it too.
    forged = _padded({"tool": "echo", "attempts": 1, "submitted_at": "2026-11-30T00:00:00Z",
                      "error": {"type": "timeout", "message": "x"}}, LIMIT + 100)
    plain = _padded({"tool": "echo"}, LIMIT + 1)
    for name, data in (("near", near), ("forged", forged), ("plain", plain)):
        (spool_root / "pending" / f"{name}.json").write_bytes(data)
    rec = wait_record(spool_root, "near", 30)
    assert rec["error"]["type"] == "timeout" and rec["attempts"] == 2, rec
    wait_for(lambda: not os.listdir(spool_root / "pending"), 10, "pending/ to empty")
    found = wait_quarantined(spool_root, ("forged.json", "plain.json"))
    for name in ("forged.json", "plain.json"):
        assert "too large" in found[name]["error"]["message"], found[name]
    assert "near.json" not in found
    assert d.stop() == 0


def test_a_drop_over_the_limit_in_its_bytes_is_too_large_however_small_its_job(
        spool_root: Path, daemon: StartDaemon) -> None:
    # DESIGN: larger job files fail.  Only the requeue fields are forgiven, so what a
    # parser throws away (whitespace, a key given twice) still counts.
    small = orjson.dumps({"tool": "echo", "params": {"message": "x"}})
    pad = "x" * LIMIT
    drops = {
        "spaces": small[:-1] + b" " * LIMIT + b"}",
        "twice": b'{"params":{"message":"' + pad.encode() + b'"},' + small[1:],
        "pretty": orjson.dumps({"tool": "echo", "params": {"message": "y" * (LIMIT - 100)}},
                               option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b" " * 40),
    }
    for name, data in drops.items():
        assert len(data) > LIMIT
        (spool_root / "pending" / f"{name}.json").write_bytes(data)
    d = daemon(SPOOL_MAX_JOB_BYTES=str(LIMIT), JOB_NUM="1")
    found = wait_quarantined(spool_root, [f"{name}.json" for name in drops])
    assert not os.listdir(spool_root / "pending")
    for name in drops:
        assert "too large" in found[f"{name}.json"]["error"]["message"], found.get(name)
    assert d.stop() == 0
