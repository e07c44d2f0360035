"""Prometheus metrics of the spool, in statusd's own registry (no global state).

Two kinds:

* Gauges read at scrape time from the index and the processors' status
  files: jobs by state, oldest pending age (and oldest due), processor up, processors, busy
  workers, ``JOB_NUM``, connected WebSocket clients, whether statusd sees the spool
  (``spoolq_statusd_spool_ok``, as /healthz says it) and whether it can read the
  processors' state (``spoolq_statusd_processors_ok``).  While it cannot, the scrape
  answers 200 all the same, without the processor gauges: a 503 would have lost the
  counts and counters with them and read as statusd down (``up`` 0), and a made-up
  ``spoolq_processor_up 0`` would fire the "processor down" alert for a live one.
  While statusd loads its index at start, the spool's gauges are its start scan's
  (``spoolq_statusd_indexing`` is 1); a scrape during that scan itself (a second or so
  at 100,000 records, longer on a cold cache or NFS) has statusd's own gauges only, 200
  all the same: a 503 reads as ``up`` 0, and would fire a "target down" alert at each
  restart.
* Counters and a histogram fed by the tracker as terminal records appear
  (``spoolq_transitions_total{tool,outcome}``,
  ``spoolq_job_duration_seconds{tool}``).  They count from statusd's start,
  as Prometheus counters do; records already on disk at start-up are not
  counted.

Tool names come from job files, so label values are capped at
``MAX_TOOL_LABELS`` distinct names; the rest are reported as ``other``.  Only a
run of a registered tool (done, or failed after it was found: ``RAN_ERRORS``)
gives a name a label of its own, so drops naming made-up tools (failed
``unknown_tool``, ``invalid_job``, cancelled while pending) cannot use the
labels up before the real tools' first runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from spool.states import JobState
from statusd.items import Item

# No ``*_created`` series (each counter's and histogram's start, as a timestamp): the
# guide's table documents none, and a restart is told by the counters falling (QA).
disable_created_metrics()  # type: ignore[no-untyped-call]

MAX_TOOL_LABELS = 64
RAN_ERRORS = frozenset({"invalid_params", "tool_error", "timeout", "worker_crashed",
                        "abandoned"})
"""Failures of a job whose tool the processor found: its name may take a label.
``abandoned``: a run whose processor died (or stopped with a newer drop pending); a job
with a made-up tool fails ``unknown_tool`` in the pass that claims it, so only a kill in
that moment leaves one to be abandoned.  A job cancelled while it ran (its record has a
``duration_s``, which one cancelled while pending lacks) ran its tool too: see
:func:`ran_its_tool`."""
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CONTENT_TYPE = CONTENT_TYPE_LATEST

StatusSource = Callable[[], dict[str, Any]]
"""Returns the /api/v1/stats document (plus ``ws_clients``); without the processors'
fields and with ``processors_unknown`` (the cause) when their state cannot be read."""


class _SpoolGauges:
    """A custom collector: every gauge is computed from one stats document per scrape."""

    def __init__(self, status: StatusSource) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        doc = self.status()
        if "counts" in doc:  # none while the start's scan runs: nothing known of the spool
            yield from _spool_gauges(doc)
        yield from _statusd_gauges(doc["statusd"])


def _spool_gauges(doc: dict[str, Any]) -> Iterator[Metric]:
    """The gauges of the spool's figures and of the processors' state."""
    jobs = GaugeMetricFamily("spoolq_jobs", "Jobs in the spool by state", labels=["state"])
    for state, count in doc["counts"].items():
        jobs.add_metric([state], count)
    yield jobs
    age = doc["oldest_pending_age_s"]
    yield GaugeMetricFamily("spoolq_oldest_pending_age_seconds",
                            "Age of the oldest pending job (0 when none)",
                            value=age if age is not None else 0.0)
    due = doc["oldest_due_pending_age_s"]
    yield GaugeMetricFamily("spoolq_oldest_due_pending_age_seconds",
                            "How long the pending job due longest has waited since it "
                            "could run: since it arrived, or its not_before or retry "
                            "backoff's end if later "
                            "(0 when none is due)",
                            value=due if due is not None else 0.0)
    drops = doc.get("in_progress_drops")
    if drops is not None:
        yield GaugeMetricFamily("spoolq_pending_in_progress_files",
                                "Files in pending/ under an in-progress name (.part, .tmp, "
                                "a dot name, ...), ignored until renamed",
                                value=drops["count"])
        idle = drops["idle_s"]
        yield GaugeMetricFamily("spoolq_pending_in_progress_idle_seconds",
                                "Seconds since the in-progress file in pending/ changed "
                                "longest ago last changed: an upload cut off grows it "
                                "(0 when none)",
                                value=idle if idle is not None else 0.0)
    yield GaugeMetricFamily("spoolq_statusd_processors_ok",
                            "1 while statusd can tell whether processors are alive; 0 "
                            "while it cannot read their state (owners/ not listed, a "
                            "lock not tested, a status file not read): the processor "
                            "gauges are then left out, never reported down",
                            value=0.0 if "processors_unknown" in doc else 1.0)
    if "processors_unknown" not in doc:
        yield from _processor_gauges(doc)


def _statusd_gauges(own: dict[str, Any]) -> Iterator[Metric]:
    """statusd's own gauges (the stats' ``statusd``), known from its start."""
    yield GaugeMetricFamily("spoolq_statusd_websocket_clients",
                            "WebSocket clients connected to statusd",
                            value=own["ws_clients"])
    yield GaugeMetricFamily("spoolq_statusd_spool_ok",
                            "1 while statusd sees the spool's folders; 0 while /healthz "
                            "says spool_missing or spool_unreadable (the gauges above "
                            "are then the spool as it last saw it)",
                            value=1.0 if own.get("spool", "ok") == "ok" else 0.0)
    yield GaugeMetricFamily("spoolq_statusd_indexing",
                            "1 while statusd loads its index at start: the jobs and "
                            "age gauges are then the spool as its start's scan found "
                            "it (left out while that scan runs), and no transition is "
                            "counted yet",
                            value=1.0 if "indexing" in own else 0.0)
    yield CounterMetricFamily("spoolq_statusd_websocket_dropped",
                              "WebSocket clients dropped for falling behind",
                              value=own["ws_dropped"])


def _processor_gauges(doc: dict[str, Any]) -> Iterator[Metric]:
    """The gauges the processors' status files tell (only when they could be read)."""
    yield GaugeMetricFamily("spoolq_processor_up",
                            "1 when a live processor holds its lease and heartbeats",
                            value=1.0 if doc["processor"]["alive"] else 0.0)
    yield GaugeMetricFamily("spoolq_processors", "Live processors on this spool",
                            value=doc["processor"]["count"])
    # A processor in its stop's grace is up and claims nothing: up alone said all was
    # well while pending jobs waited for the next start (QA h389).
    yield GaugeMetricFamily("spoolq_processors_stopping", "Live processors asked to stop: "
                            "they claim nothing, their running jobs given SPOOL_GRACE_S",
                            value=sum(1 for p in doc.get("processors", [])
                                      if p.get("alive") and p.get("stopping")))
    yield GaugeMetricFamily("spoolq_processor_io_trouble",
                            "Live processors whose writes the spool refuses (a full "
                            "disk, a folder they may not write): their claims wait",
                            value=doc["processor"]["io_trouble"])
    yield GaugeMetricFamily("spoolq_busy_workers", "COMPUTE workers running a job",
                            value=doc["busy_workers"])
    yield GaugeMetricFamily("spoolq_job_num", "COMPUTE workers (JOB_NUM) of live processors",
                            value=doc["job_num"])
    yield GaugeMetricFamily("spoolq_compute_room", "COMPUTE jobs the live processors can run "
                            "at once now: below spoolq_job_num while a Dask cluster is short "
                            "(0: no scheduler connected, or no worker)",
                            value=doc["compute_room"])


