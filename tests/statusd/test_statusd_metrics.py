"""/metrics in the Prometheus text format: gauges read at scrape time, counters fed by
the transitions statusd sees."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from statusdkit import FakeOwner, ServerThread, request, run_job, submit, wait_for

from spool.errors import ErrorType
from spool.transitions import Spool


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
