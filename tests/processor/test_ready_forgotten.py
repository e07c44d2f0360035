"""A processor holds no more ready jobs than ``pending/`` does: one whose file left
unclaimed (a client's cancel, a re-drop) is forgotten at the next rescan, so its
memory does not grow with the delayed jobs cancelled before they come due (each
stayed until its ``not_before``: 15,000 of them held 60 MB for a day, h101)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemonkit import drop

from processor.discovery import Discovery
from processor.inbox import Inbox
from processor.queues import COMPACT_MIN, Queues
from processor.tools import ExecutionMode
from spool.client import Client
from spool.clock import SystemClock
from spool.intake import Intake
from spool.models import Job
from spool.settings import Settings
from spool.transitions import Spool

JOBS = 300  # per wave: over COMPACT_MIN, so the queues' bound is the one tested


def discovery_of(settings: Settings, inbox: Inbox, queues: Queues) -> Discovery:
    spool = Spool.from_settings(settings, SystemClock())
    intake = Intake(spool, max_job_bytes=settings.max_job_bytes, settle_s=0,
                    clock=SystemClock())
    return Discovery(settings, spool.layout, inbox, intake, ready=queues.ready,
                     enqueue=queues.add, withdraw=queues.withdraw)


def look(discovery: Discovery) -> None:
    """One rescan, and intake of every name it marked."""
    discovery.rescan()
    while discovery.waiting:
        discovery.intake_batch()


def test_delayed_jobs_cancelled_before_due_are_forgotten(settings: Settings,
                                                          inbox: Inbox) -> None:
    queues = Queues(lambda tool: ExecutionMode.FAST)
    discovery = discovery_of(settings, inbox, queues)
    client = Client.from_settings(settings)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    for _ in range(3):
        ids = [client.submit(Job(tool="echo", not_before=tomorrow)) for _ in range(JOBS)]
        look(discovery)
        assert len(queues.ready) == JOBS
        for job_id in ids:
            assert client.cancel(job_id, wait_s=0).state == "failed"
        look(discovery)
        assert queues.ready == {}
        assert len(queues.delayed) <= COMPACT_MIN


def test_re_dropped_jobs_leave_no_entry_per_drop(settings: Settings, inbox: Inbox) -> None:
    queues = Queues(lambda tool: ExecutionMode.FAST)
    discovery = discovery_of(settings, inbox, queues)
    ids = [f"job{i}" for i in range(JOBS)]
    for day in range(1, 6):  # each drop replaced by one put off a day more, five times
        when = (datetime.now(UTC) + timedelta(days=day)).isoformat()
        for job_id in ids:
            drop(settings.spool_dir, job_id, {"tool": "echo", "not_before": when})
        look(discovery)
        assert set(queues.ready) == set(ids)
        assert len(queues.delayed) <= 2 * JOBS + COMPACT_MIN
    for job_id in ids[::2]:  # and one in two replaced by a drop due now
        drop(settings.spool_dir, job_id, {"tool": "echo"})
    look(discovery)
    assert len(queues.lanes[ExecutionMode.FAST]) == JOBS // 2
    assert len(queues.delayed) <= 2 * JOBS + COMPACT_MIN
