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
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from spool.clock import utc_from_ns
from spool.errors import ConflictError, ErrorType, SpoolIOError
from spool.exact import big_integer_reason, inexact_integer
from spool.fsops import SPARE_TAG
from spool.ids import JOB_SUFFIX, id_from_name, invalid_id, is_valid_id
from spool.kept import KeptLedger
from spool.layout import KEPT_TAG, ORIG_SUFFIX, is_kept_name
from spool.lease import is_locked, open_nofollow, try_lock
from spool.models import ErrorInfo, Job, Record, Source, parse_record, record_bytes
from spool.reader import read_regular
from spool.recheck import Recheck
from spool.states import JobState
from spool.transitions import (
    MAX_ACTIVE_BYTES,
    Claim,
    Spool,
    may_not_change_folder,
    read_fd,
    record_from_job,
)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
DEAD_STAGING_AGE_S = 86_400.0
# done/ is looked up name by name, not listed, once it holds this many names per name
# of failed/ (a lookup costs about two listed names; see Recovery._in_done).
LOOKUP_RATIO = 4

MaxAttempts = Callable[[Job], int]


def default_max_attempts(job: Job) -> int:
    return job.max_attempts or 1


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Delay before run ``attempts + 1``: exponential from 1 s, capped, with jitter."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


@dataclass(slots=True)
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.requeued or self.abandoned or self.cancelled or self.finished
                    or self.restored or self.removed)


