"""The removal of an id's record in the other terminal folder, once a newer one is out.

A record replaces an earlier record of its id in its own folder by rename; one in the
other folder (``done/`` for a failed record, ``failed/`` for a done one) is removed
after (:meth:`spool.transitions.Spool.publish_terminal`).  Two finishers of one id may
publish at once, one into each folder: a processor completing a run while a client
cancels the id's re-drop waiting behind it (``spoolq cancel``, ``POST .../cancel``), or
while a second processor quarantines a re-drop.  Each removed the other folder's record
by name once its own was out; when both were out before either removed, each removed
the other's, and the id was left with no record: the run's result was lost and the job
in no folder.

Guarantee: a finisher removes the other folder's record only while a record stands at
its own name.  It moves the other record where moves stage (``superseded-<state>-<id>``,
see :meth:`spool.fsops.Mover.action_staging`), then looks at its own name: a record
there (its own, or a newer one of that folder), and the one held goes; none (the other
finisher took it so), and the one held goes back.  So of two finishers racing, one
record stays (both, when each put the other's back: recovery keeps the newer).  A
finisher killed holding one leaves it to recovery (:class:`spool.staged.Staged`), which
removes it when the id has a record in the other folder and puts it back otherwise.
"""

from __future__ import annotations

import enum
import logging
import os
from stat import S_ISREG
from typing import TYPE_CHECKING

from spool import quarantine
from spool.errors import SpoolIOError
from spool.fsops import refused_by_file
from spool.states import JobState

if TYPE_CHECKING:
    from spool.fsops import Mover, StrPath
    from spool.transitions import Spool

log = logging.getLogger("spoolq.spool")

SUPERSEDED_TAG = "superseded"
"""The action of a record held where moves stage: ``superseded-<state>-<id>``."""


class Other(enum.Enum):
    """What became of the other folder's record of an id."""

    REMOVED = "removed"
    ABSENT = "absent"
    """Nothing there (or set aside, being no regular file): the name is free."""
    STANDS = "stands"
    """Put back: this finisher's own record was gone (another finisher's stands); or it
    refuses its removal (immutable): both stay."""


def drop_other_record(spool: Spool, state: JobState, job_id: str, own: str, *,
                      durable: bool = True) -> Other:
    """Remove ``job_id``'s record in the folder of ``state``, superseded by the record just
    published at ``own`` (in the other terminal folder), while ``own`` holds a record.
    Anything at its name that is no regular file is set aside (:meth:`Spool.set_aside`).
    ``durable``: its folder no longer lists it once this returns (under ``always``)."""
    path = spool.layout.job_str(state, job_id)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Other.ABSENT
    if not S_ISREG(st.st_mode):
        quarantine.set_aside(spool, path, job_id, "record")
        return Other.ABSENT
    mover = spool.mover
    staged = str(mover.action_staging(f"{SUPERSEDED_TAG}-{state.value}-{job_id}"))
    try:
        if not mover.move(path, staged, durable=durable):
            return Other.ABSENT  # gone meanwhile: another finisher's, a retry, a purge
    except SpoolIOError as exc:
        if not refused_by_file(exc.__cause__):
            raise
        # An earlier record made immutable (chattr +i, to keep it from purge): both stay,
        # the newer one read first.  Taken for spool trouble, a re-drop of the id paused
        # every claim for as long as the flag stayed (QA).
        log.warning("an earlier record of the id refuses its removal; both records stay, "
                    "the newer one is read", extra={"fields": {"id": job_id,
                                                               "error": str(exc)}})
        return Other.STANDS
    if not record_stands(own):
        # Another finisher took this one's record the same way: its own goes back.
        put_back(mover, staged, path, durable=durable)
        return Other.STANDS
    mover.unlink(staged)
    return Other.REMOVED


def record_stands(path: str) -> bool:
    """A regular file (a record; a directory or symlink under the name is none) is at
    ``path``."""
    try:
        return S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def put_back(mover: Mover, held: StrPath, path: StrPath, *, durable: bool = True) -> bool:
    """Move a record held where moves stage back to ``path``: True when it went back.
    When another took the name meanwhile (a newer record), the held one is superseded
    and goes (held by a purge, a retry, a finisher)."""
    if mover.move(held, path, durable=durable):
        return True
    mover.unlink(held)
    return False
