"""The in-memory index of every record in the spool: what REST pages and stats read.

Owns: the current item of each id, and sorted keys per filter so that a page
of a 100,000-record spool is a bisect and a slice, never a parse.

Keys are ``(submitted_us, id)`` (the order of :func:`spool.reader.sort_key`),
kept ascending in sorted lists (``sortedcontainers.SortedList``: an insert or a removal
is a bisect in one short sublist, where a plain list moved its whole tail, 1 ms a
transition at 1,000,000 records, and statusd fell minutes behind a drain: QA), one per
filter combination: any, per state, per tool, per (state, tool).  Pages walk them from
the end (newest first); a cursor is the key of the last row, so a page stays stable
while jobs move.
Terminal records' file mtimes are also kept, sorted, so the records written
since a moment (the stats' throughput) are a bisect, not a walk of 100,000 (the mtimes
alone, not ``(mtime_ns, id)`` pairs: only how many are counted, and a removal takes out
one equal mtime, whichever; a pair was a 56-byte tuple a record).

Pure data: no I/O, no clock, no locks; only the event loop thread mutates it (an
index built elsewhere, unseen, is swapped in whole: :meth:`Index.take`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList

from spool.states import TERMINAL, JobState
from statusd.items import Item, Stamp

Key = tuple[int, str]
Filter = tuple[JobState | None, str | None]


class Index:
    """Every id's current item, with sorted keys for each filter."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._items: dict[str, Item] = {}
        self._stamps: dict[str, Stamp] = {}
        self._keys: dict[Filter, SortedList] = {(None, None): SortedList()}
        self._arrived = _Earliest()  # pending ids: when they came into pending/
        self._due = _Earliest()  # pending ids: when they may run (arrival, not_before or backoff)
        self._written: dict[JobState, SortedList] = {s: SortedList() for s in TERMINAL}
        self._tools: list[str] | None = None
        """:meth:`tools` until the index next changes (0.09 s at 110,000 names)."""

    def __len__(self) -> int:
        return len(self._items)

    # -- writing --------------------------------------------------------------------

    def load(self, items: Iterable[Item]) -> None:
        """Replace the whole index (start-up): one sort, then appends in order."""
        self._reset()
        ordered = sorted(items, key=_key)
        keys: dict[Filter, list[Key]] = {(None, None): []}
        written: dict[JobState, list[int]] = {s: [] for s in TERMINAL}
        for item in ordered:
            self._items[item.job_id] = item
            self._stamps[item.job_id] = item.stamp
            for flt in _filters(item):
                found = keys.get(flt)
                if found is None:
                    keys[flt] = [item.key]
                else:
                    found.append(item.key)
            self._note_pending(item)
            if item.state in TERMINAL:
                written[item.state].append(item.stamp.mtime_ns)
        self._keys = {flt: SortedList(found) for flt, found in keys.items()}
        self._written = {state: SortedList(found) for state, found in written.items()}

    def take(self, other: Index) -> None:
        """Become ``other``, which is left empty: an index built apart (statusd's start
        builds it on a worker thread) swapped in at once, so nobody sees it half built."""
        mine, theirs = vars(self), vars(other)
        mine.update(theirs)
        other._reset()

    def put(self, item: Item) -> Item | None:
        """Insert or replace an id's item; returns the item it replaced."""
        old = self.remove(item.job_id)
        self._tools = None
        self._items[item.job_id] = item
        self._stamps[item.job_id] = item.stamp
        keys = self._keys
        for flt in _filters(item):
            found = keys.get(flt)
            if found is None:
                keys[flt] = SortedList([item.key])
            else:
                found.add(item.key)
        self._note_pending(item)
        if item.state in TERMINAL:
            self._written[item.state].add(item.stamp.mtime_ns)
        return old

    def remove(self, job_id: str) -> Item | None:
        old = self._items.pop(job_id, None)
        if old is None:
            return None
        self._tools = None
        del self._stamps[job_id]
        for flt in _filters(old):
            keys = self._keys[flt]
            keys.discard(old.key)
            if not keys and flt != (None, None):
                del self._keys[flt]
        self._arrived.discard(job_id)
        self._due.discard(job_id)
        if old.state in TERMINAL:
            self._written[old.state].discard(old.stamp.mtime_ns)
        return old

    def _note_pending(self, item: Item) -> None:
        if item.state is not JobState.PENDING:
            return
        # Arrival in pending/ (a rename sets ctime; a copy may keep an old mtime).
        arrived = item.stamp.ctime_ns
        self._arrived.add(item.job_id, arrived)
        self._due.add(item.job_id, max(arrived, item.due_ns or arrived))

    # -- reading ----------------------------------------------------------------------

    def get(self, job_id: str) -> Item | None:
        return self._items.get(job_id)

    def stamps(self) -> dict[str, Stamp]:
        """A copy of every id's stamp (for a rescan diff in another thread)."""
        return self._stamps.copy()

    def stamps_of(self, job_ids: Iterable[str]) -> dict[str, Stamp]:
        return {i: item.stamp for i in job_ids if (item := self._items.get(i)) is not None}

    def page(self, state: JobState | None, tool: str | None, limit: int,
             after: Key | None) -> tuple[list[Item], Key | None]:
        """Up to ``limit`` items older than ``after``, newest first, and the next cursor key."""
        keys = self._keys.get((state, tool), _NONE)
        end = keys.bisect_left(after) if after is not None else len(keys)
        start = max(0, end - limit)
        rows = [self._items[job_id] for _, job_id in reversed(keys[start:end])]
        return rows, (rows[-1].key if start > 0 and rows else None)

    def counts(self) -> dict[str, int]:
        return {s.value: len(self._keys.get((s, None), ())) for s in JobState}

    def counts_by_tool(self, tools: list[str]) -> dict[str, dict[str, int]]:
        """Jobs per state of each of ``tools``: the lengths of their filters' keys."""
        keys = self._keys
        return {tool: {s.value: len(keys.get((s, tool), ())) for s in JobState}
                for tool in tools}

    def oldest_pending_mtime_ns(self) -> int | None:
        """When the pending job that came first arrived in pending/ (its ctime)."""
        return self._arrived.first()

    def first_due_ns(self) -> int | None:
        """The earliest moment a pending job may run: its arrival, or its ``not_before`` or
        its retry backoff's end when later (in the future when no pending job is due yet)."""
        return self._due.first()

    def written_since(self, since_ns: int, until_ns: int) -> dict[str, int]:
        """Terminal records by state whose file was written from ``since_ns`` to
        ``until_ns`` (one dated later was written before the wall clock stepped back)."""
        return {state.value: written.bisect_left(until_ns + 1) - written.bisect_left(since_ns)
                for state, written in self._written.items()}

    def tools(self) -> list[str]:
        """The tools named in the spool, those that ever ran first (a record in ``done/``),
        then by how many jobs name them: a cut keeps real tools before made-up names."""
        if self._tools is None:
            keys = self._keys

            def rank(tool: str) -> tuple[bool, int, str]:
                return (not keys.get((JobState.DONE, tool)), -len(keys[(None, tool)]), tool)

            self._tools = sorted((t for s, t in keys if s is None and t is not None),
                                 key=rank)
        return self._tools


_NONE = SortedList()
"""The keys of a filter that matches nothing (never changed)."""


class _Earliest:
    """The earliest of per-id times, kept without a walk at each change: a removal
    only marks it stale, and the next read walks once."""

    def __init__(self) -> None:
        self._times: dict[str, int] = {}
        self._first: int | None = None
        self._stale = False

    def add(self, job_id: str, when: int) -> None:
        self._times[job_id] = when
        if not self._stale and (self._first is None or when < self._first):
            self._first = when

    def discard(self, job_id: str) -> None:
        if self._times.pop(job_id, None) is not None:
            self._stale = True

    def first(self) -> int | None:
        if self._stale:
            self._first = min(self._times.values(), default=None)
            self._stale = False
        return self._first


def _key(item: Item) -> Key:
    return item.key


def _filters(item: Item) -> tuple[Filter, ...]:
    if item.tool is None:
        return ((None, None), (item.state, None))
    return ((None, None), (item.state, None), (None, item.tool), (item.state, item.tool))
