"""What a file create costs where a benchmark's spools go, and why it may be slow.

ext4 mounted without a journal (this project's CI and development hosts) does not
reuse an inode deleted in the last minute, or in the last six while the block of
the inode table holding it is dirty (``recently_deleted()`` in the kernel's
``fs/ext4/ialloc.c``).  Each new inode's search walks past every such inode in the
parent folder's block group, so after many deletions (a test run, an earlier
benchmark's clean-up, a ``spoolq purge``) each create costs time in proportion to
them: 0.1 ms on a settled disk, over 0.9 ms right after one, seen with ``perf``
(``find_inode_bit`` -> ``recently_deleted``, 57 % of a client's samples).  The
processor creates no inode on a job's path (a finished job's inode holds the
next record) but a client's drops do, so the benchmarks print this probe with their
figures: a slow probe explains a slow run.

A benchmark's own clean-up is such a deletion, and the next run's spools went into the
same block group (a folder's subfolders go to its group), so back-to-back runs slowed
each other: a client's drop cost 150 to 220 us of CPU instead of 35, on the two CPUs
the processor needs.  :func:`spread_subfolders` marks a run's folder as the top of a
hierarchy (``chattr +T``, ``FS_TOPDIR_FL``): ext4's Orlov allocator then puts each
folder made in it into a block group of its own choosing, with free inodes above the
average, so each workload's spool starts away from the deletions before it.
"""

from __future__ import annotations

import array
import fcntl
import os
import time
from pathlib import Path

PROBE_FILES = 300
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_subfolders(folder: Path) -> bool:
    """Mark ``folder`` ``FS_TOPDIR_FL`` (``chattr +T``), so that the filesystem places
    each folder made in it as it places top-level ones (ext4: in a block group of its
    own, see the module's note); False where the filesystem does not take the flag."""
    flags = array.array("i", [0])
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags[0] & FS_TOPDIR_FL)


def has_journal(path: Path) -> bool | None:
    """Whether the ext4 filesystem holding ``path`` has a journal; None when it is not
    ext4 or the kernel does not say."""
    device = _ext4_device(path)
    if device is None:
        return None
    try:
        task = Path(f"/sys/fs/ext4/{device}/journal_task").read_text().strip()
    except OSError:
        return None
    return task != "<none>"


def _ext4_device(path: Path) -> str | None:
    """The device name (``vda``) of the ext4 mount holding ``path``, from /proc/mounts."""
    real, best, found = str(path.resolve()), "", None
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        device, mount, fstype = line.split()[:3]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, found = mount, (os.path.basename(device) if fstype == "ext4" else None)
    return found


def drop_cost_us(folder: Path, n: int = PROBE_FILES) -> float:
    """Microseconds of one client drop (create ``tmp``, write, rename) in a new folder
    under ``folder``, which keeps the files: removing them would slow the next creates."""
    probe = folder / f".create-probe-{os.getpid()}-{time.monotonic_ns()}"
    (probe / "tmp").mkdir(parents=True)
    (probe / "pending").mkdir()
    start = time.perf_counter()
    for i in range(n):
        tmp = f"{probe}/tmp/{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, b'{"tool": "echo"}')
        finally:
            os.close(fd)
        os.rename(tmp, f"{probe}/pending/{i}.json")
    return (time.perf_counter() - start) / n * 1e6


def probe_line(folder: Path) -> str:
    """One line for a benchmark's header: a drop's cost under ``folder`` and the
    filesystem's journal, with what a slow figure means."""
    cost = drop_cost_us(folder)
    journal = has_journal(folder)
    text = f"a client's drop under {folder}: {cost:,.0f} us ({PROBE_FILES} files)"
    if journal is False:
        text += ("; ext4 without a journal: creates slow down for minutes after many "
                 "deletions (see bench/creates.py)")
    return text
