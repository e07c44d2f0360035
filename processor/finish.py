"""Finishing a run: its outcome becomes a record in ``done/`` or ``failed/``, or a
requeue with backoff while attempts remain (DESIGN section 9).

:class:`Finisher` owns the choice (retryable error types, or a tool error its tool
called retryable, and attempts below max_attempts), the record's last fields, and
the transition line each ending logs.  The transition itself goes through the
processor's ``end`` callback, which applies it and forgets the run, or, on disk
trouble, raises :class:`~spool.errors.SpoolIOError` with the run kept (its claim
held) so the processor writes it again after a pause.  A run's error is cut to
MAX_MESSAGE_CHARS and MAX_TRACEBACK_CHARS: a retry's job file carries it, and
intake forgives only so much.  A requeue's error carries the failures of the job's runs
so far (:mod:`spool.history`), which the record of each later run keeps.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson

from processor import logs
from processor.run import Run
from processor.runner import Outcome
from processor.status import StatusFile
from spool.clock import Clock
from spool.errors import KEEPS_ORIGINAL, RETRYABLE, ErrorType, SpoolIOError
from spool.fsops import NO_ROOM
from spool.history import retry_error
from spool.models import ErrorInfo, Job, Record
from spool.recovery import backoff_s
from spool.states import JobState
from spool.text import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, cut_text, seconds_text
from spool.transitions import Spool

LARGE_RESULT_BYTES = 64 << 10
"""Results over this are checked against the spool's free room before their record is
written, and fail their job when the disk refuses them (:meth:`Finisher._no_room`); a
smaller one refused is disk trouble, waited out (the next try may fail the job then)."""

LINE_MESSAGE_CHARS = 300
"""Of a run's error message, what its ``failed`` or ``requeued`` line shows; the record
keeps more (:data:`spool.text.MAX_MESSAGE_CHARS`)."""


def line_message(message: str) -> dict[str, Any]:
    """A transition line's ``message``: cut to LINE_MESSAGE_CHARS, and then said so with
    ``message_chars``, the whole message's length (cut unsaid, a reader of the log took
    300 characters for the whole error: QA)."""
    if len(message) <= LINE_MESSAGE_CHARS:
        return {"message": message}
    return {"message": message[:LINE_MESSAGE_CHARS], "message_chars": len(message)}


class _NoRoom(Exception):
    """A result the spool refused room for (its message says so): the job fails, which
    is no disk trouble.  EFBIG (a file size limit: systemd's LimitFSIZE=) is one
    whatever the result's size; it was raised as a bare OSError and crashed the loop."""
_FINISHED = ("state", "finished_at", "duration_s", "pid")
"""The fields :meth:`Finisher.final_record` sets (pid was set at the claim already)."""


def whose_limit(run: Run, outcome: Outcome) -> str:
    """For a timeout's message, whose limit it was when not the job's own: the tool's
    ``execution_timeout``, below the timeout the job asked for (which may only lower
    it, DESIGN section 9).  "killed after 5 s (timeout)" alone, of a job that asked for
    60 s, read as the processor ignoring it (QA h380).

    Only of a message that names that limit: a ``JobTimeout`` the tool raised itself
    (its feed did not answer: a traceback comes with it) or a kill while the job's
    worker loaded its tools (the load's wait, not the limit) was said to be the
    tool's ``execution_timeout`` too (QA h390)."""
    asked = run.job.timeout
    if asked is None or asked <= run.timeout_s or outcome.traceback is not None:
        return ""
    limit = re.escape(seconds_text(run.timeout_s))
    if not re.search(rf"(?<![\w.]){limit}(?!\w)", outcome.message or ""):
        return ""
    return (f": the {run.tool.name} tool's limit (its execution_timeout), which the job's "
            f"timeout of {seconds_text(asked)} does not raise")


class Finisher:
    """Records the outcomes of one processor's runs (``end``: the processor's own)."""

    def __init__(self, spool: Spool, clock: Clock, status: StatusFile,
                 max_attempts: Callable[[Job], int],
                 end: Callable[[Run, Callable[[], Any]], None]) -> None:
        self.spool = spool
        self.clock = clock
        self.status = status
        self.max_attempts = max_attempts
        self.end = end

    def record(self, run: Run, outcome: Outcome) -> None:
        if outcome.ok:
            self.complete(run, outcome)
        else:
            assert outcome.error_type is not None
            message = outcome.message or ""
            if outcome.error_type is ErrorType.TIMEOUT:
                message += whose_limit(run, outcome)
            # Cut: a retry's job file carries it, and intake forgives only so much.
            error = ErrorInfo(type=outcome.error_type,
                              message=cut_text(message, MAX_MESSAGE_CHARS),
                              traceback=outcome.traceback and cut_text(
                                  outcome.traceback, MAX_TRACEBACK_CHARS))
            if self.should_retry(run, outcome):
                self.retry(run, error)
            else:
                self.fail(run, error, outcome)

    def should_retry(self, run: Run, outcome: Outcome) -> bool:
        assert outcome.error_type is not None
        retryable = outcome.error_type in RETRYABLE or (
            outcome.error_type is ErrorType.TOOL_ERROR and outcome.retryable)
        return retryable and run.record.attempts < self.max_attempts(run.job)

    def final_record(self, run: Run, outcome: Outcome | None, state: JobState) -> Record:
        """The run's record, finished in place (the run ends with it)."""
        record = run.record
        # Written as pydantic's __setattr__ writes a field without assignment validation
        # (Record has none): into __dict__, the names added to the fields set; its
        # per-field handler lookup cost 0.2 us a field, four a job.
        fields = record.__dict__
        ended, finished_at = run.end(self.clock)
        fields["state"] = state
        fields["finished_at"] = finished_at
        fields["duration_s"] = round(ended - run.started, 6)
        if outcome is not None and outcome.pid:
            fields["pid"] = outcome.pid
        record.__pydantic_fields_set__.update(_FINISHED)
        return record

    def complete(self, run: Run, outcome: Outcome) -> None:
        result = outcome.result_json or b"null"
        large = len(result) > LARGE_RESULT_BYTES
        if large and (why := self._no_room(len(result))):
            self.fail(run, ErrorInfo(type=ErrorType.TOOL_ERROR, message=why), outcome)
            return
        record = self.final_record(run, outcome, JobState.DONE)
        # The tool's result is already JSON: written as it is, never parsed again.
        record.__dict__["result"] = orjson.Fragment(result)
        record.__pydantic_fields_set__.add("result")

        def write() -> None:
            try:
                self.spool.complete(run.claim, record)
            except (SpoolIOError, OSError) as exc:
                # Decided here, inside the processor's end: raised as disk trouble, it
                # paused every claim and said io_trouble before the job failed.
                cause = exc.__cause__ if isinstance(exc, SpoolIOError) else exc
                if isinstance(cause, OSError) and (cause.errno == errno.EFBIG or (
                        large and cause.errno in NO_ROOM)):
                    raise _NoRoom(self._no_room(len(result), cause) or str(exc)) from exc
                raise

        try:
            self.end(run, write)
        except _NoRoom as exc:
            self.fail(run, ErrorInfo(type=ErrorType.TOOL_ERROR, message=str(exc)), outcome)
            return
        self.status.count(True)
        logs.transition("done", id=run.claim.job_id, tool=run.job.tool,
                        attempt=record.attempts, duration_s=record.duration_s)

    def _no_room(self, size: int, refused: OSError | None = None) -> str | None:
        """Why a result of ``size`` bytes cannot be recorded, when the spool's file system
        has less room than that (or refused it: ``refused``); None when it has the room.

        Taken for disk trouble, such a record was tried again after each pause for ever,
        every claim paused meanwhile, a cancel never applied, and a stop requeued the run
        to do it all again (QA: a 30 MB result on a disk with 13 MB free).  It fails
        ``tool_error`` instead, saying so, and the spool goes on; a full disk that keeps
        the small record from being written too is disk trouble as before."""
        try:
            fs = os.statvfs(self.spool.layout.root)
        except OSError:
            return None
        free = fs.f_bavail * fs.f_frsize
        if refused is None and size < free:
            return None
        why = refused.strerror if refused is not None else "not enough room"
        return (f"the result ({size:,} bytes) could not be written to the spool: {why} "
                f"({free:,} bytes free on its file system)")

    def fail(self, run: Run, error: ErrorInfo, outcome: Outcome | None = None) -> None:
        record = self.final_record(run, outcome, JobState.FAILED)
        record.error = error
        record.result = None  # set if recording it as done failed on disk trouble first
        # An unknown tool or invalid params: the client's file is kept beside the record,
        # to be fixed and dropped again (DESIGN section 2).
        keep = error.type in KEEPS_ORIGINAL
        self.end(run, lambda: self.spool.fail(run.claim, record, keep_original=keep))
        self.status.count(False)
        logs.transition("failed", id=run.claim.job_id, tool=run.job.tool,
                        attempt=record.attempts, duration_s=record.duration_s,
                        error_type=error.type.value, **line_message(error.message))

    def retry(self, run: Run, error: ErrorInfo) -> None:
        record = run.record
        attempts = record.attempts
        delay = backoff_s(attempts)
        now = self.clock.now()
        # Tried again after disk trouble, the requeue writes the bytes it wrote before: one
        # that landed before the trouble (a folder sync's EIO) is then known as its own.
        # The backoff goes on the error it follows, not into not_before: that stays the
        # client's in the job's later records (a stop's requeue and a retry asked for
        # drop one already past, as they did).  The error carries the failures before
        # it, and its own, for the records of the runs to come (spool.history).
        job = run.requeue or run.job.model_copy(update={
            "attempts": attempts, "submitted_at": record.submitted_at,
            "error": retry_error(error, attempts, now, earlier=record.earlier_errors,
                                 dropped=record.earlier_errors_dropped,
                                 retry_at=now + timedelta(seconds=delay))})
        run.requeue = job
        requeued = False

        def requeue() -> None:
            nonlocal requeued
            requeued = self.spool.requeue(run.claim, job)

        self.end(run, requeue)
        if not requeued:
            self.fail(run, error)
            return
        logs.transition("requeued", id=run.claim.job_id, tool=run.job.tool,
                        attempt=attempts, error_type=error.type.value,
                        **line_message(error.message), **self._backoff(job))

    def _backoff(self, job: Job) -> dict[str, Any]:
        """The ``requeued`` line's ``retry_in_s`` and ``retry_at``, from the backoff's end
        the requeued job carries: written again after disk trouble, the requeue keeps
        its first one, which a new draw of the backoff would contradict."""
        retry_at = job.error.retry_at if job.error is not None else None
        return logs.retry_fields(retry_at, self.clock.now())
