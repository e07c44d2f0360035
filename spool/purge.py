"""``purge``: finished jobs' records removed once old (``spoolq purge``, ``Client.purge``).

Guarantee: purge removes only the file it judged old.  It lists a folder first and
removes later, and a re-drop of a finished id may finish in between: the new run's
record then replaces the old one by rename (DESIGN section 9), under the same name.
So a record is moved where moves stage (``purge-<state>-<id>``, see
:meth:`spool.fsops.Mover.action_staging`) and removed only when it is the inode that
was listed; a newer record taken by mistake goes back.  A purge that dies in between
leaves the staged record to recovery, which puts it back unless a newer one stands
there (:class:`spool.staged.Staged`); the next purge takes it again.  A quarantined
original goes before its record (once the record is seen to be the one listed), never
after, unless a quarantine in flight placed it (its note in ``stage/`` says so): a
re-drop's, whose own record is on its way.  A removal the disk fails (EIO) puts its
record back and the purge goes on with the others (``PurgeReport.unremoved``).
"""

from __future__ import annotations

import enum
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from spool.entries import scan_stats
from spool.errors import SpoolIOError, UnreadableDrop
from spool.ids import JOB_SUFFIX, is_valid_id
from spool.kept import held_by_record_file
from spool.layout import parse_staging
from spool.orphans import Settle, drop_if_finished, record_as_new
from spool.quarantine import RECORD_NOTE
from spool.states import TERMINAL, JobState
from spool.superseded import put_back
from spool.transitions import Spool

PURGE_TAG = "purge"
"""The action of a record purge holds where moves stage: ``purge-<state>-<id>``."""
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
    unread: tuple[str, ...] = ()
    """Why each old record kept unjudged was kept: the disk failed its read (EIO), so
    whether it accounts for a kept entry is unknown."""
    unremoved: tuple[str, ...] = ()
    """Why each old record purge went to remove is still there: the disk failed a step
    of its removal (EIO), and it went back to its folder (or, that failing too, waits
    where moves stage for a processor's recovery to put it back, as said)."""


def purge(spool: Spool, older_than_s: float, states: Iterable[JobState] = TERMINAL, *,
          dry_run: bool = False) -> PurgeReport:
    """Remove terminal records (and quarantined originals) finished before the cutoff.

    The record of a kept entry (``source.kept_at``: another user's directory spoolq
    renamed within its folder, which every pass ignores) stays while that entry is
    there, as nothing else accounts for it; it goes once an operator has removed the
    entry (:func:`spool.kept.held_by_record_file`); one such record whose read the disk
    fails is kept, and said in ``unread``, while the others go (it failed the whole
    purge).  ``dry_run`` counts what would go and removes nothing.
    """
    layout = spool.layout
    cutoff_ns = int((spool.clock.now().timestamp() - older_than_s) * 1e9)
    removed = kept = 0
    held: list[str] = []
    unread: list[str] = []
    batch: list[Listed] = []
    outcomes: Counter[Outcome | Unremoved] = Counter()
    # (A dry run removes nothing, so needs nowhere to stage.)
    staging = spool.layout.staging_str if dry_run else _staging_names(spool)
    remove = partial(_remove, spool, staging)
    unsettled = frozenset() if dry_run else _settle_finished_runs(spool)
    with ThreadPoolExecutor(PURGE_THREADS, thread_name_prefix="purge") as pool:
        for state in states:
            if state not in TERMINAL:
                raise ValueError(f"purge removes finished jobs only, not {state}")
            for entry in listed(os.fspath(layout.folder(state)), state):  # junk too
                if entry.st.st_mtime_ns >= cutoff_ns or entry.job_id in unsettled:
                    kept += 1  # (the only sign its run ended: see _settle_finished_runs)
                    continue
                try:
                    kept_at = (held_by_record_file(layout, entry.path)
                               if state is JobState.FAILED else None)
                except UnreadableDrop as exc:
                    kept += 1  # it may account for an entry still there
                    unread.append(str(exc))
                    continue
                if kept_at is not None:
                    kept += 1  # the one thing that accounts for an entry still there
                    held.append(kept_at)
                    continue
                if dry_run:
                    removed += 1
                    continue
                batch.append(entry)
                if len(batch) >= _BATCH:
                    outcomes.update(pool.map(remove, batch))
                    batch.clear()
        outcomes.update(pool.map(remove, batch))
    removed += outcomes[Outcome.REMOVED]
    unremoved = tuple(sorted(o.why for o in outcomes if isinstance(o, Unremoved)))
    kept += outcomes[Outcome.REPLACED] + len(unremoved)
    spool.mover.flush()
    return PurgeReport(removed, kept, tuple(held), tuple(unread), unremoved)


