"""A tool module that wraps ``threading.Thread.start`` when imported, with
``functools.wraps``, as sentry_sdk's ThreadingIntegration does at ``sentry_sdk.init()``
(for test_fast_threads.py: ``SPOOL_TOOLS=threadtools,wraptools``)."""

from __future__ import annotations

import functools
import threading
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

_started = threading.Thread.start
wrapped: list[str] = []  # the names of the threads the wrapper started


@functools.wraps(_started)
def _start(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
    wrapped.append(self.name)
    _started(self, *args, **kwargs)


threading.Thread.start = _start  # type: ignore[method-assign]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Wrapped(BaseTool):
    """Starts a thread that prints; whether the wrapper the import put in place
    started it."""

    name: ClassVar[str] = "wr_started"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        thread = threading.Thread(target=lambda: print("probe says"), name="wr-probe")
        thread.start()
        thread.join()
        return ToolResult.ok("wr-probe" in wrapped)
