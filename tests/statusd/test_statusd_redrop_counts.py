"""/metrics counts the run of an id that ends while a new drop of that id waits.

An id has one state, and a drop waiting behind its own run tells it (pending, DESIGN
section 9), so the run's record lands behind a state that does not change: statusd
counted no transition for it, and an integration that re-drops a fixed id
(``nightly-export``) before its run ends had every other run missing from
``spoolq_transitions_total``, the failures and the durations.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from statusdkit import ServerThread, claim, finish, request, settings_for, submit, wait_for

from spool.errors import ErrorType
from spool.states import JobState
from spool.transitions import Spool
from statusd import scan
from statusd.hub import Hub
from statusd.index import Index
from statusd.metrics import Metrics
from statusd.tracker import Tracker

FAILED_ECHO = ("spoolq_transitions_total", (("outcome", "failed"), ("tool", "echo")))
DONE_ECHO = ("spoolq_transitions_total", (("outcome", "done"), ("tool", "echo")))


def _samples(server: ServerThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = request(server.base, "GET", "/metrics")
    assert reply.status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.body.decode())
            for s in family.samples}


def test_a_run_that_ends_behind_a_new_drop_of_its_id_is_counted(server: ServerThread,
                                                                 spool: Spool) -> None:
    submit(spool, "nightly")
    first = claim(spool, "nightly")
    submit(spool, "nightly")  # the next night's drop, while the first still runs
    wait_for(lambda: _samples(server)[("spoolq_jobs", (("state", "pending"),))] == 1,
             what="the new drop seen")
    finish(spool, first, error=(ErrorType.TIMEOUT, "too slow"), duration_s=3.0)
    samples = wait_for(lambda: (s := _samples(server)).get(FAILED_ECHO) == 1 and s,
                       what="the first run counted")
    assert samples[("spoolq_failures_total", (("error_type", "timeout"), ("tool", "echo")))] == 1
    assert samples[("spoolq_job_duration_seconds_sum", (("tool", "echo"),))] == 3.0
    assert samples[("spoolq_jobs", (("state", "pending"),))] == 1  # still its state
    # Its own run: one more, and the first not counted again (the second's record
    # replaces it: hints from done/ and failed/ both).
    finish(spool, claim(spool, "nightly"))
    samples = wait_for(lambda: (s := _samples(server)).get(DONE_ECHO) == 1 and s,
                       what="the second run counted")
    assert samples[FAILED_ECHO] == 1
    assert samples[("spoolq_job_duration_seconds_count", (("tool", "echo"),))] == 2


def test_a_record_already_behind_a_new_drop_is_not_counted_again(server: ServerThread,
                                                                  spool: Spool) -> None:
    """The usual re-drop, of an id that finished: its record was counted when it landed;
    written again as it was while the new drop waits (a restore of the same bytes), it
    is no new run."""
    submit(spool, "weekly")
    finish(spool, claim(spool, "weekly"))
    wait_for(lambda: _samples(server).get(DONE_ECHO) == 1, what="the run counted")
    submit(spool, "weekly")
    wait_for(lambda: _samples(server)[("spoolq_jobs", (("state", "pending"),))] == 1,
             what="the new drop seen")
    path = spool.layout.job(JobState.DONE, "weekly")
    copy = path.with_name(".weekly.copy")
    copy.write_bytes(path.read_bytes())
    os.rename(copy, path)
    submit(spool, "marker")  # a later change, seen after the touch's
    finish(spool, claim(spool, "marker"))
    wait_for(lambda: _samples(server).get(DONE_ECHO) == 2, what="the marker counted")
    assert _samples(server)[DONE_ECHO] == 2


@pytest.fixture
def hints_only(spool: Spool) -> Iterator[ServerThread]:
    """statusd whose rescans are an hour apart: what it counts came by the change feed."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_run_behind_a_new_drop_is_counted_at_its_hint_not_at_a_rescan(
        hints_only: ServerThread, spool: Spool) -> None:
    """The record's own hint (from ``failed/``) counts it: left to the next rescan, it
    was missing from /metrics for up to ``SPOOL_SCAN_S``."""
    submit(spool, "nightly")
    first = claim(spool, "nightly")
    submit(spool, "nightly")
    wait_for(lambda: _samples(hints_only)[("spoolq_jobs", (("state", "pending"),))] == 1,
             what="the new drop seen")
    finish(spool, first, error=(ErrorType.TIMEOUT, "too slow"), duration_s=3.0)
    wait_for(lambda: _samples(hints_only).get(FAILED_ECHO) == 1, what="the run counted")


def _done_echo(metrics: Metrics) -> float:
    for family in metrics.transitions.collect():
        for sample in family.samples:
            if sample.name == "spoolq_transitions_total" and sample.labels == {
                    "tool": "echo", "outcome": "done"}:
                return sample.value
    return 0.0


