"""What ``bench/chaos.py`` plans and what it counts at the end.

* :func:`plan_jobs`: the jobs of a soak, five kinds with the outcome each must
  end with (:data:`KINDS`), ``max_attempts`` high enough that kills never spend
  them (timeout jobs: 2, so they end ``timeout``, or ``abandoned`` when kills
  took their attempts);
* :func:`check_spool`: lost ids, ids in two folders, wrong or unparsable
  records, once the last processor has stopped;
* :func:`count_runs`: runs, re-executions, runs alive twice at once and how long
  runs outlived their processor's SIGKILL, from the :class:`~bench.chaos_ledger.Ledger`;
* :func:`render`: the figures as printed.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.chaos_ledger import Run, lock_conflicts, overlapping_ids

STATES = ("pending", "running", "done", "failed")
MAX_ATTEMPTS = 25
TIMEOUT_JOB_S = 0.3
PROGRESS_EVERY_S = 0.05
# kind: (share of jobs, tool, seconds range, fail, expected (state, error types))
KINDS: dict[str, tuple[float, str, tuple[float, float], bool, tuple[str, frozenset[str]]]] = {
    "fast_ok": (0.40, "chaos_fast", (0.0, 0.002), False, ("done", frozenset())),
    "fast_fail": (0.05, "chaos_fast", (0.0, 0.0), True, ("failed", frozenset({"tool_error"}))),
    "compute_ok": (0.0, "chaos_compute", (0.0, 0.02), False, ("done", frozenset())),
    "compute_fail": (0.05, "chaos_compute", (0.0, 0.01), True,
                     ("failed", frozenset({"tool_error"}))),
    "compute_timeout": (0.005, "chaos_compute", (30.0, 30.0), False,
                        ("failed", frozenset({"timeout", "abandoned"}))),
    # Planned only with --meddle (``slow_share``): runs long enough to be cancelled.
    "compute_slow": (0.0, "chaos_compute", (0.3, 1.5), False, ("done", frozenset())),
}


@dataclass(frozen=True, slots=True)
class PlannedJob:
    job_id: str
    kind: str
    body: bytes


@dataclass(slots=True)
class SoakReport:
    jobs: int
    kinds: dict[str, int]
    kills: int = 0
    startup_kills: int = 0
    lost: int = 0
    run_twice_at_once: int = 0
    log_overlaps: int = 0
    lock_conflicts: int = 0
    in_two_folders: int = 0
    wrong_outcome: int = 0
    stray_processes: int = 0
    reexecutions: int = 0
    cut_by_kill: int = 0
    finished_unrecorded: int = 0
    runs: int = 0
    abandoned: int = 0
    max_linger_ms: float = 0.0
    error_log_lines: int = 0
    final_exit_status: int | None = None
    wall_s: float = 0.0
    examples: dict[str, list[str]] = field(default_factory=dict)
    # -- with several processors, SIGTERMs or the meddler (bench/chaos_verdict.py) --
    processors: int = 1
    sigterms: int = 0
    bad_term_exits: list[int] = field(default_factory=list)
    early_term_deaths: int = 0
    purged: int = 0
    """Planned ids with no record that a purge may have removed (not lost)."""
    cancel_not_kept: int = 0
    left_behind: int = 0
    cancel_requests_left: int = 0
    meddled: dict[str, int] = field(default_factory=dict)
    meddler_exits: list[int] = field(default_factory=list)
    torn_records: int = 0
    records_read: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.run_twice_at_once or self.in_two_folders
                    or self.wrong_outcome or self.stray_processes
                    or self.final_exit_status != 0 or self.cancel_not_kept
                    or self.left_behind or self.bad_term_exits
                    or any(self.meddler_exits) or self.torn_records)


def plan_jobs(jobs: int, rng: random.Random, log: Path, locks: Path, *,
              silent_timeouts: bool = False, slow_share: float = 0.0) -> list[PlannedJob]:
    shares = {k: slow_share if k == "compute_slow" else share
              for k, (share, *_rest) in KINDS.items()}
    counts = {k: max(1, round(share * jobs)) for k, share in shares.items()
              if k != "compute_ok" and share > 0}
    counts["compute_ok"] = jobs - sum(counts.values())
    kinds = [k for k, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    planned = []
    for n, kind in enumerate(kinds):
        _, tool, (low, high), fail, _ = KINDS[kind]
        body: dict[str, Any] = {
            "tool": tool, "max_attempts": MAX_ATTEMPTS,
            "params": {"log": str(log), "locks": str(locks), "fail": fail,
                       "seconds": round(rng.uniform(low, high), 4)}}
        if kind == "compute_timeout":
            body.update(timeout=TIMEOUT_JOB_S, max_attempts=2)
            if not silent_timeouts:
                body["params"]["progress_every_s"] = PROGRESS_EVERY_S
        planned.append(PlannedJob(f"c{n:05d}-{kind}", kind, orjson.dumps(body)))
    return planned


# -- the spool at the end -------------------------------------------------------------


def check_spool(root: Path, planned: list[PlannedJob], report: SoakReport) -> None:
    where: dict[str, list[str]] = {}
    for state in STATES:
        for name in os.listdir(root / state):
            if name.endswith(".json"):
                where.setdefault(name[:-5], []).append(state)
    lost = [p.job_id for p in planned if not set(where.get(p.job_id, ())) & {"done", "failed"}]
    two = [i for i, states in where.items() if len(states) > 1]
    records = {p.job_id: read_record(root, p.job_id) for p in planned}
    wrong = [p.job_id for p in planned
             if p.job_id not in lost and not _as_expected(p, records[p.job_id])]
    report.lost, report.in_two_folders, report.wrong_outcome = len(lost), len(two), len(wrong)
    report.abandoned = sum(((r or {}).get("error") or {}).get("type") == "abandoned"
                           for r in records.values())
    report.examples.update(lost=lost[:5], in_two_folders=two[:5], wrong=wrong[:5])


def read_record(root: Path, job_id: str) -> dict[str, Any] | None:
    for state in ("done", "failed"):
        try:
            data: dict[str, Any] = orjson.loads((root / state / f"{job_id}.json").read_bytes())
            return data
        except (FileNotFoundError, orjson.JSONDecodeError):
            continue
    return None


def _as_expected(job: PlannedJob, rec: dict[str, Any] | None) -> bool:
    state, errors = KINDS[job.kind][4]
    if rec is None or rec.get("state") != state:
        return False
    return not errors or (rec.get("error") or {}).get("type") in errors


# -- the runs ---------------------------------------------------------------------------


def count_runs(grouped: dict[str, list[Run]], planned: list[PlannedJob],
               kill_ns: dict[int, int], report: SoakReport) -> None:
    kinds = {p.job_id: p.kind for p in planned}
    overlaps, conflicts = overlapping_ids(grouped), lock_conflicts(grouped)
    report.log_overlaps, report.lock_conflicts = len(overlaps), len(conflicts)
    report.run_twice_at_once = len(overlaps | conflicts)
    report.examples["twice"] = sorted(overlaps | conflicts)[:5]
    report.runs = sum(len(r) for r in grouped.values())
    for job_id, runs in grouped.items():
        if kinds.get(job_id) == "compute_timeout":
            continue  # two runs are its plan; kills only change how it ends
        for run in runs[:-1]:
            report.reexecutions += 1
            report.cut_by_kill += run.end_ns is None
            report.finished_unrecorded += run.end_ns is not None
    lingers = [(run.finish_ns - killed) / 1e6 for runs in grouped.values() for run in runs
               if (killed := kill_ns.get(run.processor_pid)) is not None
               and run.start_ns < killed < run.finish_ns]
    report.max_linger_ms = round(max(lingers, default=0.0), 1)


def render(r: SoakReport, settings: str) -> str:
    k = r.kinds
    lines = [
        f"chaos soak: {r.jobs} jobs (FAST {k['fast_ok'] + k['fast_fail']}, COMPUTE "
        f"{k['compute_ok'] + k['compute_fail'] + k['compute_timeout'] + k['compute_slow']}; "
        f"failing {k['fast_fail'] + k['compute_fail']}, timing out {k['compute_timeout']}, "
        f"slow {k['compute_slow']}), {r.processors} processor(s), {r.kills} SIGKILLs and "
        f"{r.sigterms} SIGTERMs ({r.startup_kills} during start-up), {settings}",
        f"  lost                  {r.lost}  (absent after a purge that may have taken "
        f"them: {r.purged})",
        f"  run twice at once     {r.run_twice_at_once}  (log overlaps {r.log_overlaps}, "
        f"lock conflicts {r.lock_conflicts})",
        f"  in two folders        {r.in_two_folders}",
        f"  wrong outcome         {r.wrong_outcome}",
        f"  cancel not kept       {r.cancel_not_kept}",
        f"  left behind           {r.left_behind}  (pending, running, stage, tmp; "
        f"cancel requests left {r.cancel_requests_left})",
        f"  torn records          {r.torn_records}  (of {r.records_read} job files and "
        "records read while it ran)",
        f"  SIGTERM exits not 0   {r.bad_term_exits}  (ended by it before their first log "
        f"line, not counted: {r.early_term_deaths})",
        f"  stray processes       {r.stray_processes}",
        f"  re-executions         {r.reexecutions}  (cut short by a kill {r.cut_by_kill}, "
        f"finished but unrecorded when killed {r.finished_unrecorded}; with --meddle "
        "re-drops and retries count too)",
        f"  runs                  {r.runs}; abandoned {r.abandoned} (timeout jobs only may be)",
        f"  a run outlived its processor's SIGKILL by at most {r.max_linger_ms} ms",
        f"  processor error log lines {r.error_log_lines}; last processors' exit status "
        f"{r.final_exit_status}",
        f"  wall time             {r.wall_s} s",
    ]
    if r.meddled:
        lines.insert(-1, f"  meddlers              exits {r.meddler_exits}: " + ", ".join(
            f"{action} {n}" for action, n in r.meddled.items()))
    if not r.ok:
        lines.append(f"  FAILED; examples: {r.examples}")
    return "\n".join(lines)
