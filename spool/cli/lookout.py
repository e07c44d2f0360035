"""While ``wait`` waits: say once, on stderr, when no processor seems to be running.

A wait on a spool that no processor serves used to be silent for ever: the job
stays pending (or in ``running/``, its processor dead) until one starts.
:class:`Lookout` reads ``owners/`` every :data:`CHECK_S` from a thread of its own
and, the first time no processor is live, says so in one line naming what it
found there (where it looked, the last heartbeat's age).  The wait goes on: a
processor started later runs the job, and nothing more is said.

Live is the reader's and statusd's word (:meth:`spool.reader.SpoolReader.processors`,
``GET /api/v1/stats``): a processor holding its owner lock, with a heartbeat younger
than :data:`spool.lease.HEARTBEAT_STALE_S`.  When:

* at once when ``owners/`` shows a processor gone: a status file whose lock nobody
  holds (killed: a clean stop removes both), or a lock holder whose heartbeat is
  stale (stopped by SIGSTOP, or hung);
* after :data:`QUIET_S` when there is no status file at all (none ever ran, or it
  stopped cleanly): a processor started just before the wait has that long to write
  its first one; not while one holds its lock without a status file yet (starting),
  for :data:`STARTING_S` from its lock (taken before its tools load); past that, its
  start is said stuck.

Only while the job is seen unfinished: a wait for a job done long ago ends at
once, whatever ``owners/`` holds.  An ``owners/`` this user may not list: nothing
is said (nothing is known).  Out of descriptors (SpoolIOError, or the OSError of a
lock it cannot test): nothing is known for now, and it looks again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from spool.cli.render import human_duration, printable
from spool.errors import SpoolIOError
from spool.fsops import NOT_NOW
from spool.ids import JOB_SUFFIX, is_valid_id
from spool.layout import Layout
from spool.lease import STARTING_S, heartbeat_fresh, is_locked

if TYPE_CHECKING:
    from spool.models import OwnerStatus

CHECK_S = 1.0
"""How often ``owners/`` is read while waiting."""
QUIET_S = 3.0
"""How long a spool with no status file at all may wait before it is said."""
SEEN_POLL_S = 0.05
"""How often to look whether the wait has seen the job unfinished yet."""
NEW_LOCK_S = 1.0
"""How new a lock file without a status file is taken for a processor's, unchecked."""


@dataclass(frozen=True, slots=True)
class Absence:
    """Why no processor seems to be running; ``certain``: ``owners/`` shows one gone."""

    reason: str
    certain: bool


def absence(layout: Layout, now: float) -> Absence | None:
    """None while a processor is live on the spool; else what ``owners/`` shows.

    OSError when ``owners/`` cannot be listed (a member of the submit group only)."""
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli

    held = SpoolReader(layout).processors()  # the lock holders
    if any(heartbeat_fresh(status, now) for status in held):
        return None
    starting, stuck = _starting(layout, now)
    if starting:
        return None
    if stuck:
        owner, since = max(stuck, key=lambda found: found[1])
        return Absence(f"processor {printable(owner)} holds its lock and has written no "
                       f"status file {human_duration(now - since)} after taking it (its "
                       "start stuck: a tools module's import, the executor's start?)",
                       certain=True)
    if held:
        status = _newest(held)
        return Absence(f"{_named(layout, status)} holds its lock, last heartbeat "
                       f"{_age(status, now)} ago (stopped or hung?)", certain=True)
    left = _left_behind(layout, {status.owner for status in held})
    if left:
        status = _newest(left)
        return Absence(f"{_named(layout, status)} holds no lock, last heartbeat "
                       f"{_age(status, now)} ago (killed?)", certain=True)
    return Absence(f"no status file in {layout.owners}/ after {QUIET_S:g} s", certain=False)


