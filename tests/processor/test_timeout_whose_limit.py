"""A timeout's message names the tool's limit only when that limit was what stopped the
job: a job asking for more than its tool's ``execution_timeout`` was killed at the tool's
(QA h380).  A timeout the tool raised itself (``JobTimeout``: its feed did not answer)
or a wait for the job's worker to load is no limit of the tool's, and was said to be."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from finishkit import NoStatus, claimed_run, new_spool

from processor.finish import Finisher
from processor.run import Run
from processor.runner import Outcome
from processor.tools import BaseTool, ExecutionMode
from spool.clock import SystemClock
from spool.errors import ErrorType, JobTimeout
from spool.models import Job
from spool.states import JobState
from spool.transitions import Spool

SUFFIX = (": the capped tool's limit (its execution_timeout), which the job's timeout of "
          "60 s does not raise")


class Capped(BaseTool):
    name: ClassVar[str] = "capped"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 5.0


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return new_spool(tmp_path)


@pytest.fixture
def run(spool: Spool) -> Iterator[Run]:
    with claimed_run(spool, Job(tool="capped", timeout=60), Capped, 5.0) as run:
        yield run


def _message(spool: Spool, run: Run, outcome: Outcome) -> str:
    def end(run: Run, action: Callable[[], Any]) -> None:
        action()

    Finisher(spool, SystemClock(), NoStatus(), lambda job: 1, end).record(  # type: ignore[arg-type]
        run, outcome)
    record = orjson.loads(spool.layout.job(JobState.FAILED, "j").read_bytes())
    assert record["error"]["type"] == "timeout", record
    return str(record["error"]["message"])


@pytest.mark.parametrize("said", [
    "killed after 5 s (timeout)",  # the local pool's, a Dask worker's
    "FAST tool past its 5 s timeout (its thread is abandoned)",
    "no word from its Dask worker past its 5 s limit; the processor gave the job up "
    "(timeout)"])  # the Dask backstop's
def test_a_kill_at_the_tools_limit_names_it(spool: Spool, run: Run, said: str) -> None:
    outcome = Outcome("j", ErrorType.TIMEOUT, said, retryable=True)
    assert _message(spool, run, outcome) == said + SUFFIX


def test_a_timeout_the_tool_raised_itself_is_not_the_tools_limit(spool: Spool,
                                                                 run: Run) -> None:
    try:
        raise JobTimeout("the quote feed did not answer within 2 s")
    except JobTimeout as exc:
        outcome = Outcome.failed("j", exc, "Traceback ...")
    assert _message(spool, run, outcome) == "the quote feed did not answer within 2 s"


def test_a_wait_for_the_worker_to_load_is_not_the_tools_limit(spool: Spool, run: Run) -> None:
    outcome = Outcome("j", ErrorType.TIMEOUT, "killed: its worker had not loaded the tools "
                      "after 600.2 s (timeout)", retryable=True)
    assert _message(spool, run, outcome) == (
        "killed: its worker had not loaded the tools after 600.2 s (timeout)")
