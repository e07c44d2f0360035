"""A spool path near PATH_MAX: usable up to MAX_ROOT_BYTES, refused past it.

Every daemon names spool files by full path, and the kernel refuses a path of
PATH_MAX (4096) bytes or more (ENAMETOOLONG).  Under a root of 3,990 bytes a drop
of a 100-character id could be made (through a folder descriptor) but not read: the
processor logged ``cannot scan pending/`` at every scan, once a second, and the
jobs stayed in ``pending/`` for good, never quarantined.  Past MAX_ROOT_BYTES the
spool is refused by every command and daemon with one line; up to it, a drop with
the longest name a folder can hold is still quarantined.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
from spoolkit import spoolq, start_processor, stop_processor

from spool.layout import MAX_ROOT_BYTES, NAME_MAX


def _long_path(base: Path, size: int) -> Path:
    """A path of exactly ``size`` bytes under ``base``, its parent made (the CLI runs
    there)."""
    path = str(base)
    while len(path) < size:
        left = size - len(path) - 1  # the slash
        path += "/" + "d" * (left if left <= 200 else min(200, left - 2))
    assert len(path) == size
    Path(path).parent.mkdir(parents=True)
    return Path(path)


def test_a_spool_path_past_the_limit_is_refused_with_one_line(
        tmp_path: Path, env: dict[str, str]) -> None:
    root = _long_path(tmp_path, MAX_ROOT_BYTES + 1)
    env = {**env, "SPOOL_DIR": str(root)}
    init = spoolq(env, "init")
    assert init.returncode == 1, init
    assert init.stdout == ""
    assert init.stderr.splitlines() == [
        f"spoolq: error: the spool path is {MAX_ROOT_BYTES + 1} bytes long, over "
        f"{MAX_ROOT_BYTES}: a file name of up to {NAME_MAX} bytes in its folders would pass "
        "the kernel's PATH_MAX (4096 bytes) and could not be read or moved; use a shorter "
        "SPOOL_DIR (a symlink to this one will do)"]
    assert not root.exists()


def test_the_processor_refuses_a_spool_path_past_the_limit(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    root = _long_path(tmp_path, 3990)
    for name in ("pending", "running", "done", "failed", "tmp", "stage", "progress",
                 "cancel", "owners"):
        (root / name).mkdir(parents=True)
    log = tmp_path / "processor.log"
    try:
        proc = start_processor(root, env, log, SPOOL_DIR=str(root))
    except AssertionError as exc:
        assert "the processor exited 2" in str(exc)
    else:
        stop_processor(proc)
        raise AssertionError("the processor started on a spool path past the limit")
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("spool-processor: error: the spool path is 3990 bytes long")


def test_at_the_limit_the_longest_drop_name_is_quarantined(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    root = _long_path(tmp_path, MAX_ROOT_BYTES)
    env = {**env, "SPOOL_DIR": str(root)}
    assert spoolq(env, "init").returncode == 0
    longest = "x" * (NAME_MAX - 5) + ".json"
    (root / "pending" / longest).write_bytes(b'{"tool": "echo"}')
    job_id = "j" * 128  # the longest id: its staging names are the longest the spool makes
    (root / "tmp" / "drop").write_bytes(b'{"tool": "echo", "params": {"message": 1}}')
    os.rename(root / "tmp" / "drop", root / "pending" / f"{job_id}.json")
    # A bad name waits for the settle time before its quarantine (a writer's own
    # temporary file is renamed meanwhile): short here.
    proc = start_processor(root, env, tmp_path / "processor.log", SPOOL_SCAN_S="0.5",
                           SPOOL_SETTLE_S="0.2")
    try:
        shown = spoolq(env, "wait", job_id, "--timeout", "20", "--json")
        assert shown.returncode == 0, shown
        assert orjson.loads(shown.stdout)["result"] == {"message": 1}
        later = spoolq(env, "submit", "echo", "--id", "c" * 128, "--not-before",
                       "2099-01-01T00:00:00Z")
        assert later.returncode == 0, later
        cancel = spoolq(env, "cancel", "c" * 128)  # staged as cancel-<id>.<pid>.<hex>.tmp
        assert cancel.returncode == 0, cancel
        deadline = time.monotonic() + 20
        while (root / "pending" / longest).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_processor(proc)
    failed = [orjson.loads((root / "failed" / name).read_bytes())
              for name in os.listdir(root / "failed") if name.endswith(".json")]
    quarantined = [r for r in failed if r.get("source", {}).get("name") == longest]
    assert len(quarantined) == 1 and quarantined[0]["error"]["type"] == "invalid_job"
    assert os.listdir(root / "pending") == []
    assert os.listdir(root / "running") == []
    assert "File name too long" not in (tmp_path / "processor.log").read_text()
