"""What a COMPUTE job may change in its worker's process, put back before the next job.

A worker runs job after job in one process, so whatever a tool changes there and
leaves so reaches every later job of that worker, jobs that did nothing wrong:
descriptors 0 to 2 closed or replaced (the next job's first ``open`` got fd 1),
``sys.stdout`` and ``sys.stderr`` replaced or closed, the pipes made non-blocking by a
child, the working directory and umask (where a later job's relative paths land, who
may read what it writes), ``os.environ`` (a proxy, credentials), ``logging`` turned
off, warnings made errors (``simplefilter("error")``, ``np.seterr(all="raise")``: a
later job that merely warned failed), timers left set (``signal.alarm`` killed the
next job with SIGALRM) and signal handlers (SIGCHLD ignored: the next job's
``subprocess.run`` read every child's status as 0).  :class:`ProcessState` notes them
as the worker starts and :meth:`ProcessState.restore` puts them back after each job,
in about 10 us.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from processor.kept import KeptSettings
from processor.stdio_pipes import unbuffered
from processor.stray_threads import StrayThreads

_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
_getsignal: Callable[[int], Any] = importlib.import_module("_signal").getsignal
"""The C function behind ``signal.getsignal``, whose wrapper makes each handler an enum
member if it can (a ValueError raised and caught for every Python-level one): 0.4 to
2 us a call against 0.03, 14 us a job over the standard signals.  The handlers it
gives (the ints of SIG_DFL and SIG_IGN, None, the callables) are what
``signal.signal`` takes back."""


class ProcessState:
    """The worker's process state as it was before its first job."""

    def __init__(self, strays: StrayThreads) -> None:
        self.strays = strays
        self.stdio = _save_stdio()
        self.streams: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
        self.kept = KeptSettings()  # working directory, umask, logging, warnings
        self.kept.keep_warnings()
        self.handlers = _signal_handlers()
        self.environ = dict(_environ_bytes())

    def restore(self) -> None:
        """Put back what the job changed (each step cheaper than checking it first)."""
        _restore_stdio(self.stdio)
        self.streams = _restore_streams(self.streams, self.strays)
        for timer in _TIMERS:
            signal.setitimer(timer, 0)
        _restore_signal_handlers(self.handlers)
        if _environ_bytes() != self.environ:
            os.environ.clear()  # unsetenv and putenv too, for the processes jobs start
            os.environb.update(self.environ)
            time.tzset()  # a TZ the job set and applied: the C library's zone too
        self.kept.restore()


def _environ_bytes() -> dict[bytes, bytes]:
    """The dict behind ``os.environ`` (CPython's ``os._Environ``): compared in 0.3 us,
    where comparing ``os.environ`` itself decodes every entry (20 us)."""
    data: dict[bytes, bytes] = vars(os.environ)["_data"]
    return data


def _signal_handlers() -> dict[int, Any]:
    """Each standard signal's handler, as Python knows it (None: set outside Python);
    the real-time ones, which tools leave alone, are not looked at after each job."""
    handlers: dict[int, Any] = {}
    for signum in signal.valid_signals():
        if signum < signal.SIGRTMIN:
            with contextlib.suppress(ValueError, OSError):
                handlers[int(signum)] = _getsignal(signum)
    return handlers


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    """Put back the handlers a tool changed (a lookup each; a syscall only for those)."""
    for signum, handler in saved.items():
        if handler is not None and _getsignal(signum) is not handler:
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)


def _save_stdio() -> dict[int, int]:
    """Copies of fds 0-2 (inheritable off), to undo a tool that closed or replaced them."""
    saved = {}
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            saved[fd] = os.dup(fd)
    return saved


def _restore_stdio(saved: dict[int, int]) -> None:
    # Unconditionally: one dup2 each, where comparing first took two fstats each.  Here
    # and below, a try statement rather than contextlib.suppress, which costs 0.27 us a
    # use (an object, two calls), 0.02 for the try: five of each job's put-back steps.
    for fd, copy in saved.items():
        try:
            os.dup2(copy, fd)
        except OSError:
            continue


def _restore_streams(saved: tuple[TextIO, TextIO], strays: StrayThreads
                     ) -> tuple[TextIO, TextIO]:
    """``sys.stdout`` and ``sys.stderr`` as before the job, should a tool have replaced
    them; one it closed is made anew (on fds 1 and 2, the pipes: see _restore_stdio).
    And the pipes blocking again, should a child of the tool have made them
    non-blocking: the next job's C code and children expect a stdout that blocks."""
    for fd in (1, 2):
        try:
            if not os.get_blocking(fd):
                os.set_blocking(fd, True)
        except OSError:
            continue
    out, err = saved
    if out.closed:
        out = unbuffered(1, strays)
    if err.closed:
        err = unbuffered(2, strays)
    sys.stdout, sys.stderr = out, err
    return out, err