def ran_its_tool(item: Item) -> bool:
    """Whether a terminal ``item`` is of a run of a tool the processor found: done, failed
    as :data:`RAN_ERRORS`, or cancelled while it ran (a researcher's cancel of a running
    backtest was counted under ``other``)."""
    return (item.state is JobState.DONE or item.error_type in RAN_ERRORS
            or (item.error_type == "cancelled" and item.duration_s is not None))


class Metrics:
    """statusd's registry with the counters the tracker feeds."""

    def __init__(self, status: StatusSource) -> None:
        self.registry = CollectorRegistry()
        self.transitions = Counter(
            "spoolq_transitions", "Jobs that reached a terminal state, by tool and outcome",
            ["tool", "outcome"], registry=self.registry)
        self.failures = Counter(
            "spoolq_failures", "Failed jobs by tool and error type",
            ["tool", "error_type"], registry=self.registry)
        self.duration = Histogram(
            "spoolq_job_duration_seconds", "Run time of finished jobs by tool",
            ["tool"], buckets=DURATION_BUCKETS_S, registry=self.registry)
        self.registry.register(_SpoolGauges(status))
        self._tools: set[str] = set()

    def observe_terminal(self, item: Item) -> None:
        ran = ran_its_tool(item)
        tool = self._label(item.tool, ran)
        self.transitions.labels(tool=tool, outcome=item.state.value).inc()
        if item.error_type is not None:
            self.failures.labels(tool=tool, error_type=item.error_type).inc()
        # A run time of a run only: a job failed unknown_tool or invalid_job at its claim
        # has a duration_s too (the claim to the record), and was observed under "other"
        # as if a tool had run that long (QA h389).
        if ran and item.duration_s is not None and item.duration_s >= 0:
            self.duration.labels(tool=tool).observe(item.duration_s)

    def _label(self, tool: str | None, ran: bool) -> str:
        if tool is None:
            return "none"
        if tool in self._tools:
            return tool
        if ran and len(self._tools) < MAX_TOOL_LABELS:
            self._tools.add(tool)
            return tool
        return "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)
