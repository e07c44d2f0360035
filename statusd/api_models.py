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
    """

    tasks: list[Record]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class Submitted(BaseModel):
    task_id: str = Field(pattern=ID_PATTERN)


class Health(BaseModel):
    status: Literal["ok"]
    indexed: int = Field(ge=0, description="records in statusd's index")


class Counts(BaseModel):
    pending: int = Field(ge=0)
    running: int = Field(ge=0)
    done: int = Field(ge=0)
    failed: int = Field(ge=0)


class Liveness(BaseModel):
    alive: bool
    heartbeat_at: datetime | None
    count: int = Field(ge=0)


class Throughput(BaseModel):
    done_last_60s: int = Field(ge=0)
    failed_last_60s: int = Field(ge=0)


class StatusdInfo(BaseModel):
    indexed: int = Field(ge=0)
    ws_clients: int = Field(ge=0)
    ws_dropped: int = Field(ge=0, description="clients dropped for falling behind")
    startup_s: float
    last_scan_s: float


class Stats(BaseModel):
    """Counts per state, oldest pending age, throughput, processor liveness, workers."""

    model_config = ConfigDict(extra="allow")

    counts: Counts
    total: int = Field(ge=0)
    oldest_pending_age_s: float | None
    job_num: int = Field(ge=0)
    busy_workers: int = Field(ge=0)
    fast_running: int = Field(ge=0)
    processor: Liveness
    processors: list[dict[str, Any]]
    throughput: Throughput
    tools: list[str] = Field(description="tool names seen in the spool or offered by processors")
    statusd: StatusdInfo
