"""Runs that end behind a new drop of their id: counted in the metrics all the same.

An id has one state, and a drop waiting behind its own run tells it (pending,
DESIGN section 9), so that run's record lands with no change of the id's state
and no transition to announce: an integration that re-drops a fixed id before
its run ends had every other run missing from ``spoolq_transitions_total``, the
failures and the durations.  :class:`RecordsBehind` counts such a record when a
hint from ``done/`` or ``failed/`` names an id still active (pending, or running
once that drop is claimed), unless it is the record the id was before it became
active (the one a re-drop of a finished id waits in front of, touched, say), the
drop's own run (ended before the index saw the drop claimed: :func:`_own_run`), or one
counted so already.  Only the metrics are told: the streams follow the id's
state, which is the drop's.  The tracker reads the records (in its worker
thread) and calls this on the event loop.

Hints are not the only way: following the spool by rescans (inotify's limits reached)
there are none, and every such run went uncounted.  So each rescan's stamps of the
records behind active ids (:func:`statusd.scan.scan_spool`) are compared with the last
rescan's, and the ids whose record changed are read as a hint's are (the stamps found
at start-up are only noted: what was there then is no run statusd saw end).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from spool.states import ACTIVE, TERMINAL, JobState
from statusd.index import Index
from statusd.items import Item, Stamp, parse_ts
from statusd.metrics import Metrics


def _own_run(record: Item, item: Item) -> bool:
    """Whether ``record`` is the run of the drop ``item`` is, ended before the index saw
    it claimed or finished (a retry, a re-drop run at once): counted as its transition
    once it does.  As a hint batch read it pending and then looked for a run behind it,
    its own record was counted twice (QA: 202 failures for 200 runs).  Of one drop (the
    same sort key, which a re-drop of the same bytes shares too), and started once that
    drop was there: after the pending file came (its ctime: the kernel's coarse clock,
    never late), or as the running one did."""
    if record.key != item.key:
        return False
    started = _started_us(record.summary)
    if started is None:  # no run: the drop's own cancel or quarantine, as it was
        return True
    if item.state is JobState.RUNNING:
        return started == _started_us(item.summary)
    return started * 1000 >= item.stamp.ctime_ns


def _started_us(summary: bytes) -> int | None:
    try:
        doc = orjson.loads(summary)
    except orjson.JSONDecodeError:
        return None
    return parse_ts(doc.get("started_at")) if isinstance(doc, dict) else None


class RecordsBehind:
    """The terminal record known behind each active id, and the count of new ones."""

    def __init__(self, index: Index, metrics: Metrics) -> None:
        self.index = index
        self.metrics = metrics
        self._known: dict[str, bytes] = {}
        """Active ids that were terminal: the summary of the record they were."""
        self._stamps: dict[str, Stamp] = {}
        """The last scan's stamp of the record behind each active id that has one."""

    def applied(self, old: Item | None, new: Item) -> None:
        """``new`` replaced ``old`` in the index."""
        if new.state not in ACTIVE:
            self._known.pop(new.job_id, None)
        elif old is not None and old.state in TERMINAL:
            self._known[new.job_id] = old.summary

    def removed(self, job_id: str) -> None:
        self._known.pop(job_id, None)

    def active(self, job_ids: Iterable[str]) -> list[str]:
        """Those of ``job_ids`` whose state is pending or running: a record of one of
        them is behind it (for any other, the record is its state, counted as it came)."""
        return [job_id for job_id in job_ids
                if (item := self.index.get(job_id)) is not None and item.state in ACTIVE]

    def changed(self, behind: dict[str, Stamp]) -> list[str]:
        """The ids whose record behind their drop is new since the last scan (``behind``:
        this scan's, :func:`statusd.scan.scan_spool`)."""
        return [job_id for job_id, stamp in behind.items()
                if self._stamps.get(job_id) != stamp]

    def rescanned(self, behind: dict[str, Stamp]) -> list[str]:
        """:meth:`changed`, and ``behind`` kept as the last scan's."""
        changed = self.changed(behind)
        self._stamps = behind
        return changed

    def found(self, records: Iterable[Item]) -> None:
        """The terminal records read for active ids: each new one counted once."""
        for record in records:
            item = self.index.get(record.job_id)
            if (item is None or item.state not in ACTIVE
                    or self._known.get(record.job_id) == record.summary
                    or _own_run(record, item)):
                continue
            self._known[record.job_id] = record.summary
            self.metrics.observe_terminal(record)
