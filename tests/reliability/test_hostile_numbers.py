"""Integers the spool's JSON cannot hold: a drop with one is quarantined, not run.

orjson, which writes every record, holds integers from -2**63 to 2**64 - 1 and
reads any other integer as a float (so 98765432109876543210 came back in the
record as 9.876543210987654e+19, ``meta`` no longer "echoed back untouched"),
while pydantic's JSON parser, which the claim uses on a file over intake's
4 KiB cache, reads it exactly, and orjson then cannot write the record: the
processor crashed, and crashed again at every start (recovery's record of the
orphan). The CLI refuses such numbers since d24f46a; a drop is quarantined with
the reason, its bytes kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from relkit import Daemon, drop, record, wait_for, wait_quarantined, wait_record

from spool.exact import inexact_integer

StartDaemon = Callable[..., Daemon]

BIG = "98765432109876543210"
PAD = "x" * 5000  # past intake's 4 KiB cache: the claim parses the file again
DROPS = {
    "big-meta.json": f'{{"tool": "echo", "meta": {{"order": {BIG}}}}}',
    "big-large.json": f'{{"tool": "echo", "params": {{"message": [{BIG}]}}, '
                      f'"meta": {{"pad": "{PAD}"}}}}',
    "below-int64.json": '{"tool": "echo", "params": {"message": -9223372036854775809}}',
}
EDGES = {"u64": 18446744073709551615, "i64": -9223372036854775808,
         "digits-in-text": "12345678901234567890123", "float": 1.2345678901234568e+29}


def test_inexact_integer_finds_only_integers_past_64_bits() -> None:
    assert inexact_integer(b'{"a": [1, {"b": 98765432109876543210}]}') == BIG
    assert inexact_integer(b'{"a": -9223372036854775809}') == "-9223372036854775809"
    assert inexact_integer(b'{"a": 18446744073709551615, "b": -9223372036854775808}') is None
    assert inexact_integer(b'{"a": "98765432109876543210", "b": 1e300, "c": 1.5}') is None
    assert inexact_integer(b'{"a": 000000000000000000001}') is None  # not JSON: not ours
    assert inexact_integer(("1" * 5000).encode()) == "1" * 37 + "..."


def test_integers_past_64_bits_are_quarantined_and_the_daemon_goes_on(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon()
    pending = spool_root / "pending"
    for name, text in DROPS.items():
        (pending / name).write_text(text)
    for name, value in EDGES.items():
        drop(spool_root, name, {"tool": "echo", "params": {"message": value}})
    wait_for(lambda: not os.listdir(pending) or not d.running(), 20, "pending/ to empty")
    assert d.running(), "the processor crashed:\n" + d.logs()[-2000:]
    found = wait_quarantined(spool_root, list(DROPS))
    for name, text in DROPS.items():
        rec = found[name]
        assert rec["error"]["type"] == "invalid_job", rec
        assert "does not fit 64 bits" in rec["error"]["message"], rec["error"]["message"]
        orig = spool_root / "failed" / f"{rec['id']}.orig"
        assert orig.read_text() == text, "the original bytes are kept"
    for name, value in EDGES.items():
        assert wait_record(spool_root, name)["result"] == {"message": value}
    assert d.stop() == 0


def test_an_orphan_holding_one_is_failed_at_start_not_a_crash_loop(
        spool_root: Path, daemon: StartDaemon) -> None:
    # Left by a processor before the intake check (it crashed writing the record), or
    # rewritten in place between intake and the claim: recovery reads it exactly.
    (spool_root / "running" / "orphan.json").write_text(DROPS["big-meta.json"])
    d = daemon()
    rec = wait_for(lambda: record(spool_root, "orphan") or not d.running() or None, 20,
                   "the orphan's record, or the processor's exit")
    assert d.running(), "the processor crashed:\n" + d.logs()[-2000:]
    assert rec["error"]["type"] == "abandoned", rec
    assert "does not fit 64 bits" in rec["error"]["message"], rec["error"]["message"]
    assert d.stop() == 0


def test_one_written_in_place_between_intake_and_the_claim_is_not_a_crash(
        spool_root: Path, daemon: StartDaemon) -> None:
    # Written in place (rsync --inplace --times does so) with the same size and mtime:
    # the watch gets no event and the rescan sees no change, so intake's verdict stands
    # and the claim reads the new bytes (pydantic's parser: exactly).
    d = daemon(JOB_NUM="1")
    drop(spool_root, "blocker", {"tool": "sleep", "params": {"seconds": 1.5}})
    wait_for((spool_root / "running" / "blocker.json").exists, 10, "the blocker")
    path = spool_root / "pending" / "swapped.json"
    good = f'{{"tool": "sleep", "params": {{"seconds": 0.01}}, "meta": {{"n": 1, "pad": "{PAD}"}}}}'
    bad = good.replace('"n": 1', f'"n": {BIG}').replace(PAD, PAD[len(BIG) - 1:])
    assert len(bad) == len(good)
    path.write_text(good)
    mtime_ns = path.stat().st_mtime_ns
    time.sleep(0.5)  # judged ready by intake: it waits for the worker
    assert (spool_root / "running" / "blocker.json").exists(), "the blocker ended too soon"
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bad.encode(), 0)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        rec = wait_for(lambda: record(spool_root, "swapped") or not d.running() or None, 20,
                       "the swapped job's record, or the processor's exit")
    finally:
        os.close(fd)
    assert d.running(), "the processor crashed:\n" + d.logs()[-2000:]
    assert rec["state"] == "done" and rec["meta"]["n"] == 1, rec
    assert d.stop() == 0


def test_an_integer_too_long_for_a_float_is_quarantined_at_once(
        spool_root: Path, daemon: StartDaemon) -> None:
    # orjson reads 5,000 digits as "number is infinity": taken for a file still being
    # written, it waited out SPOOL_SETTLE_S and was then called malformed JSON.
    daemon(SPOOL_SETTLE_S="60")
    text = '{"tool": "echo", "params": {"message": ' + "9" * 5000 + "}}"
    (spool_root / "pending" / "long-digits.json").write_text(text)
    rec = wait_quarantined(spool_root, ["long-digits.json"], 15)["long-digits.json"]
    assert rec["error"]["type"] == "invalid_job", rec
    assert "does not fit 64 bits" in rec["error"]["message"], rec
    assert (spool_root / "failed" / "long-digits.orig").read_text() == text
