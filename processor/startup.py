"""What the processor sets up first, before it imports the tools.

The local pool's workers come from a ``forkserver`` that preloads numpy, pandas
and the tools (see :mod:`processor.pool`), about half a second of imports.  The
processor has imports of its own (the daemon, its registry loads the tools).
Started here, first thing, the forkserver does its imports while the processor
does its own, on another core, instead of after them: the processor wrote its
status file about 0.3 s sooner (0.56 to 0.62 s after launch against 0.86 to
0.97 s, on the 2-CPU machine of docs/benchmarks.md, when the processor still
imported pandas itself), which a ``systemctl restart`` waits for.

Everything the forkserver and its workers inherit is set before it starts:
single-threaded BLAS (``JOB_NUM`` workers, a core each) and stdin on
``/dev/null``.  This module imports nothing heavy itself.

The processor itself does not import numpy and pandas before it is ready: only
its FAST tools need them, and :class:`BackgroundImports` loads them once the
status file is written, so a ``systemctl restart`` does not wait for them and
the first FAST job rarely does (one that comes sooner waits, in its own thread,
for the rest of the import, which Python's per-module import locks serialise).
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing as mp
import multiprocessing.forkserver
import os
import threading
from collections.abc import Sequence

PRELOAD = ["processor.forkserver_init", "numpy", "pandas", "processor.worker",
           "processor.quant.tools", "processor.quant.backtest", "processor.quant.analysis"]
"""What every COMPUTE forkserver imports before it forks a worker
(:mod:`processor.forkserver_init` first)."""

log = logging.getLogger("spoolq.processor")

_SINGLE_THREADED_MATH = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "NUMEXPR_NUM_THREADS")


def single_threaded_math() -> None:
    """BLAS and friends use one thread unless told otherwise: JOB_NUM workers, one core
    each."""
    for name in _SINGLE_THREADED_MATH:
        os.environ.setdefault(name, "1")


def stdin_from_devnull() -> None:
    """Fd 0 reads ``/dev/null``: a tool, or a child of it, that reads its stdin gets end
    of file at once.  It was the processor's stdin (a terminal, a shell's pipe), which
    a job has no business reading: the read hung until the job's timeout, and, from a
    terminal, took the user's keystrokes.  The processor does the same for its FAST
    tools, which run in it."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)  # inheritable, as fd 0 is
        os.close(devnull)


def start_forkserver() -> None:
    """Start this process's COMPUTE forkserver now, preloading :data:`PRELOAD`; the
    pool's workers come from it (an idempotent step when it runs already)."""
    mp.get_context("forkserver").set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()


class BackgroundImports:
    """Import modules on a thread of their own, then freeze what they made (as start-up
    freezes its own objects: the collector need not walk them); :meth:`join` waits."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = tuple(modules)
        self._thread = threading.Thread(target=self._run, name="spoolq-imports")

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        for name in self.modules:
            try:
                importlib.import_module(name)
            except Exception:  # the tool that needs it fails its jobs with the same error
                log.exception("importing %s in the background failed", name)
        gc.freeze()
