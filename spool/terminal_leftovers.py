"""Leftovers in ``done/`` and ``failed/``: what a completion or quarantine cut short.

An id with records in both ``done/`` and ``failed/`` keeps the newer; then a
``failed/<id>.orig`` without its quarantine record gets one, or goes if a later run
superseded it.  Only regular files are removed or written over: anything else at a
record's name (a directory, FIFO, socket or symlink) is no record.

The first pass (and one after an owner died: ``full``) checks every name of ``failed/``;
the later ones only the names :class:`spool.recheck.Recheck` picks, so that their cost
does not grow with ``done/`` and ``failed/``, which only ``spoolq purge`` shrinks (see
:mod:`spool.recheck` for when a leftover is settled).  Kept names met in ``failed/``
are noted for :class:`spool.kept.KeptLedger`.  Part of
:class:`spool.recovery.Recovery`'s pass.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from spool.clock import utc_from_ns
from spool.errors import ErrorType
from spool.fsops import failing_file
from spool.ids import JOB_SUFFIX, is_valid_id
from spool.jobfile import MAX_ACTIVE_BYTES
from spool.kept import KeptLedger
from spool.layout import KEPT_TAG, ORIG_SUFFIX, is_kept_name
from spool.models import ErrorInfo, Record, Source, parse_record, record_bytes
from spool.reader import read_regular
from spool.recheck import Recheck
from spool.states import JobState
from spool.superseded import drop_other_record
from spool.transitions import Spool

if TYPE_CHECKING:
    from spool.record_notes import RecordNotes
    from spool.recovery import RecoveryReport

# done/ is looked up name by name, not listed, once it holds this many names per name
# of failed/ (a lookup costs about two listed names; see TerminalLeftovers._in_done).
LOOKUP_RATIO = 4


class TerminalLeftovers:
    """Settles the leftovers of ``done/`` and ``failed/`` of one spool, noting the kept
    names it meets in ``kept``; ``notes``: the records cut-short quarantines meant."""

    def __init__(self, spool: Spool, kept: KeptLedger, notes: RecordNotes) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.mover = spool.mover
        self.kept = kept
        self.notes = notes
        # failed/<id>.orig name -> (inode, mtime) of the quarantine record beside it
        self._quarantine_records: dict[str, tuple[int, int]] = {}
        # How many names done/ held when last listed (None: not yet), see _in_done.
        self._done_seen: int | None = None
        self.kept_in_done: list[str] | None = None
        """The kept names of ``done/`` when this pass listed it (see _in_done), else None."""
        self._recheck = Recheck(self.layout.folder(JobState.FAILED),
                                self.layout.folder(JobState.DONE), spool.presence)

    def settle(self, report: RecoveryReport, *, full: bool) -> None:
        """Settle the names of ``failed/`` the :class:`Recheck` picks (all: ``full``)."""
        self.kept_in_done = None
        plan = self._recheck.full() if full else self._recheck.next()
        failed = self.layout.folder(JobState.FAILED)
        for name in plan.names:
            if is_kept_name(name):
                self.kept.note(f"{failed}/{name}")
        for name in self._in_done(plan.names):
            self._keep_newer(name, report)
        # Then the originals, so one whose record just went is settled in this same pass.
        for name in plan.names:
            job_id = name.removesuffix(ORIG_SUFFIX)
            if job_id != name and is_valid_id(job_id):
                self._settle_original(job_id, report)
        if plan.listed is not None:
            self._quarantine_records = {name: key for name, key
                                        in self._quarantine_records.items()
                                        if name in plan.listed}

    def _in_done(self, names: list[str]) -> list[str]:
        """The ``names`` (of ``failed/``) that ``done/`` holds too.

        ``done/`` grows with every job done and only ``spoolq purge`` shrinks it, while
        ``failed/`` is usually far smaller: once a listing of ``done/`` has shown it
        holds at least LOOKUP_RATIO names per name of ``failed/``, each name is looked up
        in ``done/`` instead (one ``faccessat``, about twice a listed name's cost), so a
        pass's cost follows ``failed/``, not ``done/`` (a listing of 200,000 names held
        the processor's loop ~0.2 s every pass).
        """
        if not names:
            return []
        done = self.layout.folder(JobState.DONE)
        if self._done_seen is not None and len(names) * LOOKUP_RATIO <= self._done_seen:
            try:
                fd = os.open(done, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return []
            try:
                # faccessat2 refused (the seccomp profile of a container runtime older
                # than it answers EPERM, and glibc falls back only on ENOSYS) answers
                # False for every name: done/ is listed then, as its own "." shows.
                if os.access(".", os.F_OK, dir_fd=fd, follow_symlinks=False):
                    return [name for name in names
                            if os.access(name, os.F_OK, dir_fd=fd, follow_symlinks=False)]
            finally:
                os.close(fd)
        try:
            listed = set(os.listdir(done))
            # is_kept_name, inlined: a call per name cost 47 ms for 200,000 names, this 18.
            self.kept_in_done = [name for name in listed
                                  if name[0] == "." and KEPT_TAG in name]
        except FileNotFoundError:
            listed = set()
        self._done_seen = len(listed)
        return [name for name in names if name in listed]

    def _settle_original(self, job_id: str, report: RecoveryReport) -> None:
        """A ``failed/<id>.orig`` must sit beside its quarantine record (one with a
        ``source``); else a quarantine or a completion was cut short.

        The original came into ``failed/`` by rename, which sets its ctime, and its
        quarantine publishes the record right after.  A record of the id written after
        the original (a ``done`` one when there is no failed one) is a later run's,
        whose completion removes the superseded original (``Spool.publish_terminal``):
        finish that.  Otherwise (no record, or only an earlier run's) the quarantine was
        cut short before its record: write it, replacing the earlier one as the
        quarantine would have.
        """
        original = self.layout.original(job_id)
        record = self.layout.job(JobState.FAILED, job_id)
        try:
            st = os.lstat(original)
            try:
                record_st: os.stat_result | None = os.lstat(record)
            except FileNotFoundError:
                record_st = None
        except FileNotFoundError:
            self._quarantine_records.pop(original.name, None)
            return
        except OSError as exc:
            # Left for a later pass: raised, one bad sector under either name failed
            # every full pass, and so each start (exit 75, restarted for ever).
            name = os.path.basename(str(exc.filename))
            if (trouble := failing_file(exc, f"cannot look up failed/{name}, {job_id}'s "
                                             "quarantine")) is None:
                raise
            report.unreadable.append(str(trouble))
            return
        if record_st is None or not stat.S_ISREG(record_st.st_mode):
            # No record: a directory, FIFO or symlink at its name is none (the record's
            # publish sets it aside).
            superseded = self.finished_after(job_id, st.st_ctime_ns)
        elif self._runs_record(original.name, record, record_st):
            superseded = record_st.st_mtime_ns >= st.st_ctime_ns
        else:
            return  # its quarantine record (or no valid record: not ours to judge)
        if self._kept_by_a_run(job_id) or self._record_moved(record, record_st):
            return
        if superseded:
            report.removed += self.spool.remove_original(str(original), durable=True)
            return
        # A quarantine begun since this pass listed stage/ (another processor's) wrote
        # its note before this original: record_now looks again.
        noted = self.notes.record_now(job_id, st)
        if noted is not None:
            self.record_for_original(job_id, st, noted.name, noted.message,
                                      replace=record_st is not None, noted=noted.record)
        else:
            self.record_for_original(job_id, st, job_id + JOB_SUFFIX,
                                      "quarantined when its processor died",
                                      replace=record_st is not None)
        report.restored.append(job_id)

    @staticmethod
    def _record_moved(record: Path, seen: os.stat_result | None) -> bool:
        """The id's record is not the one judged above: a run ended since (its record
        written, then its running file removed, which :meth:`_kept_by_a_run` found gone).
        Acting on the stale one replaced a fresh ``unknown_tool`` record with a
        quarantine's (a review, two processors on one spool); the next pass judges."""
        try:
            now = os.lstat(record)
        except FileNotFoundError:
            return seen is not None
        except OSError:
            return True
        return seen is None or (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns)

    def _kept_by_a_run(self, job_id: str) -> bool:
        """The id runs (or its run is an orphan): an original beside no record of its own
        is that run's, which keeps its job file's bytes before writing its record
        (:meth:`Spool.fail <spool.transitions.Spool.fail>`: an unknown tool, invalid
        params); the run's end, or recovery's settling of its orphan, decides it.  A
        lookup the disk fails (EIO) leaves the original for a later pass too."""
        try:
            os.lstat(self.layout.job_str(JobState.RUNNING, job_id))
        except FileNotFoundError:
            return False
        except OSError:
            pass
        return True

    def _runs_record(self, name: str, record: Path, st: os.stat_result) -> bool:
        """True when ``record`` is a valid record of a run (no ``source``): not the
        quarantine record of the original ``name``.

        An original is checked on many scans, so a record found to be its quarantine's
        is remembered by inode and mtime, and not read again while they stay.
        """
        key = (st.st_ino, st.st_mtime_ns)
        if self._quarantine_records.get(name) == key:
            return False
        found = _parsed(record)
        if found is not None and found.source is not None:
            self._quarantine_records[name] = key
        return found is not None and found.source is None

    def _keep_newer(self, name: str, report: RecoveryReport) -> None:
        paths = [self.layout.entry(s, name) for s in (JobState.DONE, JobState.FAILED)]
        try:
            stats = [os.lstat(p) for p in paths]
        except FileNotFoundError:
            return
        if not all(stat.S_ISREG(st.st_mode) for st in stats):
            # A directory, symlink or FIFO under a record's name is no record (readers skip
            # it): as the "newer" one it cost the id its only record.
            return
        older = paths[0] if stats[0].st_mtime_ns <= stats[1].st_mtime_ns else paths[1]
        if older == paths[1]:
            original = self._original_of(name.removesuffix(JOB_SUFFIX), older, stats[1])
            if original is False:
                return  # an original not the older record's: both stay (see _original_of)
            if original is not None:
                # Its original goes before it: left alone (the record gone), it was
                # taken for a quarantine cut short, dated by its ctime, which a restore
                # sets to the time of the copy, so the record written for it replaced
                # the newer run's done record (QA: a backup's failed/ copied before a
                # fixed re-drop ran, its done/ after).  Cut short between the two (or
                # inside a folder's removal), the next pass removes the rest.
                report.removed += self.spool.remove_original(str(original), durable=True)
        report.removed += self.mover.unlink_durable(older)

    def _original_of(self, job_id: str, record: Path, st: os.stat_result
                     ) -> Path | bool | None:
        """``failed/<id>.orig`` when it is the original of the quarantine record
        ``record`` (seen as ``st``); None when the record is no quarantine's or there is
        no original; False when the original may be another's, and must stay with the
        record it may need (alone, it would be taken for a quarantine cut short): a
        run's (one that failed ``unknown_tool`` or ``invalid_params`` keeps its job's
        bytes there before its record), a quarantine's in flight (its note written
        first, its record to come), or a file written after the record or not of the
        size it gives.  A folder's or a FIFO's time and size say nothing of that (a
        folder's change as its entries do)."""
        found = _parsed(record)
        if found is None or found.source is None:
            return None
        original = self.layout.original(job_id)
        try:
            kept = os.lstat(original)
        except FileNotFoundError:
            return None
        except OSError:  # the disk cannot say: left as it is
            return False
        return original if self._own_original(job_id, kept, st, found.source) else False

    def _own_original(self, job_id: str, kept: os.stat_result, st: os.stat_result,
                      source: Source) -> bool:
        """See :meth:`_original_of`: ``kept`` is the original's, ``st`` the record's."""
        if self._kept_by_a_run(job_id):
            return False
        if self.notes.record_now(job_id, kept) is not None:
            return False
        return not stat.S_ISREG(kept.st_mode) or (
            kept.st_mtime_ns <= st.st_mtime_ns
            and source.size in (None, kept.st_size))

    def record_for_original(self, job_id: str, st: os.stat_result, name: str,
                             message: str, *, replace: bool, noted: Record | None = None
                             ) -> None:
        """Publish the quarantine record of ``failed/<id>.orig`` (``st``, once ``name``), the
        id's one terminal record; ``replace``: over an earlier failed record of the id.
        ``noted``: the record its quarantine meant (its times, tool and source kept)."""
        error = ErrorInfo(type=ErrorType.INVALID_JOB, message=message)
        if noted is not None:
            record = noted.model_copy(update={"id": job_id, "error": error})
        else:
            kind = "file" if stat.S_ISREG(st.st_mode) else "other"
            record = Record(
                id=job_id, state=JobState.FAILED, submitted_at=utc_from_ns(st.st_mtime_ns),
                finished_at=self.spool.clock.now(), host=self.spool.host, pid=self.spool.pid,
                error=error, source=Source(name=name, size=st.st_size, kind=kind))
        if replace:  # and what is no record at its name is set aside (Spool.set_aside)
            self.spool.publish_terminal(record)
        else:
            path = self.layout.job_str(JobState.FAILED, job_id)
            if self.mover.publish(path, record_bytes(record), replace=False):
                drop_other_record(self.spool, JobState.DONE, job_id, path)

    def finished_after(self, job_id: str, claimed_ns: int) -> bool:
        """The id has a record (a regular file) in ``done/`` or ``failed/`` written at or
        after ``claimed_ns``."""
        for state in (JobState.DONE, JobState.FAILED):
            try:
                st = os.lstat(self.layout.job(state, job_id))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime_ns >= claimed_ns:
                return True  # a record (a directory or symlink under the name is none)
        return False


def _parsed(record: Path) -> Record | None:
    """The record at ``record``; None when it is no valid record (a failed record holds
    no result: one over MAX_ACTIVE_BYTES is no record of ours)."""
    data = read_regular(record, MAX_ACTIVE_BYTES)
    if data is None:
        return None
    try:
        return parse_record(data)
    except ValueError:
        return None
