"""The recovery scan: put every job back into exactly one state after a crash.

Run by each processor before its first claim and every ``SPOOL_SCAN_S``.  It
only ever touches what no live process holds: a running job is an orphan when
its claim lease (the flock on ``running/<id>.json``) is free, a staged file in
``tmp/`` or ``stage/`` is dead when its writer's pid is gone (or it is untouched for
a day).

* An orphan whose run has its record (newer than its claim, or as new and of
  this run) was finished: the leftover ``running/`` file goes.  One with a
  cancel request in ``cancel/`` (asked while its processor was down) is failed
  ``cancelled``.  Otherwise it is requeued with its attempt count raised and a
  backoff, or failed ``abandoned`` once ``max_attempts`` is spent (DESIGN
  section 9).
* A quarantine, cancel or retry cut short in ``tmp/`` is completed or undone;
  nothing a client sent is dropped.  Other dead staging files are removed.
* An id with records in both ``done/`` and ``failed/`` keeps the newer; then a
  ``failed/<id>.orig`` without its quarantine record gets one, or goes if a
  later run superseded it; progress and cancel files of jobs no longer
  running, and lock files of dead owners, are removed.  Only regular files are
  removed or written over there: anything else at those names (a directory,
  FIFO, socket or symlink) is set aside into ``failed/`` with a record saying
  where it stood (``Spool.set_aside``).
* A kept entry (``.<name>.kept-<id>``, another user's directory renamed within its
  folder) whose record ``failed/<id>.json`` is missing, its writer killed between the
  rename and the record, gets that record (:class:`spool.kept.KeptLedger`): every pass
  looks in ``running/``, ``progress/``, ``cancel/`` and at the names of ``failed/`` it
  checks, the first pass and one that finds a dead owner in ``pending/`` and ``done/``
  too (a client killed keeping one in ``done/`` is so settled by the next such pass).

Each part lives in a module of its own: :mod:`spool.orphans` (``running/``),
:mod:`spool.staged` (``tmp/`` and ``stage/``), :mod:`spool.terminal_leftovers` (``done/``
and ``failed/``) and :mod:`spool.kept` (kept entries); this module runs them in order
and settles the sidecars (``progress/``, ``cancel/``) and dead owners (``owners/``).

The first pass of a :class:`Recovery` (a processor's start-up pass) settles all.  The
later, periodic ones settle what other processes leave meanwhile, at a cost that does
not grow with ``done/`` and ``failed/``: they check only the names of ``failed/`` that
:class:`spool.recheck.Recheck` picks, so a leftover in ``done/`` and ``failed/`` is
settled by the first pass after it is made in ``failed/``, and within
``ceil(len(failed/) / ROTATION_NAMES) + 1`` passes when made in ``done/`` alone.  A
pass that finds a dead owner checks every name: a processor that died mid-completion
is what leaves those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from spool.errors import SpoolIOError
from spool.fsops import failing_file
from spool.ids import JOB_SUFFIX, id_from_name, is_valid_id
from spool.kept import KeptLedger
from spool.layout import is_kept_name
from spool.lease import lock_if_free
from spool.orphans import (
    MaxAttempts,
    Orphans,
    StillOurs,
    backoff_s,
    default_max_attempts,
    ours_checked,
)
from spool.record_notes import RecordNotes
from spool.staged import Staged, entries
from spool.states import JobState
from spool.terminal_leftovers import TerminalLeftovers
from spool.transitions import Spool

__all__ = ["MaxAttempts", "Recovery", "RecoveryReport", "backoff_s", "default_max_attempts"]


@dataclass(slots=True)
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    removed: int = 0
    unreadable: list[str] = field(default_factory=list)
    """The read errors of orphans left in ``running/`` for the next pass (EIO), and of
    cancels cut short left staged."""
    unread_orphans: list[str] = field(default_factory=list)
    """The ids of those orphans left in ``running/``: a drop of one waits behind it (a
    claim never overwrites)."""
    runs: dict[str, tuple[str, int]] = field(default_factory=dict)
    """The tool and attempt of each orphan requeued, abandoned or cancelled whose running
    file held a job (for its transition line)."""
    backoffs: dict[str, datetime] = field(default_factory=dict)
    """The backoff's end of each orphan requeued (for its line)."""

    @property
    def changed(self) -> bool:
        return bool(self.requeued or self.abandoned or self.cancelled or self.finished
                    or self.restored or self.removed)


