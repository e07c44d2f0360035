"""The one exception tree of spoolq.

::

    SpoolError                      anything spoolq raises on purpose
    ├── ConfigError                 bad settings: the daemon exits non-zero
    ├── SpoolIOError                the spool itself is unusable (EACCES, ENOSPC)
    │   ├── UnreadableDrop          one file's read failed (EIO), not the spool's
    │   └── QuarantineRefused       one drop's quarantine was refused, not a claim
    ├── TransitionError             a move the state table forbids
    ├── NotFoundError               no job with that id
    ├── InvalidId                   no id can be that (also a ValueError)
    ├── ConflictError               the job is not in a state that allows this
    └── JobError                    a job failed; ``error_type`` is the record's error.type
        ├── InvalidJob              invalid_job
        ├── UnknownTool             unknown_tool
        ├── InvalidParams           invalid_params
        ├── ToolError               tool_error
        ├── JobTimeout              timeout
        ├── WorkerCrashed           worker_crashed
        ├── Abandoned               abandoned
        └── Cancelled               cancelled

Foreign exceptions are translated into this tree at the boundary that meets
them (``raise X(...) from exc``).
"""

from __future__ import annotations

import errno
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class ErrorType(StrEnum):
    """The values of a failed record's ``error.type``."""

    INVALID_JOB = "invalid_job"
    UNKNOWN_TOOL = "unknown_tool"
    INVALID_PARAMS = "invalid_params"
    TOOL_ERROR = "tool_error"
    TIMEOUT = "timeout"
    WORKER_CRASHED = "worker_crashed"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"


# Failures that say nothing about the job itself: worth another attempt.
RETRYABLE: frozenset[ErrorType] = frozenset(
    {ErrorType.TIMEOUT, ErrorType.WORKER_CRASHED, ErrorType.ABANDONED}
)

# A run that fails so keeps its job file's bytes beside its record, as a quarantine keeps
# a drop's (``failed/<id>.orig``, DESIGN section 2: "unknown tool, invalid params ... the
# original bytes are kept"): the client fixes that file and drops it again.
KEEPS_ORIGINAL: frozenset[ErrorType] = frozenset(
    {ErrorType.UNKNOWN_TOOL, ErrorType.INVALID_PARAMS}
)


class SpoolError(Exception):
    """Base of every error spoolq raises on purpose."""


class ConfigError(SpoolError):
    """The settings are unusable."""


class SpoolIOError(SpoolError):
    """The spool directory cannot be used (permissions, disk full, missing)."""


class NotASpool(SpoolIOError):
    """The spool directory ``root`` lacks the spool's folders (``spoolq init`` makes
    them)."""

    def __init__(self, message: str, root: Path) -> None:
        super().__init__(message)
        self.root = root


class UnreadableDrop(SpoolIOError):
    """A job file opened but whose read failed (EIO: a bad sector), at intake or at its
    claim (which gave it back to ``pending/``): that file's trouble, not the spool's.
    Taken for the I/O pause, one such file paused every claim for good, each try of it
    the pause's next step; the processor tries it again at its next scan.  A caller that
    does not know it takes it for spool trouble, as before."""


class SpoolChanged(SpoolIOError):
    """The spool's path names another directory than the one whose locks this process
    holds (remounted, or unmounted lazily), or cannot tell: what a recovery pass locked
    there proves no owner dead, so the pass stops before it changes anything."""


class QuarantineRefused(SpoolIOError):
    """A drop intake judged no job whose move into ``failed/`` the spool refused (that
    folder not writable, a full disk): the drop stays in ``pending/`` and is tried again
    after a pause, while the other drops are judged and the good jobs claimed.  Taken
    for the I/O pause, it was judged first at each pause's end and paused claims again,
    so good jobs dropped beside it waited for as long as the refusal lasted.  A caller
    that does not know it takes it for spool trouble, as before."""


class InvalidId(SpoolError, ValueError):
    """A job id that cannot be one (letters, digits and ``._-``, as DESIGN section 1
    says), or one that disagrees with the job's own; a ValueError too, as it was."""


class TransitionError(SpoolError):
    """A state change that the transition table does not allow."""


class NotFoundError(SpoolError):
    """No job with the given id exists in the spool."""


class ConflictError(SpoolError):
    """The job exists but its state does not allow the operation."""


class JobError(SpoolError):
    """A job failed; the leaves map one to one onto ``error.type``."""

    error_type: ErrorType = ErrorType.TOOL_ERROR

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class InvalidJob(JobError):
    error_type = ErrorType.INVALID_JOB


class UnknownTool(JobError):
    error_type = ErrorType.UNKNOWN_TOOL


class InvalidParams(JobError):
    error_type = ErrorType.INVALID_PARAMS


class ToolError(JobError):
    error_type = ErrorType.TOOL_ERROR


class JobTimeout(JobError):
    error_type = ErrorType.TIMEOUT


class WorkerCrashed(JobError):
    error_type = ErrorType.WORKER_CRASHED


class Abandoned(JobError):
    error_type = ErrorType.ABANDONED


class Cancelled(JobError):
    error_type = ErrorType.CANCELLED


EXIT_TEMPFAIL = 75
"""A daemon's exit status for spool trouble that passes (:func:`passing`): EX_TEMPFAIL,
which systemd restarts."""
PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ESTALE, errno.ENOMEM,
                            errno.EINTR, errno.EAGAIN, errno.EMFILE, errno.ENFILE,
                            errno.ENOLCK, errno.ENOTCONN, errno.ECONNABORTED,
                            errno.ETIMEDOUT})
"""What a spool refuses for now: a disk full, descriptors or memory short, an I/O error,
an NFS handle gone stale (a new process looks every path up afresh), a network
filesystem's lock daemon down (ENOLCK: the owner lease and recovery's claims are
``flock`` calls), a FUSE filesystem's daemon gone until it is mounted again (ENOTCONN;
ECONNABORTED to a request in flight as it died, or after an abort through fusectl),
a network filesystem's server not answering (ETIMEDOUT).  At start-up (its recovery
scan, say) the daemons exit 75 (EX_TEMPFAIL) for these, so systemd starts them again;
with exit status 2 a full disk at boot, or lockd not yet up, left the processor down
until someone restarted it by hand."""


def passing(exc: BaseException) -> bool:
    """``exc`` is spool trouble that goes away by itself (:data:`PASSING_ERRNOS`)."""
    cause = exc.__cause__
    return (isinstance(exc, SpoolIOError) and isinstance(cause, OSError)
            and cause.errno in PASSING_ERRNOS)
