"""``python -m held_close_processor``: the real processor, whose stop holds
``HELD_CLOSE_S`` (in the environment) seconds once it has killed what FAST tools left
(:func:`processor.lifecycle.close`'s sweep), before it gives back what it opened: a stand-in
for the rest of the stop taking that long (a slow disk's unlinks and fsyncs, a loaded
host), during which FAST tool code still running goes on.  With ``HELD_EXIT_S``, its exit
holds that long too after the exit's own kill
(:func:`processor.lifecycle.kill_late_tool_processes`): the rest of the exit's steps
taking that long.

Not a test module; the tests start it through daemonkit's runner (``module=``).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

from processor import __main__ as processor_main
from processor import lifecycle

HELD_CLOSE_ENV = "HELD_CLOSE_S"
HELD_EXIT_ENV = "HELD_EXIT_S"


def main() -> int:
    release = lifecycle.release

    def held_release(processor: Any) -> None:
        time.sleep(float(os.environ[HELD_CLOSE_ENV]))
        release(processor)

    lifecycle.release = held_release  # type: ignore[assignment]
    if HELD_EXIT_ENV in os.environ:
        # Registered before the daemon registers its kill, so run after it (last first).
        atexit.register(time.sleep, float(os.environ[HELD_EXIT_ENV]))
    return processor_main.main()


if __name__ == "__main__":
    sys.exit(main())
