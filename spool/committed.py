"""What a client's change does past its commit point, and how its trouble is told.

A cancel's commit point is its ``cancelled`` record renamed into ``failed/``; a
retry's, its job published into ``pending/``; a purge's, each record's unlink.  What
follows (removing what the change staged, a superseded file, a folder's sync) can
fail on a failing disk (EIO) while the change stands.  Raised, that error made
``spoolq cancel``, ``retry`` and ``purge`` exit 1 after the job was cancelled or
retried, and a script took it for not done (QA).

Guarantee: a step past the commit point that fails (a :class:`~spool.errors.SpoolIOError`)
is handed to the spool's :attr:`~spool.transitions.Spool.after_commit` as one line
saying what stands and what failed, and the change reports success.  A spool with no
``after_commit`` (a processor's, its recovery's) raises it as before: its I/O pause
covers it.  What a failed step left (a staged file, a superseded record) a processor's
recovery settles; a folder sync not made leaves the change as durable as under
``SPOOL_FSYNC=never`` (as a ``submit`` whose sync failed is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spool.errors import SpoolIOError

if TYPE_CHECKING:
    from spool.transitions import Spool

LEFT_OVER = "it stands; a processor's recovery removes anything left over"
"""How each warning ends: nothing for the caller to undo or do again."""


def past_commit(spool: Spool, done: str, exc: SpoolIOError | OSError) -> None:
    """Tell ``exc``, met after ``done`` (``job X cancelled``) was made, to the spool's
    ``after_commit``; raise it where there is none."""
    if spool.after_commit is None:
        raise exc
    tell(spool, done, exc)


def tell(spool: Spool, done: str, exc: SpoolIOError | OSError) -> None:
    """Tell ``exc`` as :func:`past_commit` does, but never raise it: a submit's (whose
    caller took an error for a job not submitted, and submitted it twice)."""
    if spool.after_commit is not None:
        spool.after_commit(f"{done}, but then {_said(exc)}; {LEFT_OVER}")


def _said(exc: SpoolIOError | OSError) -> str:
    """``exc`` in a line: a bare OSError (a lookup's EIO) as its reason and path."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


def then(spool: Spool, done: str, *steps: Callable[[], object]) -> None:
    """Run each of ``steps``, past the commit point of ``done``: one that fails is told
    (:func:`past_commit`) and the others still run."""
    for step in steps:
        try:
            step()
        except (SpoolIOError, OSError) as exc:
            past_commit(spool, done, exc)
