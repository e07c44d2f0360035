"""Chaos soak of spool-processor: jobs keep coming while the processor is SIGKILLed.

Run from the repository root::

    python -m bench.chaos [--jobs 10000] [--kills 50] [--seed S] [--job-num N]
                          [--fsync always|batch|never] [--max-gap S] [--json]

What it does (issue 8, item 1): plans ``--jobs`` jobs of five kinds (FAST and
COMPUTE, succeeding or failing on purpose, and COMPUTE jobs that hang past a
0.3 s timeout, reporting progress meanwhile), drops them (``tmp/`` then
``rename``) at a steady pace while a real ``python -m processor`` is
SIGKILLed ``--kills`` times at random moments (a fifth of them during start-up
and recovery, the rest while it runs) and restarted at once, then lets a last
processor finish everything and stops it with SIGTERM.  Drops still planned once
the kills are over go at once: no processor runs until that last one starts.  Every run of a job is
recorded by ``bench/chaos_tools.py`` (markers in one ``O_APPEND`` log, plus a
per-id ``flock``) and watched by ``bench/chaos_ledger.py``.  At the end it
prints, and exits 1 unless the first five are 0:

* **lost**: planned ids with no terminal record;
* **run twice at once**: ids with two runs alive at the same time (from the
  markers, a killed run lasting until its process was seen dead; or a run that
  found the id's lock held by a live process);
* **in two folders**: ids in more than one of pending, running, done, failed;
* **wrong outcome**: a record in the wrong state or with the wrong error type,
  or one that does not parse (a timeout job may end ``timeout`` or, when kills
  spent its two attempts, ``abandoned``);
* **stray processes**: processes of any processor incarnation still alive once
  the last one has stopped;
* **re-executions**: runs of a job beyond its first (timeout jobs' planned
  retries aside), split into runs cut short by a kill and runs that finished
  but whose outcome died with the processor before it was recorded;
* wall time, from the first drop to the last processor's exit.

Jobs get ``max_attempts`` 25 so kills never spend them (timeout jobs: 2).
Processes are stopped by pid; the spool (under ``--dir``, default a temporary
folder in ``/tmp``) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psutil

from bench.chaos_ledger import Ledger, Watcher
from bench.chaos_report import (
    KINDS,
    PlannedJob,
    SoakReport,
    check_spool,
    count_runs,
    plan_jobs,
)
from bench.chaos_report import render as render_report
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

REPO = Path(__file__).resolve().parents[1]
STARTUP_KILL_SHARE = 0.2
STARTUP_KILL_WINDOW_S = 1.5


@dataclass(frozen=True, slots=True)
class SoakConfig:
    jobs: int = 10_000
    kills: int = 50
    seed: int = 1
    job_num: int = 2
    fsync: str = "always"
    max_gap_s: float = 4.0
    drain_timeout_s: float = 900.0
    silent_timeouts: bool = False
    workdir: Path | None = None
    keep: bool = False


class Incarnation:
    """One ``python -m processor`` run; its log goes to ``logs/<n>.log``."""

    def __init__(self, root: Path, env: dict[str, str], log: Path) -> None:
        self.root = root
        self._log = open(log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"processor exited {self.proc.returncode} (see its log)")
        return any(f"-{self.proc.pid}-" in n and n.endswith(".json")
                   for n in os.listdir(self.root / "owners"))

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("processor not ready in time")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(30)

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()


class Soak:
    """One soak: a spool, its dropper thread, processor incarnations, a ledger watcher."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.base = Path(tempfile.mkdtemp(prefix="spoolq-chaos-", dir=cfg.workdir))
        self.root = self.base / "spool"
        self.log = self.base / "runs.log"
        self.locks = self.base / "locks"
        self.logs = self.base / "logs"
        self.token = os.urandom(8).hex()
        self.ledger = Ledger(self.log)
        self.kill_ns: dict[int, int] = {}
        self.incarnations: list[Incarnation] = []
        self.kills_over = threading.Event()

    def env(self) -> dict[str, str]:
        return {**os.environ, "SPOOL_DIR": str(self.root), "JOB_NUM": str(self.cfg.job_num),
                "SPOOL_FSYNC": self.cfg.fsync, "SPOOL_SCAN_S": "1", "SPOOL_SETTLE_S": "1",
                "SPOOL_GRACE_S": "10", "SPOOL_TOOLS": "bench.chaos_tools",
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "SPOOLQ_CHAOS_SOAK": self.token}

    def start(self) -> Incarnation:
        inc = Incarnation(self.root, self.env(), self.logs / f"{len(self.incarnations)}.log")
        self.incarnations.append(inc)
        return inc

    def run(self) -> SoakReport:
        for folder in (self.locks, self.logs):
            folder.mkdir()
        Mover(Layout(self.root), FsyncMode(self.cfg.fsync)).make_folders()
        planned = plan_jobs(self.cfg.jobs, self.rng, self.log, self.locks,
                            silent_timeouts=self.cfg.silent_timeouts)
        report = SoakReport(self.cfg.jobs, {k: sum(p.kind == k for p in planned) for k in KINDS})
        watcher = Watcher(self.ledger).start()
        started = time.monotonic()
        dropper = threading.Thread(target=self._drop_all, args=(planned,), name="dropper")
        try:
            dropper.start()
            self._kill_loop(report)
            self.kills_over.set()
            dropper.join()
            final = self.start()
            self._wait_drained(planned)
            report.final_exit_status = final.stop()
            report.wall_s = round(time.monotonic() - started, 1)
        finally:
            self.kills_over.set()
            for inc in self.incarnations:
                if inc.proc.poll() is None:
                    inc.kill()
            watcher.stop()
            dropper.join()
        self._check(planned, report)
        if not self.cfg.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        return report

    def _drop_all(self, planned: list[PlannedJob]) -> None:
        """Drop at a steady pace over the time the kills are planned to take; once they
        are over (the kill loop ran faster than planned), drop the rest without waiting:
        until the last processor starts no processor runs, so the pace can no longer
        change what one sees (on a quick host the soak waited ~5 s of 13.5 s for it)."""
        window_s = self.cfg.kills * (self.cfg.max_gap_s / 2 + 1.5)
        start = time.monotonic()
        for n, job in enumerate(planned):
            delay = start + window_s * n / len(planned) - time.monotonic()
            if delay > 0.002:
                self.kills_over.wait(delay)
            tmp = self.root / "tmp" / f"chaos-drop-{job.job_id}"
            tmp.write_bytes(job.body)
            os.rename(tmp, self.root / "pending" / f"{job.job_id}.json")

    def _kill_loop(self, report: SoakReport) -> None:
        for _ in range(self.cfg.kills):
            inc = self.start()
            if self.rng.random() < STARTUP_KILL_SHARE:
                time.sleep(self.rng.uniform(0.0, STARTUP_KILL_WINDOW_S))
                report.startup_kills += 1
            else:
                inc.wait_ready()
                time.sleep(self.rng.uniform(0.05, self.cfg.max_gap_s))
            self.kill_ns[inc.proc.pid] = time.monotonic_ns()
            inc.kill()
            report.kills += 1

    def _wait_drained(self, planned: list[PlannedJob]) -> None:
        want = {p.job_id + ".json" for p in planned}
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline:
            terminal = set(os.listdir(self.root / "done")) | set(os.listdir(self.root / "failed"))
            if want <= terminal and not any(os.listdir(self.root / s)
                                             for s in ("pending", "running")):
                return
            time.sleep(0.2)

    # -- the figures ---------------------------------------------------------------------

    def _check(self, planned: list[PlannedJob], report: SoakReport) -> None:
        check_spool(self.root, planned, report)
        count_runs(self.ledger.by_id(), planned, self.kill_ns, report)
        report.stray_processes = self._sweep_strays()
        report.error_log_lines = sum(
            line.startswith(b'{"') and b'"level":"error"' in line
            for inc in self.logs.iterdir() for line in inc.read_bytes().splitlines())

    def _sweep_strays(self) -> int:
        """Processes of any incarnation still alive 5 s after the last stop (then killed)."""
        deadline = time.monotonic() + 5.0
        while True:
            strays = [p for p in psutil.process_iter() if self._ours(p)]
            if not strays or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for proc in strays:
            proc.kill()
        return len(strays)

    def _ours(self, proc: psutil.Process) -> bool:
        try:
            return bool(proc.environ().get("SPOOLQ_CHAOS_SOAK") == self.token)
        except (psutil.Error, OSError):
            return False


