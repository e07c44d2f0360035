"""A COMPUTE tool's own ``multiprocessing``: a ``Pool`` or ``ProcessPoolExecutor`` in a
worker, where CPU-bound tools would look for one.

A worker is started as a daemonic ``multiprocessing`` process (so the processor's own
exit never waits for it), and ``multiprocessing`` refuses children to a daemonic
process (to spare them orphans): every COMPUTE tool that started a pool failed
``tool_error`` "AssertionError: daemonic processes are not allowed to have children",
where the same tool run FAST did not.  A worker orphans nothing (it is their
subreaper: what its tool leaves is killed after each job, at a timeout, and when the
processor dies), so :func:`allow_children` lifts the refusal in the worker.

Those processes die at the job's end with whatever else the tool left
(:func:`processor.worker.reap_leftovers`); among them the forkserver that
``multiprocessing`` starts for a pool of the default (``forkserver``) context.  Its
module keeps that forkserver's pid and reaps it itself at the next use, which then
failed (``ChildProcessError``) in the worker's next job: :class:`ToolForkserver` puts
the module's record back as it was before the job, so the next pool starts one anew.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from multiprocessing import forkserver
from typing import Any

_FIELDS = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid")
"""What ``multiprocessing.forkserver.ForkServer`` keeps of its forkserver (3.11 to 3.13)."""


def allow_children() -> None:
    """Let this worker's tools start ``multiprocessing`` processes (see the module)."""
    multiprocessing.current_process().daemon = False


class ToolForkserver:
    """``multiprocessing``'s record of its forkserver, as this worker started, to put
    back once a job's leftovers are killed (:meth:`forget`)."""

    def __init__(self) -> None:
        self._server: Any = getattr(forkserver, "_forkserver", None)
        self._saved = tuple(getattr(self._server, name, None) for name in _FIELDS)

    def started(self) -> frozenset[int]:
        """The pid of the forkserver the job's pools started, if any: killed with the
        job's leftovers, yet none of the tool's own (``multiprocessing`` keeps it for the
        next pool, whatever the tool closed), so not named as one (:func:`processor.
        worker.reap_leftovers`)."""
        pid = getattr(self._server, "_forkserver_pid", None)
        return frozenset() if pid is None or pid == self._saved[2] else frozenset({pid})

    def forget(self) -> None:
        """After the leftovers of a job are killed and reaped: a forkserver the job
        started is gone, and its record too (its alive pipe's end closed)."""
        server = self._server
        address, alive_fd, pid = self._saved
        if getattr(server, "_forkserver_pid", pid) == pid:
            return  # the usual case: the tool started none (or a Python that keeps no pid)
        if server._forkserver_alive_fd not in (None, alive_fd):
            with contextlib.suppress(OSError):
                os.close(server._forkserver_alive_fd)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_fd
        server._forkserver_pid = pid
