"""``bench.creates.spread_subfolders``: the benchmarks' run folders take ext4's
top-of-hierarchy flag, so each workload's spool is placed away from earlier deletions."""

from __future__ import annotations

import array
import fcntl
import os
from pathlib import Path

import pytest

from bench.creates import FS_IOC_GETFLAGS, FS_TOPDIR_FL, has_journal, spread_subfolders


def _flags(folder: Path) -> int:
    flags = array.array("i", [0])
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
    finally:
        os.close(fd)
    return flags[0]


def test_a_folder_on_ext4_is_marked_top_of_its_hierarchy(tmp_path: Path) -> None:
    if has_journal(tmp_path) is None:
        pytest.skip("the temporary folder is not on ext4")
    folder = tmp_path / "run"
    folder.mkdir()
    assert not _flags(folder) & FS_TOPDIR_FL
    assert spread_subfolders(folder) is True
    assert _flags(folder) & FS_TOPDIR_FL


def test_where_the_flag_cannot_be_set_it_says_so(tmp_path: Path) -> None:
    assert spread_subfolders(tmp_path / "missing") is False
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    folder = Path(os.path.realpath(shm)) / f"spread-{os.getpid()}"
    folder.mkdir()
    try:
        assert spread_subfolders(folder) is False  # tmpfs keeps no such flag
    finally:
        folder.rmdir()