def test_a_run_behind_a_drop_of_the_same_bytes_is_counted(
        hints_only: ServerThread, spool: Spool) -> None:
    """A re-drop of the same job file (its ``submitted_at`` too: a cp -p, an integration
    that sends one file again) has the run behind it's sort key: taken by that alone for
    the drop's own run, the run went uncounted (the session's own review)."""
    at = "2026-01-01T00:00:00+00:00"
    submit(spool, "nightly", submitted_at=at)
    first = claim(spool, "nightly")
    submit(spool, "nightly", submitted_at=at)
    wait_for(lambda: _samples(hints_only)[("spoolq_jobs", (("state", "pending"),))] == 1,
             what="the new drop seen")
    finish(spool, first, error=(ErrorType.TIMEOUT, "too slow"), duration_s=3.0)
    wait_for(lambda: _samples(hints_only).get(FAILED_ECHO) == 1, what="the run counted")


def test_a_job_that_ends_during_a_rescan_is_counted_once(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rescan lists the folders one after another: a job listed in ``pending/`` that
    ran and finished before ``done/`` was listed looked like a run ended behind a new
    drop of its id (its drop and its record both seen), and was counted so, then once
    more as the transition it was when the index caught up.  With thousands of jobs
    moving, ``spoolq_transitions_total`` ran about 1% over the records written (5,057
    for 5,000 echo jobs), and a rate of failures with it."""
    submit(spool, "quick")
    metrics = Metrics(dict)
    tracker = Tracker(spool.layout, Index(), Hub(), metrics, scan_s=3600.0)
    real_list = scan._list
    running_folder = spool.layout.folder(JobState.RUNNING)

    def torn(folder: Any, failed: Any = None) -> Any:
        if folder == running_folder and spool.layout.job(JobState.PENDING, "quick").exists():
            finish(spool, claim(spool, "quick"))  # between the listings of pending/ and done/
        return real_list(folder, failed)

    async def scenario() -> None:
        await tracker.start()  # no run(): hints wait, as behind a busy loop
        try:
            assert tracker.index.get("quick").state is JobState.PENDING  # type: ignore[union-attr]
            monkeypatch.setattr(scan, "_list", torn)
            await tracker.rescan()  # torn: the drop listed, then its record
            monkeypatch.setattr(scan, "_list", real_list)
            await tracker.rescan()  # the job as it is: done
            await tracker.refresh(["quick"])  # and the hints that came meanwhile
        finally:
            tracker.stop()

    asyncio.run(scenario())
    assert tracker.index.get("quick").state is JobState.DONE  # type: ignore[union-attr]
    assert _done_echo(metrics) == 1


def _failed_echo(metrics: Metrics) -> float:
    return sum(sample.value for family in metrics.transitions.collect()
               for sample in family.samples
               if sample.name == "spoolq_transitions_total"
               and sample.labels == {"tool": "echo", "outcome": "failed"})


def test_a_retried_jobs_own_run_is_counted_once(spool: Spool) -> None:
    """A hint batch read a retried job pending (the retry moved its record out of
    ``failed/``, so the batch also looked for a run behind it), and the job ran and
    failed again before that look: its own run's record was counted as a run behind
    the drop, then once more as its transition (QA: 202 failures counted for 200 runs
    of 2 x 100 retries).  The steps of that batch, in that order."""
    submit(spool, "again")
    finish(spool, claim(spool, "again"), error=(ErrorType.TOOL_ERROR, "first"))
    metrics = Metrics(dict)
    tracker = Tracker(spool.layout, Index(), Hub(), metrics, scan_s=3600.0)

    async def scenario() -> None:
        await tracker.start()  # no run(): the test takes the hint batch's steps
        try:
            spool.retry("again")
            await tracker.refresh(["again"])  # the batch: the retried drop, pending
            finish(spool, claim(spool, "again"), error=(ErrorType.TOOL_ERROR, "second"),
                   duration_s=0.0)  # (started after the retry, as it ran at once)
            await tracker._count_behind({"again"})  # the batch: a run behind it?
            await tracker.refresh(["again"])  # the next batch: its own run's record
        finally:
            tracker.stop()

    asyncio.run(scenario())
    assert tracker.index.get("again").state is JobState.FAILED  # type: ignore[union-attr]
    assert _failed_echo(metrics) == 1  # the second run (the first was there at start)


def test_a_cancel_of_a_pending_job_is_counted_once(spool: Spool) -> None:
    """A cancelled drop's record has no run (no started_at): taken for a run behind the
    drop, it was counted twice, as the retried job's run was (the session's own review
    of the fix for that)."""
    metrics = Metrics(dict)
    tracker = Tracker(spool.layout, Index(), Hub(), metrics, scan_s=3600.0)

    async def scenario() -> None:
        await tracker.start()
        try:
            submit(spool, "dropped")
            await tracker.refresh(["dropped"])  # a hint batch: the drop, pending
            spool.cancel_pending("dropped")
            await tracker._count_behind({"dropped"})  # the batch: a run behind it?
            await tracker.refresh(["dropped"])  # the next: its cancel
        finally:
            tracker.stop()

    asyncio.run(scenario())
    counted = [sample.value for family in metrics.transitions.collect()
               for sample in family.samples if sample.name == "spoolq_transitions_total"]
    assert sum(counted) == 1, counted
