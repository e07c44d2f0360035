"""A spool on a filesystem out of inodes, not bytes: the errors say which.

A tmpfs with ``nr_inodes=`` (or ext4 full of small files) refuses to make a file
with ENOSPC while ``df -h`` shows room.  The CLI and the processor said only "No
space left on device"; they now add "no free inodes (df -i)".  The processor's
status file keeps being rewritten (in place), and nothing is lost meanwhile: once
inodes are free the processor goes on by itself.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from spoolkit import spoolq, start_processor, stop_processor


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=48,mode=0755",
                           "tmpfs", str(mnt)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(mnt: Path) -> list[Path]:
    """Take every free inode; the files made."""
    made: list[Path] = []
    while True:
        path = mnt / f"filler-{len(made)}"
        try:
            path.touch()
        except OSError:
            return made
        made.append(path)


def _heartbeat(root: Path) -> str:
    (status,) = [name for name in os.listdir(root / "owners") if name.endswith(".json")]
    return str(orjson.loads((root / "owners" / status).read_bytes())["heartbeat_at"])


def test_out_of_inodes_is_said_and_nothing_is_lost(small_fs: Path, tmp_path: Path) -> None:
    root = small_fs / "spool"
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never"}
    assert spoolq(env, "init").returncode == 0
    (root / "tmp" / "bad").write_bytes(b"{not json")  # made now, dropped when full
    proc = start_processor(root, env, tmp_path / "processor.log", SPOOL_SETTLE_S="0.2",
                           SPOOL_SCAN_S="0.5", JOB_NUM="1")
    try:
        filler = _fill(small_fs)  # at once: before its second heartbeat, most likely
        assert filler, "no inode was free to take"
        # Its status file is rewritten in place: the processor shows as up, and says why
        # it pauses (its first heartbeat once left it no inode to do so: it went stale).
        full = _heartbeat(root)
        for _ in range(100):
            if _heartbeat(root) != full:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        else:
            raise AssertionError("the status file was not rewritten while out of inodes")
        assert os.statvfs(small_fs).f_bavail > 0  # bytes to spare: only inodes are out
        submitted = spoolq(env, "submit", "echo", "-p", "message=1", "--id", "later")
        assert submitted.returncode == 1
        assert submitted.stderr.startswith("spoolq: error: cannot publish later.json: "
                                           "No space left on device: no free inodes (df -i)")
        os.rename(root / "tmp" / "bad", root / "pending" / "bad.json")
        stats = ""
        for _ in range(100):
            stats = spoolq(env, "stats").stdout
            if "no free inodes" in stats:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert "No space left on device: no free inodes (df -i)" in stats, stats
        for path in filler:
            path.unlink()
        assert spoolq(env, "submit", "echo", "-p", "message=1", "--id", "later",
                      "--wait", "--timeout", "20").returncode == 0
        waited = spoolq(env, "wait", "bad", "--timeout", "20", "--json")
        assert waited.returncode == 1
        record = orjson.loads(waited.stdout)
        assert record["error"]["type"] == "invalid_job"
        assert (root / "failed" / "bad.orig").read_bytes() == b"{not json"
    finally:
        stop_processor(proc)
