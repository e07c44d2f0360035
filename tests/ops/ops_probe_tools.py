"""A tool that reports what its sandbox allows, loaded via SPOOL_TOOLS in the unit tests.

Run as COMPUTE, so it reports from a pool worker: the process that runs tool
code, forked from the daemon and bound by everything the daemon was.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _outcome(action: Callable[[], Any]) -> str:
    try:
        action()
    except OSError as exc:
        return str(exc.strerror)
    return "allowed"


def _mount() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(None, b"/nonexistent-spoolq-probe", None, 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _write(path: str) -> None:
    with open(path, "w") as fh:
        fh.write("probe")
    os.unlink(path)


class Probe(BaseTool):
    """What the worker may do: write where, open which sockets, map W+X, mount."""

    name: ClassVar[str] = "ops_probe"
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.COMPUTE
    execution_timeout: ClassVar[float] = 60.0
    Params: ClassVar[type[BaseModel]] = ProbeParams

    def execute(self, params: ProbeParams, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok({
            "write_etc": _outcome(lambda: _write("/etc/spoolq-probe")),
            "write_spool": _outcome(lambda: _write("/var/spool/spoolq/tmp/probe")),
            "write_tmp": _outcome(lambda: _write("/tmp/spoolq-probe")),
            "socket_inet": _outcome(lambda: socket.socket(socket.AF_INET).close()),
            "socket_unix": _outcome(lambda: socket.socket(socket.AF_UNIX).close()),
            "mmap_write_exec": _outcome(lambda: mmap.mmap(
                -1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()),
            "mount": _outcome(_mount),
        })
