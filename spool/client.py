"""The client API the CLI and statusd share: submit, get, list, cancel, retry,
purge, wait.

Every write goes through :class:`~spool.transitions.Spool`, so the CLI and
HTTP writes keep the same rules as the processor.

Importing this module is cheap (``spoolq --help`` and the CLI's parser import it for
its constants): the reader, the transitions and purge, and with them the record
models, are imported where a :class:`Client` is made or purges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from spool.clock import Clock, SystemClock
from spool.committed import tell
from spool.errors import ConflictError, InvalidId, NotFoundError, SpoolIOError
from spool.fsops import Mover
from spool.ids import is_valid_id, new_job_id
from spool.layout import Layout, parse_staging
from spool.states import TERMINAL, JobState
from spool.view import guarded

if TYPE_CHECKING:
    from spool.cursor import Page
    from spool.models import Job, Record
    from spool.purge import PurgeReport
    from spool.settings import Settings

log = logging.getLogger("spoolq.client")

CANCEL_WAIT_S = 5.0
_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.1
MOVE_WAIT_S = 1.0
"""How long :meth:`Client.get` and :meth:`Client.peek` look again for a job a cancel, retry
or quarantine holds between folders (such a move takes milliseconds)."""
_ABSENT_LOOKS = 3
"""Looks in a row that must find a job in no folder and held by no move before
:func:`find_moved` says "no job" (about 10 ms for an id that is not there)."""
GONE_AFTER_S = 5.0
"""A job seen by :meth:`Client.wait` and then in no folder for this long is gone (its
file removed by hand): moves through ``tmp/`` (a cancel, a retry) take far less."""


_RETRY_LOOKS = 3
"""How many times :meth:`Client.retry` looks again at a job that failed between its
looks, before it calls the job's state a conflict."""
_CANCEL_LOOKS = 3
"""How many times :meth:`Client.cancel` reads a running job's state again when its file
in ``running/`` changed meanwhile (a run ended, the next claimed), to name the run."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _denied_is_spool_trouble(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """``method`` with a PermissionError (a folder this user may not read or write: a
    member of the submit group only, which every reading call met in ``running/`` or
    ``done/``) raised as the SpoolIOError the exception tree says it is; it got out bare,
    past callers that catch SpoolError."""
    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except PermissionError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise SpoolIOError(f"{exc.strerror}{where}: this user may not use that part of "
                               "the spool (Permissions in docs/operations.md)") from exc
    return call



@dataclasses.dataclass(frozen=True, slots=True)
class CancelAsked:
    """A running job's cancel request, written (:meth:`Client.ask_cancel`)."""

    job_id: str
    seen: Record
    """The job as it was when the request was written."""
    run: int | None
    """The run the request names (its file's inode in ``running/``), None if pending."""


