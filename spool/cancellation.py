"""Cancel of a pending job (pending -> failed ``cancelled``) for :class:`~spool.transitions.Spool`.

The job is claimed into a staging name (``cancel-<id>...`` in ``stage/``, or ``tmp/``,
see :meth:`spool.fsops.Mover.action_staging`; under its lease, as a run's claim takes
it), so no processor claims it meanwhile, and its ``cancelled`` record is published
before the staged file goes.

Guarantees (DESIGN sections 2 and 9):

* A job that is not (or no longer) pending is not cancelled: None, never an exception.
* Should the record not be written (ENOSPC, EIO), the job goes back to ``pending/``
  before the error is raised: the cancel did not happen.  Once it is written, the
  cancel stands: a later step that fails (removing the staged file, the sync of
  ``failed/``) is a warning (:mod:`spool.committed`), not an error.  Recovery settles
  what a crash leaves staged (``spool.staged.Staged._restore_cancel``).
* A pending file that holds no job keeps its bytes as the record's quarantined original
  (``failed/<id>.orig``), as intake's quarantine would; an earlier original of the id,
  which this record supersedes, stays linked where moves stage until the record is written.
  While a run of its id goes on, such a file is not cancelled (ConflictError): that run's
  record would replace this one and take the bytes with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from spool.claim import Claim, take
from spool.clock import utc_from_ns
from spool.committed import past_commit, then
from spool.entries import read_regular
from spool.errors import ConflictError, ErrorType, SpoolIOError
from spool.fsops import is_there
from spool.ids import JOB_SUFFIX, is_valid_id
from spool.jobfile import MAX_ACTIVE_BYTES, job_in
from spool.large import found_fields, read_record
from spool.models import ErrorInfo, Record, Source, record_bytes
from spool.states import JobState, check_transition

if TYPE_CHECKING:
    from spool.layout import Layout
    from spool.transitions import Spool

CANCELLED_PENDING = "cancelled while pending"
"""How a pending job's ``cancelled`` record's message begins (recovery knows a cancel's
own record by it, :meth:`spool.staged.Staged._restore_cancel`)."""


def cancel_pending(spool: Spool, job_id: str, *, settle_wait_s: float | None = None
                   ) -> Record | None:
    """pending -> failed ``cancelled``; None when the job is not (or no longer) pending.

    ConflictError, the job pending still, when the run of its id before it may be over
    and its running file cannot be settled (:func:`_give_back`); ``settle_wait_s``: how
    long an owner between that run's record and the file's removal is waited for
    (:data:`spool.orphans.FINISHING_WAIT_S` when None)."""
    check_transition(JobState.PENDING, JobState.FAILED)
    # The run ahead of it may be over, its record out and its running file left by a
    # processor killed in between: this record replaces that one, after which recovery
    # took the run for one cut short and ran it again over the cancel.  Settled first.
    from spool.orphans import (  # noqa: PLC0415 - orphans imports Spool
        FINISHING_WAIT_S,
        Settle,
        drop_if_finished,
    )

    wait_s = FINISHING_WAIT_S if settle_wait_s is None else settle_wait_s
    pending = spool.layout.job(JobState.PENDING, job_id)
    # Asked before the drop is taken, not while it is staged: staged, ``pending/`` was
    # free for the wait (2 s, and again at each scan of a processor that puts the cancel
    # off), a ``spoolq submit`` of the id was accepted there, the give-back then dropped
    # the re-drop with no record, and the request left for it cancelled the newer drop
    # nobody had asked to cancel (QA h374).
    if os.path.lexists(pending) and drop_if_finished(spool, job_id, wait_s) is Settle.LEFT:
        raise ConflictError(_not_settled(job_id))
    staged = spool.mover.action_staging(f"cancel-{job_id}")
    claim = take(spool.mover, pending, staged, job_id)
    if claim is None:
        return None
    # Again, taken: a run of the id may have ended in between.  Not waited for here: the
    # drop staged, pending/ was free for a submit of the id for the whole wait (2 s), and
    # the re-drop could then not go back (h375); refused at once, it goes back at once.
    if drop_if_finished(spool, job_id, 0) is Settle.LEFT:
        _give_back(spool, claim, staged)
    return finish_cancel(spool, claim, staged)


def _not_settled(job_id: str) -> str:
    return (f"job {job_id} not cancelled: the run of it before this drop may have ended, "
            "its running file is not yet settled; try again")


def _give_back(spool: Spool, claim: Claim, staged: Path) -> NoReturn:
    """Put a job staged for cancel back in ``pending/`` and refuse the cancel: the run of
    its id ahead of it ended in the moment since :func:`cancel_pending` asked, its record
    the only sign, and its running file could not be settled
    (:attr:`spool.orphans.Settle.LEFT`).  Its cancel's record would replace that one, and
    recovery then ran the finished run again over the cancel (h369).  Put back, it is the
    job it was; a cancel asked again once that file is settled goes on.

    Should it not go back, a drop of the id accepted in that moment standing in
    ``pending/``, it is recorded ``cancelled`` under a fresh id of its own
    (:func:`_record_aside`): its cancel's record under its id would replace the run's,
    and dropped, as a drop's rename would replace it, it was lost with no record where
    that drop was a ``spoolq submit``, which an id pending refuses (h374).  Where that
    record is not written (no job in the file, a full disk) or the move back fails,
    it stays staged, its bytes kept, for recovery to settle as a cancel cut short once
    that run is (:meth:`spool.staged.Staged._restore_cancel`)."""
    job_id = claim.job_id
    try:
        back = spool.mover.move(staged, spool.layout.job(JobState.PENDING, job_id),
                                replace=False)
        aside = None if back else _record_aside(spool, claim, staged)
    finally:
        claim.close()
    if back:
        raise ConflictError(_not_settled(job_id))
    # Not "try again": asked again, the cancel took the newer drop, which nobody had
    # asked to cancel, and this one was cancelled by recovery all the same (h375).
    said = (f"job {job_id} not cancelled: the run of it before this drop may have ended, "
            f"its running file is not yet settled, and a newer drop of {job_id} is pending "
            "in its place (not cancelled); ")
    if aside is None:
        # Not "will not run": should the newer drop have left pending/ by the time
        # recovery settles it, it goes back there and runs (h382).
        raise ConflictError(said + "this drop is held aside for recovery, which puts it "
                            f"back in pending/ should {job_id} be free by then, else "
                            "records it cancelled")
    raise ConflictError(said + f"this drop will not run: it is recorded cancelled as job "
                        f"{aside.id}")


def _record_aside(spool: Spool, claim: Claim, staged: Path) -> Record | None:
    """Record the job staged at ``staged``, refused its cancel and unable to go back to
    ``pending/`` (see :func:`_give_back`), as ``cancelled`` under a fresh id of its own,
    then drop the staging; its record, or None where it is left staged (no job in
    it, whose bytes recovery keeps; the record not written).

    Left staged, a staging of a live statusd stood a day, and recovery then quarantined
    it saying its canceller had died; under the id's own name its record would replace
    the run's it was refused for (h375)."""
    record = spool.record_of_claim(claim, JobState.FAILED)
    if record.tool is None:
        return None
    try:
        aside = aside_id(staged, os.lstat(staged))
    except OSError:
        return None  # left staged: recovery settles it
    if aside is None:
        return None
    record.id = aside
    record.error = ErrorInfo(type=ErrorType.CANCELLED, message=(
        f"{CANCELLED_PENDING} as job {claim.job_id}, recorded under an id of its own: its "
        f"cancel was refused, the run of {claim.job_id} before it not yet settled, and a "
        f"newer drop of {claim.job_id} took its place in pending/ meanwhile; the run's "
        f"record stands under {claim.job_id}"))
    done = f"job {claim.job_id} cancelled as job {record.id}"
    try:
        if not spool.mover.publish(spool.layout.job_str(JobState.FAILED, record.id),
                                   record_bytes(record), replace=False):
            return None
    except (SpoolIOError, OSError) as exc:  # (raw, it lost the refusal: QA h382)
        if not _landed(spool, record):
            return None  # left staged: recovery settles it
        past_commit(spool, done, exc)  # in, its folder's sync failed: the cancel stands
    then(spool, done, lambda: spool.mover.unlink(staged))
    return record


