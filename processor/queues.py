"""The jobs one processor has judged ready and not yet claimed, in their queues.

A ready job (a :class:`~spool.intake.Candidate`) waits in one of three places
until its lane has room:

* its lane's queue, FAST or COMPUTE: a heap, highest ``priority`` first, then the
  oldest drop, then the first seen (compared in C, never up to the candidate);
* ``delayed``, while its ``not_before`` or its retry's backoff (``error.retry_at``) is
  ahead (wall-clock time, :meth:`~spool.models.Job.due_at`), or its file, written in
  place, is left to its writer a moment (:attr:`~spool.intake.Candidate.settles_at`);
* ``blocked``, while a run of its id goes on (an id never runs twice at once);
* ``parked``, by tool, while another live processor offers a tool this one does not load
  (:mod:`processor.elsewhere`): looked at again only once no other one offers it
  (:meth:`Queues.unpark`), not each heartbeat.  Delayed a heartbeat at a time instead,
  12,000 such jobs were each taken from the queues, read again (past ``LEAN_ABOVE``) and
  put back every second: half a core of the 2-CPU machine, for jobs another ran (h398).

``ready`` holds the newest candidate of each id: an entry of an older one left in a
queue is skipped when it comes up (a newer drop superseded it, or it went).  A job
whose file left ``pending/`` unclaimed (cancelled, withdrawn, claimed by another
processor) is forgotten at the next rescan (:meth:`Queues.withdraw`), and a queue
whose skipped entries outnumber the rest is rebuilt without them: what one processor
holds is bounded by what ``pending/`` holds, not by the jobs cancelled or re-dropped
before their ``not_before`` (a delayed entry otherwise stayed until it came due).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from processor.tools import ExecutionMode
from spool.intake import Candidate

_SEQ = itertools.count()
"""Tie-breaker for heap entries, so candidates themselves are never compared."""

_Queued = tuple[int, int, str, int, Candidate]
"""(-priority, submitted_ns, id, seq, candidate)."""
LEAN_ABOVE = 10_000
"""Past this many ready jobs, one queued keeps its file's bytes and not its parsed job
(about 1 KB less a job; read again when its turn comes, tens of microseconds)."""
COMPACT_MIN = 64
"""A queue is rebuilt without its skipped entries once it holds more than twice the
ready jobs and this many more."""


class Queues:
    """The ready jobs of one processor; ``mode_of`` names a tool's lane."""

    def __init__(self, mode_of: Callable[[str], ExecutionMode]) -> None:
        self.mode_of = mode_of
        self.ready: dict[str, Candidate] = {}
        self.lanes: dict[ExecutionMode, list[_Queued]] = {m: [] for m in ExecutionMode}
        self.delayed: list[tuple[float, int, Candidate]] = []
        self.blocked: dict[str, Candidate] = {}
        self.parked: dict[str, list[Candidate]] = {}  # tool -> jobs left to other processors

    def add(self, cand: Candidate) -> None:
        """``cand`` is ready: queued in its lane, or delayed until it is due (its
        ``not_before``, or its retry's backoff)."""
        self.ready[cand.job_id] = cand
        job = cand.job
        due = job.due_at()
        at = max(due.timestamp() if due is not None else 0.0, cand.settles_at)
        if at > time.time():
            heapq.heappush(self.delayed, (at, next(_SEQ), cand))
            self._compact(self.delayed)
        else:
            lane = self.lanes[self.mode_of(job.tool)]
            heapq.heappush(lane, (-job.priority, cand.submitted_ns, cand.job_id, next(_SEQ),
                                  cand))
            self._compact(lane)
        if len(self.ready) > LEAN_ABOVE:
            cand.shed()

    def withdraw(self, job_ids: Iterable[str]) -> None:
        """The files of ``job_ids`` left ``pending/`` unclaimed: no longer ready."""
        for job_id in job_ids:
            self.ready.pop(job_id, None)
        self._compact(self.delayed)
        for lane in self.lanes.values():
            self._compact(lane)
        self._compact_parked()  # those another processor claimed

    def park(self, cand: Candidate, tool: str) -> None:
        """``cand`` (just popped) is left to the processors that offer ``tool``: ready
        still (a rescan, a cancel find it so), queued again by :meth:`unpark`."""
        self.ready[cand.job_id] = cand
        self.parked.setdefault(tool, []).append(cand)
        self._compact_parked()  # re-drops of parked ids

    def _compact_parked(self) -> None:
        """Drop the parked candidates no longer ready, as :meth:`_compact` does a queue's:
        once they outnumber the ready (a rebuild at each withdraw walked every parked job:
        a drain of 12,000 by the processor they were left to, a batch of ids a pass,
        O(n^2))."""
        if sum(map(len, self.parked.values())) > 2 * len(self.ready) + COMPACT_MIN:
            ready = self.ready
            self.parked = {tool: live for tool, parked in self.parked.items()
                           if (live := [c for c in parked if ready.get(c.job_id) is c])}

    def left_counts(self) -> dict[str, int]:
        """How many jobs are parked, by tool (those still ready: :meth:`_compact_parked`
        drops the others only now and then), for the status file."""
        ready = self.ready
        counts = {tool: sum(ready.get(c.job_id) is c for c in parked)
                  for tool, parked in self.parked.items()}
        return {tool: n for tool, n in counts.items() if n}

    def unpark(self, tool: str) -> None:
        """No other processor offers ``tool`` now: its parked jobs go back to their lane,
        in their order, as if just judged."""
        for cand in self.parked.pop(tool, ()):
            if self.ready.get(cand.job_id) is cand:
                del self.ready[cand.job_id]
                self.add(cand)

    def _compact(self, queue: list[Any]) -> None:
        """Rebuild ``queue`` (in place: a caller may hold it) once its skipped entries
        outnumber its live ones and COMPACT_MIN: a live entry is a ready candidate, so a
        queue over twice ``ready`` is mostly skipped entries, and each rebuild is paid for
        by the entries it drops."""
        if len(queue) > 2 * len(self.ready) + COMPACT_MIN:
            queue[:] = self.live(queue)
            heapq.heapify(queue)

    def live(self, queue: list[Any]) -> list[Any]:
        """``queue``'s entries whose candidate is still ready (the others are skipped when
        they come up), in its order."""
        ready = self.ready
        return [e for e in queue if ready.get(e[-1].job_id) is e[-1]]

    def promote_due(self) -> None:
        """Queue the delayed jobs that have come due (``Job.due_at``)."""
        now = time.time()
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, cand = heapq.heappop(delayed)
            if self.ready.get(cand.job_id) is cand:
                del self.ready[cand.job_id]
                self.add(cand)

    def next_due(self) -> float | None:
        """Seconds until the first delayed job is due (may be negative); None: none waits."""
        return self.delayed[0][0] - time.time() if self.delayed else None

    def pop(self, mode: ExecutionMode, running: Callable[[str], bool]) -> Candidate | None:
        """The next job of ``mode``'s lane, no longer ready; None when the lane is empty.
        One whose id is ``running`` is set aside in ``blocked`` (see :meth:`unblock`)."""
        lane = self.lanes[mode]
        while lane:
            cand = heapq.heappop(lane)[-1]
            if self.ready.get(cand.job_id) is not cand:
                continue  # superseded by a newer drop or already gone
            if running(cand.job_id):
                self.blocked[cand.job_id] = cand  # same id running: waits its turn
                continue
            del self.ready[cand.job_id]
            return cand
        return None

    def unblock(self, job_id: str) -> None:
        """The runs of ``job_id`` are over: the drop that waited for them is queued."""
        waiting = self.blocked.pop(job_id, None)
        if waiting is not None and self.ready.get(job_id) is waiting:
            del self.ready[job_id]
            self.add(waiting)
