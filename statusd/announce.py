"""What a change of the index tells: a WebSocket event and, for a finished job, metrics.

:func:`announce` is called by :class:`statusd.applying.Applier` for each item it
puts in the index, with the item it replaced.

Guarantees:

* A move to another state is one ``transition``, to the events stream (as the
  list row, and as the brief row to clients of ``view=brief``) and to the
  task's own streams (as the whole record when the index holds it), each
  encoded once; a terminal one is marked so, and counted in the metrics once.
* A terminal record replaced by a new write (a job run again and finished in
  the same state) is a transition too; a chmod, a hard link or a touch is not.
* So is a running job whose file is another claim's (another inode, or moved since):
  its run was cut short and the job claimed again before statusd saw it pending (a
  stopping processor's requeue that another processor took at once).  The task view
  kept the run before's start, its time counting from it, and no word of a requeue.
* Every transition is told: one the job must have made on its way from the state
  statusd knew to the one it sees, too fast to be seen (pending for an id new to
  statusd, running for a job seen pending and then finished with a run's start in
  its record, pending again for a finished job seen running or finished anew), is a
  ``transition``
  with ``"inferred": true`` and no record, sent first (QA: a fast echo job's events
  went from nothing to running, or from pending to done).  Not for an id read late
  (``counted=False``): statusd does not know where it was before.
* A running job's new progress is one ``progress`` event.
* Nothing is encoded when no client listens to the job.
"""

from __future__ import annotations

import orjson

from spool.states import TERMINAL, JobState
from statusd import messages
from statusd.hub import Hub, Message
from statusd.items import Item
from statusd.metrics import Metrics


def announce(hub: Hub, metrics: Metrics, old: Item | None, new: Item, *,
             counted: bool = True) -> None:
    """Tell what changed from ``old`` (None: a new id) to ``new``; ``counted=False``: not
    in the metrics (a record from before statusd started, read late)."""
    moved = old is None or old.state is not new.state
    # A new record is a new write (mtime, or a new inode within one tick) with new
    # times in it; a chmod or a hard link moves only ctime, and a touch only mtime:
    # neither is a second run.  Nor is a record damaged, or one put back over a damaged
    # one (each counted the job finished once more: h365).
    rerun = (old is not None and new.state in TERMINAL
             and (old.stamp.mtime_ns, old.stamp.ino) != (new.stamp.mtime_ns, new.stamp.ino)
             and old.summary != new.summary and _readable(old) and _readable(new))
    reclaimed = (old is not None and old.state is JobState.RUNNING
                 and new.state is JobState.RUNNING
                 and (old.stamp.ctime_ns, old.stamp.ino) != (new.stamp.ctime_ns, new.stamp.ino))
    if moved or rerun or reclaimed:
        if new.state in TERMINAL and counted:
            metrics.observe_terminal(new)
        if hub.wants(new.job_id):
            previous = old.state if old is not None else None
            for state in _unseen(old, new) if counted else ():
                msg = Message(messages.inferred_transition(new.job_id, previous, state))
                hub.publish(new.job_id, events=msg, task=msg)
                previous = state
            _transition(hub, previous, new)
    elif (new.state is JobState.RUNNING and old is not None
          and (old.fraction, old.message) != (new.fraction, new.message)
          and hub.wants(new.job_id)):
        msg = Message(messages.progress(new))
        hub.publish(new.job_id, events=msg, task=msg, progress=True)


def _readable(item: Item) -> bool:
    """``item`` is of a record that reads as one, not marked ``unreadable``
    (:func:`spool.terminal_records.unreadable_record`).  Parsed only here, when a
    terminal record was written again."""
    try:
        fields = orjson.loads(item.summary)
    except orjson.JSONDecodeError:
        return False
    return isinstance(fields, dict) and "unreadable" not in fields


def _unseen(old: Item | None, new: Item) -> list[JobState]:
    """The states the job passed through between ``old``'s (None: an id new to statusd)
    and ``new``'s that statusd did not see: every job enters by ``pending/``, leaves it
    for ``running/`` when claimed, and a finished job comes back by it.  A record older
    than the pending file it follows is no run of it (a re-drop removed before a claim
    lets the id's earlier record tell its state again): nothing is inferred."""
    previous = old.state if old is not None else None
    state = new.state
    if (old is not None and previous is JobState.PENDING and state in TERMINAL
            and new.stamp.mtime_ns < old.stamp.ctime_ns):
        return []
    path: list[JobState] = []
    # (A running job claimed again keeps its one running -> running transition: see above.)
    if (previous is None or previous in TERMINAL) and state is not JobState.PENDING:
        path.append(JobState.PENDING)  # dropped, or a finished one dropped again or retried
    if (path or previous is JobState.PENDING) and state in TERMINAL and _was_claimed(new):
        path.append(JobState.RUNNING)
    return path


def _was_claimed(item: Item) -> bool:
    """The finished job went by ``running/``: done, or failed with a run's start in its
    record (a pending job cancelled, or a drop quarantined, has none)."""
    if item.state is JobState.DONE:
        return True
    try:
        record = orjson.loads(item.summary)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("started_at") is not None


def _transition(hub: Hub, previous: JobState | None, new: Item) -> None:
    terminal = new.state in TERMINAL
    short = Message(messages.transition(new, previous, new.summary), terminal=terminal)
    full = short if new.body is None or new.body is new.summary else Message(
        messages.transition(new, previous, new.body), terminal=terminal)
    brief = messages.brief_transition(new, previous)
    cut = None if brief is None else Message(brief, terminal=terminal)
    hub.publish(new.job_id, events=short, task=full, brief=cut)
