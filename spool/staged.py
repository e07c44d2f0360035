"""Staged files: what a write, quarantine, cancel or retry left in ``tmp/`` or ``stage/``.

A staged file is dead when its writer's pid is gone (of another pid space, where that
cannot be told: once it has stood unchanged for :data:`STAGING_GRACE_S`), or it is
untouched for :data:`DEAD_STAGING_AGE_S`; one a live process holds or may still move
is never touched, nor a regular file under a claim lease.  A quarantine, cancel or retry cut
short there is completed or undone, so nothing a client sent is dropped; a record a
purge or a finisher (:mod:`spool.superseded`) held there goes back unless a newer one
stands; other dead staging files are removed.  Part of :class:`spool.recovery.Recovery`'s pass.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from spool.cancellation import aside_id, cancel_recorded
from spool.errors import ConflictError, UnreadableDrop
from spool.fsops import SPARE_TAG, WRITE_TAG, failing_file, no_access
from spool.ids import JOB_SUFFIX, invalid_id, is_valid_id
from spool.large import Head, leading_fields, read_record
from spool.layout import StagingName, parse_staging, pid_space
from spool.lease import is_locked
from spool.orphans import Settle, drop_if_finished, lease
from spool.purge import PURGE_TAG
from spool.recheck import Stamp, folder_stamp
from spool.states import JobState
from spool.superseded import SUPERSEDED_TAG, record_stands
from spool.transitions import Spool

if TYPE_CHECKING:
    from spool.record_notes import Noted, RecordNotes
    from spool.recovery import RecoveryReport
    from spool.terminal_leftovers import TerminalLeftovers

DEAD_STAGING_AGE_S = 86_400.0
STAGING_GRACE_S = 60.0
"""A staging file of spoolq's whose writer is of another pid space (:func:`may_live`) is
left until it has stood unchanged this long."""

Seen = tuple[int, int, float]
"""A staging file's inode and ctime when a pass first saw it so, and its age then less
the monotonic clock's reading then (its age since: that plus the clock's reading)."""
ACTIONS = frozenset({"quarantine", "cancel", "retry", "kept", PURGE_TAG, SUPERSEDED_TAG})
"""The moves whose staging file recovery completes or undoes (``<action>-<id>``)."""


class Staged:
    """Settles the dead staging files of one spool; ``terminal`` answers for ``done/``
    and ``failed/`` (whether the id finished since, the record of an original)."""

    def __init__(self, spool: Spool, terminal: TerminalLeftovers, notes: RecordNotes) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.mover = spool.mover
        self.terminal = terminal
        self.notes = notes
        self._seen: dict[str, Seen] = {}  # each file's of tmp/, see age_s
        self._seen_staged: dict[str, Seen] = {}  # and of stage/
        self._tmp_stamp: Stamp | None = None  # tmp/'s at this pass's start
        self._tmp_quiet: tuple[Stamp | None, float] | None = None
        """tmp/'s stamp when a pass left it holding only clients' files not yet due, and
        the monotonic time the first of them is (see :meth:`_tmp_entries`)."""

    def settle(self, report: RecoveryReport) -> None:
        """Dead staging files in ``tmp/`` and in ``stage/`` (a processor's own: its spares
        and the records it writes, see :class:`spool.fsops.Mover`)."""
        now_s = self.spool.clock.now().timestamp()
        mono = self.spool.clock.monotonic()
        trusted = self._tmp_trusted()
        own_uids = set() if trusted else self._spool_uids()
        # (entry, trusted, in tmp/: where clients stage their drops, under any name)
        tmp = self._tmp_entries(mono)
        listed = [] if tmp is None else [(e, trusted, True) for e in tmp]
        staged = entries(self.layout.stage, optional=True)
        notes = self.notes.collect(staged)  # read by the passes below, dropped after them
        listed += [(e, True, False) for e in staged if e.path not in notes]
        paths = {entry.path for entry, _, clients in listed if not clients}
        self._seen_staged = {p: seen for p, seen in self._seen_staged.items() if p in paths}
        if tmp is not None:  # (not listed: its files' sightings kept as they are)
            paths = {entry.path for entry in tmp}
            self._seen = {p: seen for p, seen in self._seen.items() if p in paths}
        quiet, due = tmp is not None, math.inf  # tmp/ left unlisted from the next pass?
        for entry, trusted, clients in listed:
            parsed = parse_staging(entry.name)
            if clients and (parsed is None or not _spoolqs(parsed.tag)):
                seen = self._seen.get(entry.path)
                if seen is not None and seen[2] + mono <= DEAD_STAGING_AGE_S:
                    # A client's file, seen by an earlier pass and a day from old even
                    # if left unchanged: looked at again once it may be, and removed
                    # only if it stood unchanged that long (a change meanwhile is found
                    # then, its age counted from it).
                    due = min(due, DEAD_STAGING_AGE_S - seen[2])
                    continue
            quiet = quiet and not clients  # a file of tmp/ settled below: list it again
            self._settle_entry(entry, parsed, trusted=trusted, clients=clients,
                               own_uids=own_uids, now_s=now_s, report=report)
        if tmp is not None:
            self._tmp_quiet = (self._tmp_stamp, due) if quiet else None

    def _tmp_entries(self, mono: float) -> list[os.DirEntry[str]] | None:
        """``tmp/``'s entries; None (not listed) when the last pass left it holding only
        clients' files not yet due (see :meth:`settle`) and it has not changed since.
        Listed each pass, 200,000 junk files there cost an idle processor a quarter of
        a CPU at ``SPOOL_SCAN_S=2``, 0.3 s a pass (the fifty-fourth session's list)."""
        stamp = folder_stamp(self.layout.tmp)  # before the listing: a change after it shows
        quiet, self._tmp_stamp = self._tmp_quiet, stamp
        if quiet is not None and stamp is not None and stamp == quiet[0] and mono < quiet[1]:
            return None
        return entries(self.layout.tmp)

    def _settle_entry(self, entry: os.DirEntry[str], parsed: StagingName | None, *,
                      trusted: bool, clients: bool, own_uids: set[int], now_s: float,
                      report: RecoveryReport) -> None:
        st = _lstat(entry, report)
        if st is None:
            return
        age = self.age_s(entry.path, st, now_s, staged=not clients)
        if parsed is not None and not trusted and parsed.tag.partition("-")[0] in ACTIONS \
                and self._left_untrusted(entry, parsed, st, age, own_uids=own_uids,
                                         report=report):
            return
        old = age > DEAD_STAGING_AGE_S
        if parsed is None or (clients and not _spoolqs(parsed.tag)):
            # A client's file; or, in tmp/, one under a name shaped like spoolq's
            # (report-42.<pid of another host or container>.<hex>.tmp), or an older
            # spoolq's write: as any client's file, removed once a day unchanged (the
            # latter went at the first pass, mid-write, and its writer's rename
            # failed: QA).
            if old:
                report.removed += self.mover.unlink(Path(entry.path))
        elif not self._in_use(entry, parsed, st, age, report):
            self._settle_staged(parsed.tag, Path(entry.path), st, report)

    def _left_untrusted(self, entry: os.DirEntry[str], parsed: StagingName,
                        st: os.stat_result, age: float, *, own_uids: set[int],
                        report: RecoveryReport) -> bool:
        """A move's file in a ``tmp/`` submitters share: True when it is left (its writer
        may live) or kept as another user's (:meth:`_keep_untrusted`)."""
        if may_live(parsed, age):
            return True
        if not _owned_by(st, own_uids):  # never completed, however old
            self._keep_untrusted(Path(entry.path), parsed.tag, st, report)
            return True
        # The spool user's own file: no submitter's.  An older spoolq's move (they
        # staged in tmp/), cut short: settled as any move.
        return False

    def _in_use(self, entry: os.DirEntry[str], parsed: StagingName, st: os.stat_result,
                age: float, report: RecoveryReport) -> bool:
        """Whether spoolq's staging file is a live process's (its spare, its lock)."""
        if parsed.tag == SPARE_TAG and parsed.pid == os.getpid() \
                and parsed.space in (None, pid_space()):
            if self.mover.holds_spare(entry.path):
                return True
            # else a spare of an earlier process that had this pid
        elif may_live(parsed, age) and (age <= DEAD_STAGING_AGE_S or parsed.tag == SPARE_TAG):
            return True  # a live process's spare, however long it has waited
        # Only a regular file can carry a claim lease; never open a symlink,
        # FIFO, socket or device left by a quarantine cut short.
        return stat.S_ISREG(st.st_mode) and self._locked(entry, report)

    @staticmethod
    def _locked(entry: os.DirEntry[str], report: RecoveryReport) -> bool:
        """A live process holds the staging file's lock; also True (left) when its open
        fails with EIO (a bad sector under its inode), said in ``report`` as a look-up's
        (:func:`_lstat`): raised, that error failed every pass (claims paused at each)
        and each start (exit 75) for as long as the sector stayed bad."""
        try:
            return bool(is_locked(Path(entry.path)))
        except OSError as exc:
            _left_unread(exc, entry, "cannot open", report)
            return True

    def age_s(self, path: str, st: os.stat_result, now_s: float, *,
              staged: bool = False) -> float:
        """How long the staging file ``st`` at ``path`` has stood unchanged.

        By its ctime (any write, rename or utime sets it, where a drop may carry the
        mtime of its source, scp -p or rsync -t, from long ago) when a pass first saw it
        so, and by the monotonic clock since: a step of the wall clock after that (an
        NTP step, a VM resumed after a day, an admin setting the date) ages no file in
        use.  Judged by the wall clock alone, a step forward past a day made every
        client's drop still staged in ``tmp/`` (and a live writer's staging file) a
        day old, and the next pass removed it under its writer.
        """
        mono = self.spool.clock.monotonic()
        sightings = self._seen_staged if staged else self._seen  # (``path`` in stage/)
        seen = sightings.get(path)
        if seen is None or seen[:2] != (st.st_ino, st.st_ctime_ns):
            seen = (st.st_ino, st.st_ctime_ns, now_s - st.st_ctime - mono)
            sightings[path] = seen
        return seen[2] + mono

    def _keep_untrusted(self, path: Path, tag: str, st: os.stat_result,
                        report: RecoveryReport) -> None:
        """A dead process's move, by its name, in a ``tmp/`` submitters share, of a file
        that is not the spool user's own (see :meth:`settle`): a submitter could have
        named it so (see :meth:`_tmp_trusted`), so it is not completed over the id it
        names; nor dropped, as it may hold a job a cut-short move (an older spoolq's,
        or one that could not stage in ``stage/``) left.  A cancel's goes back to
        ``pending/`` when the name is free and the id has not finished since: the
        cancel undone, as recovery undoes one it trusts, and no more than the
        submitter could do herself (rename her file to ``pending/<id>.json``); an
        older spoolq's cancel of a submitter's drop leaves that file.  Anything else
        is quarantined under an id of its own, its bytes kept, its record naming it."""
        action, _, named = tag.partition("-")
        if (action == "cancel" and is_valid_id(named)
                and not self.terminal.finished_after(named, st.st_ctime_ns)
                and self.mover.move(path, self.layout.job(JobState.PENDING, named),
                                    replace=False)):
            report.restored.append(named)
            return
        self._keep_as_own(path, st, report, lambda orig: (
            f"found in tmp/ named like a move of a process that died ({path.name}); "
            "not completed, as a submitter could have named it so: its bytes are kept "
            f"in failed/{orig}"))

    def _keep_as_own(self, path: Path, st: os.stat_result, report: RecoveryReport,
                     message: Callable[[str], str]) -> None:
        """Quarantine the staging file ``path`` under an id of its own, its bytes kept,
        its record saying ``message`` of the name they are kept under."""
        job_id = invalid_id(self.spool.clock.now())
        orig = self.layout.original(job_id)
        if not self.mover.move(path, orig, replace=False):
            return  # settled meanwhile, or the id taken: the next pass looks again
        self.terminal.record_for_original(job_id, st, path.name,
                                          message(orig.name), replace=False)
        report.restored.append(job_id)

    def _spool_uids(self) -> set[int]:
        """Who may own a move's file in a shared ``tmp/`` that no submitter could have
        made: this process's user, root, and ``tmp/``'s owner (the spool user)."""
        uids = {os.geteuid(), 0}
        with contextlib.suppress(OSError):
            uids.add(os.stat(self.layout.tmp).st_uid)
        return uids

    def _tmp_trusted(self) -> bool:
        """A move's staging name in ``tmp/`` can only be a spoolq process's: nobody but
        its owner may write there, or moves stage there (no usable ``stage/``).  Else
        one is a submitter's, who could name a file ``retry-<id>.<pid>.<hex>.tmp`` and
        have it replace another user's record (moves stage in ``stage/``,
        :meth:`spool.fsops.Mover.action_staging`)."""
        return not self.mover.tmp_shared() or not self.mover.moves_in_stage()

    def _settle_staged(self, tag: str, path: Path, st: os.stat_result,
                       report: RecoveryReport) -> None:
        action, _, job_id = tag.partition("-")
        if action in ACTIONS and is_valid_id(tag) and names_itself(path, tag):
            self._settle_own_write(tag, path, st, report)
            return
        if action == "kept" and is_valid_id(job_id):
            self._settle_kept(job_id, path, st, report)
        if action in (PURGE_TAG, SUPERSEDED_TAG):
            self._restore_held(action, job_id, path, report)
            return
        if not is_valid_id(job_id) or action not in ("quarantine", "cancel", "retry"):
            report.removed += self.mover.unlink(path)
            return
        if action == "quarantine":
            self.restore_quarantine(job_id, path, st, noted=self.notes.record(job_id, st))
        elif action == "cancel":
            try:
                if not (self._recorded_aside(path, st)
                        or self._restore_cancel(job_id, path, st)):
                    return  # left for a later pass (not restored)
            except UnreadableDrop as exc:
                # Left for the next pass, as an orphan whose read fails: raised, one bad
                # sector under it paused claims at each pass and exited 75 at each start.
                report.unreadable.append(str(exc))
                return
        else:
            self._restore_retry(job_id, path, st)
        report.restored.append(job_id)

    def _settle_own_write(self, tag: str, path: Path, st: os.stat_result,
                          report: RecoveryReport) -> None:
        """A write's staging file that an earlier spoolq named after the file it wrote
        (:meth:`spool.fsops.Mover.publish`): the record, job or status of an id or owner
        ``tag`` that starts like a move (``cancel-x``, ``retry-x``), whose writer died
        before its rename.  No move of ``x``: completed as one, it replaced ``x``'s
        record, or ran ``cancel-x``'s job as ``x``.  It goes, as any dead write's; but
        where a move's file holds anybody's bytes (a cancel's, a quarantine's, a kept
        original's), a drop that names ``tag`` could look the same, so it is kept as a
        quarantine under an id of its own instead."""
        action, _, named = tag.partition("-")
        if action not in ("cancel", "quarantine", "kept"):
            report.removed += self.mover.unlink(path)
            return
        self._keep_as_own(path, st, report, lambda orig: (
            f"found in {path.parent.name}/ named like a {action} of {named} cut short "
            f"({path.name}), but holding a file of {tag} itself (a write cut short); "
            f"not completed over {named}: its bytes are kept in failed/{orig}"))

    def _settle_kept(self, job_id: str, path: Path, kept: os.stat_result,
                     report: RecoveryReport) -> None:
        """Finish a cancel of a file that holds no job cut short beside an earlier
        original of its id, which it keeps linked where moves stage until its record is written
        (``spool.cancellation._cancel_no_job``); the link itself goes after this.

        ``failed/<id>.orig`` gone: the cancel's undo took its bytes out and died before
        the earlier original went back: it goes back.  Another file there, newer than
        ``failed/<id>.json``: the cancel's bytes replaced the earlier original and its
        record was never written: written now (the earlier original goes, as the
        cancel meant).
        """
        original = self.layout.original(job_id)
        try:
            st = os.lstat(original)
        except FileNotFoundError:
            self.mover.move(path, original, replace=False)
            return
        record = self.layout.job(JobState.FAILED, job_id)
        try:
            record_st = os.lstat(record)
        except FileNotFoundError:
            return  # an original without record: TerminalLeftovers settles it
        if ((st.st_ino, st.st_dev) == (kept.st_ino, kept.st_dev)
                or record_st.st_mtime_ns >= st.st_ctime_ns):
            return  # not replaced, or its record was written since
        self.terminal.record_for_original(job_id, st, job_id + JOB_SUFFIX, (
            f"not a valid job, cancelled while pending (its canceller died before writing "
            f"this record); its bytes are kept in failed/{original.name}"), replace=True)
        report.restored.append(job_id)

    def restore_quarantine(self, job_id: str, path: Path, st: os.stat_result,
                            message: str = "quarantined when its processor died; the "
                            "original name was lost", *, noted: Noted | None = None) -> None:
        """Finish a quarantine cut short where it staged: the original into ``failed/``, then
        its record (the one ``noted``, if the quarantine left it), replacing the id's
        earlier records as the quarantine would have.

        Like ``Spool.quarantine`` it never replaces an earlier original of the id, nor
        (here) a record written after the quarantine began: the drop then gets an id of
        its own, and its record under that id.
        """
        staged_id, name = job_id, job_id + JOB_SUFFIX
        if noted is not None:  # under the id the quarantine meant, if still free
            name, message, job_id = noted.name, noted.message, noted.record.id
        taken = (os.path.lexists(self.layout.original(job_id))
                 or self.terminal.finished_after(job_id, st.st_ctime_ns))
        while True:
            if taken:
                job_id = invalid_id(self.spool.clock.now())
            if self.mover.move(path, self.layout.original(job_id), replace=False):
                break
            if not os.path.lexists(path):
                return  # settled meanwhile by another processor's scan
            taken = True
        if job_id != staged_id and (noted is None or noted.record.id == staged_id):
            # (A note of a record under another id says so already.)
            message += f" (an earlier {staged_id}{JOB_SUFFIX} keeps its own record)"
        self.terminal.record_for_original(job_id, st, name, message, replace=True,
                                          noted=noted.record if noted else None)

    def _restore_held(self, action: str, named: str, path: Path,
                      report: RecoveryReport) -> None:
        """A record a purge or a finisher held where moves stage when it died
        (``<action>-<state>-<id>``, :mod:`spool.purge`, :mod:`spool.superseded`): it goes
        back unless a newer record of the id stands at its name.  A purge's may be a
        re-run's record taken by mistake (old, it is purged again next time); a
        finisher's was superseded by the id's record in the other terminal folder, so it
        goes back only when none stands there (a finisher racing this one took it)."""
        state_name, _, job_id = named.partition("-")
        if state_name not in ("done", "failed") or not is_valid_id(job_id):
            report.removed += self.mover.unlink(path)
            return
        state = JobState(state_name)
        other = JobState.FAILED if state is JobState.DONE else JobState.DONE
        superseded = (action == SUPERSEDED_TAG
                      and record_stands(self.layout.job_str(other, job_id)))
        if not superseded and self.mover.move(path, self.layout.job(state, job_id)):
            report.restored.append(job_id)
        else:
            report.removed += self.mover.unlink(path)  # or a newer record was written

    def _recorded_aside(self, path: Path, st: os.stat_result) -> bool:
        """A refused cancel's re-drop recorded ``cancelled`` under an id of its own
        (:func:`spool.cancellation._record_aside`), its staging left (its canceller
        killed before the removal, or the removal not durable): the staging goes.
        Settled as a cancel cut short, it was recorded a second time, under the run's
        id, that record replacing the run's (QA h382)."""
        aside = aside_id(path, st)
        if aside is None or not os.path.lexists(self.layout.job_str(JobState.FAILED, aside)) \
                or not cancel_recorded(self.layout, aside, path, st):
            return False
        self.mover.unlink(path)
        return True

    def _restore_cancel(self, job_id: str, path: Path, st: os.stat_result
                        ) -> bool:
        """Settle a cancel cut short; False when it is left for a later pass."""
        if self.terminal.finished_after(job_id, st.st_ctime_ns):
            if cancel_recorded(self.layout, job_id, path, st):
                self.mover.unlink(path)  # the cancel completed
                return True
            # A record written since that is not this cancel's: the run of the id ahead
            # of this drop ended meanwhile (taken for the cancel's, the drop was removed
            # and lost: a review), or a later drop's record replaced the cancel's.  The
            # cancel may or may not have happened: the drop is kept, with its bytes, as a
            # quarantine under an id of its own (a retry runs it), neither run nor lost.
            self.restore_quarantine(job_id, path, st, (
                "its cancel was cut short (the canceller died) and a newer record of the "
                "id stands, which may have replaced the cancel's: not run"))
            return True
        if self.mover.move(path, self.layout.job(JobState.PENDING, job_id), replace=False):
            return True  # cancel undone: the job is pending again
        # A newer drop is pending: finish the cancel, once the run of the id before the
        # staged job is settled.  A cancel refused for that run (cancellation._give_back)
        # is left staged when a newer drop took its place; finished here regardless, its
        # record replaced the run's (its owner stuck between its record and the removal,
        # or dead, this pass settling staged files before orphans), and the finished run
        # was failed ``abandoned`` or run again (QA h371).  Left: the next pass asks again.
        # Not waited for (0): a pass is no place to wait 2 s for a stuck owner.
        if drop_if_finished(self.spool, job_id, 0) is Settle.LEFT:
            return False
        claim = lease(path, job_id)
        if claim is None:
            return True
        try:
            self.spool.finish_cancel(claim, path)
        except ConflictError as exc:
            # A file that is no job, whose bytes cannot become failed/<id>.orig (a
            # directory is there), and cannot go back (the newer drop): kept as a
            # quarantine under an id of its own, as Spool.quarantine keeps a drop
            # beside an earlier original.
            self.restore_quarantine(job_id, path, st, (
                f"not a valid job, its cancel cut short (its canceller died) and neither "
                f"finished ({exc}) nor undone (a newer drop of the id is pending)"))
        return True

    def _restore_retry(self, job_id: str, path: Path, st: os.stat_result) -> None:
        pending = self.layout.job(JobState.PENDING, job_id)
        try:
            retried = os.lstat(pending).st_mtime_ns >= st.st_ctime_ns
        except FileNotFoundError:
            retried = False
        if retried:
            self.mover.unlink(path)  # the retry completed
            return
        failed = self.layout.job_str(JobState.FAILED, job_id)
        # Back into failed/ unless a newer record stands there: what is no record (a
        # directory, say) is set aside, never taken for one.
        if not self.mover.move(path, failed) and not (
                self.spool.set_aside(failed, job_id, "record")
                and self.mover.move(path, failed)):
            self.mover.unlink(path)  # a newer record stands


def entries(folder: Path, *, optional: bool = False) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` ([] when missing; ``optional``: also when it cannot be
    listed, as ``stage/``, which a processor stages in only when it can, see
    :class:`spool.fsops.Mover`)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if optional:
            return []
        # A folder this process may not list (chmod 000 by hand): spool trouble, which
        # pauses the pass, never a crash of the processor mid-run (QA).
        if (trouble := no_access(exc, f"cannot list {folder.name}/")) is not None:
            raise trouble from exc
        raise


def _lstat(entry: os.DirEntry[str], report: RecoveryReport) -> os.stat_result | None:
    """The entry's own stat; None when it is gone, or when the disk fails to tell (EIO: a
    bad sector under its inode): then it is left for the next pass, as an orphan whose
    read fails, and said in ``report``.  Raised, that error failed every pass (claims
    paused at each) for as long as the sector stayed bad."""
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _left_unread(exc, entry, "cannot look up", report)
        return None


def _left_unread(exc: OSError, entry: os.DirEntry[str], doing: str,
                 report: RecoveryReport) -> None:
    """Said in ``report`` when ``exc`` is the disk failing this one file (EIO), which is
    then left for the next pass; else ``exc`` is raised (the spool's trouble)."""
    folder = os.path.basename(os.path.dirname(entry.path))
    if (trouble := failing_file(exc, f"{doing} {folder}/{entry.name}")) is None:
        raise exc
    report.unreadable.append(str(trouble))


def names_itself(path: Path, tag: str) -> bool:
    """The file at ``path`` is a JSON object that names ``tag`` (its staging name's tag)
    as its ``id`` or ``owner``: a record, job file or processor status being written
    under a name made from its own (judged from its leading fields: one cut short
    mid-write may still tell)."""
    found = read_record(path)
    if found is None:
        return False
    try:
        fields, _ = leading_fields(found.head if isinstance(found, Head) else found)
    except ValueError:
        return False
    return tag in (fields.get("id"), fields.get("owner"))


def _owned_by(st: os.stat_result, uids: set[int]) -> bool:
    """A regular file of one link whose owner is among ``uids``: made or moved there by
    one of them.  A submitter can make no file another user owns, nor link one of
    spoolq's there (a second link; and ``fs.protected_hardlinks`` refuses it)."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid in uids


def may_live(staged: StagingName, age_s: float) -> bool:
    """Whether the writer of a staging file that has stood unchanged for ``age_s`` may
    still be at it: a live process; one whose pid no process here can tell of (another
    pid space: a container sharing the spool, see :func:`spool.layout.pid_space`) until
    the file has stood :data:`STAGING_GRACE_S` (a spare: a day).  Judged by their pids
    here, the staged submits, cancel requests and records of other containers'
    processes were removed mid-write (QA).  A name of no pid space (an older spoolq's,
    or one where ``/proc`` does not tell) may be of either: its file is kept while its
    pid runs here or for the grace (an older client's submit in another container was
    removed so mid-upgrade: QA)."""
    if staged.space is not None and staged.space == pid_space():
        return pid_alive(staged.pid)
    # A spare may wait days for a full disk (see Mover.retire): kept a day.
    if age_s < (DEAD_STAGING_AGE_S if staged.tag == SPARE_TAG else STAGING_GRACE_S):
        return True
    return staged.space is None and pid_alive(staged.pid)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spoolqs(tag: str) -> bool:
    """A staging tag this spoolq writes under: a fresh write's (``=<name>``), a spare's, a
    move's (``<action>-<id>``)."""
    return tag.startswith((WRITE_TAG, SPARE_TAG)) or tag.partition("-")[0] in ACTIONS
