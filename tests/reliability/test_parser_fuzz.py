"""Property-based fuzzing of the job parser (hypothesis).

* :meth:`Intake.inspect` on arbitrary bytes under arbitrary names never raises
  and ends READY, WAITING or QUARANTINED (an original kept byte for byte);
* ``Job.model_validate`` / ``model_validate_json`` raise nothing but
  ``ValidationError`` on any JSON value or any bytes;
* whatever intake accepts can be carried to the end: claimed, re-read from
  ``running/`` the way the processor and recovery read it, and written as a
  record that parses back.  (Nesting stays shallow here; jobs nested past
  what records can hold are quarantined, see test_hostile.py.)

tests/spool/test_intake.py fuzzes ``inspect`` too (150 examples, fixed names);
these add names, larger inputs and the path past intake.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spool.clock import SystemClock
from spool.fsops import Mover
from spool.intake import Intake, Verdict
from spool.jobfile import record_from_job
from spool.layout import Layout
from spool.models import Job, Record, parse_record, record_bytes
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

MAX_BYTES = 4096
EXAMPLES = 200
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                     st.text(max_size=20),
                     st.floats(allow_nan=False, allow_infinity=False))


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A def, not a lambda: hypothesis 6.15x reads a lambda's source to see that it uses
    # its argument, and one over several lines can read as one that does not.
    return st.one_of(st.lists(inner, max_size=4),
                     st.dictionaries(st.text(max_size=8), inner, max_size=4))


_json = st.recursive(_scalars, _containers, max_leaves=12)
_fields = {"params": _json, "priority": _json, "timeout": _json, "max_attempts": _json,
           "not_before": _json, "meta": _json, "id": _json, "attempts": _json,
           "submitted_at": _json, "error": _json, "junk": _json}
_jobs = st.fixed_dictionaries({"tool": st.one_of(st.sampled_from(["echo", "sleep"]), _json)},
                              optional=_fields)
_valid_jobs = st.fixed_dictionaries(
    {"tool": st.text(min_size=1, max_size=30)},
    optional={"params": st.dictionaries(st.text(max_size=8), _json, max_size=5),
              "priority": st.integers(-1_000_000, 1_000_000),
              "max_attempts": st.integers(1, 100), "meta": st.dictionaries(
                  st.text(max_size=8), _json, max_size=3),
              "timeout": st.floats(min_value=0.001, max_value=1e6)})
_name_chars = st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"])
_names = st.one_of(st.text(_name_chars, min_size=1, max_size=40),
                   st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}\.json", fullmatch=True))
_counter = itertools.count()


@pytest.fixture(scope="module")
def spool() -> Iterator[Spool]:
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp) / "spool")
        mover = Mover(layout, FsyncMode.NEVER)
        mover.make_folders()
        yield Spool(layout, mover)


def _fresh(spool: Spool, name: str) -> str:
    """A name not yet used in this spool (hypothesis repeats examples)."""
    if name in (".", "..") or os.path.lexists(spool.layout.folder(JobState.PENDING) / name):
        return f"x{next(_counter)}-{name.encode().hex()[:20]}.json"
    return name


@settings(max_examples=EXAMPLES, deadline=None)
@given(name=_names, data=st.one_of(st.binary(max_size=MAX_BYTES + 64),
                                   _json.map(orjson.dumps), _jobs.map(orjson.dumps)))
def test_inspect_never_raises_and_keeps_what_it_quarantines(spool: Spool, name: str,
                                                            data: bytes) -> None:
    name = _fresh(spool, name)
    intake = Intake(spool, max_job_bytes=MAX_BYTES, settle_s=0, clock=SystemClock())
    path = spool.layout.folder(JobState.PENDING) / name
    path.write_bytes(data)
    verdict = intake.inspect(name)
    allowed = {Verdict.READY, Verdict.WAITING, Verdict.QUARANTINED, Verdict.IGNORED}
    assert verdict.verdict in allowed
    if verdict.verdict is Verdict.IGNORED:
        assert name.startswith(".") or name.endswith((".tmp", ".part", "~", ".partial",
                                                      ".filepart", ".crdownload"))
        path.unlink()
    elif verdict.verdict is Verdict.QUARANTINED:
        assert verdict.record is not None
        assert spool.layout.original(verdict.record.id).read_bytes() == data
        assert verdict.record.error is not None
        assert verdict.record.error.type == "invalid_job"
    else:
        path.unlink()


@settings(max_examples=EXAMPLES, deadline=None)
@given(value=st.one_of(_json, _jobs))
def test_the_models_raise_only_validation_errors(value: Any) -> None:
    for model in (Job, Record):
        with contextlib.suppress(ValidationError):
            model.model_validate(value)
        with contextlib.suppress(ValidationError):
            model.model_validate_json(orjson.dumps(value))


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.binary(max_size=512))
def test_model_validate_json_on_bytes_raises_only_validation_errors(data: bytes) -> None:
    with contextlib.suppress(ValidationError):
        Job.model_validate_json(data)


@settings(max_examples=EXAMPLES, deadline=None)
@given(job=_valid_jobs)
def test_what_intake_accepts_can_be_claimed_run_and_recorded(spool: Spool,
                                                            job: dict[str, Any]) -> None:
    job_id = f"ok{next(_counter)}"
    name = f"{job_id}.json"
    (spool.layout.folder(JobState.PENDING) / name).write_bytes(orjson.dumps(job))
    intake = Intake(spool, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock())
    verdict = intake.inspect(name)
    assert verdict.verdict is Verdict.READY, verdict.record
    assert verdict.candidate is not None
    claim = spool.claim(job_id)
    assert claim is not None
    again = Job.model_validate_json(claim.data)  # how the processor and recovery re-read it
    assert again == verdict.candidate.job
    record = record_from_job(again, job_id, JobState.DONE, claim.mtime_ns)
    record.result = job.get("params")
    spool.complete(claim, record)
    back = parse_record(spool.layout.job(JobState.DONE, job_id).read_bytes())
    assert back.tool == job["tool"] and back.result == record.result
    assert record_bytes(back)  # and it encodes again (what statusd serves)
