"""A SPOOL_TOOLS module that cuts the processor's background import short when a test
says so, as a host out of descriptors does midway (see
:class:`processor.startup.BackgroundImports`): the processor then restarts (exit 75).

Loaded with the tools, before that import starts, it puts a finder first on
``sys.meta_path`` that takes the first module asked for on the ``spoolq-imports``
thread; its loader waits until the file ``HELDIMPORT_GO`` names exists, then refuses
that module with the kernel's EMFILE.  So a test has COMPUTE jobs running on Dask
when the restart comes.  (``tests/processor/slowimport.py`` refuses at once, and its
hold waits in ``find_spec``, under the global import lock, which the Dask client's
imports then wait for too.)
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Sequence
from importlib.abc import Loader
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

_refused: list[str] = []


class _RefuseWhenTold:
    """Finds the first module asked for on that thread, for its loader below to refuse.

    It does not wait itself: ``find_spec`` is called under the interpreter's global
    import lock, and every other thread's imports (the Dask client's) would wait too."""

    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if threading.current_thread().name != "spoolq-imports" or _refused:
            return None  # the usual finders find it
        _refused.append(fullname)
        return ModuleSpec(fullname, _RefusingLoader())


class _RefusingLoader(Loader):
    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        go = os.environ["HELDIMPORT_GO"]
        while not os.path.exists(go):
            time.sleep(0.02)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), spec.name)

    def exec_module(self, module: ModuleType) -> None:
        raise AssertionError("never reached: create_module refuses")


sys.meta_path.insert(0, _RefuseWhenTold())


class Refused(BaseTool):
    """The module refused, if one was yet (a SPOOL_TOOLS module names one tool at least)."""

    name: ClassVar[str] = "import_refused"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"refused": _refused[:1]})
