"""Benchmark of spool transitions: claim-and-complete per second under each
``SPOOL_FSYNC`` mode, next to a bare ``os.rename`` loop on the same filesystem
in the same run (the floor).

Run from the repository root: ``python -m bench.spool_ops`` (``--help`` for
sizes).  A *claim-and-complete* is what a processor does per job around the
tool: ``Spool.claim`` (flock the pending inode, rename it into ``running/``
with NOREPLACE, read it), building the ``Record``, and ``Spool.complete``
(write the record into the spare inode the previous job left in ``stage/``,
rename it into ``done/``, move the running file to ``stage/`` as the next spare,
remove any stale sidecars, which ``follow=True`` finds without a syscall).  That
is two transitions and at least three renames per job, against one rename per
item for the floor; ratios are given per job and per transition.  Every
measurement runs ``--repeat`` times, in rounds; the floor runs before the first
round and after each one, and each measurement's ratio is to the mean of the
floor runs on either side of its round (figures and ratios are medians).  The
library runs with ``recycle=True`` and ``follow=True``, as the processor does.

Also printed: the same syscalls issued directly from Python with no spool
library (the protocol's own floor), so the gap splits into what the protocol
costs on this filesystem and what the library adds.  Each line also gives the
CPU time (user + system, ``time.process_time``) per item, and each ratio is
also given by CPU time: on a shared host the wall clock follows the load, CPU
time much less.  Jobs are seeded untimed (``never``) and the filesystem is
synced before each timed loop.  Every spool and scratch folder lives under
``--dir`` (default: a temporary folder in the repository, so on the
repository's filesystem) and is removed afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import fcntl
import functools
import itertools
import os
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from bench.creates import probe_line
from spool.fsops import Mover
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

REPO = Path(__file__).resolve().parents[1]
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
JOB = {"tool": "echo", "params": {"message": "hello"}, "meta": {"bench": True}}
RESULT = {"message": "hello"}


class Rate(NamedTuple):
    """One timed loop: items per second (wall clock) and CPU seconds per item."""

    per_s: float
    cpu_s: float


def filesystem_of(path: Path) -> str:
    """``fstype (device)`` of the mount holding ``path``, from /proc/mounts."""
    best, found = "", "unknown"
    real = str(path.resolve())
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        device, mount, fstype, options = line.split()[:4]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, found = mount, f"{fstype} ({device} on {mount}, {options})"
    return found


# -- floors ----------------------------------------------------------------------------


def bare_rename(base: Path, n: int) -> Rate:
    """Renames per second of n small files from one folder to another."""
    src, dst = base / "a", base / "b"
    src.mkdir()
    dst.mkdir()
    names = [f"job-{i:06d}.json" for i in range(n)]
    for name in names:
        (src / name).write_bytes(b'{"tool": "echo"}')
    pairs = [(str(src / name), str(dst / name)) for name in names]
    os.sync()
    cpu, start = time.process_time(), time.perf_counter()
    for old, new in pairs:
        os.rename(old, new)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return Rate(n / elapsed, cpu / n)


def protocol_syscalls(base: Path, n: int, recycle: bool = True) -> Rate:
    """Jobs per second issuing a claim-and-complete's essential syscalls directly.

    ``recycle``: as the processor does it (the finished job's inode becomes the
    next record's staging file); otherwise a fresh inode per record and an
    unlink per job file, as before recycling.
    """
    folders = {name: base / name for name in ("pending", "running", "done", "stage")}
    for folder in folders.values():
        folder.mkdir()
    names = [f"job-{i:06d}.json" for i in range(n)]
    for name in names:
        (folders["pending"] / name).write_bytes(b'{"tool": "echo"}')
    paths = [tuple(str(folders[f] / name) for f in ("pending", "running", "stage", "done"))
             for name in names]
    record = b'{"tool": "echo", "state": "done", "result": {"message": "hello"}}'
    spare = ""
    os.sync()
    cpu, start = time.process_time(), time.perf_counter()
    for pending, running, staged, done in paths:
        fd = os.open(pending, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(pending, running)  # the library uses renameat2(NOREPLACE)
        os.read(fd, 65536)
        if spare:
            out = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            spare = staged
            out = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        os.write(out, record)
        os.close(out)
        os.rename(spare, done)
        if recycle:
            spare = staged
            os.rename(running, spare)
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)  # nobody else has it open
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        else:
            spare = ""
            os.unlink(running)
        os.close(fd)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for folder in folders.values():
        shutil.rmtree(folder)
    return Rate(n / elapsed, cpu / n)


# -- the library -------------------------------------------------------------------------


def seeded_spool(root: Path, mode: FsyncMode, n: int) -> tuple[Spool, list[str]]:
    layout = Layout(root)
    seeder = Spool(layout, Mover(layout, FsyncMode.NEVER))
    seeder.mover.make_folders()
    ids = [f"job-{i:06d}" for i in range(n)]
    job = Job.model_validate(JOB)
    for job_id in ids:
        seeder.submit(job, job_id)
    os.sync()
    return Spool(layout, Mover(layout, mode, recycle=True), follow=True), ids


def claim_and_complete(spool: Spool, ids: list[str]) -> None:
    for job_id in ids:
        claim = spool.claim(job_id)
        if claim is None:
            raise RuntimeError(f"lost the claim of {job_id} with no competitor")
        job = Job.model_validate_json(claim.data)
        now = datetime.now(UTC)
        # One validation, as the processor builds its record (processor/starter.py: Starter.start).
        record = record_from_job(job, job_id, JobState.DONE, claim.mtime_ns, result=RESULT,
                                 attempts=job.attempts + 1, started_at=now, finished_at=now,
                                 duration_s=0.0, host=spool.host, pid=spool.pid)
        spool.complete(claim, record)
    spool.mover.drop_spares()
    spool.mover.flush()
    spool.close()


def library_rate(base: Path, mode: FsyncMode, n: int,
                 profile: cProfile.Profile | None = None) -> Rate:
    root = base / f"spool-{mode.value}"
    spool, ids = seeded_spool(root, mode, n)
    if profile is not None:
        profile.enable()
    cpu, start = time.process_time(), time.perf_counter()
    claim_and_complete(spool, ids)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if profile is not None:
        profile.disable()
    leftovers = [p for s in (JobState.PENDING, JobState.RUNNING)
                 for p in os.listdir(spool.layout.folder(s))]
    if leftovers or len(os.listdir(spool.layout.folder(JobState.DONE))) != n:
        raise RuntimeError("the spool is not in the expected end state")
    shutil.rmtree(root)
    return Rate(n / elapsed, cpu / n)


def line(label: str, n: int, rate: float, unit: str, *, cpu_s: float,
         ratios: tuple[float, float] | None = None) -> None:
    """One figure; for jobs, ``ratios`` to the floor (by wall clock, by CPU time) per job,
    printed per job and per transition."""
    text = ""
    if ratios is not None:
        wall, cpu = ratios
        text = (f"{wall:5.2f}x floor per job, {2 * wall:5.2f}x per transition "
                f"(CPU: {2 * cpu:5.2f}x)")
    print(f"  {label:<44} N={n:<6} {rate:10,.0f} {unit:<11} {1e6 / rate:7.1f} us "
          f"cpu {1e6 * cpu_s:6.1f} us  {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spool_ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=REPO,
                        help="where the temporary spools go (default: the repository)")
    parser.add_argument("-n", "--jobs", type=int, default=5000,
                        help="jobs per run for the floor, never and batch")
    parser.add_argument("--always-jobs", type=int, default=500,
                        help="jobs per run for SPOOL_FSYNC=always")
    parser.add_argument("--repeat", type=int, default=3, help="runs per median")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one SPOOL_FSYNC=never run and print where time goes")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix=".bench-spool-", dir=args.dir))
    try:
        run(base, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def run(base: Path, args: argparse.Namespace) -> None:
    """``repeat`` rounds of every measurement, each round between two floor runs.

    A measurement's ratio is to the mean of the floor runs just before and just
    after its round: the floor drifts by a quarter within one run here, so a
    single floor taken at the start would decide the ratios by its timing.
    """
    n, repeat = args.jobs, args.repeat
    print(f"spool under {base} on {filesystem_of(base)}")
    print(probe_line(base))
    print(f"medians of {repeat} rounds, each between two floor runs (ratios to their mean); "
          "one job = claim + record + complete (2 transitions)")
    measured: list[tuple[str, int, Callable[[], Rate]]] = [
        ("same syscalls, no library (protocol floor)", n,
         lambda: protocol_syscalls(base, n)),
        ("  the same, a new inode per record", n,
         lambda: protocol_syscalls(base, n, recycle=False)),
    ]
    for mode in (FsyncMode.NEVER, FsyncMode.BATCH, FsyncMode.ALWAYS):
        count = args.always_jobs if mode is FsyncMode.ALWAYS else n
        measured.append((f"claim-and-complete SPOOL_FSYNC={mode.value}", count,
                         functools.partial(library_rate, base, mode, count)))
    floors = [bare_rename(base, n)]
    rates: list[list[Rate]] = [[] for _ in measured]
    for _ in range(repeat):
        for i, (_, _, fn) in enumerate(measured):
            rates[i].append(fn())
        floors.append(bare_rename(base, n))
    line("bare os.rename loop (the floor)", n, statistics.median(f.per_s for f in floors),
         "renames/s", cpu_s=statistics.median(f.cpu_s for f in floors))
    bases = [Rate((a.per_s + b.per_s) / 2, (a.cpu_s + b.cpu_s) / 2)
             for a, b in itertools.pairwise(floors)]
    for (label, count, _), runs in zip(measured, rates, strict=True):
        pairs = list(zip(runs, bases, strict=True))
        line(label, count, statistics.median(r.per_s for r in runs), "jobs/s",
             cpu_s=statistics.median(r.cpu_s for r in runs),
             ratios=(statistics.median(r.per_s / f.per_s for r, f in pairs),
                     statistics.median(f.cpu_s / r.cpu_s for r, f in pairs)))
    print(f"  floor runs, in order: {', '.join(f'{f.per_s:,.0f}' for f in floors)} renames/s")
    if args.profile:
        profile = cProfile.Profile()
        library_rate(base, FsyncMode.NEVER, n, profile)
        print("\nwhere SPOOL_FSYNC=never spends its time (cProfile, by own time):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    raise SystemExit(main())
