"""A COMPUTE tool that runs its work in processes of its own, as CPU-bound tools do with
the standard library: loaded via ``SPOOL_TOOLS=mptools``."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class PoolParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["pool", "fork_pool", "executor"]


def square(x: int) -> int:
    return x * x


class InPool(BaseTool):
    """Squares 0 to 4 in two processes: a ``multiprocessing.Pool`` of the default start
    method, one of ``fork``, or a ``ProcessPoolExecutor``."""

    name: ClassVar[str] = "m_pool"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 60.0
    Params: ClassVar[type[BaseModel]] = PoolParams

    def execute(self, params: PoolParams, ctx: ToolContext) -> ToolResult:
        if params.kind == "executor":
            with concurrent.futures.ProcessPoolExecutor(2) as executor:
                return ToolResult.ok(list(executor.map(square, range(5))))
        context = multiprocessing.get_context("fork" if params.kind == "fork_pool" else None)
        with context.Pool(2) as pool:
            return ToolResult.ok(pool.map(square, range(5)))


def _wait_for_ever() -> None:
    import time  # noqa: PLC0415 - in the forked child only

    time.sleep(3600)


class Terminate(BaseTool):
    """Forks a child (``multiprocessing``'s ``fork``: no exec), ends it with
    ``terminate()`` (SIGTERM) and returns its exit code."""

    name: ClassVar[str] = "m_terminate"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 60.0

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        child = multiprocessing.get_context("fork").Process(target=_wait_for_ever)
        child.start()
        child.terminate()
        child.join(10)
        return ToolResult.ok(child.exitcode)