def aside_id(staged: Path, st: os.stat_result) -> str | None:
    """The fresh id :func:`_record_aside` records the re-drop staged at ``staged`` (``st``
    its lstat) under: of its staging's ctime and the random digits of its name (None
    for a name without them), so that recovery, finding the staging left beside that
    record (its canceller killed before the removal, or the removal not durable),
    knows the cancel completed (:meth:`spool.staged.Staged._recorded_aside`).  A random
    id left recovery no way to find the record: it settled the re-drop again, a second
    record of it, under the run's id (QA h382)."""
    digits = staged.name.rsplit(".", 3)
    if len(digits) != 4 or len(digits[2]) < 12:
        return None
    job_id = f"{utc_from_ns(st.st_ctime_ns):%Y%m%dT%H%M%S}-{digits[2][-12:]}"
    return job_id if is_valid_id(job_id) else None


def finish_cancel(spool: Spool, claim: Claim, staged: Path) -> Record:
    """Publish the ``cancelled`` record of a job staged for cancel, then drop the staging.

    Should the record not be written (ENOSPC, EIO), the job goes back to ``pending/``
    before the error is raised: the cancel did not happen, and left staged the job
    would wait for a recovery scan to put it back.  Recovery still settles what this
    leaves: a newer drop of the id pending meanwhile, or a step that failed after the
    record landed (told through ``spool.after_commit`` when it has one).
    """
    try:
        record = spool.record_of_claim(claim, JobState.FAILED)
        record.error = ErrorInfo(type=ErrorType.CANCELLED, message=CANCELLED_PENDING)
        pending = spool.layout.job(JobState.PENDING, claim.job_id)
        if record.tool is None:  # no job in it: kept as intake would have
            return _cancel_no_job(spool, claim, staged, record, pending)
        if _publish(spool, record, lambda: spool.mover.move(staged, pending,
                                                             replace=False)):
            then(spool, f"job {claim.job_id} cancelled", lambda: spool.mover.unlink(staged))
        return record
    finally:
        claim.close()