class Outcome(enum.Enum):
    """What became of one old entry purge went to remove."""

    REMOVED = "removed"
    REPLACED = "replaced"
    """A newer record took its name since the listing: it stays (a kept record)."""
    GONE = "gone"
    """Moved or removed by someone else since the listing (a retry, another purge)."""


@dataclass(frozen=True, slots=True)
class Unremoved:
    """An old entry whose removal the disk failed: ``why``, and where it is now."""

    why: str


@dataclass(frozen=True, slots=True)
class Listed:
    """A ``<id>.json`` entry of a terminal folder as purge listed it."""

    job_id: str
    state: JobState
    path: str
    st: os.stat_result


def _settle_finished_runs(spool: Spool) -> frozenset[str]:
    """Remove the running files of finished runs whose processor died before removing
    them (:func:`spool.orphans.drop_if_finished`), before their records may go: a
    record is the only sign its run ended, and purged first, the next recovery pass
    took the run for one cut short and ran it again (h366).  Such a file is older than
    its record, so it is listed here if its record is judged old below.

    The ids whose running file stays beside a record as new as it (its removal refused:
    no write access to ``running/``, EIO; or its owner alive between its record and the
    removal): their records are kept, as they may be the only sign (h369)."""
    try:
        names = os.listdir(spool.layout.folder(JobState.RUNNING))
    except OSError:
        return frozenset()  # recovery settles them as before
    unsettled: set[str] = set()
    for name in names:
        job_id = name.removesuffix(JOB_SUFFIX)
        if (job_id != name and is_valid_id(job_id)
                and drop_if_finished(spool, job_id) is not Settle.DROPPED
                and record_as_new(spool.layout, job_id)):
            unsettled.add(job_id)
    return frozenset(unsettled)


def listed(folder: str, state: JobState) -> Iterator[Listed]:
    """The ``<id>.json`` entries of ``folder``, whatever they are (junk too)."""
    for job_id, path, st in scan_stats(folder, files_only=False):
        yield Listed(job_id, state, path, st)


def _staging_names(spool: Spool) -> Callable[[str], str]:
    """Names where this purge holds records, chosen once: where moves stage (SpoolIOError
    when only a ``tmp/`` shared with submitters is left, as for a cancel)."""
    layout = spool.layout
    if spool.mover.action_staging(PURGE_TAG).parent == layout.stage:
        return layout.private_staging_str
    return layout.staging_str


def _remove(spool: Spool, staging: Callable[[str], str], entry: Listed
            ) -> Outcome | Unremoved:
    """Remove ``entry`` (and its quarantined original) if its name still holds what was
    listed: a newer record that took the name since stays, or goes back.

    A step the disk fails (EIO) leaves the entry in its folder, put back when it was
    staged, and the purge goes on with the others: raised, it ended the purge and left
    every record staged by then (its own and the other threads') in ``stage/``,
    invisible to ``show`` and ``ls`` until a processor's recovery (QA)."""
    staged = staging(f"{PURGE_TAG}-{entry.state.value}-{entry.job_id}")
    try:
        return _remove_as_listed(spool, staged, entry)
    except (SpoolIOError, OSError) as exc:
        return _kept_back(spool, staged, entry, exc)


