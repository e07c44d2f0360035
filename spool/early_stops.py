"""A daemon's stop signals from its ``main``'s start until its loop reads them itself.

A stop sent while a daemon starts (systemd stopping a unit it has just started, a
supervisor's restart) must be the same clean stop as later, exit status 0: by the
signal's default action a SIGTERM in the imports ended the daemon with -15, and a
SIGINT raised a KeyboardInterrupt wherever it landed.  :class:`EarlyStops` notes the
first one, and the daemon's loop acts on it once its own handlers are in.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType


class EarlyStops:
    """The handler of ``signals`` until the loop's: the first one received is noted."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def install(self) -> None:
        for signum in self.signals:
            signal.signal(signum, self)
