"""Starting a run: a ready job is claimed and handed to its lane.

:class:`Starter` owns the step from a candidate intake judged to a run in the
processor's ``runs``: the claim (a lost race or a vanished file is a return, not
an error), the check that the claimed file is the one intake judged, the run's
record (``attempts`` raised at the claim, DESIGN section 9), its timeout (a job's
own may only lower its tool's), and the hand-over: a FAST run to the FAST lane
with its own copy of the params, a COMPUTE run to the executor.

Guarantees:

* a claimed file that is not the one judged (replaced, or rewritten in place) goes
  back to ``pending/`` and to intake, which judges it whole, unless the disk
  refuses the move (then what intake judged runs);
* a job whose tool is unknown, or whose ``attempts`` already reach its
  ``max_attempts``, is claimed and fails at once through ``finish``, never run;
* a :class:`~spool.errors.SpoolIOError` from the claim reaches the caller with
  nothing claimed.

It runs once per job on the loop thread: the dispatch's hot path.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from processor import logs
from processor.discovery import Discovery
from processor.executor import ComputeExecutor, Task
from processor.fast_lane import FastLane
from processor.registry import Registry
from processor.run import Run
from processor.runner import Outcome
from processor.tools import BaseTool, ExecutionMode
from spool.claim import Claim
from spool.clock import Clock
from spool.errors import InvalidJob, JobError, SpoolIOError
from spool.intake import Candidate
from spool.jobfile import job_in, record_from_job
from spool.models import Job, Record
from spool.states import JobState
from spool.transitions import Spool

_MODE_TEXT = {mode: mode.value for mode in ExecutionMode}
"""An enum member's ``.value`` is a property: 0.1 us a read, once a claim."""


class Starter:
    """Starts the runs of one processor (``runs``: the processor's own dict, shared;
    ``finish``: records a run's outcome; ``max_attempts``: the processor's policy)."""

    def __init__(self, spool: Spool, clock: Clock, registry: Registry, discovery: Discovery, *,
                 runs: dict[str, Run], fast: FastLane, executor: ComputeExecutor, data_dir: Path,
                 max_attempts: Callable[[Job], int],
                 finish: Callable[[Run, Outcome], None]) -> None:
        self.spool = spool
        self.clock = clock
        self.registry = registry
        self.discovery = discovery
        self.runs = runs
        self.fast = fast
        self.executor = executor
        self.data_dir = data_dir
        self.max_attempts = max_attempts
        self.finish = finish

    def timeout_of(self, job: Job, tool: type[BaseTool]) -> float:
        limit = tool.execution_timeout
        return min(job.timeout, limit) if job.timeout else limit

    def start(self, cand: Candidate) -> None:
        claim = self.spool.claim(cand.job_id)
        # Claimed, or not (another processor won or runs the id, or it is gone): either
        # way the next rescan looks afresh at whatever is pending under this name.
        self.discovery.seen.pop(cand.job_id + ".json", None)
        if claim is None:
            return
        # The bytes intake judged need no second validation.
        job = cand.job if claim.data == cand.data else None
        if job is None:
            try:
                released = _replaced(claim, cand) and self.spool.release(claim)
            except (SpoolIOError, OSError):
                released = False  # the disk refused the move: run what intake judged
            if released:
                # A file other than the one judged (replaced, or rewritten in place, which
                # no event tells): intake judges it whole (size, id, nesting), and
                # quarantines it with its bytes, instead of the model alone letting a
                # 3 MiB job under another id run as this one.
                self.discovery.tell(cand.job_id + ".json")
                return
            # The file intake judged (a large one is not kept to compare), read again; or,
            # should the model read those bytes otherwise, what intake judged.
            job = job_in(claim.data) or cand.job
        now = self.clock.now()
        record = record_from_job(job, cand.job_id, JobState.RUNNING, cand.mtime_ns,
                                 attempts=job.attempts + 1, started_at=now,
                                 host=self.spool.host, pid=self.spool.pid, error=None)
        try:
            tool = self.registry.get(job.tool)
            if job.attempts and job.attempts >= (limit := self.max_attempts(job)):
                # A run goes while attempts < max_attempts (DESIGN section 9).  None began:
                # the record's count stays the job's (it said 101 of a job at 100, past
                # the schema's own maximum, for a run it never had: QA).
                record = record.model_copy(update={"attempts": job.attempts})
                raise InvalidJob(f"attempts {job.attempts} already reach max_attempts "
                                 f"{limit}: not run again")
        except JobError as exc:
            # Claimed all the same (pending -> running -> failed): each its line.
            logs.transition("claimed", id=cand.job_id, tool=job.tool,
                            attempt=record.attempts)
            self._finish_error(self._new_run(claim, job, None, record), exc)
            return
        run = self._new_run(claim, job, tool, record)
        logs.transition("claimed", id=cand.job_id, tool=job.tool, attempt=record.attempts,
                        mode=_MODE_TEXT[run.mode])
        if run.mode is ExecutionMode.FAST:
            # A copy: the record holds the job's params, and a tool may change its own.
            self.fast.start(run, tool, _copy_params(job.params))
            return
        # Its params are checked by run_tool in the worker, as a FAST job's are in its
        # thread: a Params validator is the tool's code, which may be slow (a file server,
        # a database) or raise anything, and must not run on the loop.
        logs.flush()  # a claim's line is out before its job can run (and the daemon be killed)
        self.executor.submit(Task(cand.job_id, job.tool, job.params,
                                  run.timeout_s, str(self.data_dir),
                                  record.attempts))

    def _new_run(self, claim: Claim, job: Job, tool: type[BaseTool] | None, record: Record
                 ) -> Run:
        started = time.monotonic()
        timeout = self.timeout_of(job, tool) if tool else 0.0
        run = Run(claim, job, tool or BaseTool, record, started, timeout,
                  tool.execution_mode if tool else ExecutionMode.FAST)
        self.runs[claim.job_id] = run
        return run

    def _finish_error(self, run: Run, exc: JobError) -> None:
        self.finish(run, Outcome.failed(run.claim.job_id, exc))


def _replaced(claim: Claim, cand: Candidate) -> bool:
    """The claimed file is not the one intake judged (another inode, size or mtime)."""
    st = os.fstat(claim.fd)
    return ((st.st_ino, st.st_dev) != cand.inode or st.st_size != cand.size
            or st.st_mtime_ns != cand.mtime_ns)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copy_params(params: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a job's params: a plain ``dict()`` when every value is a scalar
    (nothing in it can change), which is the usual case and 4x cheaper than deepcopy;
    else through JSON, which they came from: ``deepcopy`` of 1 MiB of nested objects
    held the loop thread 0.28 s, orjson 4 ms (QA).  What JSON would not give back equal
    (a NaN, an integer past 64 bits, a tuple) is deep-copied still."""
    for value in params.values():
        if type(value) not in _SCALARS:
            break
    else:
        return dict(params)
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(params))
    except TypeError:  # orjson.JSONEncodeError among them
        return copy.deepcopy(params)
    return copied if copied == params else copy.deepcopy(params)
