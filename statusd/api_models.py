"""Pydantic models of statusd's response bodies (the job and record come from spool.models).

They exist for the OpenAPI document: handlers build bytes directly for speed,
and the schemathesis run in the test suite checks that those bytes match
these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spool.ids import ID_PATTERN
from spool.models import Record


class ErrorDetail(BaseModel):
    type: str = Field(description="a stable machine-readable kind, e.g. invalid_id, not_found")
    message: str


class ErrorResponse(BaseModel):
    """Every error statusd answers with."""

    error: ErrorDetail


class TaskPage(BaseModel):
    """One page of records, newest ``submitted_at`` first.

    Records larger than 32 KiB come without ``result`` and with
    ``"result_omitted": true``; ``GET /api/v1/tasks/{id}`` has the full record.
    With ``?view=brief``, records larger than 4 KiB also come without ``params``,
    ``meta`` and ``earlier_errors`` (``"params_omitted": true``, ``"meta_omitted": true``,
    ``"earlier_errors_omitted": true``) and with
    their error's type and the first 1,000 characters of its message
    (``"error_cut": true``).
    """

    tasks: list[Record]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class Submitted(BaseModel):
    task_id: str = Field(pattern=ID_PATTERN)


class IndexLoad(BaseModel):
    """How far statusd's load of its index at start is (it serves meanwhile)."""

    phase: Literal["scanning", "reading", "sorting", "failed", "stopped"] = Field(
        description="scanning the folders, reading and parsing the records, sorting "
        "them; failed or stopped: statusd exits")
    found: int | None = Field(ge=0, description="records the scan found (null while it "
                              "scans)")
    loaded: int = Field(ge=0, description="records read and parsed so far")
    elapsed_s: float = Field(ge=0, description="seconds since the load began")
    counts_at: datetime | None = Field(
        default=None, description="(stats only) when the start's scan ended: the "
        "counts, ages and throughput are the spool as that scan found it")


class Health(BaseModel):
    status: Literal["ok", "spool_missing", "spool_unreadable", "indexing"]
    indexed: int = Field(ge=0, description="records in statusd's index")
    indexing: IndexLoad | None = Field(default=None, description="with status indexing "
                                       "only: how far the index's load is")


class Counts(BaseModel):
    pending: int = Field(ge=0)
    running: int = Field(ge=0)
    done: int = Field(ge=0)
    failed: int = Field(ge=0)


class Liveness(BaseModel):
    alive: bool = Field(description="a processor holds its owner lock and heartbeated "
                        "in the last 60 s")
    heartbeat_at: datetime | None = Field(description="the newest heartbeat of any "
                                          "processor holding its lock, live or stale")
    count: int = Field(ge=0, description="live processors")
    io_trouble: int = Field(ge=0, description="live processors whose writes the spool "
                            "refuses (a full disk, a folder they may not write): their "
                            "claims wait; each one's io_trouble in processors says why")


class Throughput(BaseModel):
    """Records written in the last 60 s (by file time), whichever processor or client
    wrote them; a processor's restart does not reset them."""

    done_last_60s: int = Field(ge=0)
    failed_last_60s: int = Field(ge=0)


class InProgressDrops(BaseModel):
    count: int = Field(ge=0)
    idle_s: float | None = Field(description="seconds since the one changed longest ago "
                                 "last changed (its ctime: a write, a chmod); null when "
                                 "there is none")


class StatusdInfo(BaseModel):
    indexed: int = Field(ge=0)
    ws_clients: int = Field(ge=0)
    ws_dropped: int = Field(ge=0, description="clients dropped for falling behind")
    startup_s: float
    last_scan_s: float
    spool: Literal["ok", "spool_missing", "spool_unreadable"] = Field(
        default="ok", description="as /healthz says it: while not ok, the counts are the "
        "spool as statusd last saw it")
    removed: int = Field(ge=0, description="jobs that left the spool (a purge, an rm) since "
                         "statusd started, which no event tells of: a page whose rows may "
                         "hold one reloads when it grows")
    indexing: IndexLoad | None = Field(
        default=None, description="only while statusd loads its index at start: how far "
        "it is, and counts_at; the spool's figures are then its start scan's, and tools "
        "only those the processors offer")


