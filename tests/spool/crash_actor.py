"""One spool operation in a process of its own, for the tests that kill it mid-way.

Usage: ``python crash_actor.py ROOT FSYNC COMMAND ARG``

``quarantine NAME``  judge ``pending/NAME`` as the processor's intake does (no settle
                     time), which quarantines a file that cannot be a job;
``complete ID``      claim ``ID`` and complete it;
``fail ID``          claim ``ID`` and fail it (``tool_error``);
``keep ID``          claim ``ID`` and fail it ``unknown_tool``, its job file kept beside
                     the record (``failed/<id>.orig``), as the processor does;
``rerun ID``         claim ``ID``, drop it again (``{"drop": 2}``, which waits), complete
                     the first run, claim the drop as a processor does the moment the
                     run ends, and die of SIGKILL during that second run;
``purge SECONDS``    purge the records older than SECONDS, as ``spoolq purge`` does;
``cancel ID``        cancel the pending ``ID``, as ``spoolq cancel`` does.

The operation is the library's own code; the test runs this under strace, which
SIGKILLs it at a chosen syscall (see test_crash_points.py).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from spool import fsops
from spool.client import Client
from spool.clock import SystemClock
from spool.errors import ErrorType
from spool.fsops import Mover
from spool.intake import Intake
from spool.layout import Layout
from spool.models import ErrorInfo, Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool


def main() -> None:
    root, mode, command, arg = sys.argv[1:5]
    # The tests count the operation's renames to kill it midway; the probe of stage/'s
    # mount (a rename of a name that is not there, see spool.fsops.same_mount) is not
    # the operation's, and one spool here is one mount.
    fsops.same_mount = lambda a, b: True
    layout = Layout(Path(root))
    spool = Spool(layout, Mover(layout, FsyncMode(mode)), SystemClock())
    if command == "quarantine":
        intake = Intake(spool, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock())
        intake.inspect(arg)
        return
    if command == "purge":
        Client(layout, spool.mover, SystemClock()).purge(float(arg))
        return
    if command == "cancel":
        spool.cancel_pending(arg)
        return
    claim = spool.claim(arg)
    if claim is None:
        raise SystemExit(f"cannot claim {arg}")
    if command == "rerun":
        spool.submit(Job(tool="echo", params={"drop": 2}), arg)
    now = datetime.now(UTC)
    state = JobState.FAILED if command in ("fail", "keep") else JobState.DONE
    record = spool.record_of_claim(claim, state).model_copy(
        update={"attempts": 1, "started_at": now, "finished_at": now})
    if state is JobState.DONE:
        record.result = {"ok": True}
        spool.complete(claim, record)
    elif command == "keep":
        record.error = ErrorInfo(type=ErrorType.UNKNOWN_TOOL, message="no such tool")
        spool.fail(claim, record, keep_original=True)
    else:
        record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message="the tool failed")
        spool.fail(claim, record)
    if command == "rerun":
        assert spool.claim(arg) is not None
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
