"""What a job file holds: its bytes, read boundedly, and the job and record they give.

* :func:`read_fd` reads a whole file from a descriptor, never more than ``limit + 1``
  bytes when given one, so a file that grows while it is read cannot take the reader's
  memory with it.
* :data:`MAX_ACTIVE_BYTES` bounds a pending or running file: a larger one is no job.
* :func:`parse_job` gives the job a file's bytes hold, read as intake reads a drop;
  :func:`job_in` the same, or None (never an exception) for bytes that hold none;
  :func:`record_from_job` the record view of a job file.
"""

from __future__ import annotations

import os
from typing import Any

from spool.clock import utc_from_ns
from spool.exact import inexact_integer
from spool.history import record_fields
from spool.models import Job, Record
from spool.states import JobState
from spool.text import without_bom

READ_CHUNK = 1 << 16
"""The size of each read of :func:`read_fd` past its first."""
MAX_ACTIVE_BYTES = 16 * 1024 * 1024
"""A pending or running file larger than this is not a job (intake quarantines it): a
claim reads no more of one that grew after intake judged it."""


def read_fd(fd: int, limit: int | None = None, size: int = -1) -> bytes:
    """Read a whole file from ``fd`` (at most ``limit + 1`` bytes when given).

    ``size``: the file's size from a stat; when one read returns exactly that
    many bytes (of the ``size + 1`` asked for), the end was reached and no
    second read is made to see it.
    """
    chunks: list[bytes] = []
    total = 0
    if 0 <= size < READ_CHUNK and (limit is None or size <= limit):
        first = os.read(fd, size + 1)
        if len(first) == size:
            return first
        chunks.append(first)
        total = len(first)
        if not first:
            return first
    while True:
        chunk = os.read(fd, READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            return b"".join(chunks)


def parse_job(data: bytes) -> Job:
    """The job a job file's bytes hold, a UTF-8 byte order mark first passed over as
    intake passes it (:func:`spool.text.without_bom`): every reader of a file in
    ``pending/`` or ``running/`` reads it so.  pydantic's ValidationError (a ValueError)
    when they hold none."""
    return Job.model_validate_json(without_bom(data))


def job_in(data: bytes) -> Job | None:
    """The job a job file's bytes hold; None when they hold none (not a valid job, or an
    integer past 64 bits: pydantic reads it exactly, and no record could hold it)."""
    if inexact_integer(data) is not None:
        return None
    try:
        return parse_job(data)
    except ValueError:
        return None


def record_from_job(job: Job, job_id: str, state: JobState, mtime_ns: int,
                    **fields: Any) -> Record:
    """The record view of a job file (submitted_at from the file when the job lacks it).

    ``fields`` set or override record fields in the same validation.  The job's
    fields go in as they are, not dumped first: validating its field values
    again is a third of the cost of a dump (and ``model_construct`` is slower
    than either).  The dict is built in one expression and handed to the
    validator itself: ``model_validate`` only forwards to it, and its frame and
    keyword handling were a sixth of building a record (1 us of 6).  The history a
    retried job's error carries becomes the record's ``earlier_errors``
    (:func:`spool.history.record_fields`).
    """
    record: Record = Record.__pydantic_validator__.validate_python(
        {**job.__dict__, "id": job_id, "state": state,
         "submitted_at": job.submitted_at or utc_from_ns(mtime_ns),
         # The history its error carries goes beside the record's (spool.history).
         **(record_fields(job.error, job.attempts) if job.error is not None else _NONE),
         **fields})
    return record


_NONE: dict[str, Any] = {}
