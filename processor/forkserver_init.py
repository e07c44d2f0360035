"""First in the COMPUTE forkservers' preload lists, and imported nowhere else.

It makes the forkserver a child subreaper (``PR_SET_CHILD_SUBREAPER``, which its
workers do not inherit).  A worker that dies by itself (``os._exit``, a segfault,
the OOM killer) then leaves the processes its tool started to the forkserver
instead of to init, where the pool finds them among the forkserver's children and
kills them (:func:`processor.proctree.kill_orphans`).  The forkserver reaps them as
it reaps its workers, with a warning about a pid it did not fork, silenced here.

It also turns the cyclic garbage collector off for the rest of the preload, whose
imports make objects that live as long as the forkserver: collections in between
only walked them, some 50 of the preload's 370 ms of CPU, and the first worker's
start (so READY) waits for the preload's end.  :mod:`processor.forkserver_ready`,
last in the list, freezes what the preload made and turns the collector back on
before any worker is forked.
"""

from __future__ import annotations

import gc
import warnings

from processor.proctree import PR_SET_CHILD_SUBREAPER, prctl

gc.disable()
prctl(PR_SET_CHILD_SUBREAPER, 1)
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
