"""Runs that end behind a new drop of their id: counted in the metrics all the same.

An id has one state, and a drop waiting behind its own run tells it (pending,
DESIGN section 9), so that run's record lands with no change of the id's state
and no transition to announce: an integration that re-drops a fixed id before
its run ends had every other run missing from ``spoolq_transitions_total``, the
failures and the durations.  :class:`RecordsBehind` counts such a record when a
hint from ``done/`` or ``failed/`` names an id still active (pending, or running
once that drop is claimed), unless it is the record the id was before it became
active (the one a re-drop of a finished id waits in front of, touched, say) or
one counted so already.  Only the metrics are told: the streams follow the id's
state, which is the drop's.  The tracker reads the records (in its worker
thread) and calls this on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from spool.states import ACTIVE, TERMINAL
from statusd.index import Index
from statusd.items import Item
from statusd.metrics import Metrics


class RecordsBehind:
    """The terminal record known behind each active id, and the count of new ones."""

    def __init__(self, index: Index, metrics: Metrics) -> None:
        self.index = index
        self.metrics = metrics
        self._known: dict[str, bytes] = {}
        """Active ids that were terminal: the summary of the record they were."""

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

    def found(self, records: Iterable[Item]) -> None:
        """The terminal records read for active ids: each new one counted once."""
        for record in records:
            item = self.index.get(record.job_id)
            if (item is None or item.state not in ACTIVE
                    or self._known.get(record.job_id) == record.summary):
                continue
            self._known[record.job_id] = record.summary
            self.metrics.observe_terminal(record)