class Client:
    """Submit and manage jobs of one spool (no daemon needed).  Every call raises what
    :mod:`spool.errors` draws: a folder this user may not use is a SpoolIOError."""

    def __init__(self, layout: Layout, mover: Mover, clock: Clock | None = None, *,
                 max_job_bytes: int | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        """``max_job_bytes``: submit refuses what intake would quarantine as too large.
        ``warn``: told of a change made whose later step failed (:mod:`spool.committed`;
        by default a warning in the ``spoolq.client`` log).
        SpoolIOError when ``layout`` is no spool, or one this user may not enter."""
        from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see the module's docstring
        from spool.transitions import Spool  # noqa: PLC0415 - lazy, see the module's docstring

        require_spool(layout)
        self.layout = layout
        self.clock: Clock = clock or SystemClock()
        self.max_job_bytes = max_job_bytes
        self.spool = Spool(layout, mover, self.clock)
        self.spool.after_commit = warn or log.warning
        self.reader = SpoolReader(layout)

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      warn: Callable[[str], None] | None = None) -> Client:
        layout = guarded(Layout(settings.spool_dir))
        return cls(layout, Mover(layout, settings.fsync), max_job_bytes=settings.max_job_bytes,
                   warn=warn)

    # -- writes ---------------------------------------------------------------------

    @_denied_is_spool_trouble
    def submit(self, job: Job, job_id: str | None = None) -> str:
        """Drop ``job`` into ``pending/``; returns its id.  ConflictError if pending,
        InvalidJob if over ``max_job_bytes``."""
        # None only: an empty id given is refused below, not taken for none (a caller's
        # empty variable made up an id the caller never knew).
        if job_id is None:
            job_id = job.id if job.id is not None else new_job_id(self.clock.now())
        if not is_valid_id(job_id):
            raise InvalidId(f"invalid id {job_id!r}: use letters, digits and ._- "
                             "(at most 128, starting with a letter or digit)")
        if job.id is not None and job.id != job_id:
            raise InvalidId(f"the job says id {job.id!r} but was given id {job_id!r}")
        self.spool.submit(job, job_id, max_bytes=self.max_job_bytes)
        self._synced(f"job {job_id} submitted")
        return job_id

    def _synced(self, done: str) -> None:
        """Make this client's writes durable now under ``SPOOL_FSYNC=batch`` (a no-op under
        the other modes): a batch Mover syncs a group only at a later operation, which a
        one-shot client (``spoolq submit``) never makes, so its drop was left to the
        kernel, as under ``never``, after it said the job was in.  A sync the disk fails
        (EIO) leaves the write made, as durable as under ``never``: said to have failed,
        a submit was made twice by the script that asked.  It is told as a warning
        (``done``: what was made), as under ``always`` (:mod:`spool.committed`)."""
        try:
            self.spool.mover.flush()
        except SpoolIOError as exc:
            tell(self.spool, done, exc)

    @_denied_is_spool_trouble
    def cancel(self, job_id: str, wait_s: float = CANCEL_WAIT_S) -> Record:
        """Cancel a pending job at once, or ask the processor to kill a running one.

        A running job's record is returned as soon as it is terminal, or after
        ``wait_s`` as it stands (the processor acts on the request when it sees it).
        A run that goes back to ``pending/`` meanwhile (a stop's requeue, a retry's
        backoff) is cancelled there: its request names that run, and no processor acts
        on it for the job pending now.  ConflictError when the job already finished;
        NotFoundError when unknown.
        """
        asked = self.ask_cancel(job_id)
        if not isinstance(asked, CancelAsked):
            return asked
        return self.cancel_outcome(asked, time.monotonic() + wait_s)

    def ask_cancel(self, job_id: str) -> Record | CancelAsked:
        """The first half of :meth:`cancel`: a pending job's cancelled record, or the
        request written for a running one, for :meth:`cancel_outcome` to wait on.
        Several jobs' requests written first are acted on together, not each after the
        one before has stopped."""
        record = self.spool.cancel_pending(job_id)
        if record is not None:
            self._synced(f"job {job_id} cancelled")
            return record
        current, run = self._ask_to_cancel(job_id)
        return CancelAsked(job_id, current, run)

    def cancel_outcome(self, asked: CancelAsked, deadline: float) -> Record:
        """The second half of :meth:`cancel`: the job's record once terminal, or as it
        stands at ``deadline`` (a ``time.monotonic()`` value)."""
        job_id, current, run = asked.job_id, asked.seen, asked.run

        def sent_back(record: Record) -> bool:
            """The job asked of is back in pending/, or running again as another run."""
            if record.state is JobState.RUNNING:
                return self._running_inode(job_id) not in (run, None)
            return record.state is JobState.PENDING and (
                record.submitted_at == current.submitted_at)

        seen = current
        for _ in range(_CANCEL_LOOKS):
            if current.state is JobState.PENDING:  # between claims, or sent back
                try:
                    cancelled = self.spool.cancel_pending(job_id)
                except ConflictError:
                    # Refused (the run ahead not yet settled): the request written for
                    # it stood, and a processor cancelled the job later all the same,
                    # the client told "not cancelled ... try again" (QA h374).
                    self._drop_request(job_id)
                    raise
                if cancelled is not None:
                    self._drop_request(job_id)
                    self._synced(f"job {job_id} cancelled")
                    return cancelled
            left = deadline - time.monotonic()
            seen = (self.wait(job_id, timeout=left, until=sent_back) if left > 0
                    else self.reader.get(job_id))
            if not sent_back(seen):
                break
            # Sent back: asked anew, for whatever run (or none) holds it now.
            current, run = self._ask_to_cancel(job_id, conflict=False)
            seen = current
            if current.state in TERMINAL:
                break
        if seen.state in TERMINAL:
            # The run the request was for is over.  Its processor removes a request it
            # acted on, but one written just after the run ended on its own would stay
            # until a recovery scan and cancel a new drop of the id claimed meanwhile.
            self._drop_request(job_id)
        return seen

    def _ask_to_cancel(self, job_id: str, *, conflict: bool = True
                       ) -> tuple[Record, int | None]:
        """Write the cancel request of a job seen running or pending, naming the run it
        was read from; the job as it was seen, and that run (its file's inode).
        ConflictError (``conflict``) when it is terminal, and then nothing is written."""
        for _ in range(_CANCEL_LOOKS):  # the running file the state was read from
            before = self._running_inode(job_id)
            current = self.peek(job_id)
            if current.state in TERMINAL:
                if conflict:
                    raise ConflictError(f"job {job_id} already finished ({current.state})")
                return current, None
            if current.state is not JobState.RUNNING:
                run = None
                break
            run = self._running_inode(job_id)
            if run is not None and run == before:
                break  # else the run ended meanwhile, or another began: look again
        self._request_cancel(job_id, run)
        return current, run

    def _drop_request(self, job_id: str) -> None:
        with contextlib.suppress(OSError, SpoolIOError):
            self.spool.mover.unlink(self.layout.cancel_request(job_id))

    def _running_inode(self, job_id: str) -> int | None:
        try:
            return os.lstat(self.layout.job_str(JobState.RUNNING, job_id)).st_ino
        except OSError:
            return None

    def _request_cancel(self, job_id: str, run: int | None) -> None:
        """Write ``cancel/<id>``; what stands there and is no file (a directory, say) is
        set aside first, kept in ``failed/`` (``Spool.set_aside``): the rename of the
        request over a directory failed, 'Is a directory (tmp/...)'.

        For a running job it names the run (``run``: the inode of its file in
        ``running/``, the one its state was read from): a run that ended as the request
        was written leaves it to the processor to drop, not to act on for the id's next
        job, a drop of it that waited."""
        request = b"{}" if run is None else b'{"run_inode": %d}' % run
        # Should something keep taking the name, whatever is there is a request (the
        # processor asks lexists).  Durable as the mode asks: recovery fails an orphan
        # ``cancelled`` only while its request stands, and the CLI says it is in.
        self.spool.publish_file(self.layout.cancel_str(job_id), request, job_id,
                                "cancel request")

    @_denied_is_spool_trouble
    def retry(self, job_id: str) -> Record:
        """Move a failed job back to ``pending/`` (attempts reset to 0); the record as it
        now stands.  ConflictError when the job is in another state (only failed jobs
        can be retried) or was quarantined; NotFoundError when no folder has it."""
        for _ in range(_RETRY_LOOKS):
            try:
                record = self.spool.retry(job_id)
            except NotFoundError:
                # NotFoundError: no such job.  Another client's retry between failed/
                # and pending/ was "no job", a 404 from statusd: peek looks for it while
                # it is moved.
                state = self.peek(job_id).state
                if state is not JobState.FAILED:
                    raise ConflictError(f"job {job_id} is {state.value}; only failed jobs "
                                        "can be retried") from None
                # It failed just now, between the two looks: again.  (Retried by another
                # meanwhile, it is pending at the next look: a conflict, not "no job".)
            else:
                self._synced(f"job {job_id} retried")
                return record
        raise ConflictError(f"job {job_id} keeps changing state (retried and failing again "
                            "meanwhile); look again")

    @_denied_is_spool_trouble
    def peek(self, job_id: str) -> Record:
        """The record of ``job_id`` read for its state: a terminal one over
        ``PARSE_MAX_BYTES`` from its head, without ``result`` (read whole, a 600 MiB one
        took 1.9 GB to say it was done).  NotFoundError when no folder has it (looked for
        again while a move holds it, as :meth:`get`)."""
        from spool.large import BoundedReader  # noqa: PLC0415 - lazy, see the module's docstring

        return find_moved(self.layout, job_id, BoundedReader(self.layout).get,
                          time.monotonic() + MOVE_WAIT_S)

    @_denied_is_spool_trouble
    def purge(self, older_than_s: float, states: Iterable[JobState] = TERMINAL, *,
              dry_run: bool = False) -> PurgeReport:
        """Remove terminal records (and quarantined originals) finished before the
        cutoff: :func:`spool.purge.purge`."""
        from spool.purge import purge  # noqa: PLC0415 - lazy, see the module's docstring

        return purge(self.spool, older_than_s, states, dry_run=dry_run)

    # -- reads ----------------------------------------------------------------------

    @_denied_is_spool_trouble
    def get(self, job_id: str) -> Record:
        """The record of ``job_id`` as it stands.  NotFoundError when no folder has it; a
        job a cancel, retry or quarantine holds between folders meanwhile is looked for
        again (up to :data:`MOVE_WAIT_S`): it was "no job" for that moment, and a caller
        that took it at its word submitted the job again."""
        return find_moved(self.layout, job_id, self.reader.get,
                          time.monotonic() + MOVE_WAIT_S)

    @_denied_is_spool_trouble
    def list(self, *, state: JobState | None = None, tool: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        """A page of records, newest ``submitted_at`` first, as ``spoolq ls`` and statusd
        list them; pass ``next_cursor`` back for the next page (None after the last).
        Pages stay stable while jobs move: none is skipped or repeated.  ValueError on a
        bad cursor or a ``limit`` outside 1..:data:`~spool.cursor.MAX_PAGE`."""
        return self.reader.page(state=state, tool=tool, limit=limit, cursor=cursor)

    @_denied_is_spool_trouble
    def stats(self) -> dict[str, Any]:
        """Counts per state, oldest pending age, processor liveness, workers: the document
        of ``spoolq stats --json`` and ``GET /api/v1/stats``."""
        return self.reader.stats()

    @_denied_is_spool_trouble
    def wait(self, job_id: str, timeout: float | None = None,
             on_update: Callable[[Record], None] | None = None, *,
             gone_after_s: float = GONE_AFTER_S,
             until: Callable[[Record], bool] | None = None) -> Record:
        """Poll until the job is terminal (or ``until`` holds of its record) or ``timeout``
        passes; the last record seen.

        NotFoundError when the id never appears within the first second (past a shorter
        ``timeout`` only while a cancel, retry or quarantine holds it between folders:
        it returns the record once seen), or when it leaves every folder for
        ``gone_after_s`` after it was seen.  A look that cannot read the job for lack of
        descriptors (SpoolIOError) is a look that saw nothing new: it looks again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        appear_by = time.monotonic() + 1.0
        delay = _POLL_MIN_S
        last: Record | None = None
        missing_since: float | None = None
        while True:
            record: Record | None
            try:
                record = self.reader.get(job_id)
                missing_since = None
            except SpoolIOError:  # out of descriptors: not read this time, looked at again
                record = last
            except NotFoundError:
                now = time.monotonic()
                if last is None and now > appear_by:
                    raise
                missing_since = missing_since or now
                if last is not None and now - missing_since >= gone_after_s:
                    raise NotFoundError(f"job {job_id} is gone: it was {last.state} and is "
                                        "in no folder now (removed?)") from None
                record = last
            if record is not None:
                if on_update is not None and record != last:
                    on_update(record)
                last = record
                if record.state in TERMINAL or (until is not None and until(record)):
                    return record
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if last is not None:
                    return last
                # Not seen yet: caught between folders (a retry or cancel stages it
                # outside them), it has its first second to appear in, past a shorter
                # timeout too; else it is unknown.
                record = find_moved(self.layout, job_id, self.reader.get, appear_by)
                if on_update is not None:
                    on_update(record)
                return record
            time.sleep(min(delay, deadline - now) if deadline else delay)
            delay = min(delay * 2, _POLL_MAX_S)

    @_denied_is_spool_trouble
    def wait_all(self, job_ids: Iterable[str], timeout: float | None = None
                 ) -> dict[str, Record]:
        """:meth:`wait` for every job of ``job_ids`` within one ``timeout`` (not one each):
        the last record seen of each, by id in the order given, terminal unless the time
        ran out.  NotFoundError as :meth:`wait` raises it, for the first such id."""
        return {job_id: self.wait(job_id, left)
                for job_id, left in one_timeout(dict.fromkeys(job_ids), timeout)}


def find_moved(layout: Layout, job_id: str, get: Callable[[str], Record], give_up: float
               ) -> Record:
    """``get(job_id)``, looking again (until ``give_up``, on the monotonic clock) while
    a cancel, retry or quarantine holds the job outside the state folders.  NotFoundError
    as ``get`` raises it once :data:`_ABSENT_LOOKS` looks in a row, a pause apart, found
    the job nowhere: in no folder, held by no move, and in no folder again after that
    (past ``give_up``, a move holding it counts as nowhere).

    One look of the folders is no snapshot: a job a retry moves from ``failed/`` to
    ``pending/`` while the look goes from the one to the other is in neither, and by the
    look for a move it has landed.  With a cancel and a retry in a loop, two such looks
    in a row said "no job" (25 calls in 9,212 over 30 s).  After the look for a move the
    folders are looked in again: one move cannot slip through the three.
    """
    absent = 0
    while True:
        try:
            return get(job_id)
        except NotFoundError:
            if moving(layout, job_id) and time.monotonic() < give_up:
                absent = 0
            else:
                try:  # the folders again, after stage/: one move cannot slip through both
                    return get(job_id)
                except NotFoundError:
                    if (absent := absent + 1) >= _ABSENT_LOOKS:
                        raise
        time.sleep(_POLL_MIN_S)


def moving(layout: Layout, job_id: str) -> bool:
    """A cancel, retry or quarantine holds ``job_id``'s file where moves stage
    (``stage/``, else ``tmp/``), in no state folder for the moment; True too when
    this user may not look (``stage/`` is the spool user's)."""
    tags = {f"{action}-{job_id}" for action in ("retry", "cancel", "quarantine")}
    for folder in (layout.stage, layout.tmp):
        try:
            with os.scandir(folder) as entries:
                if any((parse_staging(entry.name) or ("",))[0] in tags
                       for entry in entries):
                    return True
        except FileNotFoundError:
            continue
        except OSError:
            return True
    return False


def one_timeout(job_ids: Iterable[str], timeout: float | None
                ) -> Iterator[tuple[str, float | None]]:
    """Each id with the time left of one ``timeout`` shared by all (None: no limit), as
    its wait begins."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job_id in job_ids:
        yield job_id, None if deadline is None else max(0.0, deadline - time.monotonic())


def require_spool(layout: Layout) -> None:
    """:meth:`Layout.require`, with a spool this user may not enter (EACCES on its root or
    a folder) a SpoolIOError naming it, as the exception tree says: it was a bare
    PermissionError, and the CLI's line 'Permission denied (<spool>/pending)'."""
    try:
        layout.require()
    except PermissionError as exc:
        raise SpoolIOError(f"cannot use the spool {layout.root}: this user may not enter it "
                           f"({exc.strerror}: {exc.filename})") from exc


def denied(exc: SpoolIOError) -> bool:
    """Whether ``exc`` (from :func:`require_spool`) says this user may not enter the spool."""
    return isinstance(exc.__cause__, PermissionError)


def spool_exists(settings: Settings) -> bool:
    return os.path.isdir(settings.spool_dir) and Layout(settings.spool_dir).exists()
