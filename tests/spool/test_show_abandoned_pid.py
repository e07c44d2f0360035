"""``spoolq show`` of a job its processor died running: recovery, in the processor
started since, writes the record with its own host and pid, and the host line said
"ran in pid N" of that later processor, which never ran the job (in a container both are
pid 1; on a host two different pids).  It says "written by pid N", as for a job that
never started (h408)."""

from __future__ import annotations

from datetime import UTC, datetime

from spool.cli.render import record_lines
from spool.errors import ErrorType
from spool.models import ErrorInfo, Record
from spool.states import JobState

AT = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def _record(error: ErrorType) -> Record:
    return Record(id="20261207T180000-000000000001", state=JobState.FAILED, tool="t",
                  submitted_at=AT, started_at=AT, finished_at=AT, host="box", pid=77,
                  error=ErrorInfo(type=error, message="m"))


def test_an_abandoned_jobs_pid_is_its_records_writer() -> None:
    lines = record_lines(_record(ErrorType.ABANDONED))
    assert "host        box (written by pid 77)" in lines, lines


def test_a_job_that_ran_to_its_end_still_says_where_it_ran() -> None:
    for error in (ErrorType.TOOL_ERROR, ErrorType.WORKER_CRASHED, ErrorType.TIMEOUT):
        lines = record_lines(_record(error))
        assert "host        box (ran in pid 77)" in lines, (error, lines)
