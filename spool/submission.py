"""A client's ways into ``pending/``: submit a new job, retry a failed one.

For :class:`~spool.transitions.Spool`.  Guarantees (DESIGN sections 2 and 9):

* A job is published whole (tmp, fsync, rename) and never over a pending job of its
  id: that is a :class:`~spool.errors.ConflictError`, and so is a retry by someone else.
* :func:`submit` refuses (:class:`~spool.errors.InvalidJob`) what intake would
  quarantine: nesting too deep, or a job file over the size it is given.
* :func:`retry` reads no more than :data:`RETRY_MAX_BYTES` of a failed record, never
  follows a symlink in ``failed/``, and retries only what ran: a quarantined file must
  be fixed and dropped again.  The failed record is claimed (under its lease) into a
  staging name before the pending job is written, and goes back should that fail.
* :func:`retry` takes only the record it read: a newer record of the id that replaced
  it meanwhile (a re-run of the id failing again, a quarantine of a re-drop) goes back
  and is read afresh, never dropped for the job read before it.
* :func:`retry` past its commit point (the job in ``pending/``) stands: a later step
  that fails is a warning (:mod:`spool.committed`).
* :func:`retry` keeps the job's earlier failures: the failed record's, and its final
  error with them (:mod:`spool.history`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from spool.claim import Claim, take
from spool.committed import past_commit, tell, then
from spool.entries import read_regular
from spool.errors import ConflictError, InvalidJob, NotFoundError, SpoolIOError
from spool.fsops import is_there
from spool.history import retry_error
from spool.jobfile import MAX_ACTIVE_BYTES, job_in, read_fd, record_from_job
from spool.lease import open_nofollow
from spool.models import (
    MAX_NESTING,
    Job,
    Record,
    RetryErrorInfo,
    job_bytes,
    nested_too_deep,
    parse_record,
)
from spool.states import JobState, check_transition
from spool.superseded import put_back, record_stands

if TYPE_CHECKING:
    from spool.transitions import Spool

RETRY_LOOKS = 3
"""How often :func:`retry` reads the failed record again after a newer one replaced the
one it read, before it calls the job's state a conflict."""
RETRY_MAX_BYTES = MAX_ACTIVE_BYTES
"""The most of a failed record ``retry`` reads: anything larger in ``failed/`` is no
job's record, and read whole it took statusd's memory (a POST .../retry) with it."""


def submit(spool: Spool, job: Job, job_id: str, *, max_bytes: int | None = None) -> None:
    """Publish a new job into ``pending/``; ConflictError if that id is pending.

    InvalidJob for what intake would quarantine: nesting deeper than
    :data:`~spool.models.MAX_NESTING` and, with ``max_bytes``, a job file (as
    written with its id and submission time) over that size.
    """
    if nested_too_deep({"params": job.params, "meta": job.meta}):
        raise InvalidJob(f"invalid job: nested more than {MAX_NESTING} levels deep")
    job = job.model_copy(update={"id": job_id, "submitted_at": job.submitted_at
                                 or spool.clock.now()})
    data = job_bytes(job)
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidJob(f"too large: the job file would be {len(data)} bytes, over "
                         f"SPOOL_MAX_JOB_BYTES={max_bytes}")
    dest = spool.layout.job(JobState.PENDING, job_id)
    try:
        published = spool.mover.publish(dest, data, replace=False)
    except SpoolIOError as exc:
        # In pending/, then its folder's sync failed (EIO): the job is in, and will run.
        # Said to have failed, it was submitted again by the script that asked.
        if _landed(spool, job, job_id, data):
            tell(spool, f"job {job_id} submitted", exc)
            return
        raise
    if not published:
        raise ConflictError(f"job {job_id} is already pending")


def _landed(spool: Spool, job: Job, job_id: str, data: bytes) -> bool:
    """The drop ``data`` of ``job`` is in: its bytes in ``pending/``, or a processor took
    it meanwhile (a failing disk's sync can take seconds): in ``running/``, requeued to
    ``pending/`` with its attempt counted (other bytes), or its record: the same
    submission time, tool and params.  Looked at in the order a job moves, so one that
    moves on between two looks is found at the next."""
    layout = spool.layout
    for state in (JobState.PENDING, JobState.RUNNING):
        raw = read_regular(layout.job(state, job_id), MAX_ACTIVE_BYTES)
        if raw == data:
            return True
        # Requeued (a retry, a stop's requeue): its attempts, error and not_before told,
        # the same job.  Looked for by its bytes alone, the submit said it failed, and
        # the script that asked submitted it again, to run twice.
        found = job_in(raw) if raw is not None else None
        if found is not None and (found.submitted_at, found.tool, found.params) == (
                job.submitted_at, job.tool, job.params):
            return True
    for state in (JobState.DONE, JobState.FAILED):
        raw = read_regular(layout.job(state, job_id), RETRY_MAX_BYTES)
        try:
            rec = parse_record(raw) if raw is not None else None
        except ValueError:
            continue
        if rec is not None and (rec.submitted_at, rec.tool, rec.params) == (
                job.submitted_at, job.tool, job.params):
            return True
    return False


