"""The stop signals: SIGTERM, SIGINT (Ctrl-C) and SIGHUP (a closed terminal, ``kill -HUP``);
and SIGUSR1 and SIGUSR2, which ask for a report (:mod:`processor.signal_report`) and stop
nothing: their default action ended the processor mid-run, its runs then counted as
attempts by the next start's recovery (a job of one attempt failed ``abandoned``).

:class:`StopSignals` owns the processor's signal dispositions while it runs: the
loop reads the signals itself, from the pipe Python's C-level handler writes each
signal's number to (``signal.set_wakeup_fd``): that handler runs on whichever
thread the kernel picks, while a Python-level handler runs on the main thread
only, and the main thread sleeps in :meth:`processor.relay.Relay.wait` (a signal
the kernel gave another thread, as it may just after a SIGCONT, waited there for
good).  The Python-level handlers do nothing.  Guarantees: one stop request per
read of the pipe however many stop signals it held, and the handlers and wakeup
fd as they were once :meth:`StopSignals.restore` has run.  A report signal is acted on
once per read of the pipe too; one that comes while the processor starts is ignored.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from processor.inbox import Inbox
from spool import early_stops as spool_early_stops

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
REPORT_SIGNALS = frozenset({signal.SIGUSR1, signal.SIGUSR2})


class EarlyStops(spool_early_stops.EarlyStops):
    """The stop signals' handler from ``spool-processor``'s start until
    :meth:`StopSignals.install`, which hands the first one noted to the loop (see
    :mod:`spool.early_stops`): a SIGTERM in the first 0.8 s or so (the imports, the
    forkserver, the lease) ended the processor with -15.  The report signals do nothing
    until then: nothing runs yet to report."""

    def __init__(self) -> None:
        super().__init__(STOP_SIGNALS)

    def install(self) -> None:
        super().install()
        for signum in REPORT_SIGNALS:
            signal.signal(signum, _no_op)


class StopSignals:
    """Stop and report signals read on the loop thread; ``on_stop`` and ``on_report`` get
    the signal's number."""

    def __init__(self, inbox: Inbox, on_stop: Callable[[int], None],
                 on_report: Callable[[int], None] = lambda signum: None) -> None:
        self.inbox = inbox
        self.on_stop = on_stop
        self.on_report = on_report
        self.pipe: tuple[int, ...] = ()  # (read end, write end) once installed
        self.saved_handlers: dict[int, Any] = {}

    def install(self) -> None:
        """Read the stop signals on the loop (see the module's docstring)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe = (read_end, write_end)
        self.inbox.add_reader(read_end, self._read)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        # SIGIO: recycling a job file takes a write lease for an instant
        # (spool.fsops.Mover.retire); should anything open that file then, the kernel's
        # notice must not end the daemon.
        for signum in (*STOP_SIGNALS, *REPORT_SIGNALS, signal.SIGIO):
            self.saved_handlers[signum] = signal.signal(signum, _no_op)
        early = next((h.received for h in self.saved_handlers.values()
                      if isinstance(h, EarlyStops) and h.received is not None), None)
        if early is not None:  # a stop sent while the processor started: read first
            os.write(write_end, bytes([early]))

    def _read(self) -> None:
        try:
            received = os.read(self.pipe[0], 256)
        except BlockingIOError:
            return
        # One stop signal per read: a Ctrl-C that reached the whole process group, and
        # a supervisor's SIGTERM beside it, are one request to stop, not two.
        stop = next((signum for signum in received if signum in STOP_SIGNALS), None)
        for signum in sorted(REPORT_SIGNALS.intersection(received)):
            self.on_report(signum)
        if stop is not None:
            self.on_stop(stop)

    def restore(self) -> None:
        """Give the signals back (on the main thread, where they were installed)."""
        if self.pipe:
            signal.set_wakeup_fd(-1)
            for signum, handler in self.saved_handlers.items():
                signal.signal(signum, handler)
            for fd in self.pipe:
                os.close(fd)
            self.pipe = ()


def _no_op(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that only keeps the default action away (see the module's
    docstring)."""
