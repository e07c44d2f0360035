"""/metrics in the Prometheus text format: gauges read at scrape time, counters fed by
the transitions statusd sees."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from statusdkit import FakeOwner, ServerThread, request, run_job, submit, wait_for

from spool.errors import ErrorType
from spool.states import JobState
from spool.transitions import Spool

REPO = Path(__file__).resolve().parents[2]


def _samples(server: ServerThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = request(server.base, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_jobs_transitions_durations_and_liveness(server: ServerThread,
                                                               spool: Spool) -> None:
    before = _samples(server)
    assert before[("spoolq_processor_up", ())] == 0
    assert before[("spoolq_jobs", (("state", "done"),))] == 0
    run_job(spool, "ok-1", {"message": 1})
    run_job(spool, "ok-2", {"message": 2}, tool="sleep")
    run_job(spool, "bad-1", error=(ErrorType.TIMEOUT, "too slow"))
    submit(spool, "waiting")
    owner = FakeOwner(spool, busy=2)
    try:
        samples = wait_for(lambda: (s := _samples(server))
                           .get(("spoolq_jobs", (("state", "pending"),))) == 1
                           and s.get(("spoolq_transitions_total",
                                      (("outcome", "failed"), ("tool", "echo")))) == 1
                           and s, what="metrics caught up")
        assert samples[("spoolq_jobs", (("state", "done"),))] == 2
        assert samples[("spoolq_jobs", (("state", "failed"),))] == 1
        assert samples[("spoolq_transitions_total", (("outcome", "done"), ("tool", "echo")))] == 1
        assert samples[("spoolq_transitions_total",
                        (("outcome", "done"), ("tool", "sleep")))] == 1
        assert samples[("spoolq_failures_total",
                        (("error_type", "timeout"), ("tool", "echo")))] == 1
        assert samples[("spoolq_job_duration_seconds_count", (("tool", "echo"),))] == 2
        assert samples[("spoolq_job_duration_seconds_sum", (("tool", "echo"),))] == 0.5
        assert samples[("spoolq_oldest_pending_age_seconds", ())] >= 0
        assert samples[("spoolq_processor_up", ())] == 1
        assert samples[("spoolq_busy_workers", ())] == 2
        assert samples[("spoolq_job_num", ())] == 2
    finally:
        owner.close()
    assert _samples(server)[("spoolq_processor_up", ())] == 0


def test_the_processor_gauges_say_what_the_live_processors_status_files_say(
        server: ServerThread, spool: Spool) -> None:
    """``spoolq_processors``, ``spoolq_processor_io_trouble`` and ``spoolq_compute_room``
    were asserted only as absent while no processor was known (h343): two live ones, one
    whose writes the spool refuses and whose Dask cluster has room for one job, the other
    at its JOB_NUM."""
    now = datetime.now(UTC)
    trouble = {"error": "cannot publish x.json: No space left on device", "since": now,
               "retry_at": now + timedelta(seconds=1)}
    short = FakeOwner(spool, "proc-short", busy=0, compute_room=1, io_trouble=trouble)
    whole = FakeOwner(spool, "proc-whole", busy=1)
    try:
        samples = wait_for(lambda: (s := _samples(server))
                           .get(("spoolq_processors", ())) == 2 and s,
                           what="both processors counted")
        assert samples[("spoolq_processor_io_trouble", ())] == 1
        assert samples[("spoolq_job_num", ())] == 4
        assert samples[("spoolq_compute_room", ())] == 1 + 2  # its own word, then JOB_NUM
        assert samples[("spoolq_busy_workers", ())] == 1
    finally:
        short.close()
        whole.close()
    gone = wait_for(lambda: (s := _samples(server)).get(("spoolq_processors", ())) == 0 and s,
                    what="neither counted once their leases went")
    assert gone[("spoolq_processor_io_trouble", ())] == 0


def test_a_processor_in_its_stops_grace_is_counted_stopping(server: ServerThread,
                                                            spool: Spool) -> None:
    """During a stop's grace a processor is up and claims nothing; ``up`` alone said all
    was well while pending jobs waited (h389)."""
    running = FakeOwner(spool, owner="proc-running")
    stopping = FakeOwner(spool, owner="proc-stopping", stopping=True)
    hung = FakeOwner(spool, owner="proc-hung", stopping=True, beat_age_s=120)
    try:
        samples = _samples(server)
        assert samples[("spoolq_processors", ())] == 2
        assert samples[("spoolq_processors_stopping", ())] == 1, "the hung one is not live"
    finally:
        for owner in (running, stopping, hung):
            owner.close()
    assert _samples(server)[("spoolq_processors_stopping", ())] == 0


def test_a_record_touched_in_place_is_not_counted_again(server: ServerThread,
                                                        spool: Spool) -> None:
    """A record whose mtime moved (``touch``, a tool that rewrites times) was taken for a
    re-run: spoolq_transitions_total, the failures and the duration histogram counted it
    once more at the next rescan.  A re-run writes a new record (new times in it)."""
    run_job(spool, "touched", error=(ErrorType.TIMEOUT, "too slow"))
    key = ("spoolq_transitions_total", (("outcome", "failed"), ("tool", "echo")))
    wait_for(lambda: _samples(server).get(key) == 1, what="the failure counted")
    path = spool.layout.job(JobState.FAILED, "touched")
    earlier = time.time() - 60  # as a restore that keeps times would (rsync -t, cp -p)
    os.utime(path, (earlier, earlier))
    assert server.loop is not None
    asyncio.run_coroutine_threadsafe(server.services.tracker.rescan(), server.loop).result(10)
    item = server.in_loop(lambda: server.services.index.get("touched"))
    assert item.stamp.mtime_ns == os.stat(path).st_mtime_ns  # the rescan saw the touch
    samples = _samples(server)
    assert samples[key] == 1
    assert samples[("spoolq_failures_total", (("error_type", "timeout"), ("tool", "echo")))] == 1
    assert samples[("spoolq_job_duration_seconds_count", (("tool", "echo"),))] == 1
    run_job(spool, "touched", error=(ErrorType.TIMEOUT, "too slow again"))  # a real re-run
    wait_for(lambda: _samples(server).get(key) == 2, what="the re-run counted")


def test_every_series_is_one_the_operations_guide_documents(server: ServerThread,
                                                            spool: Spool) -> None:
    """/metrics also sent prometheus_client's ``*_created`` series (a start timestamp per
    counter and histogram), which the guide's table names nowhere (QA)."""
    run_job(spool, "ok-1", {"message": 1})
    wait_for(lambda: ("spoolq_transitions_total", (("outcome", "done"), ("tool", "echo")))
             in _samples(server), what="the run counted")
    guide = (REPO / "docs" / "operations.md").read_text()
    reply = request(server.base, "GET", "/metrics")
    names = {sample.name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
             if family.type == "histogram" else sample.name
             for family in text_string_to_metric_families(reply.body.decode())
             for sample in family.samples}
    assert "spoolq_transitions_total" in names
    assert {name for name in names
            if f"`{name}`" not in guide and f"`{name}{{" not in guide} == set()