def _publish(spool: Spool, record: Record, undo: Callable[[], object]) -> bool:
    """Publish the ``cancelled`` record; ``undo`` when it is not written.  A failure once
    it landed (the sync of ``failed/``, the removal of what it supersedes) is past the
    cancel's commit point (:mod:`spool.committed`): raised, ``spoolq cancel`` exited 1
    for a job it had cancelled (QA).  False after such a failure: the job's staged file
    then stays for recovery, which puts it back should the record's entry, not synced,
    be lost to a crash."""
    undone = False

    def unwritten() -> None:
        nonlocal undone
        undone = True
        undo()

    try:
        spool.publish_terminal(record, unwritten=unwritten)
    except (SpoolIOError, OSError) as exc:
        if undone or not _landed(spool, record):
            raise
        past_commit(spool, f"job {record.id} cancelled", exc)
        return False
    return True


def _landed(spool: Spool, record: Record) -> bool:
    """``failed/<id>.json`` holds ``record`` as it was published: the cancel's commit
    point passed.  Not known (its read fails too) is not landed: the error is raised,
    and recovery settles the job staged, as before."""
    data = record_bytes(record)
    try:
        found = read_regular(spool.layout.job_str(JobState.FAILED, record.id), len(data),
                             strict=True)
    except OSError:
        return False
    return found == data


