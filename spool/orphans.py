"""Orphans: jobs left in ``running/`` by a processor that died (DESIGN sections 2, 9).

A running job is an orphan when its claim lease (the flock on ``running/<id>.json``) is
free; one a live owner holds is never touched.  An orphan whose run has its record
(newer than its claim, or as new and of this run) was finished: the leftover
``running/`` file goes.  One with a cancel request in ``cancel/`` (asked while its
processor was down) is failed ``cancelled``.  Otherwise it is requeued with its attempt
count raised and a backoff (:func:`backoff_s`, its end the error's ``retry_at``; the
job's ``not_before`` stays the client's), its error adding ``abandoned`` to the job's
earlier failures (:mod:`spool.history`), or failed ``abandoned`` once ``max_attempts``
is spent (its record keeps them).  What no claim leaves in ``running/`` (anything but a regular
file) is quarantined.  Part of :class:`spool.recovery.Recovery`'s pass.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from spool.claim import Claim
from spool.clock import utc_from_ns
from spool.errors import ErrorType, SpoolChanged, SpoolIOError, UnreadableDrop
from spool.exact import big_integer_reason, inexact_integer
from spool.fsops import failing_file, failing_read, is_there, refused_by_file
from spool.history import history_of, retry_error
from spool.ids import JOB_SUFFIX
from spool.jobfile import MAX_ACTIVE_BYTES, job_in, parse_job, read_fd, record_from_job
from spool.layout import ORIG_SUFFIX
from spool.lease import CLAIMS, close_noted, names, open_nofollow, try_lock
from spool.models import ErrorInfo, Job, Record, error_text, parse_record
from spool.quarantine import may_not_change_folder
from spool.reader import read_regular
from spool.states import JobState
from spool.transitions import Spool

if TYPE_CHECKING:
    from spool.layout import Layout
    from spool.recovery import RecoveryReport
    from spool.staged import Staged

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0

MaxAttempts = Callable[[Job], int]
StillOurs = Callable[[], bool]
"""Whether the spool's path still names the directory whose locks the process holds
(see :func:`ours_checked`)."""


def ours_checked(still_ours: StillOurs, locked: str) -> None:
    """Asked once ``locked`` (a path under the spool) is locked, before it is changed:
    raises :class:`~spool.errors.SpoolChanged` unless the spool is still the directory
    ``still_ours`` holds its locks in.  A processor's own runs are locked where it
    claimed them: on a spool remounted under it (a FUSE mount's locks are its own) its
    running files are free to lock, and its recovery pass requeued a job it was running
    (a double run, seen under load with the remount between the pass's check of the
    spool and its lock).  Asked after the lock, the check covers a remount before it; a
    remount after it leaves the lock on the old mount, where the run's own lock stands."""
    if not still_ours():
        raise SpoolChanged(f"recovery stopped at {locked}: the spool's path names another "
                           f"directory than the one this process holds its locks in "
                           f"(remounted or unmounted), or cannot be looked at")


def default_max_attempts(job: Job) -> int:
    return job.max_attempts or 1


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Delay before run ``attempts + 1``: exponential from 1 s, capped, with jitter."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


class Orphans:
    """Settles the orphans of one spool; ``max_attempts`` resolves a job's limit, and
    ``staged`` finishes the quarantine of what is no file in ``running/``."""

    def __init__(self, spool: Spool, max_attempts: MaxAttempts, staged: Staged,
                 still_ours: StillOurs) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.mover = spool.mover
        self.max_attempts = max_attempts
        self.staged = staged
        self.still_ours = still_ours

    def settle(self, job_id: str, report: RecoveryReport) -> None:
        """Settle ``running/<id>.json`` unless a live owner holds it."""
        path = self.layout.job(JobState.RUNNING, job_id)
        try:
            claim = lease(path, job_id)
        except UnreadableDrop as exc:
            # Left in running/, tried again at the next pass: raised, one bad sector under
            # one orphan stopped each start (exit 75, restarted for ever) and paused claims
            # at each pass, the orphans listed after it never settled.
            report.unreadable.append(str(exc))
            report.unread_orphans.append(job_id)
            return
        if claim is None:
            self._not_a_file(job_id, path, report)
            return  # a live owner holds it, or it just finished
        try:
            ours_checked(self.still_ours, f"running/{job_id}.json")
            self._settle_orphan(claim, report)
        except UnreadableDrop as exc:  # its record, or its id's drop: as its own read
            report.unreadable.append(str(exc))
            report.unread_orphans.append(job_id)
        finally:
            claim.close()

    def _not_a_file(self, job_id: str, path: Path, report: RecoveryReport) -> None:
        """Quarantine what no claim leaves in ``running/``: anything but a regular file.

        A claim moves only the regular file it locked, but a symlink, directory or
        FIFO swapped in for the drop at that moment moves with it (the claimant sends
        it back to ``pending/`` unless a newer drop is there, see :func:`spool.claim.take`).
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:  # as the lease's look-up: left, said, tried at each pass
            if (trouble := failing_file(exc, f"cannot look up running/{path.name}")) is None:
                raise
            report.unreadable.append(str(trouble))
            return
        if stat.S_ISREG(st.st_mode):
            return  # a live owner's lease
        staged = self.mover.action_staging(f"quarantine-{job_id}")
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
            self.staged.restore_quarantine(job_id, staged, st, "found in running/, not a regular "
                                     "file (swapped in for the drop while it was claimed)")
            report.restored.append(job_id)

    def _drop_finished(self, job_id: str, report: RecoveryReport) -> None:
        """Remove the running file of a run whose end is on disk already.  One that
        refuses its removal (chattr +i) is said, once, and left: its record stands, and
        taken for spool trouble it failed every pass, a pause each (QA)."""
        try:
            self.mover.unlink_durable(self.layout.job(JobState.RUNNING, job_id))
        except SpoolIOError as exc:
            if not refused_by_file(exc.__cause__):
                raise
            report.unreadable.append(f"cannot remove running/{job_id}{JOB_SUFFIX}, whose "
                                     f"run is over: {exc} (the file refuses it; its record "
                                     "stands)")
            return
        report.finished.append(job_id)

    def _drop_kept_original(self, claim: Claim) -> None:
        """Remove the ``failed/<id>.orig`` this run wrote before its record, which it never
        wrote (:meth:`Spool.fail <spool.transitions.Spool.fail>` keeps an unknown tool's job
        file so): the run is settled below, and an original left without its record
        would get a quarantine's record from recovery, beside the job requeued.  One
        written before the claim is an earlier record's, and stays."""
        original = self.layout.original_str(claim.job_id)
        try:
            st = os.lstat(original)
        except FileNotFoundError:
            return
        except OSError as exc:  # EIO: the orphan's trouble, as its record's read's
            if (trouble := failing_file(exc, f"cannot look up failed/{claim.job_id}"
                                             f"{ORIG_SUFFIX}, which its run kept")) is None:
                raise
            raise trouble from exc
        if stat.S_ISREG(st.st_mode) and st.st_ctime_ns >= claim.claimed_ns:
            self.spool.remove_original(original, durable=True)

    def _settle_orphan(self, claim: Claim, report: RecoveryReport) -> None:
        job_id = claim.job_id
        if _moved(self.layout.job(JobState.RUNNING, job_id), claim.fd):
            # Moved back to pending/ by the claim whose move had just taken it there (a
            # newer drop it found locked, spool.claim._lease_newer): no orphan.  Settled,
            # its record said "abandoned" beside the same job pending (a review).
            return
        job: Job | None = None
        if len(claim.data) > MAX_ACTIVE_BYTES:
            invalid = f"too large (over {MAX_ACTIVE_BYTES} bytes)"
        elif (big := inexact_integer(claim.data)) is not None:
            # pydantic reads it exactly, and no record holding it could be written.
            invalid = big_integer_reason(big)
        else:
            try:
                job = parse_job(claim.data)
            except ValidationError as exc:
                invalid = error_text(exc.errors()[0])
        if self._run_recorded(claim, job):
            self._drop_finished(job_id, report)
            return
        if job is None:
            self._fail_orphan(claim, None, f"running file is not a valid job: {invalid}")
            report.abandoned.append(job_id)
            return
        if self._requeued_already(claim, job):
            # Requeued, then killed before the running file went: finish that requeue.
            self._drop_finished(job_id, report)
            return
        self._drop_kept_original(claim)
        ran = job.attempts + 1
        report.runs[job_id] = (job.tool, ran)
        if is_there(self.layout.cancel_str(job_id),
                    f"cannot look up the cancel request of {job_id} (cancel/{job_id}); "
                    f"running/{job_id}{JOB_SUFFIX} is left there, neither requeued nor "
                    "cancelled, until it can be (a drop of the id waits behind it)"):
            # Asked while no processor ran it (the client was told the request is in):
            # the cancel wins over a retry.  A request the disk cannot look up (EIO)
            # leaves the orphan for a later pass: os.path.lexists took it for none, and
            # the job was requeued and run again, the user's cancel lost.
            self._fail_orphan(claim, job,
                              "cancelled while running; its processor died before stopping it",
                              ErrorType.CANCELLED, ran=ran)
            report.cancelled.append(job_id)
            return
        limit = self.max_attempts(job)
        if ran < limit:
            delay = backoff_s(ran)
            now = self.spool.clock.now()
            retry_at = now + timedelta(seconds=delay)
            before = job.error
            retry = job.model_copy(update={
                "attempts": ran, "submitted_at": job.submitted_at or utc_from_ns(claim.mtime_ns),
                "error": retry_error(
                    ErrorInfo(type=ErrorType.ABANDONED,
                              message="its processor died mid-run; requeued"), ran, now,
                    earlier=history_of(before, job.attempts),
                    dropped=before.earlier_errors_dropped if before else None,
                    retry_at=retry_at),
            })
            if self.spool.requeue(claim, retry):
                report.requeued.append(job_id)
                report.backoffs[job_id] = retry_at
                return
            message = "its processor died mid-run; superseded by a newer drop of the id"
        else:
            message = f"its processor died mid-run; attempt {ran} of {limit}, not retried"
        self._fail_orphan(claim, job, message, ran=ran)
        report.abandoned.append(job_id)

    def _run_recorded(self, claim: Claim, job: Job | None) -> bool:
        """This run's record is in ``done/`` or ``failed/``: its completion was cut short.

        A record written in a later tick of the filesystem's clock than the claim is this
        run's, unless it is a run's record that says it is another's (another submission
        or attempt): the wall clock stepped back since the run before this one was
        recorded (an NTP step, an admin setting the date), and that record is newer by
        its mtime than this claim.  One of the same tick may be the record of the run
        before it: a drop of the id that waited for that run is claimed the moment it
        ends, well within a tick (4 ms here).  It is this run's only if it records this
        job's submission and attempt.
        """
        return run_recorded(self.layout, claim, job)

    @staticmethod
    def _records_run(path: Path, claim: Claim, job: Job) -> bool | None:
        """True when ``path`` is a run's record of this job's submission and attempt,
        False when it is a run's record of another, None when it tells neither (not a
        readable record, or a quarantine's)."""
        data = _read_told(path, None)
        try:
            record = parse_record(data) if data is not None else None
        except ValueError:
            return None
        if record is None or record.quarantined:
            return None
        return job.recorded_by(record.submitted_at, record.attempts, claim.mtime_ns)

    def _requeued_already(self, claim: Claim, job: Job) -> bool:
        """``pending/<id>.json`` is this run's own requeue: the same job and submission,
        with no fewer attempts (a requeue changes only the attempts, the delay and the
        error; a newer drop has a submission time of its own)."""
        # A drop over MAX_ACTIVE_BYTES is no job (intake quarantines it): never read whole.
        data = _read_told(self.layout.job(JobState.PENDING, claim.job_id), MAX_ACTIVE_BYTES)
        if data is None:
            return False
        try:
            pending = parse_job(data)
        except ValueError:
            return False
        submitted = job.submitted_at or utc_from_ns(claim.mtime_ns)
        requeue_sets = {"attempts", "not_before", "error", "submitted_at", "id"}
        rest = pending.model_dump(exclude=requeue_sets)
        return (pending.submitted_at == submitted and pending.attempts >= job.attempts
                and rest == job.model_dump(exclude=requeue_sets))

    def _fail_orphan(self, claim: Claim, job: Job | None, message: str,
                     kind: ErrorType = ErrorType.ABANDONED, *, ran: int = 0) -> None:
        """Record the orphan failed with ``kind`` (``abandoned``, or ``cancelled`` when a
        cancel was asked) and take it out of ``running/``; ``ran``: the attempts of the
        ``job`` its file holds, this run counted."""
        now = self.spool.clock.now()
        if job is None:
            record = Record(id=claim.job_id, state=JobState.FAILED, finished_at=now,
                            submitted_at=utc_from_ns(claim.mtime_ns))
        else:
            # Its history as the job file carries it (of its ``job.attempts`` runs before
            # this one: an earlier version's is seeded so), then this run's count.
            record = record_from_job(job, claim.job_id, JobState.FAILED, claim.mtime_ns,
                                     attempts=ran)
        record = record.model_copy(update={
            "finished_at": now, "started_at": utc_from_ns(claim.claimed_ns),
            "host": self.spool.host, "pid": self.spool.pid,
            "error": ErrorInfo(type=kind, message=message),
        })
        self.spool.fail(claim, record)


def run_recorded(layout: Layout, claim: Claim, job: Job | None) -> bool:
    """See :meth:`Orphans._run_recorded`: ``claim``'s run has its record."""
    for path, st in _records_since(layout, claim.job_id, claim.claimed_ns):
        if job is None:
            return True
        recorded = Orphans._records_run(path, claim, job)
        # A record that tells neither counts only when a later tick wrote it.
        if recorded or (recorded is None and st.st_mtime_ns > claim.claimed_ns):
            return True
    return False


def _records_since(layout: Layout, job_id: str, since_ns: int
                   ) -> Iterator[tuple[Path, os.stat_result]]:
    """``job_id``'s records in ``done/`` and ``failed/`` written at ``since_ns`` or later
    (a claim's time), and their lstat; no record is a directory or a symlink."""
    for state in (JobState.DONE, JobState.FAILED):
        path = layout.job(state, job_id)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns >= since_ns:
            yield path, st


FINISHING_WAIT_S = 2.0
"""How long :func:`drop_if_finished` waits for a live owner between the two steps of its
completion (its record out, its running file not yet removed): a moment, unless it is
stopped or stuck there (a stalled disk); then it is left as before."""


class Settle(enum.Enum):
    """What :func:`drop_if_finished` did with an id's running file."""

    NOTHING = "nothing"
    """No running file of a finished run: none, a run still going, or one cut short."""
    DROPPED = "dropped"
    """A finished run's, removed."""
    LEFT = "left"
    """Beside a record as new as it, and not removed: its owner stayed between its record
    and the removal past the wait, or its lease, read or removal failed
    (no write access to ``running/``, EIO).  Its run may be over, that record the only
    sign."""


def drop_if_finished(spool: Spool, job_id: str, wait_s: float = FINISHING_WAIT_S) -> Settle:
    """Remove ``running/<id>.json`` when no live owner holds it and its run's record is
    out: a processor killed between the two steps of its completion (the record, then
    the running file) left it, and recovery's pass would remove it the same way
    (:meth:`Orphans._run_recorded`).

    Asked before a client replaces the id's terminal record (the cancel of a re-drop
    waiting behind that run): the record is the only sign the run ended.  Replaced
    first, the next pass found no record of the run, requeued it as cut short and ran
    it again, and its record replaced the cancel the client had been answered
    (chaos soak ``--meddle --meddlers 3``, h366).  :attr:`Settle.LEFT` when it may be
    such a file and stays: the caller must not replace the record then.

    Nothing is opened unless the id has a record as new as the file (three lstats: purge
    asks it of every running file, and a lease reads a job file whole).  A live owner
    whose record is out is between the two steps: its lock is waited for, up to
    ``wait_s`` (it removes the file in a moment, or dies in between and the file is this
    one's to remove); taken for "running", the cancel's record replaced the run's, its
    owner was killed before the removal, and recovery ran the finished run again (h369).
    A processor's loop waits for nothing (0): what it leaves, it asks again later."""
    path = spool.layout.job(JobState.RUNNING, job_id)
    claim = _lease_unowned(spool.layout, path, job_id, wait_s)
    if isinstance(claim, Settle):
        return claim
    try:
        if _moved(path, claim.fd):
            return Settle.LEFT  # replaced, or not to be looked up: not known
        try:
            if not run_recorded(spool.layout, claim, _job_of(claim.data)):
                return Settle.NOTHING  # cut short: recovery's to requeue
            return Settle.DROPPED if spool.mover.unlink_durable(path) else Settle.NOTHING
        except (SpoolIOError, OSError):  # UnreadableDrop too
            return Settle.LEFT  # for recovery, as before
    finally:
        claim.close()


def _lease_unowned(layout: Layout, path: Path, job_id: str, wait_s: float
                   ) -> Claim | Settle:
    """:func:`drop_if_finished`'s lease of ``path``, once no owner between the two steps
    of its completion holds it (waited for, up to ``wait_s``); else what became of it:
    nothing to settle, or left (it cannot be told, or its owner stays between the
    steps)."""
    deadline: float | None = None
    while True:
        if not _record_as_new(layout, job_id, path):
            return Settle.NOTHING  # no running file, or no record since its claim
        try:
            if (claim := lease(path, job_id)) is not None:
                return claim
            if not _finishing(layout, path, job_id):
                return Settle.NOTHING  # gone, or a run still going
        except (SpoolIOError, OSError):  # UnreadableDrop too: recovery's to settle (and say)
            return Settle.LEFT
        now = time.monotonic()
        if deadline is None:
            deadline = now + wait_s
        elif now >= deadline:
            return Settle.LEFT  # its owner stays between the steps
        time.sleep(0.005)


def _job_of(data: bytes) -> Job | None:
    """The job a running file's bytes hold (:func:`~spool.jobfile.job_in`); None past
    :data:`~spool.jobfile.MAX_ACTIVE_BYTES`, where no job is."""
    return job_in(data) if len(data) <= MAX_ACTIVE_BYTES else None


def record_as_new(layout: Layout, job_id: str) -> bool:
    """``running/<id>.json`` stands beside a record of its id as new as it: its run may
    be over, that record the only sign (:func:`run_recorded` tells for sure)."""
    return _record_as_new(layout, job_id, layout.job(JobState.RUNNING, job_id))


def _record_as_new(layout: Layout, job_id: str, path: Path) -> bool:
    """``path`` (a running file) is there and a regular record of its id is no older than
    its change time, which its claim set: what :func:`run_recorded` needs, by lstat."""
    try:
        running = os.lstat(path)
        return (stat.S_ISREG(running.st_mode)
                and any(_records_since(layout, job_id, running.st_ctime_ns)))
    except OSError:
        return False


def _finishing(layout: Layout, path: Path, job_id: str) -> bool:
    """``path`` is held by a live owner whose run has its record (between the two steps
    of its completion), or no longer held (asked again at once); False when it is gone,
    or held by a run still going; raised when it cannot be opened (left, not known)."""
    try:
        fd = open_nofollow(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False  # a symlink put there since: no run's file (recovery's)
        # Not to be opened (EACCES: another user's file, mode 0600): not known.  Taken
        # for gone, a cancel of a re-drop went on and its record replaced the run's,
        # after which recovery requeued the finished run (QA h371).
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        if try_lock(fd):
            # Unlocked before its close: a child forked meanwhile (a FAST tool's thread)
            # kept a copy that held the lock, and recovery took the run for a live one's.
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True  # let go since: the lease is tried again
        data = read_fd(fd, MAX_ACTIVE_BYTES, st.st_size)
        seen = Claim(job_id, fd, data, st.st_ctime_ns, st.st_mtime_ns)
        return run_recorded(layout, seen, _job_of(data))
    finally:
        os.close(fd)


def _read_told(path: Path, limit: int | None) -> bytes | None:
    """What an orphan's fate is told by (its record, its id's drop), read as
    :func:`~spool.entries.read_regular` strictly reads: out of descriptors is the pass's
    trouble.  An I/O error (EIO: a bad sector) is that orphan's, as its own read's: it got
    out of the pass, which paused claims at each pass and exited 75 at each start."""
    try:
        return read_regular(path, limit, strict=True)
    except OSError as exc:
        if (trouble := failing_file(exc, f"cannot read {path.parent.name}/{path.name}, "
                                         "which tells the orphan's run")) is None:
            raise
        raise trouble from exc


def lease(path: Path, job_id: str) -> Claim | None:
    """Lock an existing file in place (no move); None when it is gone or held."""
    try:
        fd = open_nofollow(path)
    except OSError as exc:
        # Its open's EIO (a bad sector under its inode) is its trouble, as its read's:
        # taken for "held", such an orphan stayed in running/ unsaid for good, or (its
        # lstat failing too, in _not_a_file) got out of the pass, a pause at each pass.
        if (trouble := failing_file(exc, f"cannot open {path.parent.name}/{path.name}")
                ) is not None:
            raise trouble from exc
        return None  # gone, no file to open (quarantined by the caller), or held for now
    CLAIMS[fd] = None  # noted before its lock (closed in a child forked: spool.lease._forked)
    try:
        CLAIMS[fd] = st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and try_lock(fd):
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                fd_out, fd = fd, -1
                # Past MAX_ACTIVE_BYTES it is no job (see _settle_orphan): read no more.
                try:
                    data = read_fd(fd_out, MAX_ACTIVE_BYTES, st.st_size)
                except OSError as exc:  # EIO: its trouble, not the pass's (see settle)
                    close_noted(fd_out)
                    raise UnreadableDrop(f"cannot read {path.parent.name}/{path.name}: "
                                         f"{exc.strerror}") from exc
                return Claim(job_id, fd_out, data, now.st_ctime_ns, now.st_mtime_ns)
        return None
    except FileNotFoundError:
        return None
    except OSError as exc:  # its fstat or lstat (a bad sector under its inode): as a read's;
        # passing trouble (ESTALE, ENOMEM; its lock's ENOLCK) is the pass's, waited out, as
        # the claim's (raw, ENOLCK was none the processor knew: a traceback, exit 1)
        what = f"cannot look up {path.parent.name}/{path.name}"
        if (known := failing_file(exc, what) or failing_read(exc, what)) is None:
            raise
        raise known from exc
    finally:
        if fd >= 0:
            close_noted(fd)


def _moved(path: Path, fd: int) -> bool:
    """``path`` no longer names the file open at ``fd`` (:func:`spool.lease.names`), or
    cannot be looked up (EIO): left for the next pass either way."""
    try:
        return not names(path, fd)
    except OSError:
        return True
