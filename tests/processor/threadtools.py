"""FAST tools that start threads, for test_fast_threads.py (``SPOOL_TOOLS=threadtools``)."""

from __future__ import annotations

import logging
import os
import threading
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: str
    """The threads stop once this file exists."""


class Helpers(BaseTool):
    """Prints and logs from a thread it joins, and leaves a ``threading.Timer`` chain
    behind that prints ``timer <n>`` (no newline on the last) and re-arms every 20 ms until
    ``until`` exists."""

    name: ClassVar[str] = "th_helpers"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = Params

    def execute(self, params: Params, ctx: ToolContext) -> ToolResult:
        log = logging.getLogger("threadtools")

        def helper() -> None:
            print("helper says")
            log.info("helper logs")

        def tick(n: int) -> None:
            if os.path.exists(params.until):
                print("timer end", end="")  # held until the thread ends
                return
            print(f"timer {n}")
            log.info("timer logs %d", n)
            arm(n + 1)

        def arm(n: int) -> None:
            timer = threading.Timer(0.02, tick, args=(n,))
            timer.daemon = True
            timer.start()

        thread = threading.Thread(target=helper)
        thread.start()
        thread.join()
        arm(0)
        return ToolResult.ok()
