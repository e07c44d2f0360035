"""The index's load at start, as the rest of statusd sees it while it runs.

statusd serves from the moment it listens, and its index of a large spool takes
seconds to load (a scan of the folders, a read and parse of every file, a sort).
This module owns what is known meanwhile:

* :class:`Loading`: how far the load is (its phase, the ids the scan found and how
  many of them are read, since when), how it ended (loaded, failed), and the flag that
  stops it halfway when statusd stops;
* :class:`ScanFigures`: what the start's scan alone tells of the spool (counts per
  state, the oldest pending job's age and the oldest due one's, the records written in
  the last minute), which ``/api/v1/stats`` and ``/metrics`` answer with until the
  index is whole: a real answer, as of the scan, never a half-built index's.

Guarantees: nothing here reads the index.  The worker thread that reads the files only
counts them (:meth:`Loading.advance`), which also raises :class:`LoadStopped` once
statusd stops, so a stop during the load does not wait for the rest of it; everything
else is set on the event loop.  The HTTP side of all this is :mod:`statusd.indexing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from spool.entries import Stamp as EntryStamp
from spool.reader import SpoolReader
from spool.states import TERMINAL, JobState
from spool.stats import first_due
from statusd.items import Stamp


class Phase(enum.StrEnum):
    """Where the load is; the value is what ``/healthz`` and the stats say."""

    SCANNING = "scanning"
    """Listing the state folders: nothing is known of the spool yet."""
    READING = "reading"
    """Reading and parsing every id's file: the scan's figures are known."""
    SORTING = "sorting"
    """Building the index's sorted keys from the items read."""
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"
    """statusd stops: the load was given up."""


class LoadStopped(Exception):
    """The load was given up halfway because statusd stops; nothing of it is kept."""


class Figures(Protocol):
    """What the stats document is made of: the index's, or a scan's (:class:`ScanFigures`)."""

    def counts(self) -> dict[str, int]: ...
    def oldest_pending_mtime_ns(self) -> int | None: ...
    def first_due_ns(self) -> int | None: ...
    def written_since(self, since_ns: int, until_ns: int) -> dict[str, int]: ...
    def tools(self) -> list[str]: ...  # most telling first: a cut keeps the head
    def counts_by_tool(self, tools: list[str]) -> dict[str, dict[str, int]] | None: ...


class ScanFigures(NamedTuple):
    """The stats document's spool figures from the start's scan alone: :class:`Figures`
    answered from the stamps (no record is read but the few pending jobs that decide the
    oldest due one)."""

    at: float
    """When the scan ended (wall clock, seconds): the figures are the spool then."""
    by_state: dict[str, int]
    arrived_ns: int | None
    """When the pending job that came first arrived in pending/ (its ctime)."""
    due_ns: int | None
    """The earliest moment a pending job may run (its arrival, or a later not_before or
    retry backoff's end)."""
    written: dict[JobState, list[int]]
    """The mtimes of the terminal records, per state, sorted."""

    def counts(self) -> dict[str, int]:
        return dict(self.by_state)

    def oldest_pending_mtime_ns(self) -> int | None:
        return self.arrived_ns

    def first_due_ns(self) -> int | None:
        return self.due_ns

    def written_since(self, since_ns: int, until_ns: int) -> dict[str, int]:
        return {state.value: bisect_left(times, until_ns + 1) - bisect_left(times, since_ns)
                for state, times in self.written.items()}

    def tools(self) -> list[str]:
        """None known: tool names are in the files, which the scan does not read."""
        return []

    def counts_by_tool(self, tools: list[str]) -> dict[str, dict[str, int]] | None:
        """Not known, for the same reason."""
        return None


