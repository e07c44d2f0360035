"""The failures of a job's earlier runs (``earlier_errors``): what a retried job file
and each later record of the job carry of them, bounded.

Where they are kept:

* A job file (``pending/``, ``running/``) carries them in its ``error``
  (:class:`~spool.models.RetryErrorInfo`): the failures of all its runs so far, oldest
  first, the one its ``error`` tells last.  Not beside ``error``: a processor of an
  earlier version reads job files with no field unknown to it (``extra="forbid"``),
  and would quarantine the job as ``invalid_job``; an unknown field in ``error`` it
  ignores (it then drops the history, and runs the job).
* A record (``done/``, ``failed/``, and the reader's view of a job file) carries them
  as ``earlier_errors`` beside its own fields: the failures of the runs before the one
  it records (:func:`record_fields`, :func:`active_fields`).  A done record has no
  ``error``: DESIGN section 3 fixes that.

Every requeue for a retry adds its run's failure (:func:`retry_error`): the processor's
(:mod:`processor.finish`), recovery's of an orphan (``abandoned``,
:mod:`spool.orphans`), and ``spoolq retry``'s of a failed record, whose final error
joins them (:mod:`spool.submission`).  A stop's requeue adds none: its run is not
counted (DESIGN section 9), and the job file goes back with its error as it was.

Bound: the last :data:`EARLIER_KEPT` failures, each message cut to
:data:`EARLIER_MESSAGE_CHARS` characters and no traceback, with the count of those
dropped before them in ``earlier_errors_dropped``: a poison job with
``max_attempts`` 100 grows its job file by at most :data:`EARLIER_MAX_BYTES`.  A job
file a client wrote is held to the same bound as it is read
(:class:`~spool.models.RetryErrorInfo`): a forged history is cut, never carried whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from spool.errors import ErrorType
from spool.models import (
    EARLIER_KEPT,
    EARLIER_MESSAGE_CHARS,
    MAX_ATTEMPTS_LIMIT,
    EarlierError,
    ErrorInfo,
    RetryErrorInfo,
    add_dropped,
    cut_earlier_message,
)

__all__ = ["EARLIER_KEPT", "EARLIER_MAX_BYTES", "EARLIER_MESSAGE_CHARS", "active_fields",
           "appended", "entry", "history_of", "record_fields", "retry_error", "seeded"]

EARLIER_MAX_BYTES = EARLIER_KEPT * (6 * EARLIER_MESSAGE_CHARS + 160) + 64
"""The most the earlier failures add to a job file: each message at its longest and
each character 6 bytes in JSON at worst (``\\u0001``), the other fields of an entry
(attempt, type, a timestamp) and the dropped count well within the rest."""


def entry(error: ErrorInfo, attempt: int, finished_at: datetime | None) -> EarlierError:
    """``error``, of the run that was attempt ``attempt`` and ended at ``finished_at``,
    as an earlier failure: its type and the start of its message."""
    return EarlierError(attempt=attempt, type=error.type,
                        message=cut_earlier_message(error.message), finished_at=finished_at)


def appended(earlier: list[EarlierError] | None, dropped: int | None,
             new: EarlierError) -> tuple[list[EarlierError], int | None]:
    """``earlier`` (and the count ``dropped`` before it) with ``new`` last, the oldest
    dropped (and counted, up to :data:`~spool.models.EARLIER_DROPPED_MAX`) past
    :data:`EARLIER_KEPT`."""
    kept = [*(earlier or ()), new]
    over = len(kept) - EARLIER_KEPT
    if over > 0:
        kept = kept[over:]
    return kept, add_dropped(dropped, over)


def retry_error(error: ErrorInfo, attempt: int, finished_at: datetime | None, *,
                earlier: list[EarlierError] | None, dropped: int | None,
                retry_at: datetime | None) -> RetryErrorInfo:
    """The ``error`` a job file requeued for a retry carries: ``error`` (of attempt
    ``attempt``, ended at ``finished_at``) with its backoff's end ``retry_at``, and the
    failures before it (``earlier``, ``dropped``) with it added."""
    kept, dropped = appended(earlier, dropped, entry(error, attempt, finished_at))
    return RetryErrorInfo(type=error.type, message=error.message, traceback=error.traceback,
                          retry_at=retry_at, earlier_errors=kept,
                          earlier_errors_dropped=dropped)


def record_fields(error: ErrorInfo | None, attempts: int) -> dict[str, Any]:
    """The fields a record of a job whose file carries ``error`` (after ``attempts``
    runs) takes from it: the error as a record holds it (no history in it), and the
    history beside it (:func:`seeded`).  Empty when the job has no error."""
    if error is None:
        return {}
    plain = ErrorInfo(type=error.type, message=error.message, traceback=error.traceback,
                      retry_at=error.retry_at)
    if not isinstance(error, RetryErrorInfo) or error.earlier_errors is None:
        return {"error": plain, **seeded(plain, attempts)}
    return {"error": plain, "earlier_errors": error.earlier_errors,
            "earlier_errors_dropped": error.earlier_errors_dropped}


def seeded(error: ErrorInfo, attempts: object) -> dict[str, Any]:
    """The history of a job file whose ``error`` carries none after ``attempts`` runs:
    that error, as its last run's failure.  An earlier version's requeue for a retry
    wrote no history, and the processor that took the job over after an upgrade
    started one without it: the failure lost from the job's record (QA).  ``attempts``
    as the job's model reads it (``1.0`` is 1); none seeded for any it refuses."""
    if (isinstance(attempts, bool) or not isinstance(attempts, int | float)
            or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT or attempts != int(attempts)):
        return {}
    return {"earlier_errors": [entry(error, int(attempts), None)]}


def history_of(error: RetryErrorInfo | None, attempts: int) -> list[EarlierError] | None:
    """The failures a job file's ``error`` carries after ``attempts`` runs, seeded from
    the error itself where it carries none (:func:`seeded`), for a requeue to add to."""
    if error is None:
        return None
    if error.earlier_errors is not None:
        return error.earlier_errors
    history: list[EarlierError] | None = seeded(error, attempts).get("earlier_errors")
    return history


def active_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The history a job file's parsed JSON ``fields`` carry in its ``error``, as the
    fields of a record (the error's own are left for the record's model, which ignores
    them in an error), held to the bound as the job's model holds it; empty when it
    carries none, or none a job could (intake refuses that file: the view shows the job
    without it, not a bare record)."""
    error = fields.get("error")
    if not isinstance(error, dict):
        return {}
    if error.get("earlier_errors") is None:
        try:
            return seeded(ErrorInfo.model_validate(error), fields.get("attempts"))
        except ValidationError:
            return {}
    try:
        # Only the history is judged here: the error's own fields are the record's.
        history = RetryErrorInfo.model_validate({
            "type": ErrorType.TOOL_ERROR, "message": "",
            "earlier_errors": error["earlier_errors"],
            "earlier_errors_dropped": error.get("earlier_errors_dropped")})
    except ValidationError:
        return {}
    return {"earlier_errors": history.earlier_errors,
            "earlier_errors_dropped": history.earlier_errors_dropped}
