"""Job states: one per spool folder, and the only moves allowed between them.

The folder a job file sits in *is* its state; there is no second status field
that could disagree with it.  ``TRANSITIONS`` is the full table of moves the
spool performs; everything else is refused by :func:`check_transition`.
"""

from __future__ import annotations

from enum import StrEnum

from spool.errors import TransitionError


class JobState(StrEnum):
    """A job's state; the value is the name of the folder that holds it."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ACTIVE: frozenset[JobState] = frozenset({JobState.PENDING, JobState.RUNNING})
TERMINAL: frozenset[JobState] = frozenset({JobState.DONE, JobState.FAILED})

# (from, to) -> the verb that performs it.
TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (JobState.PENDING, JobState.RUNNING): "claim",
    (JobState.PENDING, JobState.FAILED): "quarantine/cancel",
    (JobState.RUNNING, JobState.DONE): "complete",
    (JobState.RUNNING, JobState.FAILED): "fail",
    (JobState.RUNNING, JobState.PENDING): "requeue",
    (JobState.FAILED, JobState.PENDING): "retry",
}


def check_transition(src: JobState, dst: JobState) -> None:
    """Raise :class:`TransitionError` unless ``src -> dst`` is in the table."""
    if (src, dst) not in TRANSITIONS:
        raise TransitionError(f"transition {src.value} -> {dst.value} is not allowed")
