"""A daemon's stop signals from its ``main``'s start until its loop reads them itself.

A stop sent while a daemon starts (systemd stopping a unit it has just started, a
supervisor's restart) must be the same clean stop as later, exit status 0: by the
signal's default action a SIGTERM in the imports ended the daemon with -15, and a
SIGINT raised a KeyboardInterrupt wherever it landed.  :class:`EarlyStops` notes the
first one, and the daemon's loop acts on it once its own handlers are in.  The signals
it is told to ignore (a report signal: nothing runs yet to report) do nothing until
then, where their default action ended the daemon too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from types import FrameType

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""What stops either daemon cleanly (DESIGN section 9 names SIGTERM and SIGINT; SIGHUP,
a terminal closed under ``spoolq demo``, ended them by its default action; neither has
anything to reload, its settings read at start)."""
REPORT_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGUSR2})
"""What asks either daemon for a report line and stops nothing (their default action
ended it)."""


class EarlyStops:
    """The handler of ``signals`` until the loop's: the first one received is noted;
    ``ignored`` get a handler that does nothing.

    A Python-level handler, not ``SIG_IGN``: a program the daemon starts gets the default
    action back at ``exec``, where an ignored signal would stay ignored in it."""

    def __init__(self, signals: Iterable[int], ignored: Iterable[int] = ()) -> None:
        self.signals = tuple(signals)
        self.ignored = tuple(ignored)
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def install(self) -> None:
        for signum in self.signals:
            signal.signal(signum, self)
        for signum in self.ignored:
            signal.signal(signum, ignore)


def ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that only keeps the default action away."""
