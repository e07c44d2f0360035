"""Last in the COMPUTE forkservers' preload lists, and imported nowhere else.

:mod:`processor.forkserver_init`, first in the list, turned the cyclic garbage
collector off for the preload.  Here, before the forkserver forks its first worker,
what the preload made (numpy, pandas, the tools) is frozen, as the processor
freezes its own start-up (``gc.freeze``: the collector leaves those objects alone
for good), and the collector is turned back on: each worker inherits it on, and
its collections never walk, so never copy, the pages of the modules it shares with
the forkserver and the other workers.
"""

from __future__ import annotations

import gc

gc.freeze()
gc.enable()