def _kept_back(spool: Spool, staged: str, entry: Listed, exc: Exception
               ) -> Outcome | Unremoved:
    """``entry``, whose removal failed with ``exc``, back in its folder if it was staged
    at ``staged``; why it is still there (REPLACED: a newer record took its name
    meanwhile, and the staged one went as it would have)."""
    name = f"{entry.state.value}/{entry.job_id}{JOB_SUFFIX}"
    if os.path.lexists(staged):
        try:
            if not put_back(spool.mover, staged, entry.path):
                return Outcome.REPLACED
        except (SpoolIOError, OSError) as again:
            return Unremoved(f"{name} is not removed: {exc}; it waits in "
                             f"{os.path.basename(os.path.dirname(staged))}/ ({again}) "
                             "for a processor's recovery to put it back")
    return Unremoved(f"{name} is kept: {exc}")


def _remove_as_listed(spool: Spool, staged: str, entry: Listed) -> Outcome:
    """:func:`_remove`, through ``staged``, where moves stage."""
    mover = spool.mover
    regular = stat.S_ISREG(entry.st.st_mode)
    if not regular or entry.state is JobState.FAILED:
        # Looked at again first: junk (a directory, a FIFO) is removed by name (a record
        # never takes its name by rename: it is set aside first), and a failed record's
        # original goes before the record, never an original left without it (a
        # recovery pass would give it a record of its own).
        if not _same_file(entry.path, entry.st):
            return Outcome.REPLACED if os.path.lexists(entry.path) else Outcome.GONE
        _remove_original(spool, entry)
        if not regular:
            return Outcome.REMOVED if mover.unlink(entry.path) else Outcome.GONE
    if not mover.move(entry.path, staged, durable=False):
        return Outcome.GONE  # a retry, a cancel's undo, another purge
    if not _same_file(staged, entry.st):  # a newer record took the name: it goes back
        put_back(mover, staged, entry.path)
        return Outcome.REPLACED
    mover.unlink(staged)
    return Outcome.REMOVED


def _remove_original(spool: Spool, entry: Listed) -> None:
    """Remove the quarantined original of a failed record, but one a quarantine in
    flight placed (a re-drop's, its record on its way over the listed one).

    That quarantine's note in ``stage/`` names the original's inode from before it is
    placed until after its record is out, and it is placed only where no original is
    (:func:`spool.quarantine.from_pending`): so an original no note names is the listed
    record's, unless the record was replaced meanwhile (its note gone since), looked at
    after the notes.  Judged by times, an original touched after its record (a chmod or
    chown -R of the spool, an rsync -a or a mv) was kept, and recovery then gave it a
    record of its own, "quarantined when its processor died" (QA).  Where there is no
    ``stage/`` to hold notes, the times decide as before: an original changed after
    the record stays."""
    if entry.state is not JobState.FAILED:
        return
    original = spool.layout.original_str(entry.job_id)
    try:
        st = os.lstat(original)
    except FileNotFoundError:
        return
    notes = _noted_inodes(spool.layout.stage)
    if notes is None:
        if st.st_ctime_ns > entry.st.st_ctime_ns:
            return
    elif st.st_ino in notes or not _same_file(entry.path, entry.st):
        return  # the notes first: a quarantine's record is out before its note goes
    spool.mover.unlink(original)


def _noted_inodes(stage: Path) -> set[int] | None:
    """The inodes the quarantine notes in ``stage`` name; None when it cannot be listed
    (none, or not this user's to read)."""
    try:
        names = os.listdir(stage)
    except OSError:
        return None
    inodes = set()
    for name in names:
        parsed = parse_staging(name)
        if parsed is not None and parsed.tag.startswith(_NOTE_PREFIX):
            inode = parsed.tag.removeprefix(_NOTE_PREFIX).partition("-")[0]
            if inode.isdigit():
                inodes.add(int(inode))
    return inodes


_NOTE_PREFIX = RECORD_NOTE + "-"


def _same_file(path: str, listed_st: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.lstat(path), listed_st)
    except FileNotFoundError:
        return False