class Recovery:
    """One recovery pass over a spool; ``max_attempts`` resolves a job's limit."""

    def __init__(self, spool: Spool, max_attempts: MaxAttempts = default_max_attempts) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.mover = spool.mover
        self.max_attempts = max_attempts
        # failed/<id>.orig name -> (inode, mtime) of the quarantine record beside it
        self._quarantine_records: dict[str, tuple[int, int]] = {}
        # How many names done/ held when last listed (None: not yet), see _in_done.
        self._done_seen: int | None = None
        # The kept names of done/ when this pass listed it (see _in_done), else None.
        self._kept_in_done: list[str] | None = None
        self._recheck = Recheck(self.layout.folder(JobState.FAILED),
                                self.layout.folder(JobState.DONE), spool.presence)
        self._kept = KeptLedger(spool)
        self._first = True

    def scan(self) -> RecoveryReport:
        report = RecoveryReport()
        self._kept_in_done = None
        owners_died = self._dead_owners(report)
        self._dead_staging(report)
        for entry in _entries(self.layout.folder(JobState.RUNNING)):
            job_id = id_from_name(entry.name)
            if job_id is not None:
                self._orphan(job_id, report)
            elif is_kept_name(entry.name):
                self._kept.note(entry.path)
        self._terminal_leftovers(report, full=owners_died)
        self._sidecars(report)
        if owners_died or self._first:
            self._kept_in_unlisted_folders()
        self._first = False
        report.restored.extend(self._kept.settle())
        self.mover.sweep_litter()  # this process's own staging files a failed write left
        self.mover.flush()
        return report

    def _kept_in_unlisted_folders(self) -> None:
        """Note the kept entries of ``pending/`` and ``done/``, which the other passes do
        not list: what only a processor keeps there (intake, completion) and, in
        ``done/``, a client's cancel."""
        self._kept.note_folder(self.layout.folder(JobState.PENDING))
        done = self.layout.folder(JobState.DONE)
        kept_in_done = self._kept_in_done
        if kept_in_done is None:
            self._kept.note_folder(done)
            return
        for name in kept_in_done:  # listed already by _in_done
            self._kept.note(f"{done}/{name}")

    # -- orphans in running/ -------------------------------------------------------

    def _orphan(self, job_id: str, report: RecoveryReport) -> None:
        path = self.layout.job(JobState.RUNNING, job_id)
        claim = _lease(path, job_id)
        if claim is None:
            self._not_a_file(job_id, path, report)
            return  # a live owner holds it, or it just finished
        try:
            self._settle_orphan(claim, report)
        finally:
            claim.close()

    def _not_a_file(self, job_id: str, path: Path, report: RecoveryReport) -> None:
        """Quarantine what no claim leaves in ``running/``: anything but a regular file.

        A claim moves only the regular file it locked, but a symlink, directory or
        FIFO swapped in for the drop at that moment moves with it (the claimant sends
        it back to ``pending/`` unless a newer drop is there, see ``Spool._take``).
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            return  # a live owner's lease
        staged = self.layout.staging(f"quarantine-{job_id}")
        try:
            moved = self.mover.move(path, staged, replace=False, durable=False)
        except SpoolIOError as exc:
            # Another user's directory (an operator's `sudo mkdir`): kept in running/, as
            # no claim or pass looks at its name, beside a record; each start exited 2.
            if not may_not_change_folder(str(path), exc):
                raise
            if self.spool.keep_in_place(str(path), name=f"running/{path.name}", message=(
                    "found in running/, not a regular file; the spool user may not move it "
                    "out of running/ (a directory changes folder only if its mover may "
                    "write it)")):
                report.restored.append(job_id)
            return
        if moved:
            self._restore_quarantine(job_id, staged, st, "found in running/, not a regular "
                                     "file (swapped in for the drop while it was claimed)")
            report.restored.append(job_id)

    def _settle_orphan(self, claim: Claim, report: RecoveryReport) -> None:
        job_id = claim.job_id
        job: Job | None = None
        if len(claim.data) > MAX_ACTIVE_BYTES:
            invalid = f"too large (over {MAX_ACTIVE_BYTES} bytes)"
        elif (big := inexact_integer(claim.data)) is not None:
            # pydantic reads it exactly, and no record holding it could be written.
            invalid = big_integer_reason(big)
        else:
            try:
                job = Job.model_validate_json(claim.data)
            except ValidationError as exc:
                invalid = exc.errors()[0]["msg"]
        if self._run_recorded(claim, job):
            self.mover.unlink_durable(self.layout.job(JobState.RUNNING, job_id))
            report.finished.append(job_id)
            return
        if job is None:
            self._fail_orphan(claim, None, f"running file is not a valid job: {invalid}")
            report.abandoned.append(job_id)
            return
        if self._requeued_already(claim, job):
            # Requeued, then killed before the running file went: finish that requeue.
            self.mover.unlink_durable(self.layout.job(JobState.RUNNING, job_id))
            report.finished.append(job_id)
            return
        ran = job.attempts + 1
        if os.path.lexists(self.layout.cancel_str(job_id)):
            # Asked while no processor ran it (the client was told the request is in):
            # the cancel wins over a retry.
            self._fail_orphan(claim, job.model_copy(update={"attempts": ran}),
                          "cancelled while running; its processor died before stopping it",
                          ErrorType.CANCELLED)
            report.cancelled.append(job_id)
            return
        limit = self.max_attempts(job)
        if ran < limit:
            delay = backoff_s(ran)
            retry = job.model_copy(update={
                "attempts": ran, "submitted_at": job.submitted_at or utc_from_ns(claim.mtime_ns),
                "not_before": self.spool.clock.now() + timedelta(seconds=delay),
                "error": ErrorInfo(type=ErrorType.ABANDONED,
                                   message="its processor died mid-run; requeued"),
            })
            if self.spool.requeue(claim, retry):
                report.requeued.append(job_id)
                return
            message = "its processor died mid-run; superseded by a newer drop of the id"
        else:
            message = f"its processor died mid-run; attempt {ran} of {limit}, not retried"
        self._fail_orphan(claim, job.model_copy(update={"attempts": ran}), message)
        report.abandoned.append(job_id)

    def _run_recorded(self, claim: Claim, job: Job | None) -> bool:
        """This run's record is in ``done/`` or ``failed/``: its completion was cut short.

        A record written in a later tick of the filesystem's clock than the claim is this
        run's.  One of the same tick may be the record of the run before it: a drop of the
        id that waited for that run is claimed the moment it ends, well within a tick
        (4 ms here).  It is this run's only if it records this job's submission and
        attempt.
        """
        for state in (JobState.DONE, JobState.FAILED):
            path = self.layout.job(state, claim.job_id)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a directory or symlink under the name is no record
            mtime_ns = st.st_mtime_ns
            if mtime_ns > claim.claimed_ns or (mtime_ns == claim.claimed_ns and (
                    job is None or self._records_run(path, claim, job))):
                return True
        return False

    @staticmethod
    def _records_run(path: Path, claim: Claim, job: Job) -> bool:
        data = read_regular(path)
        try:
            record = parse_record(data) if data is not None else None
        except ValueError:
            return False
        return (record is not None and record.source is None
                and job.recorded_by(record.submitted_at, record.attempts, claim.mtime_ns))

    def _requeued_already(self, claim: Claim, job: Job) -> bool:
        """``pending/<id>.json`` is this run's own requeue: the same job and submission,
        with no fewer attempts (a requeue changes only the attempts, the delay and the
        error; a newer drop has a submission time of its own)."""
        # A drop over MAX_ACTIVE_BYTES is no job (intake quarantines it): never read whole.
        data = read_regular(self.layout.job(JobState.PENDING, claim.job_id), MAX_ACTIVE_BYTES)
        if data is None:
            return False
        try:
            pending = Job.model_validate_json(data)
        except ValueError:
            return False
        submitted = job.submitted_at or utc_from_ns(claim.mtime_ns)
        requeue_sets = {"attempts", "not_before", "error", "submitted_at", "id"}
        rest = pending.model_dump(exclude=requeue_sets)
        return (pending.submitted_at == submitted and pending.attempts >= job.attempts
                and rest == job.model_dump(exclude=requeue_sets))

    def _fail_orphan(self, claim: Claim, job: Job | None, message: str,
                     kind: ErrorType = ErrorType.ABANDONED) -> None:
        """Record the orphan failed with ``kind`` (``abandoned``, or ``cancelled`` when a
        cancel was asked) and take it out of ``running/``."""
        now = self.spool.clock.now()
        if job is None:
            record = Record(id=claim.job_id, state=JobState.FAILED, finished_at=now,
                            submitted_at=utc_from_ns(claim.mtime_ns))
        else:
            record = record_from_job(job, claim.job_id, JobState.FAILED, claim.mtime_ns)
        record = record.model_copy(update={
            "finished_at": now, "started_at": utc_from_ns(claim.claimed_ns),
            "host": self.spool.host, "pid": self.spool.pid,
            "error": ErrorInfo(type=kind, message=message),
        })
        self.spool.fail(claim, record)

    def _finished_after(self, job_id: str, claimed_ns: int) -> bool:
        for state in (JobState.DONE, JobState.FAILED):
            try:
                st = os.lstat(self.layout.job(state, job_id))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime_ns >= claimed_ns:
                return True  # a record (a directory or symlink under the name is none)
        return False

    # -- tmp/ and stage/ --------------------------------------------------------------

    def _dead_staging(self, report: RecoveryReport) -> None:
        """Dead staging files in ``tmp/`` and in ``stage/`` (a processor's own: its spares
        and the records it writes, see :class:`spool.fsops.Mover`)."""
        now_s = self.spool.clock.now().timestamp()
        for entry in [*_entries(self.layout.tmp), *_entries(self.layout.stage, optional=True)]:
            parsed = _parse_staging(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            # ctime: any write, rename or utime sets it, where a drop may carry the mtime
            # of its source (scp -p, rsync -t) from long ago.
            old = now_s - st.st_ctime > DEAD_STAGING_AGE_S
            if parsed is None:
                if old:
                    report.removed += self.mover.unlink(Path(entry.path))
                continue
            tag, pid = parsed
            path = Path(entry.path)
            if tag == SPARE_TAG and pid == os.getpid():
                if self.mover.holds_spare(entry.path):
                    continue
                # else a spare of an earlier process that had this pid (a restarted container)
            elif _pid_alive(pid) and (not old or tag == SPARE_TAG):
                continue  # a live process's spare, however long it has waited
            # Only a regular file can carry a claim lease; never open a symlink,
            # FIFO, socket or device left by a quarantine cut short.
            if stat.S_ISREG(st.st_mode) and is_locked(path):
                continue
            self._settle_staged(tag, path, st, report)

    def _settle_staged(self, tag: str, path: Path, st: os.stat_result,
                       report: RecoveryReport) -> None:
        action, _, job_id = tag.partition("-")
        if action == "kept" and is_valid_id(job_id):
            self._settle_kept(job_id, path, st, report)
        if not is_valid_id(job_id) or action not in ("quarantine", "cancel", "retry"):
            report.removed += self.mover.unlink(path)
            return
        if action == "quarantine":
            self._restore_quarantine(job_id, path, st)
        elif action == "cancel":
            self._restore_cancel(job_id, path, st)
        else:
            self._restore_retry(job_id, path, st)
        report.restored.append(job_id)

    def _settle_kept(self, job_id: str, path: Path, kept: os.stat_result,
                     report: RecoveryReport) -> None:
        """Finish a cancel of a file that holds no job cut short beside an earlier
        original of its id, which it keeps linked in ``tmp/`` until its record is written
        (``Spool._cancel_no_job``); the link itself goes after this.

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
            return  # an original without record: _settle_original writes it
        if ((st.st_ino, st.st_dev) == (kept.st_ino, kept.st_dev)
                or record_st.st_mtime_ns >= st.st_ctime_ns):
            return  # not replaced, or its record was written since
        self._record_for_original(job_id, st, job_id + JOB_SUFFIX, (
            f"not a valid job, cancelled while pending (its canceller died before writing "
            f"this record); its bytes are kept in failed/{original.name}"), replace=True)
        report.restored.append(job_id)

    def _restore_quarantine(self, job_id: str, path: Path, st: os.stat_result,
                            message: str = "quarantined when its processor died; the "
                            "original name was lost") -> None:
        """Finish a quarantine cut short in ``tmp/``: the original into ``failed/``, then
        its record, replacing the id's earlier records as the quarantine would have.

        Like ``Spool.quarantine`` it never replaces an earlier original of the id, nor
        (here) a record written after the quarantine began: the drop then gets an id of
        its own, and its record under that id.
        """
        name = job_id + JOB_SUFFIX
        taken = (os.path.lexists(self.layout.original(job_id))
                 or self._finished_after(job_id, st.st_ctime_ns))
        while True:
            if taken:
                job_id = invalid_id(self.spool.clock.now())
            if self.mover.move(path, self.layout.original(job_id), replace=False):
                break
            if not os.path.lexists(path):
                return  # settled meanwhile by another processor's scan
            taken = True
        if job_id + JOB_SUFFIX != name:
            message += f" (an earlier {name} keeps its own record)"
        self._record_for_original(job_id, st, name, message, replace=True)

    def _restore_cancel(self, job_id: str, path: Path, st: os.stat_result) -> None:
        if self._finished_after(job_id, st.st_ctime_ns):
            self.mover.unlink(path)  # the cancel completed
            return
        if self.mover.move(path, self.layout.job(JobState.PENDING, job_id), replace=False):
            return  # cancel undone: the job is pending again
        claim = _lease(path, job_id)  # a newer drop is pending: finish the cancel
        if claim is None:
            return
        try:
            self.spool.finish_cancel(claim, path)
        except ConflictError as exc:
            # A file that is no job, whose bytes cannot become failed/<id>.orig (a
            # directory is there), and cannot go back (the newer drop): kept as a
            # quarantine under an id of its own, as Spool.quarantine keeps a drop
            # beside an earlier original.
            self._restore_quarantine(job_id, path, st, (
                f"not a valid job, its cancel cut short (its canceller died) and neither "
                f"finished ({exc}) nor undone (a newer drop of the id is pending)"))

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

    # -- done/ and failed/ -----------------------------------------------------------

    def _terminal_leftovers(self, report: RecoveryReport, *, full: bool) -> None:
        """Settle the names of ``failed/`` the :class:`Recheck` picks (all: ``full``)."""
        plan = self._recheck.full() if full else self._recheck.next()
        failed = self.layout.folder(JobState.FAILED)
        for name in plan.names:
            if is_kept_name(name):
                self._kept.note(f"{failed}/{name}")
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
            self._kept_in_done = [name for name in listed
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
        try:
            st = os.lstat(original)
        except FileNotFoundError:
            self._quarantine_records.pop(original.name, None)
            return
        record = self.layout.job(JobState.FAILED, job_id)
        try:
            record_st: os.stat_result | None = os.lstat(record)
        except FileNotFoundError:
            record_st = None
        if record_st is None or not stat.S_ISREG(record_st.st_mode):
            # No record: a directory, FIFO or symlink at its name is none (the record's
            # publish sets it aside).
            superseded = self._finished_after(job_id, st.st_ctime_ns)
        elif self._runs_record(original.name, record, record_st):
            superseded = record_st.st_mtime_ns >= st.st_ctime_ns
        else:
            return  # its quarantine record (or no valid record: not ours to judge)
        if superseded:
            report.removed += self.spool.remove_original(str(original), durable=True)
            return
        self._record_for_original(job_id, st, job_id + JOB_SUFFIX,
                                  "quarantined when its processor died",
                                  replace=record_st is not None)
        report.restored.append(job_id)

    def _runs_record(self, name: str, record: Path, st: os.stat_result) -> bool:
        """True when ``record`` is a valid record of a run (no ``source``): not the
        quarantine record of the original ``name``.

        An original is checked on many scans, so a record found to be its quarantine's
        is remembered by inode and mtime, and not read again while they stay.
        """
        key = (st.st_ino, st.st_mtime_ns)
        if self._quarantine_records.get(name) == key:
            return False
        # A failed record holds no result: one over MAX_ACTIVE_BYTES is no record of ours.
        data = read_regular(record, MAX_ACTIVE_BYTES)
        if data is None:
            return False
        try:
            quarantine = parse_record(data).source is not None
        except ValueError:
            return False
        if quarantine:
            self._quarantine_records[name] = key
        return not quarantine

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
        report.removed += self.mover.unlink_durable(older)

    def _record_for_original(self, job_id: str, st: os.stat_result, name: str,
                             message: str, *, replace: bool) -> None:
        """Publish the quarantine record of ``failed/<id>.orig`` (``st``, once ``name``), the
        id's one terminal record; ``replace``: over an earlier failed record of the id."""
        kind = "file" if stat.S_ISREG(st.st_mode) else "other"
        record = Record(
            id=job_id, state=JobState.FAILED, submitted_at=utc_from_ns(st.st_mtime_ns),
            finished_at=self.spool.clock.now(), host=self.spool.host, pid=self.spool.pid,
            error=ErrorInfo(type=ErrorType.INVALID_JOB, message=message),
            source=Source(name=name, size=st.st_size, kind=kind))
        if replace:  # and what is no record at its name is set aside (Spool.set_aside)
            self.spool.publish_terminal(record)
        elif self.mover.publish(self.layout.job(JobState.FAILED, job_id), record_bytes(record),
                                replace=False):
            self.spool.remove_file(self.layout.job_str(JobState.DONE, job_id), job_id,
                                   "record", durable=True)

    # -- sidecars and owners ---------------------------------------------------------

    def _sidecars(self, report: RecoveryReport) -> None:
        running = self.layout.folder(JobState.RUNNING)
        pending = self.layout.folder(JobState.PENDING)
        # Only regular files go: anything else there is set aside (Spool.remove_file),
        # but for what set_aside kept here already (an operator's to remove).
        for entry in _entries(self.layout.progress):
            if is_kept_name(entry.name):
                self._kept.note(entry.path)
            elif not os.path.lexists(running / entry.name):
                report.removed += self.spool.remove_file(
                    entry.path, entry.name.removesuffix(JOB_SUFFIX), "progress")
        for entry in _entries(self.layout.cancel):
            name = entry.name + JOB_SUFFIX
            if is_kept_name(entry.name):
                self._kept.note(entry.path)
                continue
            if not (os.path.lexists(running / name) or os.path.lexists(pending / name)):
                report.removed += self.spool.remove_file(entry.path, entry.name,
                                                         "cancel request")

    def _dead_owners(self, report: RecoveryReport) -> bool:
        """Remove the lock and status files of owners that are gone; True if any was."""
        died = False
        for entry in _entries(self.layout.owners):
            if not entry.name.endswith(".lock"):
                continue
            owner = entry.name.removesuffix(".lock")
            if not is_valid_id(owner) or is_locked(Path(entry.path)) is not False:
                continue
            report.removed += self.mover.unlink(self.layout.owner_status(owner))
            report.removed += self.mover.unlink(Path(entry.path))
            died = True
        return died


def _entries(folder: Path, *, optional: bool = False) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` ([] when missing; ``optional``: also when it cannot be
    listed, as ``stage/``, which a processor stages in only when it can, see
    :class:`spool.fsops.Mover`)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:
        return []
    except OSError:
        if optional:
            return []
        raise


def _lease(path: Path, job_id: str) -> Claim | None:
    """Lock an existing file in place (no move); None when it is gone or held."""
    try:
        fd = open_nofollow(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and try_lock(fd):
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                fd_out, fd = fd, -1
                # Past MAX_ACTIVE_BYTES it is no job (see _settle_orphan): read no more.
                data = read_fd(fd_out, MAX_ACTIVE_BYTES, st.st_size)
                return Claim(job_id, fd_out, data, now.st_ctime_ns, now.st_mtime_ns)
        return None
    except FileNotFoundError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _parse_staging(name: str) -> tuple[str, int] | None:
    parts = name.rsplit(".", 3)
    if len(parts) != 4 or parts[3] != "tmp" or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

