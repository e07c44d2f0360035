"""Job and record models, and their byte encodings.

A *job* is what a client drops in ``pending/``; a *record* is what the spool
reports for a job in any state and what ``done/`` and ``failed/`` hold.
Records are written with orjson: UTC timestamps with ``Z``, NaN and infinities
as ``null``.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from spool.clock import utc_from_ns
from spool.errors import KEEPS_ORIGINAL, ErrorType
from spool.ids import ID_PATTERN
from spool.states import JobState

_DUMP_OPTS = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
MAX_PRIORITY = 1_000_000
MAX_ATTEMPTS_LIMIT = 100
MAX_TOOL_NAME = 128
"""The longest tool name a job may give (and so a tool may have)."""
PROGRESS_MESSAGE_CHARS = 500
"""A progress report's message is cut to this many characters, by the processor that
writes it and by every reader (a progress file may be written by anyone who can write
to ``progress/``)."""
MAX_PROGRESS_BYTES = 64 << 10
"""A progress file larger than this is no progress report: the processor's are a few
KiB at most (the message cut to :data:`PROGRESS_MESSAGE_CHARS`, then JSON-escaped)."""
# Epoch seconds written as a string with a fraction: pydantic-core (2.46) reads such a
# string by its own rule, milliseconds past 2e10, whatever val_temporal_unit says.
_EPOCH_FRACTION = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+)")
_LOWER_Z = re.compile(r"z$")
_NUMERIC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def aware_utc(value: datetime | None) -> datetime | None:
    """A timestamp in UTC; ValueError without an offset (it cannot be compared with
    the others') or out of range once in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset (e.g. 2026-11-28T12:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: not a ValueError of its own
        raise ValueError("timestamp out of range in UTC (years 1 to 9999)") from None


class ErrorInfo(BaseModel):
    """Why a job failed."""

    model_config = ConfigDict(extra="ignore")

    type: ErrorType
    message: str
    traceback: str | None = None
    retry_at: datetime | None = Field(
        default=None, description="set by the processor on the error a retry came from: "
        "when its backoff lets the retry run (the job's not_before stays the client's)")

    _aware = field_validator("retry_at", mode="after")(aware_utc)

    @field_validator("retry_at", mode="before")
    @classmethod
    def _iso_only(cls, value: Any) -> Any:
        """The processor writes ISO 8601; a number (or a numeric string) is refused, as
        the schema says, where pydantic took one past 2e10 for milliseconds: a drop's
        ``99999999999`` read as 1973 and its job ran at once."""
        if value is None or isinstance(value, datetime) or (
                isinstance(value, str) and _NUMERIC.fullmatch(value.strip()) is None):
            return value
        raise ValueError("retry_at must be an ISO 8601 time with an offset, not a number")


EARLIER_KEPT = 10
"""The most earlier failures a job file or record keeps: the last ones (spool.history)."""
EARLIER_MESSAGE_CHARS = 300
"""The longest message an earlier failure keeps (its first characters)."""
EARLIER_DROPPED_MAX = 2**53 - 1
"""The most ``earlier_errors_dropped`` counts (it stops there): past it a JavaScript number
(the dashboard's) is not exact, and a count raised at the top of orjson's 64 bits could
not be written."""


class EarlierError(BaseModel):
    """The failure of one earlier run of a job, kept small (no traceback): an entry of
    ``earlier_errors`` (:mod:`spool.history` writes them)."""

    model_config = ConfigDict(extra="ignore")

    attempt: int = Field(ge=0, description="the job's attempts when it ended: the run's "
                         "number (counted again from 1 after a spoolq retry)")
    type: ErrorType
    message: str = Field(description=f"the error's message, cut to its first "
                         f"{EARLIER_MESSAGE_CHARS} characters")
    finished_at: datetime | None = Field(default=None, description="when it ended")

    _aware = field_validator("finished_at", mode="after")(aware_utc)

    @field_validator("message", mode="after")
    @classmethod
    def _cut(cls, message: str) -> str:
        # What a client's job file carries is held to the bound a requeue writes: a
        # 150,000-character message went whole into every later record of the job.
        return cut_earlier_message(message)


def cut_earlier_message(message: str) -> str:
    """``message`` as an earlier failure keeps it: its first characters, at most
    :data:`EARLIER_MESSAGE_CHARS` of them with the ``…`` that tells the cut."""
    if len(message) > EARLIER_MESSAGE_CHARS:
        return message[:EARLIER_MESSAGE_CHARS - 1] + "…"
    return message


def add_dropped(dropped: int | None, more: int) -> int | None:
    """The count of dropped earlier failures ``dropped`` raised by ``more``, stopping at
    :data:`EARLIER_DROPPED_MAX`."""
    if more <= 0:
        return dropped
    return min((dropped or 0) + more, EARLIER_DROPPED_MAX)


class RetryErrorInfo(ErrorInfo):
    """A job file's ``error``: the failure its retry came from, with the failures of all
    its runs so far.  In the error and not beside it: a processor of an earlier version
    reads job files with no field unknown to it, but ignores an error's.

    A job file a client wrote may carry any history: it is held to the bound a requeue
    keeps (the last :data:`EARLIER_KEPT`, the older ones counted, each message cut), so
    that no record of the job, nor its requeue, carries more than the processor's own."""

    earlier_errors: list[EarlierError] | None = Field(
        default=None, description="set by the processor: the failures of the job's runs "
        "so far, oldest first, this one last; its next run's record carries them")
    earlier_errors_dropped: int | None = Field(
        default=None, ge=0, description=f"how many failures before earlier_errors' first "
        f"were not kept (the last {EARLIER_KEPT} are)")

    @model_validator(mode="after")
    def _bounded(self) -> RetryErrorInfo:
        over = 0
        if self.earlier_errors is not None and len(self.earlier_errors) > EARLIER_KEPT:
            over = len(self.earlier_errors) - EARLIER_KEPT
            self.earlier_errors = self.earlier_errors[over:]
        dropped = add_dropped(self.earlier_errors_dropped, over)
        if dropped is not None and dropped > EARLIER_DROPPED_MAX:
            # Raised by the next requeue, a count at the top of orjson's 64 bits could
            # not be written: the processor stopped at each start.
            dropped = EARLIER_DROPPED_MAX
        if dropped != self.earlier_errors_dropped:
            self.earlier_errors_dropped = dropped
        return self


class Source(BaseModel):
    """What a quarantined drop was: its original name, size and kind; ``kept_at`` (a
    path under the spool) where it now is when spoolq could not move it into
    ``failed/`` (a directory of another user): an operator must remove it."""

    name: str
    size: int | None = None
    kind: str = "file"
    kept_at: str | None = None


def kind_of(mode: int) -> str:
    """A :class:`Source`'s ``kind`` for a file of ``mode`` (from an ``lstat``)."""
    if stat.S_ISREG(mode):
        return "file"  # nearly every drop: without building the table below
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "unknown"


class Progress(BaseModel):
    """A running job's latest progress report and owner."""

    model_config = ConfigDict(extra="ignore")

    fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str = ""
    updated_at: datetime | None = None
    started_at: datetime | None = None
    attempt: int | None = None
    host: str | None = None
    pid: int | None = None
    owner: str | None = None

    # The processor writes UTC; anything else in progress/ is no progress report.
    _aware = field_validator("updated_at", "started_at", mode="after")(aware_utc)

    @field_validator("message", mode="after")
    @classmethod
    def _cut(cls, message: str) -> str:
        """Cut as the processor cuts it: a hand-written 5 MiB message was served whole
        in every list of running jobs and every WebSocket progress event."""
        return message[:PROGRESS_MESSAGE_CHARS]


class IoTrouble(BaseModel):
    """The spool refuses a processor's writes (a full disk, a folder it may not write):
    its claims wait, tried again after a backoff of 0.5 to 30 s, and finished runs wait
    for their records.  Over once a heartbeat finds no run waiting and no refusal for as
    long as any refused write takes to be tried again (processor/daemon.py)."""

    model_config = ConfigDict(extra="ignore")

    error: str = Field(description="the last refusal, as the log's I/O trouble line says it")
    since: datetime = Field(description="the first refusal of this outage")
    retry_at: datetime = Field(description="when the processor tries again")

    # As a heartbeat: a time without an offset cannot be compared with the others'.
    _aware = field_validator("since", "retry_at", mode="after")(aware_utc)


class OwnerStatus(BaseModel):
    """A processor's status file, ``owners/<owner>.json``, rewritten every heartbeat."""

    model_config = ConfigDict(extra="ignore")

    owner: str
    pid: int
    host: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    executor: str = "local"
    job_num: int = 0
    busy_workers: int = 0
    fast_running: int = 0
    done_last_60s: int = 0
    failed_last_60s: int = 0
    stopping: bool = Field(default=False, description="asked to stop: it claims nothing "
                           "more, and its running jobs have until grace_ends_at")
    grace_ends_at: datetime | None = Field(default=None, description="when what still "
                                           "runs is killed and requeued (SPOOL_GRACE_S)")
    io_trouble: IoTrouble | None = Field(default=None, description="the spool refuses its "
                                         "writes and its claims wait; null when all is well")
    compute_room: int | None = Field(default=None, ge=0, description="COMPUTE jobs it can "
                                     "run at once now: job_num, or fewer while its Dask "
                                     "cluster has fewer threads (0: no scheduler connected, "
                                     "or no worker); null from an older processor")
    left_to_others: dict[str, int] = Field(
        default_factory=dict, description="pending jobs of a tool this processor does not "
        "load, left for the live processors that offer it, by tool (docs/scaling.md)")
    tools: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("io_trouble", mode="wrap")
    @classmethod
    def _io_trouble_as_read(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                            info: ValidationInfo) -> IoTrouble | None:
        """Advisory: one that cannot be read (another version's, say) still tells of
        trouble, timed by the heartbeat, and never makes a live processor invalid, which
        would count it as down."""
        try:
            return cast("IoTrouble | None", handler(value))
        except ValidationError:
            heartbeat = info.data.get("heartbeat_at")
            if heartbeat is None:
                raise ValueError("io_trouble unreadable, and no heartbeat to time it") from None
            error = value.get("error") if isinstance(value, dict) else value
            try:
                return IoTrouble(error=f"(io_trouble unreadable) {str(error)[:200]}",
                                 since=heartbeat, retry_at=heartbeat)
            except ValidationError:  # a heartbeat without an offset: no time to give it
                raise ValueError("io_trouble unreadable") from None


def error_text(error: Mapping[str, Any]) -> str:
    """A validation error's message (one of ``ValidationError.errors()``) as a reason:
    a validator's own words without pydantic's ``Value error, `` before them, and a
    float past 64 bits where an integer goes said as what it is (pydantic: "Unable to
    parse input string as an integer" of the number ``1e308``, QA)."""
    if error.get("type") == "int_parsing_size" and isinstance(error.get("input"), float):
        return f"Input should be a valid integer, and {error['input']!r} is out of range"
    return str(error["msg"]).removeprefix("Value error, ")


class _JobFields(BaseModel):
    """Fields a job file may carry; shared by jobs and records."""

    # Epoch numbers are seconds however large (DESIGN section 9): by default pydantic takes
    # one past 2e10 for milliseconds, so year 5138 read as 1973 and the job ran at once.
    model_config = ConfigDict(extra="forbid", val_temporal_unit="seconds")

    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0, description="seconds; may only lower "
                                  "the tool's execution_timeout")
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    not_before: datetime | None = Field(default=None, description="ISO 8601 with an offset, "
                                        "or epoch seconds")
    meta: dict[str, Any] | None = None
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    submitted_at: datetime | None = None
    attempts: int = Field(default=0, ge=0)
    error: ErrorInfo | None = Field(default=None, description="on a job: the failure a "
                                    "retry came from")

    _aware = field_validator("not_before", "submitted_at", mode="after")(aware_utc)

    @field_validator("timeout", "priority", "max_attempts", "attempts", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        # What the published schema says: a number.  Lax, pydantic read true as 1 (a
        # timeout of 1 s that killed the job) and "7" as priority 7 (QA).
        if isinstance(value, bool | str):
            raise ValueError(f"must be a number, not {orjson.dumps(value).decode()[:40]}")
        return value

    def due_at(self) -> datetime | None:
        """The earliest time the job may run: the later of the client's ``not_before`` and
        the backoff of the retry it is (``error.retry_at``); None when neither holds it."""
        retry_at = self.error.retry_at if self.error is not None else None
        if retry_at is None or (self.not_before is not None and self.not_before > retry_at):
            return self.not_before
        return retry_at


EPOCH_FIRST_S = -62_135_596_800
"""0001-01-01T00:00:00Z in epoch seconds: the earliest time a job's epoch number can be."""
EPOCH_END_S = 253_402_300_800
"""10000-01-01T00:00:00Z in epoch seconds: a job's epoch number is below it."""


def _epoch_seconds_in_schema(schema: dict[str, Any]) -> None:
    """Job's JSON Schema: its times may be epoch seconds too, as the model reads them
    (years 1 to 9999: a client validating by the schema took ``1e20``, which the
    model refuses)."""
    for name in ("not_before", "submitted_at"):
        schema["properties"][name]["anyOf"].insert(
            1, {"type": "number", "description": "epoch seconds",
                "minimum": EPOCH_FIRST_S, "exclusiveMaximum": EPOCH_END_S})


class Job(_JobFields):
    """A job file as a client writes it.  Only ``tool`` is required."""

    model_config = ConfigDict(json_schema_extra=_epoch_seconds_in_schema)

    tool: str = Field(min_length=1, max_length=MAX_TOOL_NAME)
    # Runs already spent: a requeue writes fewer than max_attempts.  Unbounded, a drop's
    # attempt ``attempts + 1`` could pass the 64 bits orjson writes (a record that cannot
    # be written, the processor stopped at each start).
    attempts: int = Field(default=0, ge=0, le=MAX_ATTEMPTS_LIMIT)
    error: RetryErrorInfo | None = Field(default=None, description="on a job: the failure "
                                         "a retry came from, and those before it")

    @field_validator("not_before", "submitted_at", mode="before")
    @classmethod
    def _epoch_fraction(cls, value: Any) -> Any:
        """A client's ``"99999999999.5"`` as the number it spells, which is read as seconds;
        an ISO 8601 time with an offset as Python reads it (``+05``, ``+0530``, the basic
        format, a lowercase ``z``), as ``spoolq submit --not-before`` took it: a job
        file saying ``2026-12-04T19:00:00+05`` was quarantined (QA)."""
        if isinstance(value, str) and _EPOCH_FRACTION.fullmatch(value):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(_LOWER_Z.sub("+00:00", value))
            except ValueError:
                return value  # pydantic's reading, and its reason
            if parsed.tzinfo is not None:
                return parsed
        return value

    def recorded_by(self, submitted_at: datetime | None, attempts: object,
                    mtime_ns: int) -> bool:
        """A record with this ``submitted_at`` and ``attempts`` is of this job's run (the
        job file's ``mtime_ns`` standing for a submission the job does not name)."""
        return (submitted_at == (self.submitted_at or utc_from_ns(mtime_ns))
                and attempts == self.attempts + 1)


class Record(_JobFields):
    """The spool's view of a job in any state; done/ and failed/ hold these."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=ID_PATTERN)
    tool: str | None = None
    state: JobState
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    host: str | None = None
    pid: int | None = Field(
        default=None, description="while the job runs, its processor's (the owner of its "
        "claim: killing it stops every job it runs; a pid of the processor's own pid "
        "namespace, its container's); once it ended, the process that ran "
        "the tool (a COMPUTE worker's, the processor's for a FAST tool, and the "
        "processor's, with its host, for a job run on a Dask cluster)")
    # Before result: a reader of a record too large to read whole reads what comes first.
    earlier_errors: list[EarlierError] | None = Field(
        default=None, description="the failures of the job's runs before this one (retries, "
        "and the runs before a spoolq retry), oldest first; absent when there were none")
    earlier_errors_dropped: int | None = Field(
        default=None, ge=0, description=f"how many failures before earlier_errors' first "
        f"were not kept (the last {EARLIER_KEPT} are)")
    result: Any = None
    source: Source | None = None
    progress: Progress | None = None
    unreadable: str | None = Field(
        default=None, description="set by readers, never written: why this job's file in "
        "done/ or failed/ is not a record that can be read (not JSON, truncated, not UTF-8, "
        "not a record of this id); the state is the folder's, submitted_at the file's mtime, "
        "and nothing else is known (a done job has no result then)")

    _run_times_aware = field_validator("started_at", "finished_at", mode="after")(aware_utc)

    @property
    def quarantined(self) -> bool:
        """A record of what was never a job (a quarantined drop, a cancel of a pending file
        that held none): its ``source`` is kept, and no run is recorded.  A run's record
        that kept its job file's bytes (an unknown tool, invalid params) has a ``source``
        too, and is a run's."""
        return self.source is not None and (
            self.error is None or self.error.type not in KEEPS_ORIGINAL)

    def to_job(self) -> Job:
        """The job that re-runs this record (used by retry): no attempts spent yet."""
        fields = self.model_dump(include=set(_JobFields.model_fields) - {"attempts"})
        return Job.model_validate({**fields, "tool": self.tool})


def job_bytes(job: Job) -> bytes:
    data = job.model_dump(exclude_none=True, exclude_defaults=False)
    return orjson.dumps(data, option=_DUMP_OPTS)


def record_bytes(record: Record) -> bytes:
    """The record as written: ``model_dump(exclude_none=True)``'s content, by orjson.

    Built from the fields directly: pydantic's dump is a fifth of a claim-and-complete's
    Python (docs/benchmarks.md).  The record's own nested models are dumped here, not
    through ``default``: orjson looks for numpy types (importing numpy, 0.1 s) before it
    calls ``default``, so a ``spoolq cancel`` would load numpy to write an ``error``.
    """
    fields = record.__dict__
    data = fields.copy()  # then the Nones deleted: a third faster than a dict comprehension
    for name, value in fields.items():
        if value is None:
            del data[name]
    for name in _NESTED:
        if (value := data.get(name)) is not None:
            data[name] = value.model_dump(exclude_none=True)
    if (earlier := data.get("earlier_errors")) is not None:
        data["earlier_errors"] = [entry.model_dump(exclude_none=True) for entry in earlier]
    if record.state is _DONE and record.unreadable is None:
        data["result"] = record.result
    return orjson.dumps(data, default=_dump_model, option=_DUMP_OPTS)


_NESTED = ("error", "source", "progress")
"""The fields of a Record that hold models."""
_DONE = JobState.DONE  # read once: an enum member costs 0.11 us a read on Python 3.11


def _dump_model(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    raise TypeError(f"cannot write {type(value).__name__} into a record")


def parse_record(data: bytes) -> Record:
    return Record.model_validate(orjson.loads(data))


def schemas() -> dict[str, Any]:
    """The JSON Schemas of the job file and the record."""
    return {"job": Job.model_json_schema(), "record": Record.model_json_schema()}


MAX_NESTING = 200
"""Deeper JSON parses in intake but cannot be encoded into a record (orjson stops at 254)."""
ORJSON_MAX_DEPTH = 254
"""The deepest nesting orjson writes (it reads 1,024 levels)."""


def nested_too_deep(value: Any) -> bool:
    """``nesting_depth(value) > MAX_NESTING``, asked of orjson's encoder: wrapped in
    ``ORJSON_MAX_DEPTH - MAX_NESTING`` lists, such a value is past what it writes.  On a
    wide record (60,000 small objects) that is 10 ms against 160 for the walk of
    :func:`nesting_depth`.  A value it cannot write for another reason (an integer past
    64 bits, from a client's params: what orjson parsed it can write) is walked."""
    wrapped = value
    for _ in range(ORJSON_MAX_DEPTH - MAX_NESTING):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except TypeError as exc:
        if str(exc) == "Recursion limit reached":
            return True
        return nesting_depth(value) > MAX_NESTING
    return False


def too_deep(data: bytes, obj: Any) -> bool:
    """``obj`` (parsed from ``data`` by orjson) nests deeper than ``MAX_NESTING``: orjson
    reads 1,024 levels but writes 254, so a reader could not encode it.  Each level takes
    an opening bracket, so counting them first spares the check for all but files with
    that many (a 1 MiB list of numbers: its walk took 0.15 s).  For a job file (intake, a
    POST) and a record (the readers) alike."""
    return data.count(b"[") + data.count(b"{") > MAX_NESTING and nested_too_deep(obj)


def nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iteratively)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest
