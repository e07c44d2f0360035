"""A SPOOL_TOOLS module that watches when the processor under test imports pandas.

Imported by the processor as it loads its tools (after the built-ins), it notes which
of numpy and pandas are loaded already, and an audit hook notes, when pandas is first
imported, whether the processor's status file (``owners/*.json`` of ``SPOOL_DIR``)
is written yet.  The FAST tool ``import_watch`` reports both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

OWNERS = Path(os.environ["SPOOL_DIR"]) / "owners"
SEEN: dict[str, Any] = {
    "loaded_with_the_tools": sorted(m for m in ("numpy", "pandas") if m in sys.modules),
    "status_file_when_pandas_imported": None,
}


def _watch(event: str, args: tuple[Any, ...]) -> None:
    if (event == "import" and args[0] == "pandas"
            and SEEN["status_file_when_pandas_imported"] is None):
        SEEN["status_file_when_pandas_imported"] = any(OWNERS.glob("*.json"))


sys.addaudithook(_watch)


class ImportWatch(BaseTool):
    """What the module saw: numpy/pandas at tool loading, the status file at pandas."""

    name: ClassVar[str] = "import_watch"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok(dict(SEEN))