def _starting(layout: Layout, now: float) -> tuple[bool, list[tuple[str, float]]]:
    """Whether a processor holds its lock and has written no status file yet, for less
    than :data:`STARTING_S`: it writes the first with its first heartbeat, after its
    tools load, its start-up's recovery and its executor's start (seconds for a Dask
    cluster); and those that hold it so for longer (owner, the lock file's mtime).  A
    lock file made less than :data:`NEW_LOCK_S` ago is not tried (its maker, about to
    lock it, would find it taken and fail to start)."""
    from spool.stats import unannounced_processors  # noqa: PLC0415 - lazy, see spool.cli

    stuck = []
    for owner, found in unannounced_processors(layout):
        if now - found.st_ctime < NEW_LOCK_S:
            return True, []
        if is_locked(layout.owner_lock(owner)):  # None: gone since the listing
            if now - found.st_mtime < STARTING_S:
                return True, []
            stuck.append((owner, found.st_mtime))
    return False, stuck


def _left_behind(layout: Layout, live: set[str]) -> list[OwnerStatus]:
    """The status files in ``owners/`` of processors that are not running (a killed one
    leaves its own until the next processor's recovery removes it)."""
    from spool.jobfile import MAX_ACTIVE_BYTES  # noqa: PLC0415 - lazy, see spool.cli
    from spool.models import OwnerStatus  # noqa: PLC0415 - lazy, see spool.cli
    from spool.reader import read_regular  # noqa: PLC0415 - lazy, see spool.cli

    found = []
    for name in sorted(os.listdir(layout.owners)):
        owner = name.removesuffix(JOB_SUFFIX)
        if not name.endswith(JOB_SUFFIX) or not is_valid_id(owner) or owner in live:
            continue
        data = read_regular(layout.owner_status(owner), MAX_ACTIVE_BYTES)
        try:
            status = None if data is None else OwnerStatus.model_validate_json(data)
        except ValueError:
            continue
        if status is not None and status.heartbeat_at.tzinfo is not None:
            found.append(status)
    return found


def _newest(statuses: list[OwnerStatus]) -> OwnerStatus:
    return max(statuses, key=lambda status: status.heartbeat_at)


def _named(layout: Layout, status: OwnerStatus) -> str:
    return f"{layout.owner_status(status.owner)} (pid {status.pid} on {status.host})"


def _age(status: OwnerStatus, now: float) -> str:
    return human_duration(max(0.0, now - status.heartbeat_at.timestamp()))


class Lookout:
    """Says once, through ``say``, that no processor seems to be running (see the module
    docstring), from its own thread, between ``__enter__`` and ``__exit__``, while
    ``unfinished()`` (the job was seen, and not in a terminal state)."""

    def __init__(self, layout: Layout, job_id: str, say: Callable[[str], None],
                 unfinished: Callable[[], bool]) -> None:
        self.layout = layout
        self.job_id = job_id
        self.say = say
        self.unfinished = unfinished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spoolq-lookout", daemon=True)

    def __enter__(self) -> Lookout:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        pause = 0.0
        while not self._stop.wait(pause):
            if not self.unfinished():  # not seen yet (the wait's first read), or finished
                pause = SEEN_POLL_S
                continue
            try:
                found = absence(self.layout, time.time())
            except (SpoolIOError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in NOT_NOW:
                    return  # owners/ this user may not list: nothing is known, ever
                # Out of descriptors, the disk failing (what is_locked raises): nothing
                # known now, look again later.
                pause = CHECK_S
                continue
            if found is not None and (found.certain or time.monotonic() - started >= QUIET_S):
                self.say(printable(f"no processor seems to be running on {self.layout.root}: "
                                   f"{found.reason}; still waiting for job {self.job_id}, "
                                   "which runs once one starts (spool-processor)"))
                return
            pause = CHECK_S


def lookout_for(layout: Layout, job_id: str, say: Callable[[str], None],
                unfinished: Callable[[], bool], *, quiet: bool
                ) -> AbstractContextManager[object]:
    """A :class:`Lookout` for ``job_id``, or nothing at all when ``quiet``."""
    return contextlib.nullcontext() if quiet else Lookout(layout, job_id, say, unfinished)
