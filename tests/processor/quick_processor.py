"""``python -m quick_processor``: the real processor, with a clock shortened.

A test of what happens once a clock of the processor runs out proves the same
with a shorter one, without sitting through the shipped value:
``QUICK_ADOPTED_GRACE_S`` in the environment sets
:data:`processor.proctree.ADOPTED_GRACE_S` (10 s: how long an exited orphan is
left for a tool to wait for), ``QUICK_RACY_NS`` sets :data:`spool.recheck.RACY_NS`
(2 s: how long after a folder's change recovery's passes do not trust its stamp),
``QUICK_IO_PAUSE_S`` sets the first pause of :data:`processor.daemon.IO_BACKOFF_S`
(0.5 s: how long claims pause after spool I/O trouble, doubled at each try since) and
``QUICK_IO_PAUSE_MAX_S`` its longest (30 s),
``QUICK_IMPORT_SLOW_S`` sets :data:`processor.startup.IMPORT_SLOW_S` (10 s: how long the
background import may take before a warning names what it imports),
``QUICK_HEARTBEAT_S`` sets :data:`processor.daemon.HEARTBEAT_S` (1 s: how often the loop
wakes to write its status, whatever else it waits for; longer, a wake the loop owes to
something else cannot pass for one the heartbeat happened to give), then
``processor.__main__.main`` runs as ``python -m processor`` would.

Not a test module; the tests start it through daemonkit's runner (``module=``;
this folder is on the daemon's ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys

from processor import __main__ as processor_main
from processor import proctree, startup
from spool import recheck

ADOPTED_GRACE_ENV = "QUICK_ADOPTED_GRACE_S"
RACY_ENV = "QUICK_RACY_NS"
IO_PAUSE_ENV = "QUICK_IO_PAUSE_S"
IO_PAUSE_MAX_ENV = "QUICK_IO_PAUSE_MAX_S"
IMPORT_SLOW_ENV = "QUICK_IMPORT_SLOW_S"
HEARTBEAT_ENV = "QUICK_HEARTBEAT_S"


def main() -> int:
    if ADOPTED_GRACE_ENV in os.environ:
        proctree.ADOPTED_GRACE_S = float(os.environ[ADOPTED_GRACE_ENV])
    if RACY_ENV in os.environ:
        recheck.RACY_NS = int(os.environ[RACY_ENV])
    if IMPORT_SLOW_ENV in os.environ:
        startup.IMPORT_SLOW_S = float(os.environ[IMPORT_SLOW_ENV])
    if IO_PAUSE_ENV in os.environ or IO_PAUSE_MAX_ENV in os.environ:
        from processor import daemon  # noqa: PLC0415 - here only: it delays the forkserver

        first, longest = daemon.IO_BACKOFF_S
        daemon.IO_BACKOFF_S = (float(os.environ.get(IO_PAUSE_ENV, first)),
                               float(os.environ.get(IO_PAUSE_MAX_ENV, longest)))
    if HEARTBEAT_ENV in os.environ:
        from processor import daemon  # noqa: PLC0415 - here only: it delays the forkserver

        daemon.HEARTBEAT_S = float(os.environ[HEARTBEAT_ENV])
    return processor_main.main()


if __name__ == "__main__":
    sys.exit(main())
