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
from daemonkit import Daemon, drop, locations, make_spool, wait_for, wait_record

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
    root = _small_spool(tmp_path, mounts)
    _use_every_inode(root.parent)
    assert os.statvfs(root.parent).f_favail == 0
    d = Daemon(root, tmp_path / "daemon.log").start(wait_ready=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(30) != 0
    finally:
        d.abort()
    assert "no free inodes (df -i)" in d.logs(), d.logs()[-2000:]


def test_a_stop_says_which_finished_runs_it_requeues_for_want_of_room(
        tmp_path: Path, mounts: list[Path]) -> None:
    """A run that finished while its record could not be written (no inode left) was
    requeued at a stop as one the stop cut short ("requeued", "shutdown") and ran again
    after the restart, its result thrown away unsaid (QA, h315)."""
    root = _small_spool(tmp_path, mounts)
    mnt = root.parent
    release = tmp_path / "release"
    d = Daemon(root, tmp_path / "daemon.log", JOB_NUM="1").start()
    try:
        drop(root, "done-once", {"tool": "t_record",
                                 "params": {"seconds": 60, "release": str(release)}})
        wait_for((root / "running" / "done-once.json").exists, 30, "the run")
        _use_every_inode(mnt)
        release.touch()
        wait_for(lambda: "pausing claims" in d.logs(), 30, "the record refused")
        assert d.stop() == 0
    finally:
        d.abort()
    said = [e for e in d.events() if "each runs again after the restart" in e.get("msg", "")]
    assert [e["ids"] for e in said] == [["done-once"]], d.logs()[-3000:]
    assert (root / "pending" / "done-once.json").exists()


def test_a_record_out_of_inodes_takes_the_one_its_runs_progress_file_held(
        tmp_path: Path, mounts: list[Path]) -> None:
    """Out of inodes, a finished COMPUTE run's progress file held the spare its record
    needed (the inode the run before left): the processor paused its claims for good,
    holding the one inode that would free it (QA, h315: the spool stalled until an
    operator removed files)."""
    root = _small_spool(tmp_path, mounts)
    mnt = root.parent
    release = tmp_path / "release"
    d = Daemon(root, tmp_path / "daemon.log", JOB_NUM="1").start()
    try:
        drop(root, "warm", {"tool": "echo"})  # its job file becomes the spare
        assert wait_record(root, "warm", 30)["state"] == "done"
        drop(root, "long", {"tool": "t_progress_burst",
                            "params": {"seconds": 60, "release": str(release)}})
        wait_for((root / "progress" / "long.json").exists, 30, "the run's progress file")
        _use_every_inode(mnt)
        assert os.statvfs(mnt).f_favail == 0
        release.touch()
        assert wait_record(root, "long", 30)["state"] == "done", d.logs()[-3000:]
        assert not (root / "progress" / "long.json").exists()
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_quarantine_out_of_inodes_puts_the_drop_back_and_records_it_later(
        tmp_path: Path, mounts: list[Path]) -> None:
    """Its record refused (no inode left), a quarantined drop stayed as
    ``failed/<id>.orig`` with no record: no reader showed it, nothing tried its record
    again until another change of ``failed/``, and the record then written said
    "quarantined when its processor died", the reason lost (QA, h315).  It goes back to
    ``pending/``, and is quarantined with its reason once there is room."""
    root = _small_spool(tmp_path, mounts)
    mnt = root.parent
    d = Daemon(root, tmp_path / "daemon.log", JOB_NUM="1").start()
    try:
        made = _use_every_inode(mnt)
        made.pop().unlink()  # one left: the drop's
        (root / "pending" / "q.json").write_bytes(b'{"tool": "echo", "params": ')
        assert os.statvfs(mnt).f_favail == 0
        wait_for(lambda: "pausing quarantines" in d.logs(), 30, "the refused quarantine")
        assert (root / "pending" / "q.json").exists(), sorted(os.listdir(root / "failed"))
        assert not (root / "failed" / "q.orig").exists()
        for path in made:
            path.unlink()
        record = wait_record(root, "q", 60)
        assert record["error"]["type"] == "invalid_job", record
        assert "when its processor died" not in record["error"]["message"], record
        assert (root / "failed" / "q.orig").read_bytes() == b'{"tool": "echo", "params": '
        assert d.stop() == 0
    finally:
        d.abort()


def _small_spool(tmp_path: Path, mounts: list[Path]) -> Path:
    """A fresh spool on a tmpfs of 80 inodes of its own."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=8m,nr_inodes=80", "tmpfs", str(mnt)])
    mounts.append(mnt)
    root = mnt / "spool"
    make_spool(root)
    return root


def _use_every_inode(mnt: Path) -> list[Path]:
    """Files beside the spool (nothing the processor cleans up) until no inode is left."""
    filler = mnt / "filler"
    filler.mkdir()
    made: list[Path] = []
    with contextlib.suppress(OSError):
        for n in range(80):
            (filler / f"f{n}").touch()
            made.append(filler / f"f{n}")
    return made
