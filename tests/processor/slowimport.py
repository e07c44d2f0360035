"""A SPOOL_TOOLS module that holds the processor's background import (numpy and pandas,
see :class:`processor.startup.BackgroundImports`) for an hour, as a very slow host would.

Loaded with the tools, before that import starts, it puts a finder first on
``sys.meta_path`` that, asked for the first module on the ``spoolq-imports`` thread,
writes that module's name to the file ``SLOWIMPORT_MARK`` names and sleeps: the
thread then holds that module's import lock, mid-import.  The FAST tool
``import_held`` says which module that is, should a FAST run start beside that
import (none does: the processor holds its FAST runs until it ends).

With ``SLOWIMPORT_REFUSE`` set, the finder instead refuses that one module on that
thread, once, with the kernel's EMFILE, as the module file's ``open`` does when
descriptors run out midway (a FAST tool's leak, the system's file table full): the
modules loaded so far stay loaded, the rest not, and a numpy imported after that is
half-made.  It refuses once the file ``SLOWIMPORT_GATE`` names exists, so that a test
can have a job running first.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import ClassVar

from pydantic import BaseModel

from processor.tools import BaseTool, ExecutionMode, NoParams, ToolContext, ToolResult

HOLD_S = 3600.0
_held: list[str] = []


class _HoldTheBackgroundImport:
    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if threading.current_thread().name == "spoolq-imports" and not _held:
            _held.append(fullname)
            # Written aside and renamed in: the test reads the mark as soon as it exists.
            mark = Path(os.environ["SLOWIMPORT_MARK"])
            aside = mark.with_name(mark.name + ".tmp")
            aside.write_text(fullname)
            aside.rename(mark)
            time.sleep(HOLD_S)
        return None  # the usual finders find it


class _RefuseOneModule:
    @staticmethod
    def find_spec(fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if (fullname == os.environ["SLOWIMPORT_REFUSE"] and not _held
                and threading.current_thread().name == "spoolq-imports"):
            _held.append(fullname)
            gate = Path(os.environ["SLOWIMPORT_GATE"])
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), fullname)
        return None  # the usual finders find it


sys.meta_path.insert(0, _RefuseOneModule() if os.environ.get("SLOWIMPORT_REFUSE")
                     else _HoldTheBackgroundImport())


class ImportHeld(BaseTool):
    """The module whose import is held, if one is yet."""

    name: ClassVar[str] = "import_held"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    Params: ClassVar[type[BaseModel]] = NoParams

    def execute(self, params: NoParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({"held": _held[:1]})
