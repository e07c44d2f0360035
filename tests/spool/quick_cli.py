"""``python quick_cli.py ARGS``: the real ``spoolq``, with its lookout's clock shortened.

``spoolq wait`` says that no processor seems to be running once a spool has held no
status file for :data:`spool.cli.lookout.QUIET_S` (3 s).  A test of that note proves
the same with a shorter quiet period, without sitting through the shipped one:
``QUICK_QUIET_S`` in the environment sets it, then ``spool.cli.main.main`` runs as
``python -m spool.cli.main`` would.  Everything else is the shipped CLI.

Not a test module; the tests run it as a script (:data:`QUICK_CLI`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spool.cli import lookout
from spool.cli import main as cli_main

QUIET_ENV = "QUICK_QUIET_S"
QUICK_CLI = [sys.executable, str(Path(__file__).resolve())]
"""The argv prefix that runs this script (as ``spoolkit.CLI`` runs the shipped one)."""


def main() -> int:
    if QUIET_ENV in os.environ:
        lookout.QUIET_S = float(os.environ[QUIET_ENV])
    return cli_main.main()


if __name__ == "__main__":
    sys.exit(main())
