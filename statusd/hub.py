"""Fan-out of spool events to WebSocket clients, each through its own bounded queue.

Guarantees:

* :meth:`Hub.publish` never awaits: it offers one pre-encoded message to each
  interested subscriber's queue with ``put_nowait``.  A subscriber whose queue
  is full is dropped on the spot (its pump task is cancelled and its socket
  closed by the handler), so a stalled client never delays the others.
* Messages are encoded once per event (bytes), not once per client; an events
  subscriber that asked for brief rows (``view=brief``) gets the event's brief
  message, the others its full one.
* A task subscriber is told which message is terminal, so its pump can end the
  stream after sending it; and when its task has left the spool (:meth:`Hub.end`),
  after the messages queued before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

QUEUE_MAX = 1024
"""Messages a client may fall behind by before it is dropped.  Generous, because one
rescan or feed batch can publish hundreds of transitions at once; cheap, because
queued messages are shared bytes objects, not copies."""
SETTLE_BUDGET_S = 0.05
"""How long a publisher of a long batch waits, per chunk, for clients to catch up."""


@dataclass(frozen=True, slots=True)
class Message:
    data: bytes
    terminal: bool = False


GONE = Message(b"", terminal=True)
"""Queued to a task's subscribers when the task has left the spool: nothing to send,
the stream ends (see :meth:`Hub.end`)."""


@dataclass(eq=False, slots=True)
class Subscriber:
    """One WebSocket client: what it listens to and its queue."""

    job_id: str | None
    with_progress: bool
    brief: bool = False
    """An events subscriber that takes brief rows (see :meth:`Hub.publish`)."""
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False
    gone: bool = False
    """Its task left the spool (:data:`GONE` was queued)."""
    pump: asyncio.Task[None] | None = None

    def offer(self, message: Message) -> bool:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def drop(self) -> None:
        """Stop sending to this client; its handler notices the cancelled pump and closes."""
        self.dropped = True
        if self.pump is not None:
            self.pump.cancel()


class Hub:
    """Subscribers of the events stream and of single tasks."""

    def __init__(self, queue_max: int = QUEUE_MAX) -> None:
        self.queue_max = queue_max
        self._events: set[Subscriber] = set()
        self._tasks: dict[str, set[Subscriber]] = {}
        self.dropped_total = 0

    def subscribe(self, job_id: str | None, *, with_progress: bool = True,
                  brief: bool = False) -> Subscriber:
        sub = Subscriber(job_id, with_progress, brief, asyncio.Queue(self.queue_max))
        if job_id is None:
            self._events.add(sub)
        else:
            self._tasks.setdefault(job_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.job_id is None:
            self._events.discard(sub)
            return
        subs = self._tasks.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._tasks[sub.job_id]

    @property
    def clients(self) -> int:
        return len(self._events) + sum(len(s) for s in self._tasks.values())

    def wants(self, job_id: str) -> bool:
        """True when anyone would receive an event about ``job_id`` (skip encoding if not)."""
        return bool(self._events) or job_id in self._tasks

    def publish(self, job_id: str, *, events: Message | None, task: Message | None,
                progress: bool = False, brief: Message | None = None) -> None:
        """Offer ``events`` to the events stream (``brief``, when given, to its subscribers
        of brief rows) and ``task`` to the id's own streams."""
        if events is not None:
            for sub in list(self._events):
                message = brief if sub.brief and brief is not None else events
                if (progress and not sub.with_progress) or sub.offer(message):
                    continue
                self._drop(sub)
        if task is not None:
            for sub in list(self._tasks.get(job_id, ())):
                if not sub.offer(task):
                    self._drop(sub)

    def end(self, job_id: str) -> None:
        """The task ``job_id`` has left the spool: its streams end once they have sent
        what was queued before."""
        for sub in list(self._tasks.get(job_id, ())):
            sub.gone = True
            if not sub.offer(GONE):
                self._drop(sub)

    async def settle(self, budget_s: float = SETTLE_BUDGET_S) -> None:
        """Let the clients' pumps run until no queue is over half full, or ``budget_s``
        has passed (a stalled client is then left to fall behind and be dropped).

        For a publisher of a long batch: without it, a batch of more than
        ``queue_max`` events filled every queue in one loop step, so even clients
        that keep up were dropped.
        """
        deadline = time.monotonic() + budget_s
        while True:
            await asyncio.sleep(0)
            if self._backlog() <= self.queue_max // 2 or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.001)

    def _backlog(self) -> int:
        subs = [*self._events, *(s for group in self._tasks.values() for s in group)]
        return max((s.queue.qsize() for s in subs), default=0)

    def cut_off(self, sub: Subscriber) -> None:
        """``sub``'s client took nothing of a waiting message and its connection was cut
        (:class:`~statusd.sending.StallGuard`), or answered no ping in time: it fell
        behind too (or is gone), and is counted so."""
        if not sub.dropped:
            sub.dropped = True
            self.dropped_total += 1

    def _drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub)
        self.dropped_total += 1
        sub.drop()
