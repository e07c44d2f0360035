"""In the local pool's forkserver's preload list, after :mod:`processor.forkserver_init`:
numpy, pandas and the built-in quant tools' computations (:data:`processor.startup
.QUANT_PRELOAD`), imported once so every worker has them from its fork, unless
``SPOOL_PRELOAD_QUANT`` is off.

Off, a processor whose jobs never use them starts with about 0.6 s less CPU in its
forkserver (and 0.5 s less in the processor, which then skips its background import
of the FAST quant tools' modules: see :mod:`processor.startup`); a worker imports them
before its first quant job instead, outside that job's time limit, as a tool module
slow to import is at its start (:func:`processor.worker.load_quant`).

What to do: ``SPOOLQ_PRELOAD_QUANT`` (``1`` or ``0``, set by the process that starts the
forkserver from its settings), else, for a forkserver started before the settings
load, the environment's ``SPOOL_PRELOAD_QUANT`` read as the settings read it (the
name in any case, else the field's own name ``PRELOAD_QUANT``; pydantic's words for a
bool), on when unset or unreadable (the processor's settings then refuse the value and
it stops).  A module that is not there
fails nothing here, as with multiprocessing's own preload: the job that needs it fails
with the worker's own import.
"""

from __future__ import annotations

import contextlib
import importlib
import os

from processor.startup import PRELOAD_QUANT_ENV, QUANT_PRELOAD, preload_quant_from


def _wanted() -> bool:
    said = os.environ.get(PRELOAD_QUANT_ENV)
    return preload_quant_from(os.environ) if said is None else said != "0"


if _wanted():
    for _name in QUANT_PRELOAD:
        with contextlib.suppress(ImportError):  # as multiprocessing's own preload
            importlib.import_module(_name)
