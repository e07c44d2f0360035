"""``JOB_NUM``'s default is the CPUs the process may use: its affinity mask's, at most
its cgroups' CPU quota, rounded up (spool/cpus.py). ``os.cpu_count()`` counted the
host's, so a processor pinned to one CPU or held to a quota started a worker per host
CPU."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spool import cpus

PRINT_JOB_NUM = "from spool.settings import load_settings; print(load_settings().job_num)"


def job_num_of_a_process(tmp_path: Path, preexec: Callable[[], None] | None = None) -> int:
    """The ``JOB_NUM`` a new process's settings take, none set (no ``.env`` either)."""
    env = {name: value for name, value in os.environ.items() if name != "JOB_NUM"}
    env["SPOOL_DIR"] = str(tmp_path / "spool")
    done = subprocess.run([sys.executable, "-c", PRINT_JOB_NUM], cwd=tmp_path, env=env,
                          preexec_fn=preexec, capture_output=True, text=True, timeout=60,
                          check=True)
    return int(done.stdout)


def test_the_default_is_the_cpus_the_process_may_use(tmp_path: Path) -> None:
    """The affinity mask's count, lowered to a quota where this host's cgroups set one (a
    CI container's ``--cpus``)."""
    may_use = cpus.available_cpus()
    assert job_num_of_a_process(tmp_path) == may_use
    quota = cpus.cgroup_cpu_quota()
    assert may_use == (len(os.sched_getaffinity(0)) if quota is None else
                       min(len(os.sched_getaffinity(0)), max(1, math.ceil(quota))))


def test_a_process_pinned_to_one_cpu_takes_one_worker(tmp_path: Path) -> None:
    mask = os.sched_getaffinity(0)
    if len(mask) < 2:
        pytest.skip("one CPU: pinning to one changes nothing")
    assert job_num_of_a_process(tmp_path, lambda: os.sched_setaffinity(0, {min(mask)})) == 1


@contextlib.contextmanager
def cgroup_with_quota(quota_cpus: float) -> Iterator[tuple[Path, bool]]:
    """A new cgroup under this process's, with a CPU quota, and a child without one
    (yielded, with whether it is cgroup v2's); skips where none can be made (not root, no
    cpu controller to write)."""
    made: list[Path] = []
    try:
        for mount_point, folder, v2 in cpus._cpu_folders(
                Path("/proc/self/cgroup").read_text().splitlines(),
                Path("/proc/self/mountinfo").read_text().splitlines()):
            if not folder.is_dir():
                continue
            parent = folder / f"spoolq-test-{uuid.uuid4().hex[:8]}"
            try:
                parent.mkdir()
            except OSError:
                continue
            made.append(parent)
            period = 100_000
            try:
                if v2:
                    (folder / "cgroup.subtree_control").write_text("+cpu")
                    (parent / "cpu.max").write_text(f"{int(quota_cpus * period)} {period}")
                else:
                    (parent / "cpu.cfs_period_us").write_text(str(period))
                    (parent / "cpu.cfs_quota_us").write_text(str(int(quota_cpus * period)))
                child = parent / "child"
                child.mkdir()
                made.append(child)
                if v2:
                    (parent / "cgroup.subtree_control").write_text("+cpu")
            except OSError:
                continue
            assert mount_point in (folder, *folder.parents)
            yield child, v2
            return
        pytest.skip("no cgroup with a cpu controller this process may write")
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()


def test_a_cgroup_quota_above_its_process_caps_the_default(tmp_path: Path) -> None:
    """Half a CPU's quota on the parent of the process's cgroup (systemd's slice, a
    container's cgroup above the service's): one worker, rounded up from 0.5."""
    with cgroup_with_quota(0.5) as (child, _):
        def join() -> None:
            (child / "cgroup.procs").write_text(str(os.getpid()))

        assert job_num_of_a_process(tmp_path, join) == 1


def fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def test_cgroup_v2_quotas_are_read_up_to_the_mount_and_the_tightest_wins(tmp_path: Path) -> None:
    """Read from files laid out as the kernel's (this host may have no cgroup v2): the
    service's own ``max``, its slice's 250 ms a 100 ms period, the root's none."""
    root = tmp_path / "sys fs cgroup"
    service = root / "system.slice" / "spool-processor.service"
    service.mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "system.slice" / "cpu.max").write_text("250000 100000\n")
    (service / "cpu.max").write_text("max 100000\n")
    escaped = str(root).replace(" ", "\\040")
    proc = fake_proc(tmp_path, "0::/system.slice/spool-processor.service\n",
                     f"30 23 0:26 / {escaped} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cpus.cgroup_cpu_quota(proc) == 2.5
    assert cpus.available_cpus(proc) == min(3, len(os.sched_getaffinity(0)))
    (service / "cpu.max").write_text("50000 100000\n")
    assert cpus.cgroup_cpu_quota(proc) == 0.5
    assert cpus.available_cpus(proc) == 1


def test_a_containers_own_cgroup_mounted_as_its_root_is_read(tmp_path: Path) -> None:
    """cgroup v1 in a container without a cgroup namespace: the path is the host's
    (``/docker/<id>``), the mount shows the container's cgroup as its root."""
    mount = tmp_path / "cpu"
    v1_quota(mount, 100_000)
    proc = fake_proc(tmp_path, "5:cpu,cpuacct:/docker/0123abcd\n1:name=systemd:/docker/x\n",
                     f"40 30 0:33 /docker/0123abcd {mount} ro,nosuid shared:9 - cgroup "
                     "cgroup rw,cpu,cpuacct\n")
    assert cpus.cgroup_cpu_quota(proc) == 1.0
    assert cpus.available_cpus(proc) == 1


def test_no_quota_or_unreadable_cgroups_lower_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "cpu"
    v1_quota(mount, -1)
    proc = fake_proc(tmp_path, "5:cpu,cpuacct:/\n",
                     f"40 30 0:33 / {mount} rw - cgroup cgroup rw,cpu,cpuacct\n"
                     "garbage\n41 30 0:34 / /x rw - cgroup\n")
    assert cpus.cgroup_cpu_quota(proc) is None
    assert cpus.available_cpus(proc) == len(os.sched_getaffinity(0))
    assert cpus.cgroup_cpu_quota(tmp_path / "no-proc-here") is None


def v1_quota(folder: Path, quota_us: int, period_us: int = 100_000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period_us}\n")


def test_a_mount_point_not_utf8_neither_raises_nor_hides_the_quota(tmp_path: Path) -> None:
    """The kernel writes a mount point's bytes as they are: one not UTF-8 (a disk mounted
    at a latin-1 name, anywhere on the host) raised UnicodeDecodeError out of every
    Settings() without JOB_NUM, which load_settings told as 'cannot read .env: not
    UTF-8' with no .env there."""
    mount = tmp_path / os.fsdecode(b"cgroup-caf\xe9")
    v1_quota(mount, 50_000)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_bytes(b"5:cpu,cpuacct:/\n")
    (proc / "mountinfo").write_bytes(
        b"28 27 0:25 / /media/caf\xe9 rw - vfat /dev/sdb1 rw\n"
        + b"40 30 0:33 / " + os.fsencode(mount) + b" rw - cgroup cgroup rw,cpu,cpuacct\n")
    assert cpus.cgroup_cpu_quota(proc) == 0.5
    assert cpus.available_cpus(proc) == 1


def test_a_mount_point_not_ascii_under_the_c_locale(tmp_path: Path) -> None:
    """LC_ALL=C with PYTHONUTF8=0 reads files as ASCII: 'café' in any mount point
    raised there."""
    mount = tmp_path / "cgroup-café"
    v1_quota(mount, 50_000)
    proc = fake_proc(tmp_path, "5:cpu,cpuacct:/\n",
                     f"28 27 0:25 / /media/café rw - vfat /dev/sdb1 rw\n"
                     f"40 30 0:33 / {mount} rw - cgroup cgroup rw,cpu,cpuacct\n")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from spool import cpus;"
         " print(cpus.cgroup_cpu_quota(Path(sys.argv[1])))", str(proc)],
        env=env, cwd=Path(cpus.__file__).parent.parent, capture_output=True, text=True,
        timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "0.5"), done.stderr


def test_a_cgroup_mount_with_an_empty_source_is_read(tmp_path: Path) -> None:
    """mount(2) takes "" as the source; mountinfo then has two spaces before the super
    options, which a split on any whitespace shifted into the source's place."""
    mount = tmp_path / "cpu"
    v1_quota(mount, 50_000)
    proc = fake_proc(tmp_path, "5:cpu:/\n", f"66 46 0:29 / {mount} rw - cgroup  rw,cpu\n")
    assert cpus.cgroup_cpu_quota(proc) == 0.5


def test_a_cgroup_mounted_that_is_not_above_the_process_lowers_nothing(tmp_path: Path) -> None:
    """Another cgroup bind-mounted (``mount --bind /sys/fs/cgroup/cpu/other /x``): its
    quota is not this process's, where it was read as its mount point's."""
    host, other = tmp_path / "cpu", tmp_path / "other"
    v1_quota(host, -1)
    v1_quota(host / "a" / "b", -1)
    v1_quota(other, 50_000)
    proc = fake_proc(tmp_path, "5:cpu:/a/b\n",
                     f"51 50 0:29 / {host} rw - cgroup cgroup rw,cpu\n"
                     f"66 46 0:29 /other {other} rw - cgroup cgroup rw,cpu\n")
    assert cpus.cgroup_cpu_quota(proc) is None


def test_a_mount_from_above_the_cgroup_namespace_gives_only_its_own_quota(
        tmp_path: Path) -> None:
    """After ``unshare -C`` the inherited mount's root reads ``/../..`` and the process's
    path ``/x`` (from the namespace's root): ``mount/x`` is some other cgroup (the host's
    ``/x``), where it was read as the process's."""
    mount = tmp_path / "cpu"
    v1_quota(mount, -1)
    v1_quota(mount / "x", 50_000)
    proc = fake_proc(tmp_path, "5:cpu:/x\n", f"32 31 0:29 /../.. {mount} rw - cgroup cgroup"
                     " rw,cpu\n")
    assert cpus.cgroup_cpu_quota(proc) is None
    v1_quota(mount, 150_000)  # the mount point is above the namespace: its quota holds
    assert cpus.cgroup_cpu_quota(proc) == 1.5