class Recovery:
    """One recovery pass over a spool; ``max_attempts`` resolves a job's limit."""

    def __init__(self, spool: Spool, max_attempts: MaxAttempts = default_max_attempts,
                 still_ours: StillOurs = lambda: True) -> None:
        self.spool = spool
        self.still_ours = still_ours  # see spool.orphans.ours_checked
        self.layout = spool.layout
        self.mover = spool.mover
        self.max_attempts = max_attempts
        self._kept = KeptLedger(spool)
        self._notes = RecordNotes(spool)
        self._terminal = TerminalLeftovers(spool, self._kept, self._notes)
        self._staged = Staged(spool, self._terminal, self._notes)
        self._orphans = Orphans(spool, max_attempts, self._staged, still_ours)
        self._first = True

    def scan(self) -> RecoveryReport:
        report = RecoveryReport()
        owners_died = self._dead_owners(report)
        self._staged.settle(report)
        for entry in entries(self.layout.folder(JobState.RUNNING)):
            job_id = id_from_name(entry.name)
            if job_id is not None:
                self._orphans.settle(job_id, report)
            elif is_kept_name(entry.name):
                self._kept.note(entry.path)
        self._terminal.settle(report, full=owners_died)
        if owners_died or self._first:
            # A note's writer is a processor: its death makes a pass full, which settles
            # the quarantine it cut short (above) before its note goes.
            report.removed += self._notes.drop_dead()
        self._sidecars(report)
        if owners_died or self._first:
            self._kept_in_unlisted_folders()
        self._first = False
        report.restored.extend(self._kept.settle(report.unreadable))
        self.mover.sweep_litter()  # this process's own staging files a failed write left
        self.mover.flush()
        return report

    def _kept_in_unlisted_folders(self) -> None:
        """Note the kept entries of ``pending/`` and ``done/``, which the other passes do
        not list: what only a processor keeps there (intake, completion) and, in
        ``done/``, a client's cancel."""
        self._kept.note_folder(self.layout.folder(JobState.PENDING))
        done = self.layout.folder(JobState.DONE)
        kept_in_done = self._terminal.kept_in_done
        if kept_in_done is None:
            self._kept.note_folder(done)
            return
        for name in kept_in_done:  # listed already by this pass
            self._kept.note(f"{done}/{name}")

    # -- sidecars and owners ---------------------------------------------------------

    def _sidecars(self, report: RecoveryReport) -> None:
        running = self.layout.folder(JobState.RUNNING)
        pending = self.layout.folder(JobState.PENDING)
        # Only regular files go: anything else there is set aside (Spool.remove_file),
        # but for what set_aside kept here already (an operator's to remove).
        for entry in entries(self.layout.progress):
            if is_kept_name(entry.name):
                self._kept.note(entry.path)
            elif not _may_be_there(running / entry.name):
                self._remove_sidecar(entry.path, entry.name.removesuffix(JOB_SUFFIX),
                                     "progress", report)
        for entry in entries(self.layout.cancel):
            name = entry.name + JOB_SUFFIX
            if is_kept_name(entry.name):
                self._kept.note(entry.path)
                continue
            # running/ once more after pending/: a claim between the first two lookups
            # (pending/ to running/) made the job seen in neither, its request removed
            # and the job run, the cancel lost; a requeue the first lookup catches.
            if not (_may_be_there(running / name) or _may_be_there(pending / name)
                    or _may_be_there(running / name)):
                self._remove_sidecar(entry.path, entry.name, "cancel request", report)

    def _remove_sidecar(self, path: str, job_id: str, what: str,
                        report: RecoveryReport) -> None:
        """Remove a sidecar no job needs; one the disk cannot look up or remove (EIO) is
        left and said, tried again at the next pass: raised, it failed every pass (a pause
        each) for as long as the sector stayed bad."""
        where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
        try:
            report.removed += self.spool.remove_file(path, job_id, what)
        except OSError as exc:
            if (bad := failing_file(exc, f"cannot look up {where}")) is None:
                raise
            report.unreadable.append(str(bad))
        except SpoolIOError as exc:  # its unlink's EIO (the mover's SpoolIOError)
            cause = exc.__cause__
            if not isinstance(cause, OSError) or (
                    bad := failing_file(cause, f"cannot remove {where}")) is None:
                raise
            report.unreadable.append(str(bad))

    def _dead_owners(self, report: RecoveryReport) -> bool:
        """Remove the lock and status files of owners that are gone; True if any was."""
        died = False
        for entry in entries(self.layout.owners):
            if not entry.name.endswith(".lock"):
                continue
            owner = entry.name.removesuffix(".lock")
            if not is_valid_id(owner) or (held := lock_if_free(Path(entry.path))) is None:
                continue
            try:  # removed under its lock: a processor starting under the name waits
                ours_checked(self.still_ours, f"owners/{entry.name}")  # not ours: unseen
                report.removed += self.mover.unlink(self.layout.owner_status(owner))
                report.removed += self.mover.unlink(Path(entry.path))
            finally:
                os.close(held)
            died = True
        return died


def _may_be_there(path: Path) -> bool:
    """False only if ``path`` is known gone: a lookup that fails otherwise (EIO, a bad
    sector under the job's inode) keeps its sidecar for a later pass.  ``lexists`` took
    every error for gone, and a cancel request of a job it could not look up was removed,
    the job then run."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True
