"""Chaos soak of spool-processor: jobs keep coming while the processor is SIGKILLed.

Run from the repository root::

    python -m bench.chaos [--jobs 10000] [--kills 50] [--seed S] [--job-num N]
                          [--fsync always|batch|never] [--max-gap S] [--json]
                          [--processors N] [--sigterm-share F] [--meddle [--statusd]]

What it does (issue 8, item 1): plans ``--jobs`` jobs of five kinds (FAST and
COMPUTE, succeeding or failing on purpose, and COMPUTE jobs that hang past a
0.3 s timeout, reporting progress meanwhile), drops them (``tmp/`` then
``rename``) at a steady pace while a real ``python -m processor`` is
SIGKILLed ``--kills`` times at random moments (a fifth of them during start-up
and recovery, the rest while it runs) and restarted at once, then lets a last
processor finish everything and stops it with SIGTERM once it is up.  Drops still
planned once the kills are over go at once: no processor runs until that last one
starts.  Every run of a job is
recorded by ``bench/chaos_tools.py`` (markers in one ``O_APPEND`` log, plus a
per-id ``flock``) and watched by ``bench/chaos_ledger.py``.  At the end it
prints, and exits 1 unless the first seven are 0:

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
* **left behind**: anything in pending, running, stage or tmp after the last stop;
* **torn records**: a job file or record read while the soak ran that was not
  whole, or a record naming another id or state (``bench/chaos_readers.py``);
* **re-executions**: runs of a job beyond its first (timeout jobs' planned
  retries aside), split into runs cut short by a kill and runs that finished
  but whose outcome died with the processor before it was recorded;
* wall time, from the first drop to the last processor's exit.

Every writer at once: ``--processors N`` runs N processors on the spool, each
stopped and restarted on its own (``bench/chaos_fleet.py``; ``--kills`` counts
the stops of all, ``--sigterm-share`` of them graceful), and N last ones finish.
``--meddle`` adds a meddler process (``--meddlers N``: N at once) that re-drops
finished ids, cancels pending and running jobs, retries failed ones and purges old
records (``bench/chaos_meddle.py``; ``--statusd``: half the re-drops through
statusd's POST), plus 5 % COMPUTE jobs of 0.3 to 1.5 s to cancel; the end checks are then
``bench/chaos_verdict.py``'s (an id a purge may have removed may be absent, a
cancel that answered ``cancelled`` must stand, nothing left in pending, running,
stage or tmp), and a SIGTERM's exit status must be 0.

A rolling upgrade: ``--split-tools`` (with ``--processors`` 2 or more) has every other
processor load ``bench.chaos_tools_fast`` (``chaos_fast`` only), so it leaves the
``chaos_compute`` jobs in ``pending/`` for the others (:mod:`processor.elsewhere`) while
they are stopped and restarted around it.  Jobs failed ``unknown_tool`` by a processor
that started while every processor offering ``chaos_compute`` was down after a clean
stop (its status file gone) are the gap docs/scaling.md names, counted as wrong.

Jobs get ``max_attempts`` 25 so kills never spend them (timeout jobs: 2).
Processes are stopped by pid; the spool (under ``--dir``, default a temporary
folder in ``/tmp``) is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from bench.chaos_fleet import REPO, Fleet, FleetTally, Incarnation, sweep_strays
from bench.chaos_ledger import Ledger, Watcher
from bench.chaos_readers import SpoolReader
from bench.chaos_report import (
    KINDS,
    PlannedJob,
    SoakReport,
    check_spool,
    count_runs,
    plan_jobs,
)
from bench.chaos_report import render as render_report
from bench.chaos_verdict import judge, left_behind, may_be_purged, timelines
from bench.chaos_writers import Writers
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode


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
    processors: int = 1
    sigterm_share: float = 0.0
    meddle: bool = False
    meddlers: int = 1
    hot_ids: int = 24
    statusd: bool = False
    split_tools: bool = False


SLOW_SHARE = 0.05
"""With --meddle, the share of COMPUTE jobs that run 0.3 to 1.5 s: cancels' targets."""


