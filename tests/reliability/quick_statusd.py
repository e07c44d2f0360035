"""``python -m quick_statusd``: the real statusd, with its connection clocks shortened.

statusd hangs up on a connection idle for ``IDLE_S`` (15 s), cuts off a client
that takes nothing of a waiting write for ``2 * SEND_STALL_S`` (20 s), and keeps an
id missing from every state folder in its index for ``VANISH_GRACE_S`` (2 s).  A
test of those guards proves the same with shorter clocks, without sitting through
the shipped ones: ``QUICK_IDLE_S``, ``QUICK_SEND_STALL_S`` and ``QUICK_VANISH_S`` in
the environment set them, then ``statusd.__main__.main`` runs as ``python -m
statusd`` would.

Not a test module; the tests start it through relkit's daemon runner (this folder
is on the daemon's ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys

from statusd import __main__ as statusd_main
from statusd import applying, sending

IDLE_ENV = "QUICK_IDLE_S"
SEND_STALL_ENV = "QUICK_SEND_STALL_S"
VANISH_ENV = "QUICK_VANISH_S"


def main() -> int:
    if IDLE_ENV in os.environ:
        statusd_main.IDLE_S = float(os.environ[IDLE_ENV])
    if SEND_STALL_ENV in os.environ:
        sending.SEND_STALL_S = float(os.environ[SEND_STALL_ENV])
    if VANISH_ENV in os.environ:  # read by each Tracker as it is made
        applying.VANISH_GRACE_S = float(os.environ[VANISH_ENV])
    return statusd_main.main()


if __name__ == "__main__":
    sys.exit(main())
