"""The transitions of one spool: :class:`Spool`, the only writer of its state folders.

:class:`Spool` is the spool's public surface.  This module owns the moves of a run,
claim, complete, fail, requeue and release (the processor's hot path, kept here without
a frame more than it needs), and the writing and removal of the files the spool keeps
per id: its terminal record and a run's sidecars.  The other moves live in modules of
their own, each named after what it owns, behind methods of :class:`Spool`:
:mod:`spool.claim` (taking a file under its lease), :mod:`spool.quarantine` (what is
no job, or is no regular file where the spool keeps one), :mod:`spool.cancellation` and
:mod:`spool.submission` (submit and retry).

Guarantees (DESIGN sections 2 and 9):

* Completion publishes the full record into ``done/`` or ``failed/`` first,
  removes any older terminal record of the id, then ``running/<id>.json``; the other
  folder's record goes only while the new one stands (:mod:`spool.superseded`), so two
  finishers of one id at once (a run and a cancel of its waiting re-drop) leave one.
* A record replaces an earlier record of its id, and finishing a run removes the
  id's other record and its sidecars, but only ever regular files: anything else
  found at one of those names (a directory, FIFO, socket or symlink that an
  operator or a script made there) is set aside (:func:`spool.quarantine.set_aside`),
  so no such entry stops the spool or is lost.
* A requeue never overwrites a newer pending drop of the id: it returns False.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from spool import cancellation, quarantine, submission, superseded
from spool.claim import Claim, take
from spool.clock import Clock, SystemClock, utc_from_ns
from spool.entries import read_regular
from spool.errors import SpoolIOError
from spool.fsops import FILES_ONLY, NO_ROOM, Mover, StrPath, is_there, refused_by_file
from spool.ids import JOB_SUFFIX
from spool.jobfile import job_in, record_from_job
from spool.layout import ORIG_SUFFIX, Layout
from spool.models import Job, Record, Source, job_bytes, record_bytes
from spool.settings import Settings
from spool.states import JobState, check_transition

if TYPE_CHECKING:
    from spool.presence import Presence

log = logging.getLogger("spoolq.spool")

# Folders a Spool's Presence follows, by index.
_PROGRESS, _CANCEL, _FAILED = 0, 1, 2
# The states, read once: on Python 3.11 each ``JobState.X`` goes through the enum class's
# ``__getattr__`` hook (0.11 us), and a claim-and-complete read a dozen of them.
_S_PENDING, _S_RUNNING, _S_DONE, _S_FAILED = (JobState.PENDING, JobState.RUNNING,
                                              JobState.DONE, JobState.FAILED)
ASIDE_TRIES = 3
"""How often :meth:`Spool.publish_file` sets aside what took its name before giving up:
more than once only when something keeps making a directory (say) there."""



class Spool:
    """The transitions of one spool; the only writer of its state folders."""

    def __init__(self, layout: Layout, mover: Mover, clock: Clock | None = None, *,
                 follow: bool = False) -> None:
        """``follow``: keep a :class:`~spool.presence.Presence` of the sidecar folders, so
        finishing a job skips removing what is not there (for a long-lived processor)."""
        self.layout = layout
        self.mover = mover
        self.clock: Clock = clock or SystemClock()
        self.host = socket.gethostname()
        self.closer: Callable[[int], None] = os.close
        self.presence: Presence | None = None
        self.after_commit: Callable[[str], None] | None = None
        """Told, as a warning, of a client's change made whose later step failed (see
        :mod:`spool.committed`); None raises that step's error (a processor's spool)."""
        if follow:  # inotify (through watchdog) is imported only to follow
            from spool.presence import Presence  # noqa: PLC0415

            presence = Presence([str(layout.progress), str(layout.cancel),
                                 str(layout.folder(JobState.FAILED))])
            if presence.start():
                self.presence = presence

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None, *,
                      recycle: bool = False) -> Spool:
        """``recycle``: as a processor runs it (recycled inodes, followed sidecars)."""
        layout = Layout(settings.spool_dir)
        return cls(layout, Mover(layout, settings.fsync, recycle=recycle), clock,
                   follow=recycle)

    def close(self) -> None:
        if self.presence is not None:
            self.presence.close()
            self.presence = None

    # -- claim -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """This process's pid, as records name it: asked each time, as a client's Spool
        used after ``os.fork()`` wrote its parent's pid into the child's records (QA)."""
        return os.getpid()

    def claim(self, job_id: str) -> Claim | None:
        """pending -> running; None when another claimant won or the id is running."""
        check_transition(_S_PENDING, _S_RUNNING)
        layout = self.layout
        return take(self.mover, layout.job_str(_S_PENDING, job_id),
                    layout.job_str(_S_RUNNING, job_id), job_id)

    # -- finishing ---------------------------------------------------------------

    def complete(self, claim: Claim, record: Record) -> None:
        """running -> done."""
        self._finish(claim, record, _S_DONE)

    def fail(self, claim: Claim, record: Record, *, keep_original: bool = False) -> None:
        """running -> failed; ``keep_original``: the job file's bytes are kept beside the
        record, as ``failed/<id>.orig``, and the record's ``source`` names them (an unknown
        tool, invalid params: DESIGN section 2).

        They are written before the record, as a quarantine places its drop's (recovery
        and purge rely on that order): a run cut short between the two leaves the
        original beside its running file, and recovery takes it away with the run's end
        (:mod:`spool.orphans`).  A copy of the bytes the claim read, not the file itself:
        the running file stays where it is until the record is written, so the id is
        claimed, and no drop of it runs, until then.
        """
        if keep_original:
            self._keep_original(claim, record)
        self._finish(claim, record, _S_FAILED)

    def _keep_original(self, claim: Claim, record: Record) -> None:
        try:
            size = os.fstat(claim.fd).st_size
        except OSError:
            return
        if size != len(claim.data):  # grown past what a job can be: not read whole
            return
        job_id = claim.job_id
        if self.publish_file(self.layout.original_str(job_id), claim.data, job_id,
                             "original"):
            record.source = Source(name=job_id + JOB_SUFFIX, size=size)

    def _finish(self, claim: Claim, record: Record, state: JobState) -> None:
        check_transition(_S_RUNNING, state)
        if record.state is not state or record.id != claim.job_id:
            record = record.model_copy(update={"state": state, "id": claim.job_id})
        try:
            self.publish_terminal(record)
        except SpoolIOError as exc:
            # Out of inodes, the run's progress file may hold the one its record needs
            # (it took the spare the last run left): the processor then paused for good,
            # the inode that would free it its own (QA, h315).  Dropped, so this try or a
            # later one (another run's record, waiting too) has it; the run is over.
            # Only for want of room: any other error is said as it came.
            cause = exc.__cause__
            if (not isinstance(cause, OSError) or cause.errno not in NO_ROOM
                    or not self._drop_progress(claim.job_id)):
                raise
            self.publish_terminal(record)
        self._retire(claim, refresh=False)  # publish_terminal refreshed after the publish

    def _drop_progress(self, job_id: str) -> bool:
        """Remove a run's progress file, if it has one; False when it had none or the
        removal failed."""
        try:
            return self._drop(_PROGRESS, job_id + JOB_SUFFIX, self.layout.progress_str(job_id),
                              of=(job_id, "progress"))
        except (SpoolIOError, OSError):
            return False

    def publish_terminal(self, record: Record,
                         unwritten: Callable[[], object] | None = None) -> None:
        """Write the one terminal record of an id, replacing any earlier one.

        ``unwritten`` is called before the error propagates when the write fails and
        the record's path still names what it named before (no record, or an earlier
        one of the id) or nothing (what was there set aside); a failure after the
        rename landed, such as a folder fsync's EIO, leaves this record in place and
        skips it.
        """
        path = self.layout.job_str(record.state, record.id)
        before = None
        if unwritten is not None:
            try:
                before = _inode(path)
            except OSError:  # (EIO) nothing written yet: a cancel left its job staged (QA)
                with contextlib.suppress(SpoolIOError, OSError):
                    unwritten()
                raise
        try:
            if not self.publish_file(path, record_bytes(record), record.id, "record"):
                raise SpoolIOError(f"cannot publish {record.state}/{record.id}.json: "
                                   "something that is not a regular file keeps taking its name")
        except BaseException:
            if unwritten is not None and _inode(path) in (before, None):
                with contextlib.suppress(SpoolIOError, OSError):
                    unwritten()
            raise
        self._drop_superseded(record, path)

    def _drop_superseded(self, record: Record, path: str) -> None:
        """Remove what the terminal ``record`` just published at ``path`` replaces: the
        other terminal record of its id, while ``path`` still holds a record
        (:mod:`spool.superseded`), and, when it belongs to it, a quarantined original."""
        job_id, state = record.id, record.state
        layout = self.layout
        # Each sidecar below is removed (its path built) only when it may be there.
        presence = self.presence
        if presence is not None:
            presence.refresh()
        dropped_other = False
        if state is _S_DONE:
            name = job_id + JOB_SUFFIX
            if presence is None or presence.may_exist(_FAILED, name):
                other = superseded.drop_other_record(self, _S_FAILED, job_id, path)
                dropped_other = other is superseded.Other.REMOVED
                if presence is not None and other is not superseded.Other.STANDS:
                    presence.forget(_FAILED, name)
        else:
            dropped_other = superseded.drop_other_record(
                self, _S_DONE, job_id, path) is superseded.Other.REMOVED
        if record.source is None and (state is _S_FAILED or dropped_other):
            # A quarantined original belongs to the failed record it sat beside.
            name = job_id + ORIG_SUFFIX
            if presence is None or presence.may_exist(_FAILED, name):
                self._drop(_FAILED, name, layout.original_str(job_id))

    def _drop(self, folder: int, name: str, path: str, *, durable: bool = False,
              of: tuple[str, str] | None = None) -> bool:
        """Remove ``path``, which is ``name`` in the followed folder ``folder``: whatever
        it is (a quarantined original may be a directory drop), or with ``of`` (the job id
        and what the spool keeps there) only a regular file (:meth:`remove_file`)."""
        if of is not None:
            removed = self.remove_file(path, *of, durable=durable)
        else:
            removed = quarantine.remove_original(self, path, durable=durable)
        if self.presence is not None:
            self.presence.forget(folder, name)
        return removed

    def remove_file(self, path: str, job_id: str, what: str, *, durable: bool = False) -> bool:
        """Remove ``path``, where the spool keeps ``what`` of job ``job_id``, when it is a
        regular file; anything else there is set aside (:meth:`set_aside`).  True when a
        file was removed.  The lstat replaces the unlink that found nothing, as it
        usually does: no cost but when something is there."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if S_ISREG(st.st_mode):
            unlink = self.mover.unlink_durable if durable else self.mover.unlink
            try:
                return unlink(path, tree=False)
            except IsADirectoryError:
                pass  # a directory made there since the lstat
        quarantine.set_aside(self, path, job_id, what)
        return False

    def publish_file(self, path: str, data: bytes, job_id: str, what: str, *,
                     durable: bool = True) -> bool:
        """Write ``data`` at ``path``, where the spool keeps ``what`` of job ``job_id``
        (its record, its progress, its cancel request), over a regular file there (an
        earlier one); anything else there is set aside first (:meth:`set_aside`).  False
        when something that is no regular file keeps taking the name."""
        for _ in range(ASIDE_TRIES):
            if self.mover.publish(path, data, replace=FILES_ONLY, durable=durable):
                return True
            quarantine.set_aside(self, path, job_id, what)
        return False

    def _retire(self, claim: Claim, *, refresh: bool = True) -> None:
        """The run is recorded: drop its running file, sidecars and lease."""
        running = self.layout.job_str(_S_RUNNING, claim.job_id)
        try:
            kept = self.mover.retire(running, claim.fd)
        except SpoolIOError as exc:
            if not refused_by_file(exc.__cause__):
                raise
            # The file itself refuses (chattr +i): its record stands, and readers trust
            # the terminal folder (DESIGN section 9).  Taken for spool trouble, the
            # record was written again after each pause and every claim waited (QA).
            log.warning("a finished job's running file refuses its removal; its record "
                        "stands, the file is left", extra={"fields": {
                            "id": claim.job_id, "error": str(exc)}})
            kept = False
        # A sidecar the disk cannot look up or remove (EIO under progress/<id>.json) once
        # the run is recorded and its file gone: left for recovery's sidecar pass, as
        # release leaves them.  Raised, it got out of complete() raw (an OSError: the
        # processor crashed, exit 1); or (a SpoolIOError) the processor kept the run and
        # did the transition again after its pause, over what had happened since: a
        # requeue found its job pending or claimed, and failed it beside that, retiring
        # another claimant's running file; a record replaced a later run's.
        with contextlib.suppress(OSError, SpoolIOError):
            self._forget_run(claim.job_id, refresh=refresh)
        claim.close(os.close if kept else self.closer)  # only freeing an inode is slow

    def _forget_run(self, job_id: str, *, refresh: bool = True) -> None:
        """Drop the run's progress file and cancel request.

        ``refresh=False`` when the presence was refreshed after the run's terminal
        record was published: that refresh saw every sidecar that can matter.  A
        progress file is written by this processor, never once the run is finishing;
        a cancel request's writer (``Client.cancel``) looks for the terminal record
        after writing it and removes a request that came too late, so a request
        created after that refresh is removed by its writer.
        """
        presence = self.presence
        if presence is not None and refresh:
            presence.refresh()
        name = job_id + JOB_SUFFIX
        if presence is None or presence.may_exist(_PROGRESS, name):
            self._drop(_PROGRESS, name, self.layout.progress_str(job_id),
                       of=(job_id, "progress"))
        if presence is None or presence.may_exist(_CANCEL, job_id):
            self._drop(_CANCEL, job_id, self.layout.cancel_str(job_id),
                       of=(job_id, "cancel request"))

    def requeue(self, claim: Claim, job: Job) -> bool:
        """running -> pending with ``job`` as the new pending file.

        False (nothing moved) when a newer drop of the id is already pending:
        the caller then fails the run, and the newer drop supersedes it.  A pending file
        holding exactly ``job``'s bytes is this requeue, written before disk trouble
        (its folder's sync failed after the rename) and now tried again: it stands.
        """
        check_transition(JobState.RUNNING, JobState.PENDING)
        dest = self.layout.job_str(JobState.PENDING, claim.job_id)
        data = job_bytes(job)
        if not self.mover.publish(dest, data, replace=False) and read_regular(
                dest, len(data)) != data:
            return False
        self._retire(claim)
        return True

    def release(self, claim: Claim) -> bool:
        """running -> pending, the claimed file itself by rename: a claim that found the
        drop replaced, since intake judged it, by something that is no job gives it back
        for intake to judge (and quarantine with its bytes).  False (nothing moved) when
        a newer drop of the id is pending."""
        check_transition(JobState.RUNNING, JobState.PENDING)
        if not self.mover.move(self.layout.job_str(JobState.RUNNING, claim.job_id),
                               self.layout.job_str(JobState.PENDING, claim.job_id)):
            return False
        claim.close()
        with contextlib.suppress(SpoolIOError, OSError):
            self._forget_run(claim.job_id)  # the job is back; recovery drops what stays
        return True

    def requeue_cut_short(self, claim: Claim, job: Job) -> bool:
        """running -> pending for a run an orderly stop cut short: its attempt not counted.

        ``job`` (the job as claimed, its submission time pinned) becomes the pending
        file as :meth:`requeue` writes it.  Should the disk refuse that write (ENOSPC,
        EIO), the running file itself goes back by rename: it holds the bytes that were
        claimed, the attempts as they were before this run, so nothing needs writing
        and the attempt still does not count (left in ``running/``, recovery would
        count it).  False, as for :meth:`requeue`, when a newer drop is pending.
        """
        try:
            return self.requeue(claim, job)
        except (SpoolIOError, OSError):
            running = self.layout.job_str(JobState.RUNNING, claim.job_id)
            pending = self.layout.job_str(JobState.PENDING, claim.job_id)
            # Not os.path.lexists, which took the disk failing (EIO) for no pending file:
            # the move back then found this requeue at its name, took it for a newer
            # drop, and the run was failed "abandoned" beside its own requeue.  A lookup
            # that fails raises: left for recovery, as here.
            if (is_there(pending, f"cannot look up pending/{claim.job_id}{JOB_SUFFIX}")
                    or not is_there(running,
                                    f"cannot look up running/{claim.job_id}{JOB_SUFFIX}")):
                # Written, then the disk failed (recovery finishes that requeue), or a
                # newer drop is pending (recovery fails this run as superseded, as the
                # caller would): either way, left for recovery.
                raise
            if not self.mover.move(running, pending, replace=False):
                return False
        claim.close()
        with contextlib.suppress(SpoolIOError, OSError):
            self._forget_run(claim.job_id)  # the job is back; recovery drops what stays
        return True

    def record_of_claim(self, claim: Claim, state: JobState) -> Record:
        """A record for a claimed job file (tolerating a file that is not a valid job)."""
        job = job_in(claim.data)
        if job is None:
            return Record(id=claim.job_id, state=state, submitted_at=utc_from_ns(claim.mtime_ns),
                          finished_at=self.clock.now(), host=self.host, pid=self.pid)
        return record_from_job(job, claim.job_id, state, claim.mtime_ns,
                               finished_at=self.clock.now(), host=self.host, pid=self.pid)

    # -- the other moves (their own modules) --------------------------------------

    def set_aside(self, path: str, job_id: str, what: str) -> bool:
        """Move what is no regular file at ``path`` out of the way
        (:func:`spool.quarantine.set_aside`)."""
        return quarantine.set_aside(self, path, job_id, what)

    def keep_in_place(self, path: str, *, name: str, message: str) -> Record | None:
        """Keep what may not leave its folder under a name every pass ignores, beside its
        record (:func:`spool.quarantine.keep_in_place`)."""
        return quarantine.keep_in_place(self, path, name=name, message=message)

    def remove_original(self, path: str, *, durable: bool = False) -> bool:
        """Remove a superseded quarantined original
        (:func:`spool.quarantine.remove_original`)."""
        return quarantine.remove_original(self, path, durable=durable)

    def quarantine(self, name: str, message: str, *, kind: str, size: int | None,
                   mtime_ns: int, inode: tuple[int, int], tool: str | None = None
                   ) -> Record | None:
        """pending -> failed for what cannot be a job (:func:`spool.quarantine.from_pending`)."""
        return quarantine.from_pending(self, name, message, kind=kind, size=size,
                                       mtime_ns=mtime_ns, inode=inode, tool=tool)

    def submit(self, job: Job, job_id: str, *, max_bytes: int | None = None) -> None:
        """Publish a new job into ``pending/`` (:func:`spool.submission.submit`)."""
        submission.submit(self, job, job_id, max_bytes=max_bytes)

    def retry(self, job_id: str) -> Record:
        """failed -> pending with attempts reset to 0 (:func:`spool.submission.retry`)."""
        return submission.retry(self, job_id)

    def cancel_pending(self, job_id: str, *, settle_wait_s: float | None = None
                       ) -> Record | None:
        """pending -> failed ``cancelled`` (:func:`spool.cancellation.cancel_pending`)."""
        return cancellation.cancel_pending(self, job_id, settle_wait_s=settle_wait_s)

    def finish_cancel(self, claim: Claim, staged: Path) -> Record:
        """Publish the ``cancelled`` record of a job staged for cancel
        (:func:`spool.cancellation.finish_cancel`)."""
        return cancellation.finish_cancel(self, claim, staged)


def _inode(path: StrPath) -> int | None:
    """The inode ``path`` names now; None when nothing is there."""
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None