def _cancel_no_job(spool: Spool, claim: Claim, staged: Path, record: Record,
                   pending: Path) -> Record:
    """Cancel a pending file that holds no job: its bytes become the record's
    quarantined original (``failed/<id>.orig``), as intake's quarantine keeps them,
    and a retry asks for the file to be fixed.  An earlier original of the id goes:
    it belonged to the failed record this one replaces.  Cut short between the two
    renames, recovery writes the original's record (``TerminalLeftovers._settle_original``;
    ``Staged._settle_kept`` when an earlier original was kept linked where moves stage)."""
    mover = spool.mover
    job_id = claim.job_id
    try:
        # Not os.path.lexists, which took the disk failing (EIO) for no run: the cancel
        # went on, and the run's record, once it ended, took the bytes kept in failed/
        # for its superseded record's original, removing them.
        running = is_there(spool.layout.job_str(JobState.RUNNING, job_id),
                           f"{job_id} is not cancelled: cannot look up "
                           f"running/{job_id}{JOB_SUFFIX}")
    except SpoolIOError:
        mover.move(staged, pending, replace=False)  # not cancelled: back it goes
        raise
    if running:
        # The run ahead of it would replace this record with its own and remove the
        # bytes as the superseded record's original: refused, the file stays pending
        # and is quarantined once the run ends (intake waits for that too).
        mover.move(staged, pending, replace=False)
        raise ConflictError(
            f"{claim.job_id} is not cancelled: it holds no job and waits for the run of "
            "its id to end, when it is quarantined in failed/ with its bytes kept; a "
            "cancel now would lose them to that run's record")
    original = spool.layout.original(claim.job_id)
    record.error = ErrorInfo(type=ErrorType.CANCELLED, message=(
        f"{CANCELLED_PENDING}; not a valid job, its bytes are kept in "
        f"failed/{original.name}"))
    record.source = Source(name=f"{claim.job_id}{JOB_SUFFIX}",
                           size=os.fstat(claim.fd).st_size)
    # An earlier original is replaced below, yet it stays its record's should this
    # record not be written: a link to it is kept staged until then.
    kept = spool.mover.action_staging(f"kept-{claim.job_id}")
    aside = kept if mover.link(original, kept) else None
    try:
        try:
            mover.move(staged, original, replace=True)
        except (SpoolIOError, OSError) as exc:
            mover.move(staged, pending, replace=False)  # not cancelled: back it goes
            if isinstance(exc, OSError):  # an earlier original that is a directory
                raise ConflictError(
                    f"{claim.job_id} is not cancelled: its bytes cannot be kept as "
                    f"failed/{original.name} ({exc.strerror})") from exc
            raise

        def undo() -> None:  # not written: the bytes go back, the earlier original too
            # With a newer drop of the id pending meanwhile, the bytes stay staged:
            # recovery finishes the cancel (Staged._restore_cancel), as it does
            # for a job whose record is not written.
            if (mover.move(original, pending, replace=False)
                    or mover.move(original, staged, replace=False)) and aside:
                mover.move(aside, original, replace=False)

        _publish(spool, record, undo)
    finally:
        if aside is not None:
            with contextlib.suppress(SpoolIOError, OSError):
                mover.unlink(aside)
    return record



def cancel_recorded(layout: Layout, job_id: str, staged: Path, st: os.stat_result) -> bool:
    """``failed/<id>.json`` is the ``cancelled`` record of the job staged for cancel at
    ``staged`` (``st`` its lstat): a pending cancel's, with the staged job's
    ``submitted_at`` (the job's own, else its file's mtime, as
    :meth:`spool.transitions.Spool.record_of_claim` gives it).  A staged file that holds
    no job never stands beside its record (:func:`_cancel_no_job` moves it to
    ``failed/<id>.orig`` first)."""
    data = read_regular(staged, MAX_ACTIVE_BYTES)
    job = job_in(data) if data is not None else None
    found = read_record(layout.job_str(JobState.FAILED, job_id))
    if job is None or found is None:
        return False
    try:
        fields = found_fields(found)
        error, submitted = fields.get("error"), fields.get("submitted_at")
        return (isinstance(error, dict) and error.get("type") == ErrorType.CANCELLED
                and str(error.get("message", "")).startswith(CANCELLED_PENDING)
                and isinstance(submitted, str)
                and datetime.fromisoformat(submitted)
                == (job.submitted_at or utc_from_ns(st.st_mtime_ns)))
    except (ValueError, AttributeError):  # no record's JSON object
        return False