class SpoolStats(BaseModel):
    """What the stats document tells of the spool itself, known without the processors."""

    model_config = ConfigDict(extra="allow")

    counts: Counts = Field(description="jobs per state, each id once")
    total: int = Field(ge=0)
    oldest_pending_age_s: float | None = Field(description="seconds since the oldest job "
                                               "in pending/ arrived there; null when none")
    oldest_due_pending_age_s: float | None = Field(
        description="seconds the pending job due longest has waited since it could run "
        "(since it arrived, or its not_before or retry backoff's end if later); null when none "
        "is due")
    in_progress_drops: InProgressDrops | None = Field(
        description="files in pending/ under an in-progress name (a dot name, or one ending "
        "in .tmp .part .partial .filepart .crdownload ~), ignored until renamed: an "
        "upload going on, or one cut off that stays; as statusd's last scan found them")
    throughput: Throughput
    tools: list[str] = Field(description="tool names offered by processors, and seen in the "
                             "spool: the first 256 of those, in order, that none offers")
    counts_by_tool: dict[str, Counts] = Field(
        default_factory=dict, description="jobs per state of each tool in tools (absent while "
        "statusd loads its index: its start scan reads no record, so knows no tool)")
    tools_omitted: int = Field(default=0, ge=0, description="tool names seen in the spool "
                               "and offered by no processor past those 256 (made-up names "
                               "of jobs that failed unknown_tool, say)")
    statusd: StatusdInfo


class Stats(SpoolStats):
    """Counts per state, oldest pending age, throughput, processor liveness, workers."""

    job_num: int = Field(ge=0, description="COMPUTE workers of the live processors")
    compute_room: int = Field(ge=0, description="COMPUTE jobs the live processors can run at "
                              "once now: job_num, less what their Dask clusters lack (no "
                              "scheduler connected, fewer threads than JOB_NUM)")
    busy_workers: int = Field(ge=0, description="COMPUTE workers running a job, of the "
                              "live processors")
    fast_running: int = Field(ge=0, description="FAST jobs running, of the live processors")
    left_to_others: dict[str, int] = Field(
        default_factory=dict, description="pending jobs of a tool some live processors do "
        "not load, left by them to those that offer it, by tool (the most any one leaves): "
        "a rolling upgrade, see docs/scaling.md")
    left_why: dict[str, str] = Field(
        default_factory=dict, description="why the jobs of each tool in left_to_others "
        "wait, as spoolq show says it: left to the live processors that offer the tool, "
        "to a processor starting (its tools not known yet), or for a restart's grace by "
        "the tool's mark alone (no processor offers it now: they fail unknown_tool once "
        "it is over); a tool whose reason cannot be told has none")
    processor: Liveness
    processors: list[dict[str, Any]] = Field(description="the status file of each processor "
                                             "holding its lock, with alive")


class PartialStats(SpoolStats):
    """``?partial=1`` while the processors' state cannot be read: the spool's figures,
    without the fields the processors tell (never a made-up ``alive: false``)."""

    processors_unknown: str = Field(description="why the processors' state cannot be read")


class ToolInfo(BaseModel):
    """One tool a live processor offers, as ``spoolq tools --json`` lists it."""

    name: str
    mode: str | None = Field(description="fast (run at once in the processor) or compute "
                             "(the JOB_NUM pool)")
    timeout: float | None = Field(description="the tool's execution_timeout, seconds (a "
                                  "job's timeout may only lower it)")
    category: str | None = Field(description="query or mutation")
    max_attempts: int | None = Field(description="the runs a job that sets no max_attempts "
                                     "gets (DESIGN section 9)")
    description: str
    params_schema: dict[str, Any] = Field(description="the JSON Schema of the tool's params")


class ToolCatalogue(BaseModel):
    """What the live processors offer: while one runs, ``POST /api/v1/tasks`` refuses
    another tool (400 ``unknown_tool``), or params a tool lacks or does not take by the
    schema here (400 ``invalid_params``), unless told ``any_tool=1``."""

    tools: list[ToolInfo] = Field(description="by name; of a name two processors offer, "
                                  "the first one's entry; empty while none runs")
    processors: list[str] = Field(description="the owners of the live processors")
