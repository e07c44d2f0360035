"""A processor stuck between the two steps of a run's completion, for the tests of what
happens to a re-drop's cancel meanwhile.

Usage: ``python stuck_owner.py ROOT``: claims ``daily`` from the spool at ``ROOT``
(it must be pending), publishes its run's ``done`` record (result ``"first"``), prints
``recorded`` and sleeps, its running file held and never removed, until it is killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spoolkit import done_record, make_spool

SCRIPT = Path(__file__).resolve()
"""This script, to run as ``[sys.executable, str(SCRIPT), root]``."""


def main(root: str) -> None:
    spool = make_spool(Path(root))
    claim = spool.claim("daily")
    assert claim is not None, "daily is not pending"
    spool.publish_terminal(done_record(claim, "first"))
    print("recorded", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1])
