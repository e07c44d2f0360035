"""Intake forgives a job over SPOOL_MAX_JOB_BYTES only what a requeue can add.

Since a retry near the limit must run (tests/reliability/test_requeue_size.py),
intake measures a job without the fields a requeue adds; a drop could then
carry a forged ``error`` of any size up to MAX_ACTIVE_BYTES (16 MiB) and be
accepted under a limit of 1 KiB.  What a requeue adds is bounded: the error a
run records is cut to MAX_MESSAGE_CHARS and MAX_TRACEBACK_CHARS.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from spoolkit import FakeClock, drop_raw

from spool.intake import Intake, Verdict
from spool.text import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, cut_text
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

LIMIT = 1024


@pytest.fixture
def intake(spool: Spool, clock: FakeClock) -> Intake:
    return Intake(spool, max_job_bytes=LIMIT, settle_s=0.0, clock=clock)


def _near_limit(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {"tool": "echo", "meta": {"pad": ""}}
    job["meta"]["pad"] = "x" * (LIMIT - 10 - len(orjson.dumps(job)))
    return {**job, **fields}


REQUEUED = {"attempts": 1, "submitted_at": "2026-11-30T00:00:00.123456Z",
            "not_before": "2026-11-30T00:00:05.654321Z", "id": "j" * 128}


@pytest.mark.parametrize("error", [
    {"type": "timeout", "message": "x" * 200_000},
    {"type": "timeout", "message": "x", "traceback": "y" * 200_000},
    {"type": "timeout", "message": "x", "junk": "z" * 200_000},  # ErrorInfo ignores extras
])
def test_a_forged_error_of_any_size_is_not_forgiven(spool: Spool, intake: Intake,
                                                    error: dict[str, Any]) -> None:
    drop_raw(spool.layout, "j" * 128 + ".json", orjson.dumps(_near_limit(**REQUEUED,
                                                                          error=error)))
    insp = intake.inspect("j" * 128 + ".json")
    assert insp.verdict is Verdict.QUARANTINED and insp.record is not None
    assert insp.record.error is not None and "too large" in insp.record.error.message


def test_the_largest_error_a_requeue_writes_is_forgiven(spool: Spool, intake: Intake) -> None:
    # Control characters are 6 bytes each in JSON (\u0001): the worst a tool can make.
    error = {"type": "worker_crashed", "message": cut_text("\x01" * 10**6, MAX_MESSAGE_CHARS),
             "traceback": cut_text("\x02" * 10**6, MAX_TRACEBACK_CHARS)}
    drop_raw(spool.layout, "j" * 128 + ".json", orjson.dumps(_near_limit(**REQUEUED,
                                                                          error=error)))
    assert intake.inspect("j" * 128 + ".json").verdict is Verdict.READY


def test_cut_text_keeps_both_ends_within_the_limit() -> None:
    assert cut_text("short", 100) == "short"
    text = cut_text("head" + "m" * 10_000 + "tail", 200)
    assert len(text) <= 200 and text.startswith("head") and text.endswith("tail")
    assert "characters cut" in text
