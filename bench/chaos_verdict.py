"""The end-of-soak checks of ``bench/chaos.py --meddle``: several writers on one id.

With meddlers (``bench/chaos_meddle.py``) an id may be submitted many times
(the first drop, re-drops, retries), cancelled, and its record purged.  From the
drop times and the meddlers' logs, :func:`timelines` gives each planned id its
submissions (the drop, and each re-drop or retry that answered ``ok``) and cancels,
each timed before and after (``CLOCK_MONOTONIC``).
:func:`judge` then checks, once every processor has stopped:

* **lost**: an id with no record in ``done/`` or ``failed/``, unless its last
  submission ended (a run of it began, or a cancel came, after it) and a purge began
  more than its ``older_than`` after that submission (only then could it have
  judged that submission's record old: a record is written after its submission,
  and purge removes only records whose time is before its cutoff), give or take
  ``SLACK_NS`` (wall and monotonic clocks);
* **in two folders**: any id in more than one of pending, running, done, failed;
* **wrong outcome**: a record that does not parse, names another id, or ends other
  than the kind's outcome (or ``cancelled``, when a cancel may have come after the
  last submission);
* **cancel not kept**: a cancel begun after every submission had ended answered
  ``cancelled`` and the record says otherwise, unless that cancel took a pending
  re-drop while a run of the id was alive (that run's record replaces it, DESIGN
  section 9);
* **left behind** (:func:`left_behind`, also without meddlers): anything in
  ``pending/``, ``running/``, ``stage/`` or ``tmp/``; requests left in ``cancel/``
  are counted apart (``cancel_requests_left``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.chaos_ledger import Run
from bench.chaos_report import KINDS, STATES, PlannedJob, SoakReport, read_record

SLACK_NS = 200_000_000
LEFT_BEHIND = ("pending", "running", "stage", "tmp")


@dataclass(slots=True)
class Timeline:
    """One id's submissions and cancels as the soak's writers logged them (``(t0, t1)``
    monotonic ns around each; several meddlers may act on an id at once)."""

    submits: list[tuple[int, int]]
    """The first drop, and each re-drop and retry that answered ``ok``."""
    cancels: list[tuple[int, int, str]] = field(default_factory=list)
    """Each cancel, with its outcome."""

    @property
    def last_submit_ns(self) -> int:
        """The latest start of a submission: every record of the id's last run (or
        cancel) is written after it."""
        return max(t0 for t0, _ in self.submits)

    def cancelled_after(self) -> bool:
        """A cancel may have come after the last submission."""
        last = self.last_submit_ns
        return any(t1 > last for _, t1, _ in self.cancels)

    def standing_cancel(self) -> tuple[int, int, bool] | None:
        """``(t0, t1, pending)`` of a cancel that answered ``cancelled`` after every
        submission had ended (``pending``: it took a job waiting in ``pending/``)."""
        ended = max(t1 for _, t1 in self.submits)
        return next(((t0, t1, out == "cancelled:pending") for t0, t1, out in self.cancels
                     if out.startswith("cancelled") and t0 > ended), None)


@dataclass(slots=True)
class MeddleLog:
    """The meddlers' actions, read back: per-id timelines, purges, outcome counts."""

    timelines: dict[str, Timeline]
    purges: list[tuple[int, float]] = field(default_factory=list)
    """``(t0, older_than_s)`` of each purge that ran."""
    counts: Counter[str] = field(default_factory=Counter)


def timelines(drop_ns: dict[str, int], logs: list[Path]) -> MeddleLog:
    """Per-id timelines from the drops (id -> monotonic ns) and the meddlers' logs."""
    result = MeddleLog({job_id: Timeline([(t, t)]) for job_id, t in drop_ns.items()})
    for log in logs:
        for action in map(orjson.loads, log.read_bytes().splitlines()):
            _apply(result, action)
    return result


