"""``purge``: finished jobs' records removed once old (``spoolq purge``, ``Client.purge``)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from spool.fsops import Mover
from spool.kept import held_by_record_file
from spool.reader import scan_folder
from spool.states import TERMINAL, JobState
from spool.transitions import Spool

PURGE_THREADS = 4
"""Unlinks purge keeps in flight: on ext4 mounted ``discard`` without a journal each
unlink of a written-out record waits for its blocks' discard (0.1 to over 1 ms); four
at once took a purge of 20,000 from 3.8 to 7.2 s down to 1.9 to 2.5 s (docs/operations.md)."""
_BATCH = 512  # records handed to the threads at once: bounded memory on any spool


@dataclass(frozen=True, slots=True)
class PurgeReport:
    removed: int
    kept: int
    """Records not removed: newer than the cutoff, or ``held``."""
    held: tuple[str, ...] = ()
    """The ``kept_at`` of each old record kept as its kept entry is still there."""


def purge(spool: Spool, older_than_s: float, states: Iterable[JobState] = TERMINAL, *,
          dry_run: bool = False) -> PurgeReport:
    """Remove terminal records (and quarantined originals) finished before the cutoff.

    The record of a kept entry (``source.kept_at``: another user's directory spoolq
    renamed within its folder, which every pass ignores) stays while that entry is
    there, as nothing else accounts for it; it goes once an operator has removed the
    entry (:func:`spool.kept.held_by_record_file`).  ``dry_run`` counts what would go
    and removes nothing.
    """
    layout = spool.layout
    cutoff_ns = int((spool.clock.now().timestamp() - older_than_s) * 1e9)
    removed = kept = 0
    held: list[str] = []
    batch: list[list[Path]] = []
    remove = partial(_remove_in_order, spool.mover)
    with ThreadPoolExecutor(PURGE_THREADS, thread_name_prefix="purge") as pool:
        for state in states:
            if state not in TERMINAL:
                raise ValueError(f"purge removes finished jobs only, not {state}")
            for entry in scan_folder(layout, state, files_only=False):  # junk too
                if entry.mtime_ns >= cutoff_ns:
                    kept += 1
                    continue
                if state is JobState.FAILED and (kept_at := held_by_record_file(
                        layout, entry.path)) is not None:
                    kept += 1  # the one thing that accounts for an entry still there
                    held.append(kept_at)
                    continue
                if dry_run:
                    removed += 1
                    continue
                # A failed record's original goes first: never an original left alone.
                batch.append([layout.original(entry.job_id), entry.path]
                             if state is JobState.FAILED else [entry.path])
                if len(batch) >= _BATCH:
                    removed += sum(pool.map(remove, batch))
                    batch.clear()
        removed += sum(pool.map(remove, batch))
    spool.mover.flush()
    return PurgeReport(removed, kept, tuple(held))


def _remove_in_order(mover: Mover, paths: list[Path]) -> bool:
    """Unlink ``paths`` in turn; whether the last (the record) was there."""
    found = False
    for path in paths:
        found = mover.unlink(path)
    return found
