"""``python -m unloaded_processor``: the real processor, whose workers' forkserver runs
without :mod:`processor.forkserver_init` in its preload, as one started while spoolq's
files were gone does (multiprocessing lets the preload's ImportError pass).

Not a test module; the tests start it through daemonkit's runner (``module=``; this
folder is on the daemon's ``PYTHONPATH``).
"""

from __future__ import annotations

from processor import __main__ as processor_main
from processor import startup

if __name__ == "__main__":
    startup.PRELOAD.remove("processor.forkserver_init")
    raise SystemExit(processor_main.main())