def run_soak(cfg: SoakConfig) -> SoakReport:
    return Soak(cfg).run()


def render(cfg: SoakConfig, report: SoakReport) -> str:
    return render_report(report, f"JOB_NUM={cfg.job_num}, SPOOL_FSYNC={cfg.fsync}, "
                                 f"seed {cfg.seed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--job-num", type=int, default=2)
    parser.add_argument("--fsync", choices=[m.value for m in FsyncMode], default="always")
    parser.add_argument("--max-gap", type=float, default=4.0,
                        help="longest run (s) between ready and a kill")
    parser.add_argument("--silent-timeouts", action="store_true",
                        help="timeout jobs hang without progress reports (see "
                        "docs/reliability.md: a busy silent worker outlives its processor)")
    parser.add_argument("--dir", type=Path, help="where the temporary spool goes")
    parser.add_argument("--keep", action="store_true", help="keep the spool and logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    cfg = SoakConfig(jobs=args.jobs, kills=args.kills, seed=args.seed, job_num=args.job_num,
                     fsync=args.fsync, max_gap_s=args.max_gap,
                     silent_timeouts=args.silent_timeouts, workdir=args.dir,
                     keep=args.keep)
    report = run_soak(cfg)
    if args.json:
        print(orjson.dumps({**asdict(report), "ok": report.ok}).decode())
    else:
        print(render(cfg, report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