def test_a_record_damaged_and_put_back_is_no_second_run(server: ServerThread,
                                                        spool: Spool) -> None:
    """A done record cut short in place, then put back from a copy, counted the job done
    twice more (h365: ``done,tool="none"`` and then ``done,tool="echo"`` went up by one
    each), as if it had been run again: neither is a run."""
    run_job(spool, "ok-1", {"message": 1})
    done = ("spoolq_transitions_total", (("outcome", "done"), ("tool", "echo")))
    wait_for(lambda: _samples(server).get(done) == 1, what="the run counted")
    path = spool.layout.job(JobState.DONE, "ok-1")
    kept = path.read_bytes()

    def reads(unreadable: bool) -> bool:
        reply = request(server.base, "GET", "/api/v1/tasks/ok-1")
        return reply.status == 200 and (b'"unreadable"' in reply.body) is unreadable

    for data, unreadable in ((b'{"id":"ok-1"', True), (kept, False)):
        path.write_bytes(data)  # in place, as cp writes it
        wait_for(lambda unreadable=unreadable: reads(unreadable), what="statusd read it")
        samples = _samples(server)
        counted = {labels: value for (name, labels), value in samples.items()
                   if name == "spoolq_transitions_total"}
        assert counted == {done[1]: 1}, (unreadable, counted)