class Soak:
    """One soak: a spool, its dropper thread, processor slots, a ledger watcher, and
    with ``--meddle`` the meddler (and statusd) of :mod:`bench.chaos_writers`."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        if cfg.workdir is not None:  # --dir: made if missing (a traceback, before)
            Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="spoolq-chaos-", dir=cfg.workdir))
        self.root = self.base / "spool"
        self.log = self.base / "runs.log"
        self.locks = self.base / "locks"
        self.logs = self.base / "logs"
        self.token = os.urandom(8).hex()
        self.ledger = Ledger(self.log)
        self.incarnations: list[Incarnation] = []
        self.kills_over = threading.Event()
        self.drop_ns: dict[str, int] = {}
        self.writers = Writers(self.base, self.root, self.env)
        self._lock = threading.Lock()

    def env(self, slot: int = 0) -> dict[str, str]:
        tools = ("bench.chaos_tools_fast" if self.cfg.split_tools and slot % 2
                 else "bench.chaos_tools")
        return {**os.environ, "SPOOL_DIR": str(self.root), "JOB_NUM": str(self.cfg.job_num),
                "SPOOL_FSYNC": self.cfg.fsync, "SPOOL_SCAN_S": "1", "SPOOL_SETTLE_S": "1",
                "SPOOL_GRACE_S": "10", "SPOOL_TOOLS": tools,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "SPOOLQ_CHAOS_SOAK": self.token}

    def start(self, slot: int = 0) -> Incarnation:
        with self._lock:
            inc = Incarnation(self.root, self.env(slot),
                              self.logs / f"{len(self.incarnations)}.log")
            self.incarnations.append(inc)
        return inc

    def run(self) -> SoakReport:
        for folder in (self.locks, self.logs):
            folder.mkdir()
        Mover(Layout(self.root), FsyncMode(self.cfg.fsync)).make_folders()
        planned = plan_jobs(self.cfg.jobs, self.rng, self.log, self.locks,
                            silent_timeouts=self.cfg.silent_timeouts,
                            slow_share=SLOW_SHARE if self.cfg.meddle else 0.0)
        report = SoakReport(self.cfg.jobs, {k: sum(p.kind == k for p in planned) for k in KINDS},
                            processors=self.cfg.processors)
        watcher = Watcher(self.ledger).start()
        reader = SpoolReader(self.root, self.cfg.seed).start()
        started = time.monotonic()
        dropper = threading.Thread(target=self._drop_all, args=(planned,), name="dropper")
        fleet = Fleet(self.start, self.rng, stops=self.cfg.kills,
                      processors=self.cfg.processors, sigterm_share=self.cfg.sigterm_share,
                      max_gap_s=self.cfg.max_gap_s)
        try:
            dropper.start()
            if self.cfg.meddle:
                self.writers.start(planned, self.rng.randrange(2**32), self.cfg.fsync,
                                   meddlers=self.cfg.meddlers, statusd=self.cfg.statusd,
                                   hot=self.cfg.hot_ids)
            fleet.run()
            self.kills_over.set()
            report.meddler_exits = self.writers.stop_meddlers()
            dropper.join()
            finals = [self.start(slot) for slot in range(self.cfg.processors)]
            # Each up (its recovery done, its SIGTERM handler set) before it is judged
            # drained and stopped: with nothing left to do (the fleet's processors had
            # run every job), the last ones were SIGTERMed in Python's start, exited
            # -15, and the spare files in stage/ of the last one killed stayed (h414:
            # 3 of 6 soaks with --processors 3).
            for inc in finals:
                with contextlib.suppress(RuntimeError):  # exited: its status says so
                    inc.wait_ready()
            report.examples["not_drained"] = self._wait_drained(planned)
            statuses = [inc.stop() for inc in finals]
            report.final_exit_status = next((s for s in statuses if s != 0), 0)
            report.wall_s = round(time.monotonic() - started, 1)
        finally:
            self.kills_over.set()
            self.writers.stop()
            for inc in self.incarnations:
                if inc.proc.poll() is None:
                    inc.kill()
            watcher.stop()
            reader.stop()
            dropper.join()
        self._check(planned, report, fleet.tally)
        report.torn_records, report.records_read = len(reader.torn), reader.reads
        report.examples["torn"] = reader.torn[:5]
        if not self.cfg.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        return report

    def _drop_all(self, planned: list[PlannedJob]) -> None:
        """Drop at a steady pace over the time the stops are planned to take; once they
        are over, the rest at once (no processor runs until the last ones start)."""
        window_s = self.cfg.kills / self.cfg.processors * (self.cfg.max_gap_s / 2 + 1.5)
        start = time.monotonic()
        for n, job in enumerate(planned):
            delay = start + window_s * n / len(planned) - time.monotonic()
            if delay > 0.002:
                self.kills_over.wait(delay)
            tmp = self.root / "tmp" / f"chaos-drop-{job.job_id}"
            tmp.write_bytes(job.body)
            self.drop_ns[job.job_id] = time.monotonic_ns()
            os.rename(tmp, self.root / "pending" / f"{job.job_id}.json")

    def _wait_drained(self, planned: list[PlannedJob]) -> list[str]:
        """Until every planned id has a record (with --meddle: every id no purge may have
        removed) and nothing waits or runs; or ``drain_timeout_s``.  (``stage/`` holds
        a live processor's spare files: it is checked once they have stopped.)"""
        meddle = timelines(self.drop_ns, self.writers.meddle_logs)
        want = {p.job_id + ".json" for p in planned
                if not (self.cfg.meddle and may_be_purged(meddle.timelines[p.job_id],
                                                          meddle.purges))}
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline:
            terminal = set(os.listdir(self.root / "done")) | set(os.listdir(self.root / "failed"))
            busy = [f"{s}/{n}" for s in ("pending", "running")
                    for n in os.listdir(self.root / s)]
            if want <= terminal and not busy:
                return []
            time.sleep(0.2)
        return sorted(want - terminal)[:5] + busy[:5]

    # -- the figures ---------------------------------------------------------------------

    def _check(self, planned: list[PlannedJob], report: SoakReport, tally: FleetTally
               ) -> None:
        report.kills, report.startup_kills, report.sigterms = \
            tally.kills, tally.startup_stops, tally.sigterms
        report.bad_term_exits, report.early_term_deaths = \
            tally.bad_term_exits, tally.early_term_deaths
        grouped = self.ledger.by_id()
        if self.cfg.meddle:
            judge(self.root, planned, timelines(self.drop_ns, self.writers.meddle_logs),
                  grouped, report)
        else:
            check_spool(self.root, planned, report)
        left_behind(self.root, report)
        count_runs(grouped, planned, tally.kill_ns, report)
        report.stray_processes = sweep_strays(self.token)
        report.error_log_lines = sum(
            line.startswith(b'{"') and b'"level":"error"' in line
            for inc in self.logs.iterdir() for line in inc.read_bytes().splitlines())


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
    parser.add_argument("--processors", type=int, default=1,
                        help="processors sharing the spool, each stopped and restarted")
    parser.add_argument("--sigterm-share", type=float, default=0.0,
                        help="share of the stops that are a SIGTERM, not a SIGKILL")
    parser.add_argument("--meddle", action="store_true",
                        help="a meddler re-drops, cancels, retries and purges meanwhile")
    parser.add_argument("--meddlers", type=int, default=1,
                        help="with --meddle: meddler processes acting at once")
    parser.add_argument("--hot", type=int, default=24,
                        help="with --meddle: half the meddlers' picks are among this many ids")
    parser.add_argument("--statusd", action="store_true",
                        help="with --meddle: half the re-drops go through statusd's POST")
    parser.add_argument("--split-tools", action="store_true",
                        help="a rolling upgrade: every other processor (the 2nd, 4th...) "
                        "loads only chaos_fast, leaving chaos_compute jobs to the others")
    parser.add_argument("--drain-timeout", type=float, default=900.0,
                        help="how long the last processors may take to finish (s)")
    parser.add_argument("--dir", type=Path, help="where the temporary spool goes")
    parser.add_argument("--keep", action="store_true", help="keep the spool and logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    cfg = SoakConfig(jobs=args.jobs, kills=args.kills, seed=args.seed, job_num=args.job_num,
                     fsync=args.fsync, max_gap_s=args.max_gap,
                     silent_timeouts=args.silent_timeouts, workdir=args.dir,
                     keep=args.keep, processors=args.processors,
                     sigterm_share=args.sigterm_share, meddle=args.meddle,
                     meddlers=args.meddlers, hot_ids=args.hot,
                     statusd=args.statusd, drain_timeout_s=args.drain_timeout,
                     split_tools=args.split_tools)
    report = run_soak(cfg)
    if args.json:
        print(orjson.dumps({**asdict(report), "ok": report.ok}).decode())
    else:
        print(render(cfg, report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
