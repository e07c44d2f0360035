"""run_tool puts back numpy's floating-point error state a tool left changed (its
thread runs later jobs: the processor's loop for FAST tools, a worker for COMPUTE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from processor.runner import Context, run_tool
from processor.tools import BaseTool, ToolContext, ToolResult


class Strict(BaseTool):
    name: ClassVar[str] = "t_strict"

    def execute(self, params: Any, ctx: ToolContext) -> ToolResult:
        np.seterr(all="raise")
        np.seterrcall(print)
        return ToolResult.ok("strict")


class Scoped(BaseTool):
    name: ClassVar[str] = "t_scoped"

    def execute(self, params: Any, ctx: ToolContext) -> ToolResult:
        with np.errstate(all="raise"):
            return ToolResult.ok(float(np.float64(1.0) + 1.0))


def _run(tool: type[BaseTool], job_id: str) -> None:
    ctx = Context(job_id, Path("."), lambda fraction, message: None, {})
    assert run_tool(tool, job_id, {}, ctx).ok


def test_seterr_and_seterrcall_left_by_a_tool_are_put_back() -> None:
    before, call = np.geterr(), np.geterrcall()
    _run(Strict, "strict")
    assert np.geterr() == before
    assert np.geterrcall() is call
    with np.errstate(divide="warn"):  # a later job that divides by zero does not fail
        _run(Scoped, "scoped")


def test_an_errstate_block_leaves_nothing_to_put_back() -> None:
    before = np.geterr()
    _run(Scoped, "scoped")
    assert np.geterr() == before
