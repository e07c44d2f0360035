"""A tool module that configures logging as libraries' set-up code does, with
``logging.config.dictConfig`` (``disable_existing_loggers`` True, its default): at
import, and again in a FAST tool's run.  A COMPUTE tool logs a line through its module's
logger, which the job's log must carry."""

from __future__ import annotations

import logging
import logging.config
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult

CONFIG = {"version": 1, "loggers": {"mylib": {"level": "INFO"}}}
logging.config.dictConfig(CONFIG)
logging.basicConfig(force=True)  # the root's handlers swapped for a plain-text one
log = logging.getLogger("dictconfig_tools")


class NoParams(BaseModel):
    pass


class ConfigureLogging(BaseTool):
    name: ClassVar[str] = "t_dictconfig"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        logging.config.dictConfig(CONFIG)
        return ToolResult.ok(None)


class ForcesBasicConfig(BaseTool):
    name: ClassVar[str] = "t_basicconfig"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        logging.basicConfig(force=True, format="%(levelname)s %(message)s")
        return ToolResult.ok(None)


class LogsAWarning(BaseTool):
    name: ClassVar[str] = "t_logs_warning"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: BaseModel, ctx: ToolContext) -> ToolResult:
        log.warning("a warning of the tool's own, job %s", ctx.job_id)
        return ToolResult.ok(None)
