"""Numbers in job files read as the spool means them.

A pending drop holding an integer past 64 bits, cancelled before intake saw it: with
no processor running, ``spoolq cancel`` of such a drop (which ``spoolq ls``
lists) said "unexpected TypeError: Integer exceeds 64-bit range (a bug in
spoolq)", and left the job staged in ``tmp/``: gone from ``pending/``, with no
record. pydantic reads the number exactly and orjson cannot write the record.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from spoolkit import drop_raw, listing, read_json, spoolq

from spool.cli import parse
from spool.layout import Layout
from spool.models import MAX_NESTING, Job, nested_too_deep
from spool.states import JobState

RAW = b'{"tool": "echo", "params": {"message": 98765432109876543210}}'


def test_cancel_of_a_pending_drop_with_an_integer_past_64_bits(env: dict[str, str],
                                                                root: Path) -> None:
    layout = Layout(root)
    drop_raw(layout, "big.json", RAW)
    proc = spoolq(env, "cancel", "big")
    assert proc.returncode == 0, proc.stderr
    assert "a bug in spoolq" not in proc.stderr
    assert listing(layout.tmp) == [] and listing(layout.folder(JobState.PENDING)) == []
    record = read_json(layout.job(JobState.FAILED, "big"))
    assert record["error"]["type"] == "cancelled"
    assert not os.path.lexists(layout.job(JobState.DONE, "big"))


@pytest.mark.parametrize("value", [99_999_999_999, 1e11, "+99999999999", "99999999999.5"])
@pytest.mark.parametrize("field", ["not_before", "submitted_at"])
def test_epoch_seconds_are_seconds_however_large(field: str, value: object) -> None:
    # pydantic takes a number past 2e10 for milliseconds: year 5138 became 1973-03-03, so a
    # job meant for later ran at once. DESIGN section 9 says epoch seconds. pydantic-core
    # 2.46 ignores val_temporal_unit for a string with a fraction.
    for job in (Job.model_validate({"tool": "echo", field: value}),
                Job.model_validate_json(orjson.dumps({"tool": "echo", field: value}))):
        when = getattr(job, field)
        assert when == datetime.fromtimestamp(float(str(value)), UTC), when


@pytest.mark.parametrize("value", [-1e12, 1e20, "nan", "inf", True, 253_402_300_800])
def test_epoch_seconds_out_of_range_are_invalid(value: object) -> None:
    with pytest.raises(ValidationError):
        Job.model_validate({"tool": "echo", "not_before": value})


def test_small_epoch_seconds_and_iso_times_read_as_before() -> None:
    job = Job.model_validate({"tool": "echo", "not_before": 1_700_000_000.5,
                              "submitted_at": "2026-11-28T12:00:00+01:00"})
    assert job.not_before == datetime(2023, 11, 14, 22, 13, 20, 500000, UTC)
    assert job.submitted_at == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-12-04T19:00:00+05", datetime(2026, 12, 4, 14, 0, tzinfo=UTC)),
    ("2026-12-04T19:00:00+0530", datetime(2026, 12, 4, 13, 30, tzinfo=UTC)),
    ("20261204T190000Z", datetime(2026, 12, 4, 19, 0, tzinfo=UTC)),
    ("2026-12-04t19:00:00z", datetime(2026, 12, 4, 19, 0, tzinfo=UTC)),
])
def test_iso_times_with_any_offset_read_as_the_cli_reads_them(text: str,
                                                              utc: datetime) -> None:
    """``spoolq submit --not-before 2026-12-04T19:00:00+05`` was taken, the same time in
    a job file quarantined ("unexpected extra characters", QA): one reading for both."""
    assert Job.model_validate({"tool": "echo", "not_before": text}).not_before == utc
    assert parse.timestamp(text) == utc
    with pytest.raises(ValidationError, match="needs a UTC offset"):  # still
        Job.model_validate({"tool": "echo", "not_before": "2026-12-04T19:00:00"})


@pytest.mark.parametrize("value", [99_999_999_999, 1.5, "99999999999", "+1e11", True])
def test_a_retry_backoffs_end_is_an_iso_time_never_a_number(value: object) -> None:
    """``error.retry_at`` is the processor's, written in ISO 8601 (the schema says a
    date-time string). Taken as pydantic reads numbers, a drop's ``99999999999`` was
    1973 (milliseconds) where the same ``not_before`` is year 5138: refused instead."""
    error = {"type": "timeout", "message": "m", "retry_at": value}
    with pytest.raises(ValidationError, match="retry_at must be an ISO 8601 time"):
        Job.model_validate({"tool": "echo", "error": error})
    with pytest.raises(ValidationError, match="retry_at must be an ISO 8601 time"):
        Job.model_validate_json(orjson.dumps({"tool": "echo", "error": error}))
    iso = Job.model_validate({"tool": "echo", "error": {**error,
                                                        "retry_at": "2026-12-04T01:00:00+01:00"}})
    assert iso.error is not None and iso.error.retry_at == datetime(2026, 12, 4, tzinfo=UTC)


def test_submit_of_a_job_file_with_a_numeric_backoff_end_is_refused(
        env: dict[str, str], root: Path, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "echo", "error": {
        "type": "timeout", "message": "m", "retry_at": 99_999_999_999}}))
    proc = spoolq(env, "submit", "--file", str(job_file), "--any-tool")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "retry_at must be an ISO 8601 time" in proc.stderr, proc.stderr
    assert listing(Layout(root).folder(JobState.PENDING)) == []


def test_nesting_is_told_of_a_value_orjson_cannot_write_for_its_integers() -> None:
    """``nested_too_deep`` asks orjson's encoder, which also refuses an integer past 64
    bits (a CLI's params may hold one): that is walked, never taken for too deep."""
    deep: list[Any] = []
    inner = deep
    for _ in range(MAX_NESTING):
        inner.append([])
        inner = inner[0]
    assert not nested_too_deep({"big": 2**70, "list": [[2**70]]})
    assert nested_too_deep({"big": 2**70, "deep": deep})
    assert not nested_too_deep({"deep": deep[0][0]})  # MAX_NESTING levels with its dict
