"""A large backlog's ready jobs keep their file's bytes, not their parsed job: a million
drops held 2 GB in one processor, about half of it ``Job`` models (h317).  Past
``LEAN_ABOVE`` ready jobs a queued one lets its model go and reads its bytes again when
its turn comes, to the same job and in the same order."""

from __future__ import annotations

import gc
import os
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemonkit import Daemon, drop, locations, wait_for
from test_ready_forgotten import discovery_of, look

from processor import queues as queues_module
from processor.inbox import Inbox
from processor.queues import Queues
from processor.tools import ExecutionMode
from spool.intake import Candidate
from spool.models import Job
from spool.settings import Settings

JOBS = 400


def _jobs() -> dict[str, dict[str, Any]]:
    """Jobs whose fields the queues read (priority, submission, not_before) all vary."""
    past = datetime.now(UTC) - timedelta(hours=1)
    return {f"j{i:04d}": {"tool": "echo", "priority": i % 5 - 2,
                          "params": {"message": f"héllo {i}", "n": [i, i / 3]},
                          "submitted_at": (past + timedelta(seconds=i % 7)).isoformat(),
                          **({"not_before": past.isoformat()} if i % 3 else {})}
            for i in range(JOBS)}


def _queued(settings: Settings, inbox: Inbox, jobs: dict[str, dict[str, Any]]
            ) -> Queues:
    queues = Queues(lambda tool: ExecutionMode.COMPUTE)
    discovery = discovery_of(settings, inbox, queues)
    for job_id, job in jobs.items():
        drop(settings.spool_dir, job_id, job)
    look(discovery)
    return queues


def _drain(queues: Queues) -> list[tuple[str, Job]]:
    out = []
    while (cand := queues.pop(ExecutionMode.COMPUTE, lambda job_id: False)) is not None:
        out.append((cand.job_id, cand.job))
    return out


def test_a_shed_job_is_the_job_intake_judged_in_the_same_order(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs()
    whole = _drain(_queued(settings, inbox, jobs))
    monkeypatch.setattr(queues_module, "LEAN_ABOVE", 50)
    queues = _queued(settings, inbox, jobs)
    shed = [c for c in queues.ready.values() if c._job is None]
    assert len(shed) == JOBS - 50
    lean = _drain(queues)
    assert [job_id for job_id, _ in lean] == [job_id for job_id, _ in whole]
    assert lean == whole
    for job_id, job in lean:
        assert job == Job.model_validate(jobs[job_id])


def test_a_shed_job_holds_less_than_half_the_memory(settings: Settings, inbox: Inbox,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def held(lean_above: int) -> float:
        monkeypatch.setattr(queues_module, "LEAN_ABOVE", lean_above)
        gc.collect()
        tracemalloc.start()
        try:
            queues = _queued(settings, inbox, _jobs())
            gc.collect()
            size, _ = tracemalloc.get_traced_memory()
            assert len(queues.ready) == JOBS
            return size / JOBS
        finally:
            tracemalloc.stop()

    # tracemalloc counts every thread's allocations: what another thread of the test's
    # process (pytest-xdist's) held meanwhile came on top (3.8 MB more, lean 10390 B a
    # job to whole's 2381, in a run under load; 772 to 2376 alone).  Such noise only
    # adds, so the least of a few measurements of each is the queues' own.
    whole = min(held(10 * JOBS) for _ in range(3))
    lean = min(held(0) for _ in range(3))
    assert lean < 0.5 * whole, (whole, lean)


def test_a_candidate_without_its_bytes_is_not_shed() -> None:
    """A drop over KEEP_BYTES is not kept as bytes: it keeps its model."""
    job = Job(tool="echo")
    cand = Candidate("big", job, 5000, 0, (1, 1), 0, None)
    cand.shed()
    assert cand.job is job
    small = Candidate("small", job, 15, 0, (1, 1), 0, orjson.dumps({"tool": "echo"}))
    small.shed()
    assert small._job is None and small.job == job


def test_a_backlog_past_lean_above_runs_every_job_once(spool_root: Path,
                                                       tmp_path: Path) -> None:
    """A real processor started on more drops than LEAN_ABOVE (the start-up's backlog is
    judged whole before the first claim, so all are ready at once) runs each of them,
    with its own params, once."""
    n = queues_module.LEAN_ABOVE + 200
    for i in range(n):
        drop(spool_root, f"b{i:05d}", {"tool": "echo", "priority": i % 3,
                                        "params": {"message": f"m{i}"}})
    daemon = Daemon(spool_root, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: len(os.listdir(spool_root / "done")) == n, 120, f"{n} records")
    finally:
        assert daemon.stop() == 0
    assert all(where == ["done"] for where in locations(spool_root).values())
    for i in range(n):
        rec = orjson.loads((spool_root / "done" / f"b{i:05d}.json").read_bytes())
        assert (rec["result"], rec["attempts"]) == ({"message": f"m{i}"}, 1), rec
    claimed = [e["id"] for e in daemon.events() if e.get("event") == "claimed"]
    assert sorted(claimed) == [f"b{i:05d}" for i in range(n)]