def _apply(result: MeddleLog, action: dict[str, Any]) -> None:
    kind, out = action["a"], action["out"]
    short = out if out.startswith("cancelled") else out.split(":")[0]
    via = "/http" if action.get("via") == "http" else ""
    result.counts[f"{kind}{via} {short}"] += 1
    if kind == "purge":
        if out == "ok":
            result.purges.append((action["t0"], action["older_than_s"]))
        return
    line = result.timelines.get(action["id"])
    if line is None:
        return
    if kind in ("redrop", "retry") and out == "ok":
        line.submits.append((action["t0"], action["t1"]))
    elif kind == "cancel":
        line.cancels.append((action["t0"], action["t1"], out))


def judge(root: Path, planned: list[PlannedJob], meddle: MeddleLog,
          runs: dict[str, list[Run]], report: SoakReport) -> None:
    where = _where(root)
    report.in_two_folders = sum(len(s) > 1 for s in where.values())
    lost: list[str] = []
    wrong: list[str] = []
    not_kept: list[str] = []
    for job in planned:
        line = meddle.timelines[job.job_id]
        rec = read_record(root, job.job_id)
        if rec is None:
            if may_be_purged(line, meddle.purges) and ended(line, runs.get(job.job_id, [])):
                report.purged += 1
            else:
                lost.append(job.job_id)
            continue
        if cancel_stands(line, runs.get(job.job_id, [])) \
                and _error_type(rec) != "cancelled":
            not_kept.append(job.job_id)
        elif not _as_expected(job, rec, line):
            wrong.append(job.job_id)
    report.lost, report.wrong_outcome, report.cancel_not_kept = \
        len(lost), len(wrong), len(not_kept)
    report.abandoned = sum(_error_type(read_record(root, p.job_id)) == "abandoned"
                           for p in planned)
    report.meddled = dict(sorted(meddle.counts.items()))
    report.examples.update(lost=lost[:5], wrong=wrong[:5], cancel_not_kept=not_kept[:5],
                           in_two_folders=[i for i, s in where.items() if len(s) > 1][:5])


def left_behind(root: Path, report: SoakReport) -> None:
    """What is left in ``pending/``, ``running/``, ``stage/``, ``tmp/`` and ``cancel/``
    once every processor has stopped (with or without meddlers)."""
    left = {f: sorted(os.listdir(root / f)) for f in LEFT_BEHIND}
    report.left_behind = sum(map(len, left.values()))
    report.cancel_requests_left = len(os.listdir(root / "cancel"))
    report.examples["left_behind"] = [f"{f}/{n}" for f, ns in left.items() for n in ns][:5]


def _where(root: Path) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for state in STATES:
        for name in os.listdir(root / state):
            if name.endswith(".json"):
                where.setdefault(name[:-5], []).append(state)
    return where


def cancel_stands(line: Timeline, runs: list[Run]) -> bool:
    """A cancel answered ``cancelled`` after every submission, and no earlier
    submission's run can replace its record: a run of the id alive during the cancel of
    a pending re-drop finishes after it, and its record replaces the cancelled one
    (DESIGN section 9).  A running job's cancel has no such excuse: its run was the
    id's only one (a re-drop waiting in ``pending/`` is what a cancel takes first)."""
    cancel = line.standing_cancel()
    if cancel is None:
        return False
    t0, t1, pending = cancel
    return not pending or not any(run.start_ns < t1 and run.finish_ns > t0 for run in runs)


def ended(line: Timeline, runs: list[Run]) -> bool:
    """The last submission may have ended: a run of the id began after it, or a cancel
    may have come after it.  (Without either its job never left ``pending/``, and a
    purge takes only records.)"""
    last = line.last_submit_ns
    return any(run.start_ns > last for run in runs) or line.cancelled_after()


def may_be_purged(line: Timeline, purges: list[tuple[int, float]]) -> bool:
    return any(t0 - older_than_s * 1e9 + SLACK_NS > line.last_submit_ns
               for t0, older_than_s in purges)


def _error_type(rec: dict[str, Any] | None) -> str | None:
    return ((rec or {}).get("error") or {}).get("type")


def _as_expected(job: PlannedJob, rec: dict[str, Any], line: Timeline) -> bool:
    if rec.get("id") != job.job_id:
        return False
    if line.cancelled_after() and rec.get("state") == "failed" \
            and _error_type(rec) == "cancelled":
        return True
    state, errors = KINDS[job.kind][4]
    if rec.get("state") != state:
        return False
    return not errors or _error_type(rec) in errors
