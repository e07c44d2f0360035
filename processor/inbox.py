"""The daemon loop's inbox: events posted by other threads, and file descriptors
the loop reads itself.

Other threads (a displaced FAST run's, a Dask executor's) call
:meth:`Inbox.post`.  The loop calls :meth:`Inbox.wait`, which sleeps in
one ``poll`` on a wake-up pipe and on its own readers (the change feed's
inotify descriptor, the local pool's worker sockets and sentinels, the
processor's signal pipe), then :meth:`Inbox.get` until it returns None.
A post writes to the pipe only while the loop sleeps, so a busy loop is
never woken twice.

Bulk readers (``add_reader(..., bulk=True)``: the pipes COMPUTE tools write their
output to) share a budget of :data:`BULK_BUDGET_S` of each wait, after the other
readers have run: a pipe that was readable but not read for want of budget keeps
its readiness, is read first in the next wait, and meanwhile the tool writing to
it blocks on its full pipe.  However much output the tools write, each pass of
the loop spends about that long on it, so the FAST lane's jobs, which run
between passes, never wait behind it for long.  And once bulk readers have taken
:data:`BULK_REST_S`, they rest as long (the loop polls only the other readers):
at most half the loop's time goes to output, and the loop sleeps the other half,
so the scheduler wakes it at once for a FAST job rather than sharing a core
between it and the busy tools in slices of milliseconds (two tools printing
without pause made a FAST ``echo`` p50 2.2 ms, p95 7.6; with the rest 0.8 and 4).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processor.runner import Outcome

Event = tuple[Any, ...]
BULK_BUDGET_S = 0.0005
"""The time bulk readers may take of one wait, in all: each readable one runs once per
wait until it is spent (the first runs even if one reader overran it)."""
BULK_REST_S = 0.002
"""Bulk readers that have taken this long (over one wait or more) are not run for as
long again; the loop's poll has a resolution of 1 ms, so shorter rests would be
longer than what they paid for."""


class Inbox:
    """A queue the loop thread drains, and a poll it sleeps in."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._sleeping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._readers: dict[int, Callable[[], object]] = {}
        self._bulk: set[int] = set()
        self._behind: dict[int, None] = {}  # bulk readers left unread by the last wait
        self._quiet = select.poll()  # every reader but the bulk ones
        self._quiet.register(self._wake_r, select.POLLIN)
        self._rest_until = 0.0  # bulk readers wait until then (monotonic)
        self._bulk_s = 0.0  # time bulk readers took since they last rested

    def add_reader(self, fd: int, callback: Callable[[], object], *, bulk: bool = False
                   ) -> None:
        """Call ``callback`` on the loop thread whenever ``fd`` is readable (``bulk``:
        within the wait's budget for bulk readers, and it should read little at a time).

        Readiness is taken per :meth:`wait`: a reader removed by an earlier
        callback of the same wait may still be called once, and must cope.
        """
        self._readers[fd] = callback
        if bulk:
            self._bulk.add(fd)
        else:
            self._quiet.register(fd, select.POLLIN)
        self._poller.register(fd, select.POLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._poller.unregister(fd)
            if fd in self._bulk:
                self._bulk.discard(fd)
                self._behind.pop(fd, None)
            else:
                self._quiet.unregister(fd)

    def post(self, event: Event) -> None:
        """Queue ``event`` for the loop (from any thread, or a signal handler)."""
        self._queue.put(event)
        # The loop sets _sleeping before its last look at the queue, so either it
        # sees this event or this sees it asleep and wakes it.
        if self._sleeping:
            with contextlib.suppress(BlockingIOError):  # full pipe: it is awake already
                os.write(self._wake_w, b"\0")

    def wait(self, timeout: float) -> None:
        """Sleep until a post, a readable reader or ``timeout`` seconds; run ready readers."""
        poller = self._poller
        resting = self._rest_until - time.monotonic()
        if resting > 0:  # bulk readers had their share of the loop's time
            poller, timeout = self._quiet, min(timeout, resting)
        if timeout > 0 and self._queue.empty():
            self._sleeping = True
            try:
                ready = poller.poll(math.ceil(timeout * 1000) if self._queue.empty() else 0)
            finally:
                self._sleeping = False
        else:
            ready = poller.poll(0)
        # The callbacks as registered at the poll: one may close an fd and register
        # another under the same number, which must not be read for the old one.
        readers = [self._readers.get(fd) for fd, _ in ready]
        bulk: list[tuple[int, Callable[[], object]]] = []
        for (fd, _), reader in zip(ready, readers, strict=True):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif reader is None:
                continue
            elif fd in self._bulk:
                bulk.append((fd, reader))
            else:
                reader()
        if bulk or self._behind:
            self._run_bulk(bulk)

    def _run_bulk(self, ready: list[tuple[int, Callable[[], object]]]) -> None:
        """Run ready bulk readers, those left behind last time first, until the budget
        is spent; remember the rest (still readable: the next poll returns at once)."""
        order = {fd: place for place, fd in enumerate(self._behind)}
        ready.sort(key=lambda item: order.get(item[0], len(order)))  # stable
        self._behind = {}
        start = time.monotonic()
        for place, (fd, reader) in enumerate(ready):
            if place and time.monotonic() >= start + BULK_BUDGET_S:
                self._behind = dict.fromkeys(fd for fd, _ in ready[place:])
                break
            reader()
        end = time.monotonic()
        self._bulk_s += end - start
        if self._bulk_s >= BULK_REST_S:  # as long a rest as they took: half the loop's time
            self._rest_until, self._bulk_s = end + self._bulk_s, 0.0

    def get(self) -> Event | None:
        """The next posted event, or None (on the loop thread, the one taker: an event
        seen is still there; not raising queue.Empty saves 0.3 us a pass)."""
        if self._queue.empty():
            return None
        return self._queue.get_nowait()

    def close(self) -> None:
        for fd in list(self._readers):
            self.remove_reader(fd)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class InboxSink:
    """An executor's :class:`~processor.executor.Sink` into an inbox: events are
    posted, and descriptors are watched as the inbox's readers (by the loop)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def progress(self, job_id: str, fraction: float, message: str) -> None:
        self.inbox.post(("progress", job_id, fraction, message))

    def finished(self, outcome: Outcome) -> None:
        self.inbox.post(("finished", outcome))

    def slots_freed(self) -> None:
        self.inbox.post(("slots",))

    def watch(self, fd: int, callback: Callable[[], object], *, bulk: bool = False
              ) -> None:
        self.inbox.add_reader(fd, callback, bulk=bulk)

    def unwatch(self, fd: int) -> None:
        self.inbox.remove_reader(fd)
