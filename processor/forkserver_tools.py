"""In the local pool's forkserver's preload list, before :mod:`processor.forkserver_ready`:
with ``SPOOL_PRELOAD_TOOLS`` on, the tool modules (``SPOOL_TOOLS``'s and the
``spoolq.tools`` entry points), imported once, so every worker has them from its fork.
(Not a Dask worker's forkserver, which outlives processor restarts: see
``processor.startup.DASK_PRELOAD``.)

Preloaded, a module slow to import (a model file, torch) costs the processor's start,
not each new worker's; an edited module runs in FAST and COMPUTE jobs alike from the
restart on (without, COMPUTE jobs run it from the next worker on).  Off by default, as
gunicorn's ``--preload``: what a module makes as it is imported is every worker's
then (a random generator's state: every job drew the same numbers; a connection, a
token), and a thread it starts is left behind by each fork.

What to import: ``SPOOLQ_PRELOAD_TOOLS`` (set by the process that starts the forkserver
from its settings: comma-separated modules, or ``-`` for no preload), else, for a
forkserver started before the settings load, the environment's ``SPOOL_PRELOAD_TOOLS``
and ``SPOOL_TOOLS`` as the settings read them
(:func:`processor.startup.preload_tools_from`).  A module that fails to import fails
nothing here: the processor's own load says so and stops (or a worker's does, for its job), and the
forkserver must live on to say it.  What a module prints as it is imported goes
nowhere: the processor's own import of it logs that, as JSON lines, where the
forkserver's went into the log as raw text.
"""

from __future__ import annotations

import contextlib
import os
import sys

from processor.startup import PRELOAD_NONE, PRELOAD_TOOLS_ENV, preload_tools_from
from spool.text import comma_list


def _modules() -> list[str] | None:
    """The tool modules to preload, or None for no preload at all."""
    listed = os.environ.get(PRELOAD_TOOLS_ENV)
    if listed is None:
        return preload_tools_from(os.environ)
    if listed == PRELOAD_NONE:
        return None
    return comma_list(listed)


def _preload(modules: list[str]) -> None:
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


if (_wanted := _modules()) is not None:
    _preload(_wanted)
