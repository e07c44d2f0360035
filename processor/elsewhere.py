"""Tools another live processor on the spool offers and this one does not.

Several processors may share a spool (DESIGN section 8), and during a rolling upgrade
they may load different tools (one with a new ``SPOOL_TOOLS`` module, one not yet).
``spoolq submit`` and ``POST /api/v1/tasks`` check a job's tool against the live
processors' catalogues merged, so they take a job only one of them can run; claimed by
one that does not know its tool, it failed ``unknown_tool`` though another live
processor offered it (h394: 12 of 20 such jobs).  Such a job is left in ``pending/``
for the processors that offer its tool, set aside by tool (``Queues.park``), and taken
back only once none offers it.

Guarantees:

* a job is left only while another processor holding its lock, not stopping and not
  hung (its heartbeat under ``HEARTBEAT_STALE_S`` old, as ``spoolq stats`` calls it
  alive), publishes a catalogue that names its tool (read at each heartbeat, at most
  once a ``recheck_s``), or did in the last ``grace_s`` (:data:`RESTART_GRACE_S` past
  the stop's grace: a restart; one that died holding no lock counts from its last
  heartbeat, by the status file its crash left, also for a processor started since);
  when none does (gone, stopping, hung, or ``owners/`` unreadable, for that long), it
  fails ``unknown_tool`` as on a spool of one processor: nothing waits for ever;
* a processor that has not said its tools yet (its lock file has no status file beside
  it: its tools loading, the lock taken before them; or it died so, until a recovery
  removes the lock file) may offer any tool: every job of a tool this one does not load
  is left to it for ``grace_s`` from its start (the lock file's mtime), or until its
  status file says which tools it offers (the rolling-upgrade soak, seeds 3 and 7: 66,
  142 and 18 of 825 failed ``unknown_tool`` while the only processor offering their
  tool was starting).  So a processor that keeps starting and failing (a restart loop)
  keeps the jobs of a tool none offers waiting for as long as the loop lasts;
* a tool none offers is looked up afresh (a read at most :data:`FRESH_S` old) before
  its job fails ``unknown_tool``, and its mark too (:mod:`spool.offer_marks`): one offered by
  any processor in the last ``grace_s`` is left for that long, though this one never
  saw its offer (it stopped cleanly, or was killed, before this one's first read; it
  was on the spool for less than a read's interval; its restart was killed before its
  lock).  So after a processor restarts without a tool it offered, that tool's jobs wait
  for the grace before they fail;
* a tool this processor knows is never looked up here (the dispatch's hot path);
* an orphan of such a tool (its processor died mid-run) is settled by this one's
  recovery with the ``max_attempts`` that processor published for the tool, or, not
  known here, requeued for the processor that claims it to judge: with a limit of 1 it
  failed ``abandoned`` ("attempt 1 of 1, not retried"), a tool's 3 notwithstanding (h402).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

from spool.layout import Layout
from spool.lease import heartbeat_fresh
from spool.models import OwnerStatus
from spool.offer_marks import RESTART_GRACE_S, offered_within
from spool.stats import dead_processors, readable_processors, unannounced_processors

__all__ = ["FRESH_S", "MARKED", "RESTART_GRACE_S", "OtherCatalogues"]

log = logging.getLogger("spoolq.processor")

FRESH_S = 0.1
"""How old the last read of the catalogues may be when a tool none offers is looked up
before they are read again.  Read only once a heartbeat, a processor that started beside
another (a host's reboot) judged its first jobs by its read before its own start, which
came before the other's lock: it failed the jobs of the other's tools ``unknown_tool``
(the rolling-upgrade soak, seed 7: 18)."""

MARKED = "a processor gone since"
"""What :meth:`OtherCatalogues.offered_by` names for a tool no processor offers now but
one did in the last ``grace_s``, by its mark alone (:mod:`spool.offer_marks`)."""


class OtherCatalogues:
    """The tools the other live processors of ``layout`` offer (``owner`` is this one)."""

    def __init__(self, layout: Layout, owner: str, recheck_s: float,
                 grace_s: float = RESTART_GRACE_S) -> None:
        """``grace_s``: how long a tool stays offered by a processor that offered it last
        (stopping, hung, gone: a restart; see :data:`RESTART_GRACE_S`)."""
        self.layout = layout
        self.owner = owner
        self.recheck_s = recheck_s
        self.grace_s = grace_s
        # tool -> (an owner, last seen, its max_attempts there)
        self._offered: dict[str, tuple[str, float, int | None]] = {}
        self._read_at: float | None = None
        # owner -> since when (monotonic) of the processors that have not said their
        # tools yet: starting, or died starting (see unannounced_processors)
        self._starting: dict[str, float] = {}
        # The owners seen with a status file, while their lock file stays: one whose
        # status file goes first (a clean stop, a recovery: both remove it before the
        # lock file) is stopping or dead, not starting.
        self._announced: set[str] = set()
        self._said: set[str] = set()  # tools whose jobs were said to be left to others
        self._marked: dict[str, float] = {}  # tool -> its mark's date (wall), last looked
        # At once: before this processor's recovery removes the status files crashes left.
        self._refresh(time.monotonic())

    def offered_by(self, tool: str) -> str | None:
        """An owner of another live processor that offers ``tool``, or offered it in the
        last ``grace_s`` (restarting, say); else None."""
        seen = self._seen(tool)
        owner = None if seen is None else seen[0]
        if owner is not None and tool not in self._said:
            self._said.add(tool)
            if owner == MARKED:
                log.info("jobs of a tool this processor does not load are left for a "
                         "restart's grace: no processor offers it now, one did lately",
                         extra={"fields": {"tool": tool, "offered_s_ago": round(
                             time.time() - self._marked[tool], 1)}})
            elif owner in self._starting and tool not in self._offered:
                log.info("jobs of a tool this processor does not load are left while a "
                         "processor starts that may offer it",
                         extra={"fields": {"tool": tool, "starting": owner}})
            else:
                log.info("jobs of a tool this processor does not load are left to the "
                         "processors that offer it",
                         extra={"fields": {"tool": tool, "offered_by": owner}})
        return owner

    def max_attempts(self, tool: str) -> int | None:
        """The ``max_attempts`` a processor that offers ``tool`` (or offered it in the last
        ``grace_s``: one that died mid-run, say) publishes for it; None when none is known
        here."""
        seen = self._seen(tool)
        return None if seen is None else seen[2]

    def refresh(self) -> None:
        """Read the others' catalogues now, unless read in the last ``recheck_s``: at each
        heartbeat, so what another processor offers is remembered from while it ran.
        Read only at the start and when a job of a tool this one does not load came, a
        processor that had met none for ``grace_s`` knew nothing of the one offering it:
        that one's restart (a stop; a SIGKILL, its status file removed by this one's
        recovery within a scan) made it fail every job of the tool dropped meanwhile
        ``unknown_tool`` at once (h403)."""
        self._seen("")

    def read_now(self) -> None:
        """Read the catalogues now, however recent the last read: as the processor is
        made, just before its recovery removes the files crashes left.  Read first as
        the lease was taken (daemon.others_at_start), a processor killed while this one
        loaded its tools (its lock file, or its status file) would be seen by no read:
        within ``recheck_s`` of that one, and this one's recovery removes it next."""
        now = time.monotonic()
        self._read_at = now
        self._refresh(now)

    def _seen(self, tool: str) -> tuple[str, float, int | None] | None:
        """What ``tool`` was last seen offered by (an owner, when, its limit); a
        processor that has not said its tools yet (starting, or died starting, in the
        last ``grace_s``) offers any, with no limit known; else, its mark under
        ``grace_s`` old (:data:`MARKED`, no limit known: a processor that offered it and
        stopped, or died, before any read here saw it).  "" is no tool: the read
        alone."""
        now = time.monotonic()
        if (self._read_at is None or now - self._read_at >= self.recheck_s
                or (tool and tool not in self._offered and not self._starting
                    and now - self._read_at >= FRESH_S)):
            self._read_at = now
            self._refresh(now)
        if (seen := self._offered.get(tool)) is not None or not tool:
            return seen
        for owner, since in self._starting.items():
            return owner, since, None
        wall = time.time()
        if (age := offered_within(self.layout, tool, self.grace_s, wall)) is None:
            self._marked.pop(tool, None)
            return None
        self._marked[tool] = wall - age
        return MARKED, now - age, None

    def _refresh(self, now: float) -> None:
        """Read the catalogues again: what each tool was last seen offered by, and which
        processors have not said their tools yet, each kept for ``grace_s``."""
        offered = {name: seen for name, seen in self._offered.items()
                   if now - seen[1] < self.grace_s}
        announced: set[str] = set()
        for name, seen in self._read(now, announced):
            if seen[1] > offered.get(name, ("", -math.inf, None))[1]:
                offered[name] = seen
        self._offered = offered
        starting = {owner: since for owner, since in self._starting.items()
                    if now - since < self.grace_s and owner not in announced}
        unannounced = unannounced_processors(self.layout)
        known = self._announced | announced
        wall = time.time()
        for owner, lock in unannounced:
            age = wall - lock.st_mtime
            # Its status file seen before and gone now: read between the two removals of
            # a stop or a recovery, it was taken for a start, and every job of a tool no
            # processor offers waited for the grace from that processor's start.
            if owner != self.owner and owner not in known and abs(age) < self.grace_s:
                starting.setdefault(owner, now - max(age, 0.0))
        self._starting = starting
        self._announced = known & (announced | {owner for owner, _ in unannounced})
        if not starting:  # said again once offered anew
            self._said &= offered.keys() | {
                tool for tool, at in self._marked.items() if wall - at < self.grace_s}

    def _read(self, now: float, announced: set[str]
              ) -> Iterator[tuple[str, tuple[str, float, int | None]]]:
        """Each tool offered, with (its owner, when last seen offered, its limit): by the
        live processors, claiming (not stopping, not hung), now; by those that died
        holding no lock any more, at their last heartbeat, from the status files a crash
        left until a recovery removes them.  What it remembered was this processor's own
        since its start: started beside a processor restarting after a SIGKILL, which
        offered a tool it does not load, or seeing one alive at its start and dead at its
        first look, it failed that tool's waiting jobs ``unknown_tool`` at once (h402: 127
        of 825 in a soak of two processors killed and restarted)."""
        wall = time.time()
        for status in readable_processors(self.layout) or ():
            announced.add(status.owner)
            # One seen starting (it might offer any tool) whose first status is a
            # stopping one (a stop sent while it started) offered what it publishes until
            # now: forgotten at this read, its tools' jobs failed until its restart took
            # its lock (h414: the rolling-upgrade soak, seed 23, 53 of 825).
            if status.owner != self.owner and (
                    (not status.stopping and heartbeat_fresh(status, wall))
                    or status.owner in self._starting):
                for name, limit in _offers(status):
                    yield name, (status.owner, now, limit)
        for status in dead_processors(self.layout):
            announced.add(status.owner)
            age = wall - status.heartbeat_at.timestamp()
            if status.owner != self.owner and 0 <= age < self.grace_s:
                for name, limit in _offers(status):
                    yield name, (status.owner, now - age, limit)


def _offers(status: OwnerStatus) -> Iterator[tuple[str, int | None]]:
    """The tools ``status`` publishes, each with its ``max_attempts`` (None: not one)."""
    for raw in status.tools:
        name, limit = raw.get("name"), raw.get("max_attempts")
        if isinstance(name, str):
            yield name, limit if type(limit) is int and limit >= 1 else None
