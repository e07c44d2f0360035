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


def test_a_tools_own_out_of_memory_error_retires_no_worker() -> None:
    """The retirement test took any tool_error starting "out of memory" for the tool's
    MemoryError: a tool's ToolResult.error("out of memory on the GPU ...") replaced its
    worker for nothing (the session's own review)."""
    from processor.address_space import MemoryBudget  # noqa: PLC0415 - as the worker does
    from processor.runner import Outcome, out_of_memory  # noqa: PLC0415
    from processor.worker import _spent  # noqa: PLC0415
    from spool.errors import ErrorType  # noqa: PLC0415

    gpu = Outcome("j", ErrorType.TOOL_ERROR, "out of memory on the GPU: lower batch_size")
    assert not _spent(MemoryBudget(0), gpu, "t")
    ran_out = Outcome("j", ErrorType.TOOL_ERROR, out_of_memory(MemoryError("no room")))
    assert _spent(MemoryBudget(0), ran_out, "t")


def test_an_inherited_address_space_limit_is_named_as_the_processs() -> None:
    """Under ``ulimit -v`` (a unit's LimitAS=), a MemoryError named the worker's cap and
    SPOOL_WORKER_MEMORY_MB, of a FAST tool too (the session's own review)."""
    import resource  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    limit = 8 << 30
    code = ("from processor.runner import out_of_memory\n"
            "print(out_of_memory(MemoryError('Unable to allocate')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS,
                                                                (limit, limit)))
    assert proc.stdout.strip() == ("out of memory (MemoryError: Unable to allocate); this "
                                   "process's address space is limited to 8192 MB (RLIMIT_AS)")