def scan_figures(stamps: dict[str, Stamp], reader: SpoolReader, now: float) -> ScanFigures:
    """:class:`ScanFigures` of a scan's ``stamps`` (on the worker thread: it reads the few
    pending jobs that decide the oldest due one, as ``spoolq stats`` does)."""
    by_state = {s.value: 0 for s in JobState}
    written: dict[JobState, list[int]] = {s: [] for s in TERMINAL}
    pending: list[tuple[str, EntryStamp]] = []
    for job_id, stamp in stamps.items():
        by_state[stamp.state.value] += 1
        if stamp.state in TERMINAL:
            written[stamp.state].append(stamp.mtime_ns)
        elif stamp.state is JobState.PENDING:
            pending.append((job_id, EntryStamp(stamp.state, stamp.mtime_ns, stamp.ctime_ns)))
    for times in written.values():
        times.sort()
    # Arrival in pending/ is the ctime, as the index takes it (a copy may keep an old mtime).
    oldest = min((stamp.ctime_ns for _, stamp in pending), default=None)
    due = first_due(reader, pending)
    return ScanFigures(now, by_state, oldest, None if due is None else int(due * 1e9),
                       written)


class Loading:
    """How far the index's load is, and how it ended (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.phase = Phase.SCANNING
        self.started = clock()
        self.found: int | None = None
        """Ids the scan found (None while it scans)."""
        self.loaded = 0
        """Ids read and parsed so far (advanced by the worker thread)."""
        self.figures: ScanFigures | None = None
        """The scan's figures, from its end until the index is whole."""
        self.error: Exception | None = None
        """Why the load failed (:attr:`Phase.FAILED`)."""
        self._over = asyncio.Event()
        self._stop = threading.Event()

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def knows_spool(self) -> bool:
        """Whether the spool's figures are known: the index is loaded, or the start's
        scan is done (:attr:`figures`)."""
        return self.ready or self.figures is not None

    # -- the tracker's side -----------------------------------------------------------

    def begin(self) -> None:
        self.phase, self.started, self.found, self.loaded = Phase.SCANNING, self.clock(), None, 0

    def scanned(self, figures: ScanFigures) -> None:
        self.phase = Phase.READING
        self.figures = figures
        self.found = sum(figures.by_state.values())

    def sorting(self) -> None:
        self.phase = Phase.SORTING

    def done(self) -> None:
        self.phase = Phase.READY
        self.figures = None  # the index answers now; its written lists are let go
        self._over.set()

    def failed(self, exc: Exception) -> None:
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.FAILED
            self.error = exc
        self._over.set()

    def stop(self) -> None:
        """statusd stops: a load still running gives up at its next file, and whoever
        waits for it is woken (it is not loaded)."""
        self._stop.set()
        if not self.ready:
            self.phase = Phase.STOPPED
        self._over.set()

    def advance(self, files: int = 1) -> None:
        """``files`` more read (on the worker thread); LoadStopped once statusd stops."""
        if self._stop.is_set():
            raise LoadStopped("statusd stops")
        self.loaded += files

    # -- the readers' side ----------------------------------------------------------

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the load is over (loaded, failed or stopped), ``timeout_s`` at most;
        whether the index is loaded."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._over.wait()
        return self.ready

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def describe(self) -> str:
        """How far it is, for a person: "read 40,000 of 100,000 records, 3.2 s in"."""
        took = f"{self.elapsed_s():.1f} s in"
        if self.phase is Phase.SCANNING:
            return f"listing the spool's folders, {took}"
        if self.phase is Phase.READING:
            return f"read {self.loaded:,} of {self.found or 0:,} records, {took}"
        if self.phase is Phase.SORTING:
            return f"sorting {self.found or 0:,} records, {took}"
        return f"{self.phase.value}, {took}"

    def as_json(self) -> dict[str, Any]:
        """How far it is, for a program (``/healthz``)."""
        return {"phase": self.phase.value, "found": self.found, "loaded": self.loaded,
                "elapsed_s": round(self.elapsed_s(), 3)}

    def stats_info(self) -> dict[str, Any] | None:
        """The stats' ``statusd.indexing`` while the index loads: :meth:`as_json` and
        ``counts_at``, when the scan the figures are of ended; None once it is loaded."""
        if self.ready:
            return None
        info = self.as_json()
        if self.figures is not None:
            info["counts_at"] = datetime.fromtimestamp(self.figures.at, UTC)
        return info
