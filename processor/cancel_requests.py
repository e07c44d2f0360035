"""Cancel requests: what the processor does with an id asked in ``cancel/``.

:class:`CancelRequests` acts on the ids :class:`~processor.discovery.Discovery`
found asked; an id whose request file is gone by now is skipped.  A run of the id
going on here ends ``cancelled`` (DESIGN section 9): a COMPUTE run by killing its
task in the executor (its outcome comes back from there), a FAST run at once,
its thread abandoned (:meth:`processor.fast_lane.FastLane.abandon`).  A job
waiting in this processor's ready queue is recorded cancelled without running
(:meth:`spool.transitions.Spool.cancel_pending`) and leaves the queue.  Nothing
else is done here for any other id.

A ready job whose file cannot be read (EIO) leaves the queue, to be judged again at
the next scan; a request that cannot be read (EIO) is said once, and asked again at
the next scan of ``cancel/``.  On other spool I/O trouble the id goes back to the
set, to be asked again, the processor's ``io_trouble`` starts its pause, and the
other ids wait for a later pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import orjson

from processor import logs
from processor.discovery import Discovery
from processor.executor import ComputeExecutor
from processor.fast_lane import FastLane
from processor.queues import Queues
from processor.run import Run
from processor.runner import Outcome
from processor.tools import ExecutionMode
from spool.entries import read_regular
from spool.errors import ConflictError, ErrorType, SpoolIOError, UnreadableDrop
from spool.fsops import failing_file, is_there
from spool.ids import JOB_SUFFIX
from spool.transitions import Spool

log = logging.getLogger("spoolq.processor")


REQUEST_MAX_BYTES = 4096
"""The most of a request file read: what a client writes is a few bytes."""


class CancelRequests:
    """The cancel requests of one processor (``runs``: the processor's own dict, shared;
    ``finish``: records a run's outcome; ``io_trouble``: starts the I/O pause)."""

    def __init__(self, spool: Spool, discovery: Discovery, queues: Queues, *,
                 runs: dict[str, Run], fast: FastLane, executor: ComputeExecutor,
                 finish: Callable[[Run, Outcome], None],
                 io_trouble: Callable[[SpoolIOError], None]) -> None:
        self.spool = spool
        self.layout = spool.layout
        self.discovery = discovery
        self.queues = queues
        self.runs = runs
        self.fast = fast
        self.executor = executor
        self.unreadable: dict[str, str] = {}  # id -> the error said of its request
        self.put_off: dict[str, str] = {}  # id -> why its cancel was put off, as said
        self.finish = finish
        self.io_trouble = io_trouble

    def handle(self) -> None:
        cancels = self.discovery.cancels
        while cancels:
            job_id = cancels.pop()
            run = self.runs.get(job_id)
            ready = self.queues.ready.get(job_id) if run is None else None
            held = (os.fstat(run.claim.fd).st_ino if run is not None
                    else ready.inode[0] if ready is not None else None)
            try:
                wanted = self._there(job_id) and (held is None or self._for_file(job_id, held))
            except UnreadableDrop as exc:
                # The request's own trouble (a bad sector under it): taken for the spool's,
                # it was asked again at each pause's end, and every claim paused for good.
                self._unreadable(job_id, exc)
                continue
            except SpoolIOError as exc:  # which run it names is unknown for now
                cancels.add(job_id)  # asked again once the trouble passes
                self.io_trouble(exc)
                return
            if not wanted:
                continue  # for a run that ended: dropped, and the request with it
            if run is not None and not run.abandoned and not run.finishing:
                if run.mode is ExecutionMode.COMPUTE:
                    self.executor.kill(job_id, ErrorType.CANCELLED.value)
                else:
                    self.fast.abandon(run)
                    self.finish(run, Outcome(job_id, ErrorType.CANCELLED,
                                             "cancelled while running"))
            elif run is None and job_id in self.queues.ready:
                try:
                    # Not waited for in the loop: an owner between a run's record and
                    # its file's removal puts the cancel off to a later scan.
                    record = self.spool.cancel_pending(job_id, settle_wait_s=0)
                except UnreadableDrop as exc:
                    # Its file's trouble (given back to pending/), not the spool's: taken
                    # for a pause, the request was tried again at each pause's end, and
                    # every claim paused for good.  Judged again at the next scan, and
                    # cancelled there once it reads (the request stays: asked each scan).
                    self.queues.ready.pop(job_id, None)
                    self.discovery.unreadable_file(job_id + JOB_SUFFIX, exc)
                    continue
                except ConflictError as exc:
                    # The run of the id before this drop may have ended, its running file
                    # not yet settled (spool.cancellation._give_back): the job is pending
                    # again, and the request, still there, is asked at the next scan.
                    self._put_off(job_id, exc)
                    continue
                except SpoolIOError as exc:
                    cancels.add(job_id)  # asked again once the disk trouble passes
                    self.io_trouble(exc)
                    return
                self.put_off.pop(job_id, None)
                if record is not None:
                    self.queues.ready.pop(job_id, None)
                    logs.transition("cancelled", id=job_id, tool=record.tool)

    def _there(self, job_id: str) -> bool:
        """The request is still there; its lookup's EIO is its own trouble (an
        :class:`~spool.errors.UnreadableDrop`), which ``os.path.lexists`` took for no
        request: dropped at each scan of ``cancel/`` with no word while it lasted."""
        there = is_there(self.layout.cancel / job_id,
                         f"cannot look up the cancel request of {job_id}")
        if not there:
            self.unreadable.pop(job_id, None)
            self.put_off.pop(job_id, None)
        return there

    def _put_off(self, job_id: str, exc: ConflictError) -> None:
        _say_once(self.put_off, job_id, exc, "a cancel is put off; asked again at each scan")

    def _unreadable(self, job_id: str, exc: UnreadableDrop) -> None:
        _say_once(self.unreadable, job_id, exc,
                  "cannot read a cancel request; asked again at each scan")

    def _for_file(self, job_id: str, inode: int) -> bool:
        """The request is for the job file ``inode`` (a run's, or a ready job's in
        ``pending/``): it names no run (a pending job's, an older client's), or that file
        (``run_inode``, :meth:`spool.client.Client.cancel`; a run requeued keeps its
        file).  One naming another, a run that ended as it was written, is removed: this
        is the id's next job, a drop that waited behind it."""
        path = self.layout.cancel_str(job_id)
        what = f"cannot read the cancel request of {job_id}"
        try:
            data = read_regular(path, REQUEST_MAX_BYTES, strict=True)
        except OSError as exc:  # out of descriptors: unread, it would name no run
            if (bad := failing_file(exc, what)) is not None:
                raise bad from exc
            raise SpoolIOError(f"{what}: {exc.strerror}") from exc
        self.unreadable.pop(job_id, None)  # read again: a next failure is said again
        try:
            named = orjson.loads(data).get("run_inode") if data else None
        except (ValueError, AttributeError):
            named = None  # not a client's request: for whatever runs
        if not isinstance(named, int) or named == inode:
            return True
        try:
            self.spool.remove_file(path, job_id, "cancel request")
        except SpoolIOError as exc:  # it stays, never acted on; the job's end removes it
            self.io_trouble(exc)
            return False
        log.info("a cancel request for an earlier run of the id dropped",
                 extra={"fields": {"id": job_id}})
        return False


def _say_once(said: dict[str, str], job_id: str, exc: Exception, line: str) -> None:
    """Log ``line`` of ``job_id`` once while ``exc`` lasts (``said``: what was said of
    each id); the next scan of ``cancel/`` asks the id again."""
    if said.get(job_id) != str(exc):
        said[job_id] = str(exc)
        log.warning(line, extra={"fields": {"id": job_id, "error": str(exc)}})
