"""A spool folder on another mount: the processor says so, and moves nothing.

``rename()`` cannot cross mounts (EXDEV, "Invalid cross-device link"), a bind mount
of the same filesystem included.  With ``done/`` a mount of its own (or a symlink to
another filesystem), the processor used to start, claim jobs, run them and then
fail to rename each record in: ``spool I/O trouble; pausing claims`` every 0.5 to 30
s for good, the jobs held in ``running/``.  With ``stage/`` a bind mount (same device
number, so the device check passed) every record failed the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, locations, make_spool, wait_record

from spool import fsops
from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], check=True)


def _refused(spool_root: Path, tmp_path: Path, folder: str) -> None:
    drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
    d = Daemon(spool_root, tmp_path / "daemon.log").start(wait_ready=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(30) == 2
    finally:
        d.abort()
    lines = d.logs().strip().splitlines()
    assert lines[-1].startswith(f"spool-processor: error: {folder}/ of {spool_root} is on "
                                "another mount than pending/"), lines
    assert "EXDEV" in lines[-1]
    assert locations(spool_root) == {"j1": ["pending"]}  # nothing claimed


def test_a_state_folder_that_is_a_mount_of_its_own_is_refused_at_start(
        spool_root: Path, tmp_path: Path, mounts: list[Path]) -> None:
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool_root / "done")])
    mounts.append(spool_root / "done")
    _refused(spool_root, tmp_path, "done")


def test_a_state_folder_that_is_a_symlink_to_another_filesystem_is_refused_at_start(
        spool_root: Path, tmp_path: Path) -> None:
    elsewhere = Path("/dev/shm") / f"spoolq-failed-{uuid.uuid4().hex}"
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    elsewhere.mkdir()
    try:
        (spool_root / "failed").rmdir()
        (spool_root / "failed").symlink_to(elsewhere)
        _refused(spool_root, tmp_path, "failed")
    finally:
        for name in os.listdir(elsewhere):
            (elsewhere / name).unlink()
        elsewhere.rmdir()


def test_a_bind_mounted_stage_folder_is_left_for_tmp(
        spool_root: Path, tmp_path: Path, mounts: list[Path]) -> None:
    stage = spool_root / "stage"
    _mount(["--bind", str(stage), str(stage)])  # the same device number, another mount
    mounts.append(stage)
    d = Daemon(spool_root, tmp_path / "daemon.log")
    try:
        d.start()
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "sleep", "params": {"seconds": 0}})
        assert wait_record(spool_root, "j1")["state"] == "done"
        assert wait_record(spool_root, "j2")["state"] == "done"
        assert d.stop() == 0
    finally:
        d.abort()
    notes = [e for e in d.events() if str(e.get("msg", "")).startswith("staging in tmp/")]
    assert len(notes) == 1 and "not on tmp/'s mount" in str(notes[0]["reason"]), notes
    assert not [e for e in d.events() if e.get("msg") == "spool I/O trouble; pausing claims"]


def test_a_state_folder_that_is_a_btrfs_subvolume_is_refused_at_start(
        tmp_path: Path, mounts: list[Path]) -> None:
    """A btrfs subvolume is one mount with another device number: the mount probe's
    lookup failed first (ENOENT, "one mount"), and a ``done/`` made a subvolume (for
    snapshots, as operations.md's backups suggest) held every job in ``running/`` (QA)."""
    if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
        pytest.skip("needs btrfs-progs")
    image = tmp_path / "btrfs.img"
    with image.open("wb") as f:
        f.truncate(256 << 20)
    if subprocess.run(["mkfs.btrfs", "-q", str(image)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("mkfs.btrfs failed here")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _mount(["-o", "loop", str(image), str(mnt)])
    mounts.append(mnt)
    root = mnt / "spool"
    make_spool(root)
    (root / "done").rmdir()
    subprocess.run(["btrfs", "subvolume", "create", str(root / "done")], check=True,
                   capture_output=True)
    _refused(root, tmp_path, "done")


def test_a_state_folder_on_another_device_of_one_mount_is_refused(
        spool_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, where no btrfs can be made: the device numbers alone tell."""
    real = fsops.device_of
    monkeypatch.setattr(fsops, "device_of", lambda folder: (
        -1 if Path(folder).name == "done" else real(folder)))
    with pytest.raises(SpoolIOError, match=r"^done/ of .* is on another mount than pending/"):
        Mover(Layout(spool_root), FsyncMode.NEVER).require_one_mount()


def test_a_start_on_a_filesystem_out_of_inodes_says_so(
        tmp_path: Path, mounts: list[Path]) -> None:
    """The owner lease's error said "No space left on device" alone, which sent
    operators to ``df -h`` (room to spare): every other write says ``df -i`` (QA)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", str(mnt)])
    mounts.append(mnt)
    root = mnt / "spool"
    make_spool(root)
    filler = mnt / "filler"  # beside the spool: nothing the start cleans up
    filler.mkdir()
    with contextlib.suppress(OSError):  # until no inode is left
        for n in range(64):
            (filler / f"f{n}").touch()
    assert os.statvfs(mnt).f_favail == 0
    d = Daemon(root, tmp_path / "daemon.log").start(wait_ready=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(30) != 0
    finally:
        d.abort()
    assert "no free inodes (df -i)" in d.logs(), d.logs()[-2000:]
