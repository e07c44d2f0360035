"""In the local pool's forkserver's preload list, before :mod:`processor.forkserver_ready`:
the tool modules (``SPOOL_TOOLS``'s and the ``spoolq.tools`` entry points), imported
once, so every worker has them from its fork.  (Not a Dask worker's forkserver, which
outlives processor restarts: see ``processor.startup.DASK_PRELOAD``.)

Imported in each worker instead, a tool module that takes long to import (a model
file, torch) counted against the worker's first job, which the job's time limit
started on as it was sent: a module of 8 s under a tool of 5 s failed every COMPUTE
job ``timeout``, for ever, as each timeout's kill took the worker with its import.
And a module edited on disk ran in COMPUTE jobs from the next worker on (a crash, a
timeout, a retirement), beside the old code in the processor's FAST lane; now both
run what the processor loaded at its start.

What to import: ``SPOOLQ_PRELOAD_TOOLS`` (comma-separated, set by the process that
starts the forkserver from its settings), else ``SPOOL_TOOLS`` (a forkserver started
before the settings load, when the environment is their only source).  A module
that fails to import fails nothing here: the processor's own load says so and stops
(or a worker's does, for its job), and the forkserver must live on to say it.  What a
module prints as it is imported goes nowhere: the processor's own import of it logs
that, as JSON lines, where the forkserver's went into the log as raw text.
"""

from __future__ import annotations

import contextlib
import os
import sys

PRELOAD_ENV = "SPOOLQ_PRELOAD_TOOLS"  # processor.startup.PRELOAD_TOOLS_ENV


def _preload() -> None:
    listed = os.environ.get(PRELOAD_ENV, os.environ.get("SPOOL_TOOLS", ""))
    modules = [name.strip() for name in listed.split(",") if name.strip()]
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        from processor.registry import load_registry  # noqa: PLC0415 - only when preloading

        load_registry(modules)
    except BaseException:  # said by the processor's own load (see the docstring)
        pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


_preload()
