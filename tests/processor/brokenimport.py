"""A SPOOL_TOOLS module that makes the processor's background import of numpy fail
midway, as it does when descriptors run out then (a FAST tool's leak, the system's file
table full): numpy's own modules loaded so far stay loaded, the rest not, and what
imports numpy after that gets a half-made numpy.

Loaded with the tools, before that import starts, it puts a finder first on
``sys.meta_path`` that refuses one numpy module (``BROKENIMPORT_MODULE``) on the
``spoolq-imports`` thread, once, with the kernel's EMFILE, as the module file's
``open`` would.  The FAST tool ``import_refused`` says which module it refused.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

_refused: list[str] = []


class _RefuseOneModule:
    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if (fullname == os.environ.get("BROKENIMPORT_MODULE", "numpy._core._type_aliases")
                and threading.current_thread().name == "spoolq-imports" and not _refused):
            _refused.append(fullname)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), fullname)
        return None  # the usual finders find it


sys.meta_path.insert(0, _RefuseOneModule())


class ImportRefused(BaseTool):
    """The module whose import was refused, if one was yet."""

    name: ClassVar[str] = "import_refused"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"refused": _refused[:1]})
