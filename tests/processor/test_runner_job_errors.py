"""run_tool never raises for what a tool's own JobError subclass makes of itself.

A subclass with its own ``__init__`` (no ``retryable``), or one declaring an
``error_type`` spoolq does not have, raised out of ``Outcome.failed``: the processor
crashed on a FAST tool's (every job it ran failed ``abandoned`` at its restart) and a
worker died on a COMPUTE one's (``worker_crashed``, the traceback only in the log)
(QA).  ``retryable`` retries only when it is a true bool: ``"no"`` retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from processor.runner import Context, Outcome, run_tool
from processor.tools import BaseTool, ToolContext, ToolResult
from spool.errors import ErrorType, JobError, JobTimeout, ToolError


class QuotaExceeded(JobError):
    def __init__(self, used: int) -> None:  # no super().__init__: no message, no retryable
        self.used = used

    def __str__(self) -> str:
        return f"quota exceeded: {self.used}"


class Rejected(JobError):
    error_type = "rejected"  # type: ignore[assignment]


def _tool(raised: BaseException | None = None, result: ToolResult | None = None
          ) -> type[BaseTool]:
    def execute(self: BaseTool, params: Any, ctx: ToolContext) -> ToolResult:
        if raised is not None:
            raise raised
        assert result is not None
        return result

    return type("T", (BaseTool,), {"name": "t", "execute": execute})


def _outcome(tool: type[BaseTool]) -> Outcome:
    ctx = Context("j", Path("."), lambda fraction, message: None, {})
    return run_tool(tool, "j", {}, ctx)


@pytest.mark.parametrize(("raised", "kind", "message", "retryable"), [
    (QuotaExceeded(42), ErrorType.TOOL_ERROR, "quota exceeded: 42", False),
    (Rejected("no"), ErrorType.TOOL_ERROR,
     "no (its error_type 'rejected' is none of spoolq's: recorded as tool_error)", False),
    (ToolError("busy", retryable=True), ErrorType.TOOL_ERROR, "busy", True),
    (ToolError("busy", retryable="no"), ErrorType.TOOL_ERROR, "busy", False),  # type: ignore[arg-type]
    (ToolError("busy", retryable=np.bool_(True)), ErrorType.TOOL_ERROR, "busy", True),  # type: ignore[arg-type]
    (JobTimeout("slow upstream"), ErrorType.TIMEOUT, "slow upstream", False),
])
def test_a_tools_job_error_is_its_jobs_failure_whatever_it_made_of_itself(
        raised: BaseException, kind: ErrorType, message: str, retryable: bool) -> None:
    outcome = _outcome(_tool(raised))
    assert (outcome.error_type, outcome.message, outcome.retryable) == (kind, message, retryable)
    assert outcome.traceback and type(raised).__name__ in outcome.traceback


def test_a_tool_results_retryable_is_a_bool() -> None:
    assert not _outcome(_tool(result=ToolResult.error("x", retryable="no"))).retryable  # type: ignore[arg-type]
    assert _outcome(_tool(result=ToolResult.error("x", retryable=True))).retryable