def retry(spool: Spool, job_id: str) -> Record:
    """failed -> pending with attempts reset to 0; the failed record goes with it."""
    check_transition(JobState.FAILED, JobState.PENDING)
    src = spool.layout.job(JobState.FAILED, job_id)
    for _ in range(RETRY_LOOKS):
        taken = _take_failed(spool, src, job_id)
        if taken is not None:
            break
    else:
        raise ConflictError(f"job {job_id} keeps failing again while it is retried; "
                            "look again")
    record, claim, staged = taken
    try:
        # A time still ahead is the job's schedule (a cancelled job meant for later), kept;
        # one past would only be noise on a pending job (it is dropped, as a stop's
        # requeue drops it; a backoff is the error's retry_at, dropped below).
        ahead = record.not_before if record.not_before and record.not_before > \
            spool.clock.now() else None
        job = record.to_job().model_copy(update={"attempts": 0, "not_before": ahead,
                                                 "id": job_id, "error": _retried(record)})
        dest = spool.layout.job(JobState.PENDING, job_id)
        if _running(spool, job_id, staged, src):
            # A newer drop of the id runs: the id is running, and this record its earlier
            # run's.  Made pending, the old job ran after it and its record replaced the
            # new run's result (a review).
            raise ConflictError(f"job {job_id} is running (a newer drop of the id); only "
                                "failed jobs can be retried")
        published = _publish(spool, dest, job, staged, src)
        if published is False:
            _back(spool, staged, src)
            raise ConflictError(f"job {job_id} is already pending")
        if published:  # (None: in, its sync failed; the record stays staged, see _publish)
            # Past the commit point: a step that fails is a warning (spool.committed).
            steps: list[Callable[[], object]] = [lambda: spool.mover.unlink_durable(staged)]
            if record.source is not None:
                steps.append(lambda: _drop_kept_original(spool, job_id, claim.claimed_ns))
            then(spool, f"job {job_id} retried", *steps)
    finally:
        claim.close()
    # The job as it now stands in pending/ (no run's start, host or backoff).
    return record_from_job(job, job_id, JobState.PENDING, claim.mtime_ns)


def _publish(spool: Spool, dest: Path, job: Job, staged: Path, src: Path) -> bool | None:
    """Publish the retried ``job`` at ``dest``: True; False when a job of its id is
    pending; None when it is in but its folder's sync failed.

    Not written (``pending/`` gone, a full disk): the record at ``staged`` goes back to
    ``src``, and the error is raised; left staged, the job was in no folder until a
    processor's recovery.  Written, and only the folder's sync failed: the retry stands,
    told as a warning (raised, ``spoolq retry`` exited 1 for a job it had retried, QA),
    and the record stays staged, for recovery to restore should the job's entry in
    ``pending/``, not synced, be lost to a crash."""
    try:
        return spool.mover.publish(dest, job_bytes(job), replace=False)
    except SpoolIOError as exc:
        if not os.path.lexists(dest):
            with contextlib.suppress(OSError, SpoolIOError):
                _back(spool, staged, src)
            raise
        past_commit(spool, f"job {job.id} retried", exc)
        return None


def _running(spool: Spool, job_id: str, staged: Path, src: Path) -> bool:
    """A run of ``job_id`` goes on (``running/<id>.json``); the record staged for the
    retry then goes back to ``src``, as it does when the disk cannot say."""
    try:
        running = is_there(spool.layout.job_str(JobState.RUNNING, job_id),
                           f"{job_id} is not retried: cannot look up running/{job_id}.json")
    except SpoolIOError:
        _back(spool, staged, src)
        raise
    if running:
        _back(spool, staged, src)
    return running


def _back(spool: Spool, staged: Path, src: Path) -> None:
    """The failed record a refused retry took goes back to ``src``; when a newer record
    took that name meanwhile (a re-drop of the id cancelled or failed while the retry
    held the old one), the old one is superseded and goes.  Its move's False was
    ignored: the refused retry left the record in ``stage/`` for good while its process
    lived (statusd's, a long one), where no recovery touches it, and every look
    for the id in no folder took :data:`spool.client.MOVE_WAIT_S` (QA h332).  What
    stands there and is no record (a directory) leaves it staged, for recovery, as
    before."""
    if spool.mover.move(staged, src, replace=False):
        return
    if record_stands(os.fspath(src)):
        spool.mover.unlink(staged)


def _drop_kept_original(spool: Spool, job_id: str, taken_ns: int) -> None:
    """Remove the job file a retried record's run kept (``failed/<id>.orig``: an unknown
    tool, invalid params), which goes with its record: left, with no record, recovery
    would give it a quarantine's.  Once the job is pending, not before: a retry refused
    (the id pending again) puts the record back beside it.  One placed after the record
    was taken (``taken_ns``) is a later run's, of the job just made pending: it stays."""
    original = spool.layout.original_str(job_id)
    try:
        if os.lstat(original).st_ctime_ns > taken_ns:
            return
    except FileNotFoundError:
        return
    spool.remove_original(original, durable=True)


