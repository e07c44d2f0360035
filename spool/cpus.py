"""How many CPUs this process may use: ``JOB_NUM``'s default (DESIGN section 7: the CPU
count).

``os.cpu_count()`` counts the host's.  A processor pinned to fewer (``taskset``,
systemd's ``CPUAffinity=`` or ``AllowedCPUs=``, a container's ``--cpuset-cpus``) or held
to a CPU quota (systemd's ``CPUQuota=``, a container's ``--cpus``, Kubernetes' CPU
limit) started one COMPUTE worker a host CPU all the same: on a 64-CPU host under a
2-CPU quota, 64 workers shared two CPUs' time, each job 32 times as slow as alone and
its timeout counted all along.  The count here is the affinity mask's, lowered to the
quota of the process's cgroup and of each cgroup above it (cgroup v2's ``cpu.max``,
v1's ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), rounded up, and never below 1.
What cannot be read (no ``/proc``, no cgroup mounted, a path another namespace hides)
lowers nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

PROC = Path("/proc/self")


def available_cpus(proc: Path = PROC) -> int:
    """The CPUs this process may use: its affinity mask's, at most its cgroups' quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 1e-9)))
    return max(1, count)


def cgroup_cpu_quota(proc: Path = PROC) -> float | None:
    """The CPUs' worth of time the tightest quota over this process's cgroups allows
    (1.5: 150 ms a 100 ms period), or None where no quota is set or none can be read."""
    try:  # bytes as paths are: a mount point not UTF-8 (or not ASCII under LC_ALL=C)
        memberships = os.fsdecode((proc / "cgroup").read_bytes()).splitlines()
        mounts = os.fsdecode((proc / "mountinfo").read_bytes()).splitlines()
    except OSError:
        return None
    quotas = [quota for mount_point, folder, v2 in _cpu_folders(memberships, mounts)
              for quota in _quotas_up_from(mount_point, folder, v2)]
    return min(quotas, default=None)


def _cpu_folders(memberships: list[str],
                 mounts: list[str]) -> Iterator[tuple[Path, Path, bool]]:
    """Each mounted hierarchy with the cpu controller: where it is mounted, this
    process's folder in it, and whether it is cgroup v2's."""
    paths: dict[str, str] = {}  # "v2" or "v1" -> the process's path in that hierarchy
    for line in memberships:  # "0::/a/b" (v2), "3:cpu,cpuacct:/a/b" (v1)
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            paths.setdefault("v2", path)
        elif "cpu" in controllers.split(","):
            paths.setdefault("v1", path)
    for line in mounts:  # one space between fields; an empty mount source is ""
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1:]
        if len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2].split(",")
        version = "v2" if fstype == "cgroup2" else "v1" if (
            fstype == "cgroup" and "cpu" in options) else None
        if version in paths:
            mount_point = Path(_unescape(fields[4]))
            folder = _folder(_unescape(fields[3]), mount_point, paths[version])
            if folder is not None:
                yield mount_point, folder, version == "v2"


def _folder(root: str, mount_point: Path, path: str) -> Path | None:
    """Where ``path`` (of the hierarchy) is under a mount of its folder ``root``, both
    as this process's cgroup namespace shows them; None when the mount shows no folder
    above it (another cgroup bind-mounted: its quota is not this process's).

    A root outside the namespace (``/../..``: the hierarchy mounted before a
    ``unshare -C``) is above the namespace's root, which is above ``path``, but where
    below it is not told: only the mount point's own quota is known to apply."""
    root_parts = PurePosixPath(root).parts[1:]
    path_parts = PurePosixPath(path).parts[1:]
    below = path_parts[len(root_parts):]
    if path_parts[:len(root_parts)] == root_parts and ".." not in below:
        return mount_point.joinpath(*below)
    ups = len(root_parts)
    if set(root_parts) == {".."} and path_parts[:ups] != ("..",) * ups:
        return mount_point
    return None


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written in octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _quotas_up_from(mount_point: Path, folder: Path, v2: bool) -> Iterator[float]:
    """The quota of ``folder`` and of each folder above it up to the mount point, in
    CPUs."""
    for place in (folder, *folder.parents):
        quota = _quota(place, v2)
        if quota is not None:
            yield quota
        if place == mount_point:
            return


def _quota(place: Path, v2: bool) -> float | None:
    """``place``'s own quota in CPUs, or None (none set, or not readable there)."""
    try:
        if v2:
            quota, _, period = (place / "cpu.max").read_text().partition(" ")
            if quota.strip() == "max":
                return None
            return int(quota) / int(period)
        quota_us = int((place / "cpu.cfs_quota_us").read_text())
        period_us = int((place / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
