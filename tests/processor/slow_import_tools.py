"""A tool module that takes ``SLOW_IMPORT_S`` seconds to import (a model file, torch),
with a COMPUTE tool of a 2 s limit that returns at once and says which process imported
the module (``LOADED_BY``), which runs it, and a draw of a random generator the module
made as it was imported (as a Monte Carlo tool's module would)."""

from __future__ import annotations

import os
import time
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

time.sleep(float(os.environ.get("SLOW_IMPORT_S", "0")))
LOADED_BY = os.getpid()
RNG = np.random.default_rng()


class NoParams(BaseModel):
    pass


class Quick(BaseTool):
    name: ClassVar[str] = "t_after_slow_import"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 2.0
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"loaded_by": LOADED_BY, "runs_in": os.getpid(),
                              "draw": float(RNG.random())})