def _retried(record: Record) -> RetryErrorInfo | None:
    """The error a failed ``record`` goes back to ``pending/`` with: its own, without a
    backoff's end (a retry asked for runs now), and its earlier failures with it added
    as the last: the history goes on across the retry, though the attempts start again
    (its entries' attempt numbers then do too; their times tell the order)."""
    if record.error is None:  # a failed record always has one: kept as it was
        return None
    return retry_error(record.error, record.attempts, record.finished_at,
                       earlier=record.earlier_errors, dropped=record.earlier_errors_dropped,
                       retry_at=None)


def _take_failed(spool: Spool, src: Path, job_id: str) -> tuple[Record, Claim, Path] | None:
    """Read the failed record at ``src`` and take that very file into a staging name
    under its lease: the record, the claim and where it is staged.  None when a newer
    record of the id took the name between the read and the take: that one goes back
    (or, should a newer one still stand there, goes), to be read afresh.

    The descriptor of the file read stays open until the take is checked, so its inode
    cannot be freed and given to the newer record: the same inode is the same file."""
    fd = _open_failed(src, job_id)
    try:
        record, read = _failed_record(fd, job_id)
        if record.quarantined or record.tool is None:
            reason = record.error.message if record.error else "invalid job"
            # A quarantine keeps the file's bytes beside its record; a file recovery
            # found unreadable in running/ (not a processor's) left none to fix (QA).
            kept = spool.layout.original(job_id)
            what = ("fix its file (" + os.fspath(kept) + ") and drop it again"
                    if os.path.lexists(kept) else "its bytes were not kept: submit the job "
                    "anew")
            if os.path.lexists(kept) and reason.startswith("too large"):
                # Over the processor's SPOOL_MAX_JOB_BYTES of then: the file may be
                # right, and the limit raised since (h394: "fix its file" of a job
                # that needed no fix).
                what = (f"drop its file again once SPOOL_MAX_JOB_BYTES takes it "
                        f"(spoolq submit --file {shlex.quote(os.fspath(kept))} --id {job_id}), "
                        "or make it smaller")
            raise ConflictError(f"{job_id} was quarantined ({reason}); {what}")
        staged = spool.mover.action_staging(f"retry-{job_id}")
        claim = take(spool.mover, src, staged, job_id)
        if claim is None:
            if not staged.parent.is_dir():  # the move's ENOENT: not another's retry
                raise SpoolIOError(f"cannot retry {job_id}: the folder {staged.parent} "
                                   "is gone")
            raise ConflictError(f"job {job_id} is being retried by someone else")
        taken = _taken_stat(spool, claim, staged, src)
    finally:
        os.close(fd)
    if os.path.samestat(read, taken):
        return record, claim, staged
    try:
        put_back(spool.mover, staged, src)
    finally:
        claim.close()
    return None


def _open_failed(src: Path, job_id: str) -> int:
    """``src`` (``failed/<id>.json``) opened for reading, never following a symlink."""
    try:
        return open_nofollow(src)  # a symlink in failed/ is never followed out of the spool
    except FileNotFoundError as exc:
        raise NotFoundError(f"no failed job {job_id}") from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink, a socket
            raise ConflictError(f"failed/{job_id}.json is not a regular file") from exc
        raise _unread(job_id, exc) from exc


def _taken_stat(spool: Spool, claim: Claim, staged: Path, src: Path) -> os.stat_result:
    """The stat of the record taken to ``staged`` (held by ``claim``).  Should the disk
    fail it (EIO, ENOMEM), the record goes back to ``src`` before the error is raised:
    left staged, the job was in no folder, invisible to ``show`` and ``ls``, until a
    processor's recovery put it back (QA)."""
    try:
        return os.fstat(claim.fd)
    except OSError as exc:
        try:
            with contextlib.suppress(OSError, SpoolIOError):  # else recovery's, as before
                put_back(spool.mover, staged, src)
        finally:
            claim.close()
        raise _unread(claim.job_id, exc) from exc


def _unread(job_id: str, exc: OSError) -> SpoolIOError:
    """The error of a failed record the disk could not read, worded as
    :func:`_open_failed` words its own: the bare ``Input/output error`` named no file,
    and statusd answered it 500 (QA)."""
    return SpoolIOError(f"cannot read failed/{job_id}.json: {exc.strerror}")


def _failed_record(fd: int, job_id: str) -> tuple[Record, os.stat_result]:
    """The failed record of ``job_id`` open on ``fd``, read no further than
    :data:`RETRY_MAX_BYTES`, and the file's stat (to know it again once taken)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConflictError(f"failed/{job_id}.json is not a regular file")
        data = read_fd(fd, RETRY_MAX_BYTES)
    except OSError as exc:  # EIO, EMFILE, ENOMEM: the disk's or the kernel's, not the file's
        raise _unread(job_id, exc) from exc
    if len(data) > RETRY_MAX_BYTES:
        raise ConflictError(f"failed/{job_id}.json is too large to retry (over "
                            f"{RETRY_MAX_BYTES} bytes: no job is that large)")
    try:
        return parse_record(data), st
    except ValueError as exc:
        raise ConflictError(f"failed/{job_id}.json is not a valid record") from exc
