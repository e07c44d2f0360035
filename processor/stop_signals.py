"""The stop signals: SIGTERM, SIGINT (Ctrl-C) and SIGHUP (a closed terminal, ``kill -HUP``);
and SIGUSR1 and SIGUSR2, which ask for a report (:mod:`processor.signal_report`) and stop
nothing: their default action ended the processor mid-run, its runs then counted as
attempts by the next start's recovery (a job of one attempt failed ``abandoned``).
The timer signals (SIGALRM, SIGVTALRM, SIGPROF) stop nothing either: a FAST tool runs in
the processor's threads, and its ``signal.alarm(1)`` or ``signal.setitimer`` (its own
timeout, say) armed the process's one timer, whose signal's default action ended the
processor a second later, every run with it.  One that comes is a warning line, and the
timer is disarmed (a repeating one would come again and again).  A line a minute at most
for each signal: a tool that arms its alarm at every job said it at every job; the
next line, or the stop, counts those not said.

:class:`StopSignals` owns the processor's signal dispositions while it runs: the
loop reads the signals itself, from the pipe Python's C-level handler writes each
signal's number to (``signal.set_wakeup_fd``): that handler runs on whichever
thread the kernel picks, while a Python-level handler runs on the main thread
only, and the main thread sleeps in :meth:`processor.relay.Relay.wait` (a signal
the kernel gave another thread, as it may just after a SIGCONT, waited there for
good).  The Python-level handlers do nothing.  Guarantees: one stop request per
read of the pipe however many stop signals it held, and the handlers and wakeup
fd as they were once :meth:`StopSignals.restore` has run.  A report or timer signal is
acted on once per read of the pipe too; one that comes while the processor starts, or
once it has stopped (a FAST tool's thread may run on), is ignored.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from processor.inbox import Inbox
from spool import early_stops as spool_early_stops
from spool.early_stops import REPORT_SIGNALS, STOP_SIGNALS, ignore

log = logging.getLogger("spoolq.processor")

TIMER_SIGNALS: dict[int, int] = {signal.SIGALRM: signal.ITIMER_REAL,
                                 signal.SIGVTALRM: signal.ITIMER_VIRTUAL,
                                 signal.SIGPROF: signal.ITIMER_PROF}
"""Each timer signal, and the timer (``signal.setitimer``'s) that sends it."""
TIMER_LINE_EVERY_S = 60.0
"""A timer signal's warning line comes once in this long at most (each signal's own)."""


class EarlyStops(spool_early_stops.EarlyStops):
    """The stop signals' handler from ``spool-processor``'s start until
    :meth:`StopSignals.install`, which hands the first one noted to the loop (see
    :mod:`spool.early_stops`): a SIGTERM in the first 0.8 s or so (the imports, the
    forkserver, the lease) ended the processor with -15.  The report and timer signals do
    nothing until then (nothing runs yet to report), nor once :meth:`StopSignals.restore`
    has given them back."""

    def __init__(self) -> None:
        super().__init__(STOP_SIGNALS, ignored=REPORT_SIGNALS | TIMER_SIGNALS.keys())


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
        # The forking thread's mask before its fork (see _block_for_fork): its own, as
        # two FAST tools may fork at once.
        self.fork_mask = threading.local()
        # Each timer signal's last line (monotonic) and how often it came since, unsaid.
        self.timer_lines: dict[int, tuple[float, int]] = {}

    def install(self) -> None:
        """Read the stop signals on the loop (see the module's docstring)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe = (read_end, write_end)
        self.inbox.add_reader(read_end, self._read)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        # SIGIO: recycling a job file takes a write lease for an instant
        # (spool.fsops.Mover.retire); should anything open that file then, the kernel's
        # notice must not end the daemon.
        for signum in (*STOP_SIGNALS, *REPORT_SIGNALS, *TIMER_SIGNALS, signal.SIGIO):
            self.saved_handlers[signum] = signal.signal(signum, ignore)
        early = next((h.received for h in self.saved_handlers.values()
                      if isinstance(h, EarlyStops) and h.received is not None), None)
        if early is not None:  # a stop sent while the processor started: read first
            os.write(write_end, bytes([early]))
        os.register_at_fork(before=self._block_for_fork,
                            after_in_parent=self._unblock_after_fork,
                            after_in_child=self._forked)

    def _block_for_fork(self) -> None:
        """Before a fork: our signals blocked on the forking thread (the child's one
        thread), so one sent to the child before :meth:`_forked` has run waits for the
        defaults instead of meeting our handler (CI: a SIGTERM 8 ms after a FAST tool's
        fork stopped the processor).  The processor's other threads still take them."""
        if self.pipe:
            self.fork_mask.before = signal.pthread_sigmask(signal.SIG_BLOCK,
                                                           self.saved_handlers)

    def _unblock_after_fork(self) -> None:
        before = getattr(self.fork_mask, "before", None)
        if before is not None:
            self.fork_mask.before = None
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    def _forked(self) -> None:
        """In a process a FAST tool forked (``multiprocessing``'s fork context, a bare
        ``os.fork``): none of this is its.  It kept the wakeup fd, so a SIGTERM to it (a
        Pool's ``terminate()`` sends one to each worker) was written into this pipe and
        read as the processor's own stop: the processor stopped, exit 0, which
        ``Restart=on-failure`` does not restart; and it kept the handlers that ignore the
        stop signals, so it would not die of them.  It gets the defaults back, then
        what was sent meanwhile (blocked across the fork)."""
        if self.pipe:  # else forked once the processor gave the signals back
            signal.set_wakeup_fd(-1)
            for signum in self.saved_handlers:
                signal.signal(signum, signal.SIG_DFL)
            self.pipe = ()
        self._unblock_after_fork()

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
        for timer_signal in sorted(TIMER_SIGNALS.keys() & set(received)):
            self._timer_fired(timer_signal)
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

    def _timer_fired(self, signum: int) -> None:
        """Disarm the timer that sent ``signum`` and say so (a line a minute at most),
        unless a handler other than ours took the signal (a profiler's, set on the main
        thread after ours): its timer is its."""
        if signal.getsignal(signum) is not ignore:
            return
        signal.setitimer(TIMER_SIGNALS[signum], 0)
        said, unsaid = self.timer_lines.get(signum, (-math.inf, 0))
        now = time.monotonic()
        if now - said < TIMER_LINE_EVERY_S:
            self.timer_lines[signum] = (said, unsaid + 1)
            return
        self.timer_lines[signum] = (now, 0)
        _say_timer(signum, unsaid)

    def say_unsaid(self) -> None:
        """A line for each timer signal that came since its last one (at the stop)."""
        for signum, (_, unsaid) in sorted(self.timer_lines.items()):
            if unsaid:
                self.timer_lines[signum] = (time.monotonic(), 0)
                _say_timer(signum, unsaid)


def _say_timer(signum: int, unsaid: int) -> None:
    fields: dict[str, Any] = {
        "signal": signal.Signals(signum).name,
        "cause": "a FAST tool's signal.alarm or signal.setitimer? FAST tools run in the "
                 "processor's threads, where the process's timers are not theirs"}
    if unsaid:
        fields["since_last_line"] = unsaid  # came and were disarmed, a line a minute at most
    log.warning("timer signal ignored, its timer disarmed", extra={"fields": fields})
