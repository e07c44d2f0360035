"""The stats document (DESIGN section 9): counts per state, the oldest pending job's
age, throughput, and the live processors, read from the folders and ``owners/`` alone,
so it needs no daemon and no daemon's restart, death or hang can reset or freeze it.
"""

from __future__ import annotations

import difflib
import functools
import os
import stat
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from spool.catalogue import catalogue_entry, own_object
from spool.entries import Entry, Stamp, read_regular
from spool.errors import ErrorType, SpoolIOError
from spool.fsops import NOT_NOW
from spool.ids import JOB_SUFFIX, is_valid_id
from spool.in_progress import InProgress, in_progress_in
from spool.jobfile import MAX_ACTIVE_BYTES
from spool.layout import Layout
from spool.lease import NOT_THERE, STARTING_S, heartbeat_fresh, is_locked
from spool.models import OwnerStatus
from spool.offer_marks import offered_lately
from spool.states import TERMINAL, JobState
from spool.text import seconds_text

if TYPE_CHECKING:
    from spool.models import Job
    from spool.reader import SpoolReader

RECENT_S = 60.0
"""The window of ``throughput``: records written in ``done/`` and ``failed/`` this recently."""


def counts(reader: SpoolReader) -> dict[str, int]:
    """How many ids each state holds."""
    counts = {s.value: 0 for s in JobState}
    for stamp in reader.current_stamps().values():
        counts[stamp.state.value] += 1
    return counts


UNKNOWN = "cannot tell whether a processor is alive"
"""How the SpoolIOError of processors that cannot be read begins."""


def processors(layout: Layout) -> list[OwnerStatus]:
    """Status of every live processor (its owner lock held).

    A SpoolIOError whenever whether one is alive cannot be told for another reason than
    a file's absence: an owner lock that cannot be tested, or a held lock's status file
    that cannot be read (EACCES: a processor's file statusd may not open; EIO: the disk
    failing; this process out of descriptors).  Such a processor was left out: a live
    one called dead (``alive: false``, which monitoring acts on).  ``owners/`` that cannot
    be listed: a SpoolIOError too when the disk fails it or this process is out of
    descriptors, else the OSError (a member of the submit group only may not list it,
    and the CLI's callers say so); :func:`known_processors` raises none but
    SpoolIOErrors."""
    try:
        return _processors(layout)
    except OSError as exc:  # the listing's: the others are named where they are met
        if exc.errno not in NOT_NOW:
            raise
        raise _unknown(exc, "cannot list owners/") from exc


def _processors(layout: Layout, *, dead: bool = False) -> list[OwnerStatus]:
    """The status of each processor holding its lock (``dead``: of each that does not,
    its status file left by a crash until a recovery removes it)."""
    try:
        names = sorted(os.listdir(layout.owners))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        owner = name.removesuffix(JOB_SUFFIX)
        if not name.endswith(JOB_SUFFIX) or not is_valid_id(owner):
            continue
        try:
            # None: no lock file to test (a symlink, gone): no live processor's, nor a
            # crash's (recovery removes a dead owner's files by its lock file, so one
            # without stays for ever).  Taken by ``is dead`` alone, such a file read as
            # a live processor ("processor up", "holds its lock") once dead= came.
            held = is_locked(layout.owner_lock(owner), strict=True)
            if held is None or held is dead:
                continue
        except OSError as exc:
            raise _unknown(exc, f"cannot test processor {owner}'s owner lock") from exc
        try:
            # Read as none only when there is none (a processor starting writes it with
            # its first heartbeat) or it is no processor's (a symlink, not a regular
            # file, over the size of one): one statusd may not open (EACCES) read as
            # none called its live processor dead.
            data = read_regular(layout.owner_status(owner), MAX_ACTIVE_BYTES,
                                absent=NOT_THERE)
        except OSError as exc:
            raise _unknown(exc, f"cannot read processor {owner}'s status file") from exc
        try:
            status = None if data is None else OwnerStatus.model_validate_json(data)
        except ValueError:
            continue
        if status is not None and _plausible(status):
            found.append(status)
    return found


def dead_processors(layout: Layout) -> list[OwnerStatus]:
    """The status files of processors that died holding no lock any more (a crash, a
    SIGKILL: a clean stop removes its own), until a recovery removes them; [] when they
    cannot be read.  For what a starting processor recalls of the others' tools."""
    try:
        return _processors(layout, dead=True)
    except (OSError, SpoolIOError):
        return []


def unannounced_processors(layout: Layout) -> list[tuple[str, os.stat_result]]:
    """The owners whose lock file (a regular file) has no status file beside it, each
    with the lock file's ``lstat`` (its mtime: its making): a processor starting (its
    lock taken before its tools load; the status file comes with its first heartbeat)
    or one that died starting (until a recovery removes its lock file).  [] when
    ``owners/`` cannot be read.  For the tools a processor might offer that has not said
    which yet, and for ``spoolq wait``'s lookout."""
    try:
        names = set(os.listdir(layout.owners))
    except OSError:
        return []
    found = []
    for name in names:
        owner = name.removesuffix(".lock")
        if owner == name or not is_valid_id(owner) or owner + JOB_SUFFIX in names:
            continue
        try:
            lock = os.lstat(layout.owner_lock(owner))
        except OSError:  # gone since the listing: a recovery removed it
            continue
        if stat.S_ISREG(lock.st_mode):  # a symlink is no processor's
            found.append((owner, lock))
    return found


def starting_processors(layout: Layout) -> list[str]:
    """The owners of the processors starting now: their lock held and no status file
    yet, their tools loading (a processor takes its lock first), for less than
    :data:`STARTING_S`.  Which tools they will offer cannot be told until they say.
    [] when ``owners/`` cannot be read."""
    found = []
    wall = time.time()
    for owner, lock in unannounced_processors(layout):
        if abs(wall - lock.st_mtime) >= STARTING_S:
            continue
        try:
            if is_locked(layout.owner_lock(owner)):
                found.append(owner)
        except OSError:  # nothing known of it: not counted
            continue
    return found


def known_processors(layout: Layout) -> list[OwnerStatus]:
    """:func:`processors`, for a document that says whether a processor is alive (the
    stats document): ``owners/`` that cannot be listed is a SpoolIOError naming it too.
    It was a PermissionError: a 500 with a traceback from statusd."""
    try:
        found = processors(layout)
    except OSError as exc:
        raise _unknown(exc, "cannot list owners/") from exc
    if not found and not os.path.isdir(layout.owners):
        # The spool moved away or unmounted under a live processor: no owners/ to list
        # told monitoring `processor_up 0` while it ran on (QA); none can be told here.
        raise SpoolIOError(f"{UNKNOWN}: {layout.owners} is gone (the spool moved or "
                           "unmounted?)")
    return found


def _unknown(exc: OSError, what: str) -> SpoolIOError:
    """The SpoolIOError of processors whose state ``exc`` kept from being read: what
    could not be done, the errno's text and the path, never a traceback."""
    where = f" ({exc.filename})" if exc.filename else ""
    return SpoolIOError(f"{UNKNOWN}: {what}: {exc.strerror or exc}{where}")


NAMED_TOOLS = 20
"""The most known tools an unknown-tool refusal lists (an entry point may add many)."""


def readable_processors(layout: Layout) -> list[OwnerStatus] | None:
    """:func:`processors`, or None when they cannot be read: this user may not list
    ``owners/`` (a member of the submit group only), a status file cannot be read, this
    process is out of descriptors.  For what only tells a user more when it can."""
    try:
        return processors(layout)
    except (OSError, SpoolIOError):
        return None


def offered_tools(live: list[OwnerStatus] | None) -> tuple[set[str], list[str]] | None:
    """The names of the tools the ``live`` processors (:func:`readable_processors`) offer
    (their status files' catalogues, merged), and their owners; None when that cannot be
    told: none is running, one publishes no catalogue, or they cannot be read."""
    if not live or not all(status.tools for status in live):
        return None
    names = {raw.get("name") for status in live for raw in status.tools}
    return {name for name in names if isinstance(name, str)}, [s.owner for s in live]


def params_schema(live: list[OwnerStatus] | None, tool: str, *, by_name: bool = False
                  ) -> dict[str, Any] | None:
    """The params JSON Schema the ``live`` processors (:func:`readable_processors`)
    publish for ``tool``; None when that cannot be told: none running or offering it, two
    that disagree, not readable.  ``by_name``: None too unless each of them says the tool
    takes its params by exactly the schema's names (``params_by_name``,
    :func:`processor.tools.params_by_name`): an alias with ``populate_by_name``,
    ``AliasChoices`` or a ``before`` validator take others, and a processor of before
    that flag says nothing of it."""
    raws = [raw for status in live or () for raw in status.tools if raw.get("name") == tool]
    if by_name and not all(raw.get("params_by_name") is True for raw in raws):
        return None
    schemas: list[dict[str, Any]] = [catalogue_entry(raw)["params_schema"] for raw in raws]
    if not schemas or any(schema != schemas[0] for schema in schemas):
        return None
    return schemas[0]


class Refusal(NamedTuple):
    """Why the live processors' catalogues refuse a job: the error it would fail with."""

    type: ErrorType
    reason: str


def catalogue_refusal(live: list[OwnerStatus] | None, job: Job,
                      starting: Callable[[], list[str]] | None = None,
                      lately: Callable[[str], float | None] | None = None) -> Refusal | None:
    """Why the ``live`` processors' catalogues (:func:`readable_processors`) refuse
    ``job``: its tool (:func:`unoffered_tool`), or its params' names
    (:func:`unfit_params`); None when they take it or cannot tell: also while a
    processor starts (``starting``, :func:`starting_processors`, asked only of a job
    they refuse), which may offer the tool, or another version of it, and is left its
    jobs (processor.elsewhere).  Refused then, a tool a rolling upgrade adds was refused
    for as long as its module took to import.  A tool none offers that one did within a
    restart's grace (``lately``, :func:`spool.offer_marks.offered_lately`) is taken too: the
    processors leave its jobs for that long.  ``spoolq submit`` and
    ``POST /api/v1/tasks`` refuse such a job unless told to submit it anyway."""
    if (why := unoffered_tool(live, job.tool)) is not None:
        if lately is not None and lately(job.tool) is not None:
            return None
        refusal = Refusal(ErrorType.UNKNOWN_TOOL, why)
    elif (why := unfit_params(live, job.tool, job.params)) is not None:
        refusal = Refusal(ErrorType.INVALID_PARAMS, why)
    else:
        return None
    return None if starting is not None and starting() else refusal


def unoffered_tool(live: list[OwnerStatus] | None, tool: str) -> str | None:
    """Why a job naming ``tool`` would fail ``unknown_tool`` as soon as it is claimed:
    the ``live`` processors publish catalogues without it (the reason names what they
    offer, and the closest name); None when it is offered or that cannot be told (no
    processor running: the job waits for one, which may know it)."""
    offered = offered_tools(live)
    if offered is None or tool in offered[0]:
        return None
    names, owners = sorted(offered[0]), ", ".join(offered[1])
    known = ", ".join(names[:NAMED_TOOLS]) + (
        f" and {len(names) - NAMED_TOOLS} more" if len(names) > NAMED_TOOLS else "")
    close = difflib.get_close_matches(tool, names, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown tool {tool!r}{guess}: the running processor ({owners}) offers " + (
        known or "none")


def pending_wait(live: list[OwnerStatus] | None, tool: str, now: float,
                 starting: Callable[[], list[str]] | None = None,
                 lately: Callable[[str], float | None] | None = None) -> str | None:
    """Why a pending job naming ``tool`` waits, as the ``live`` processors
    (:func:`readable_processors`) tell it, when it is not a free worker or its turn: no
    processor runs, or only some of them offer its tool (its job is left to those,
    docs/scaling.md), or none does, unless one is starting (``starting``: asked then
    only) or one offered it within a restart's grace (``lately``, as
    :func:`catalogue_refusal`'s); None when every live processor offers it or that
    cannot be told (one publishes no catalogue, they cannot be read)."""
    if live is None:
        return None
    fresh = [status for status in live if heartbeat_fresh(status, now)]
    if not fresh:
        return "no live processor on this spool (spoolq stats says why): it is claimed " \
            "once one runs"
    hung = [status for status in live if not heartbeat_fresh(status, now)]
    return _offer_wait(fresh, hung, tool, starting, lately)


def _offer_wait(fresh: list[OwnerStatus], hung: list[OwnerStatus], tool: str,
                starting: Callable[[], list[str]] | None,
                lately: Callable[[str], float | None] | None) -> str | None:
    """:func:`pending_wait`'s reason from the catalogues of the ``fresh`` processors (and
    of the ``hung`` ones, which hold their locks with a stale heartbeat)."""
    offering = [status for status in fresh if _offers_tool(status, tool)]
    if len(offering) == len(fresh) or not all(status.tools for status in fresh):
        return None
    lacking = [status for status in fresh if status not in offering]
    others, verb = _named(lacking), "does" if len(lacking) == 1 else "do"
    working = [status for status in offering if not status.stopping]
    if working:
        return f"left to the processors that offer tool {tool!r} ({_named(working)}); " \
            f"{others} {verb} not load it"
    if offering:
        why = "which is stopping" if len(offering) == 1 else "which are stopping"
    elif stalled := [status for status in hung if _offers_tool(status, tool)]:
        offering = stalled  # named: "no processor offers it" sent one looking for a typo
        why = "whose heartbeat is stale (hung?)" if len(stalled) == 1 else \
            "whose heartbeats are stale (hung?)"
    elif owners := starting() if starting is not None else []:
        return f"no live processor offers tool {tool!r}, but the tools of " \
            f"{', '.join(map(_owner_named, owners))} (starting) are not known yet: " \
            "the job is left until they are (docs/scaling.md)"
    elif lately is not None and (ago := lately(tool)) is not None:
        return f"no live processor offers tool {tool!r}, but one did " \
            f"{seconds_text(round(ago, 1))} ago: the job is left for its return (a " \
            "restart) for SPOOL_GRACE_S plus 60 s past that, then fails unknown_tool " \
            "(docs/scaling.md)"
    else:
        return f"{unoffered_tool(fresh, tool)}: the first to claim it fails it " \
            "unknown_tool, unless one that offered it is back soon (a restart: " \
            "docs/scaling.md)"
    return f"tool {tool!r} is offered only by {_named(offering)}, {why}: {others} " \
        f"{'fails' if len(lacking) == 1 else 'fail'} it unknown_tool unless a processor " \
        "offers it again within its SPOOL_GRACE_S plus 60 s (docs/scaling.md)"


def _offers_tool(status: OwnerStatus, tool: str) -> bool:
    return any(raw.get("name") == tool for raw in status.tools)


def _named(processors: Iterable[OwnerStatus]) -> str:
    """Processors as a person finds them: ``pid 123 on host``, comma-separated."""
    return ", ".join(f"pid {status.pid} on {status.host}" for status in processors)


def _owner_named(owner: str) -> str:
    """A processor with no status file yet, by its owner id (``<host>-<pid>-<hex>``, see
    :func:`processor.lifecycle.owner_id`): ``pid 123 on host``."""
    host, pid, _ = [*owner.rsplit("-", 2), "", ""][:3]
    return f"pid {pid} on {host}" if pid.isdigit() else f"processor {owner}"


def left_to_others(live: list[OwnerStatus], pending: int | None = None) -> dict[str, int]:
    """The pending jobs the ``live`` processors leave to the others that offer their tool
    (each one's ``left_to_others``), by tool: the most any one of them leaves, as each
    leaves the same jobs; no more than ``pending``, the jobs in ``pending/`` now.  A
    processor learns that the one it left them to claimed them only at its next rescan
    (``SPOOL_SCAN_S``): uncapped, ``spoolq stats`` said "28 pending jobs of tool
    'd_append' left to the processors that offer it" beside ``pending 0`` for seconds
    (h403)."""
    left: dict[str, int] = {}
    for status in live:
        for tool, n in status.left_to_others.items():
            left[tool] = max(n, left.get(tool, 0))
    if pending is not None:
        left = {tool: min(n, pending) for tool, n in left.items() if pending}
    return dict(sorted(left.items()))


def waiting_for(layout: Layout, grace_s: float
                ) -> tuple[Callable[[], list[str]], Callable[[str], float | None]]:
    """What a job of a tool no live processor offers waits for, as the clients ask it of
    ``layout`` (``starting`` and ``lately`` of :func:`catalogue_refusal` and
    :func:`pending_wait`): the processors starting (:func:`starting_processors`, read
    once), and how long ago a processor offered the tool, within the processors' grace
    for a restart (``grace_s``: ``SPOOL_GRACE_S``; :func:`spool.offer_marks.offered_lately`)."""
    return (functools.cache(functools.partial(starting_processors, layout)),
            offered_lately(layout, grace_s))


def left_why(layout: Layout, live: list[OwnerStatus], tools: Iterable[str], now: float,
             grace_s: float) -> dict[str, str]:
    """The stats document's ``left_why``: why the jobs of each of ``tools`` (those of its
    ``left_to_others``) wait, as ``spoolq show`` says it of one of them
    (:func:`pending_wait`; ``live``: the lock holders' status files, ``grace_s``:
    ``SPOOL_GRACE_S``): left to the live processors that offer the tool, to one starting
    (its tools not said yet), or for a restart's grace by the tool's mark alone, after
    which they fail ``unknown_tool``; a tool whose reason cannot be told (a processor
    publishes no catalogue) has none.  The dashboard and ``spoolq stats`` called all
    three "left to the processors that offer it" (QA h417, h418).  Only the tools left,
    most often none: ``owners/`` is listed again and the mark looked at only for a tool
    no live processor offers."""
    starting, lately = waiting_for(layout, grace_s)
    reasons = {tool: pending_wait(live, tool, now, starting, lately) for tool in tools}
    return {tool: why for tool, why in reasons.items() if why is not None}


def unfit_params(live: list[OwnerStatus] | None, tool: str, params: dict[str, Any]
                 ) -> str | None:
    """Why a job's ``params`` would fail ``invalid_params`` by their names alone, as the
    ``live`` processors' catalogue says ``tool`` takes them: a param it needs missing, or one
    it does not take where it takes no others (``extra="forbid"``, as every built-in
    tool); None when they fit or that cannot be told (no processor offering it, or one
    that does not say the tool takes its params by the schema's names alone: an alias
    with ``populate_by_name``, ``AliasChoices``, a ``before`` validator).  Their
    values are the tool's to judge.  Taken before, a misspelt ``-p fsat=5`` was dropped,
    and failed once a processor took it."""
    schema = params_schema(live, tool, by_name=True)
    if schema is None:
        return None
    own = own_object(schema)
    taken = own.get("properties")
    if not isinstance(taken, dict):
        return None  # no object schema of named params: nothing to tell by names
    required = own.get("required")
    missing = [name for name in required if isinstance(name, str) and name not in params] \
        if isinstance(required, list) else []
    unknown = [name for name in params if name not in taken] \
        if own.get("additionalProperties") is False else []
    if not missing and not unknown:
        return None
    said = []
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(taken), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        said.append(f"takes no param {', '.join(map(repr, unknown))}{guess}")
    if missing:
        said.append(f"needs {', '.join(map(repr, missing))}")
    return (f"tool {tool!r} {' and '.join(said)}: its params are "
            f"{', '.join(taken) or 'none'}")


def tool_max_attempts(layout: Layout, tool: str | None) -> int | None:
    """The attempt limit the live processors give a job of ``tool`` that sets no
    ``max_attempts`` (the ``max_attempts`` of their catalogues); None when that cannot be
    told: no processor running or none offering the tool, two that disagree, or
    ``owners/`` out of this user's reach.  A processor gone, its limit is not known: the
    installed one's is not asked, as its SPOOL_TOOLS may not be the daemon's."""
    return cast(int | None, tool_limit(layout, tool, "max_attempts"))


def tool_limit(layout: Layout, tool: str | None, key: str) -> int | float | None:
    """The catalogue's ``key`` (``max_attempts``, ``timeout``) of ``tool`` as every live
    processor gives it; None when that cannot be told (see :func:`tool_max_attempts`)."""
    return live_limit(readable_processors(layout) if tool is not None else None, tool, key)


def live_limit(live: list[OwnerStatus] | None, tool: str | None, key: str
               ) -> int | float | None:
    """:func:`tool_limit` of the status files ``live`` already read."""
    if live is None:
        return None
    limits = {catalogue_entry(raw)[key] for status in live for raw in status.tools
              if raw.get("name") == tool}
    if len(limits) != 1:
        return None
    [limit] = limits
    return cast(int | float | None, limit)


def spent_attempts(layout: Layout, job: Job) -> str | None:
    """Why ``job`` would be failed ``invalid_job`` without a run as soon as it is
    claimed: its own ``attempts`` already reach its limit (its ``max_attempts``, else its
    tool's as the live processors give it, when that can be told).  ``spoolq submit``
    and ``POST /api/v1/tasks`` refuse such a job (a drop of attempts 99 was taken, then
    failed at once)."""
    if not job.attempts:
        return None
    limit = job.max_attempts if job.max_attempts is not None else tool_max_attempts(
        layout, job.tool)
    if limit is None or job.attempts < limit:
        return None
    return (f"the job's attempts ({job.attempts}) already reach its max_attempts "
            f"({limit}): it would be failed without a run; submit it with fewer attempts "
            "(0 for a fresh start)")


PROCESSOR_FIELDS = ("job_num", "compute_room", "busy_workers", "fast_running",
                    "left_to_others", "left_why", "processor", "processors")
"""What the processors' status files tell in the stats document."""


def without_processors(doc: dict[str, Any], cause: str) -> dict[str, Any]:
    """``doc`` without what the processors tell, and with ``processors_unknown``, why
    their state could not be read: what is known of the spool, never a made-up
    ``alive: false`` (``/metrics``, ``GET /api/v1/stats?partial=1``, ``spoolq stats
    --partial``)."""
    for key in PROCESSOR_FIELDS:
        doc.pop(key, None)
    doc["processors_unknown"] = cause
    return doc


def stats(reader: SpoolReader, now: float | None = None, *,
          partial: bool = False) -> dict[str, Any]:
    """DESIGN section 9's stats shape, from one scan of the folders; ``partial``: the
    document :func:`without_processors` where their state cannot be read, instead of
    the SpoolIOError."""
    now = now if now is not None else time.time()
    counts = {s.value: 0 for s in JobState}
    recent = {s.value: 0 for s in TERMINAL}
    since_ns, now_ns = int((now - RECENT_S) * 1e9), int(now * 1e9)
    pending: list[tuple[str, Stamp]] = []  # every pending file: a drop tells its id
    for job_id, stamp in reader.current_stamps().items():
        counts[stamp.state.value] += 1
        if stamp.state in TERMINAL and since_ns <= stamp.mtime_ns <= now_ns:
            # A record's mtime: when it was written; one after now was written before the
            # wall clock stepped back (or by a host whose clock is ahead): counted once
            # now reaches it, not as this minute's for as long as the step.
            recent[stamp.state.value] += 1
        elif stamp.state is JobState.PENDING:
            pending.append((job_id, stamp))
    # ctime: the rename into pending/ sets it, where a copy may keep an old mtime.
    oldest_ns = min((stamp.ctime_ns for _, stamp in pending), default=None)
    age = None if oldest_ns is None else max(0.0, now - oldest_ns / 1e9)
    due = first_due(reader, pending)
    due_age = None if due is None or due > now else now - due
    # Not known where this user may not look into pending/ (stats' not_counted).
    drops = in_progress_in(reader.layout.folder(JobState.PENDING)) \
        if JobState.PENDING in reader.states else None
    try:
        found = known_processors(reader.layout)
    except SpoolIOError as exc:
        if not partial:
            raise
        return without_processors(stats_document(
            counts, age, [], now, finished_recently=recent,
            oldest_due_pending_age_s=due_age, in_progress=drops), str(exc))
    return stats_document(counts, age, found, now, finished_recently=recent,
                          oldest_due_pending_age_s=due_age, in_progress=drops)


def first_due(reader: SpoolReader, pending: list[tuple[str, Stamp]]) -> float | None:
    """The earliest time a pending job may run (see :func:`_due_at`), of the ``pending``
    jobs' ids and stamps (also statusd's, from its start's scan).

    A job is due no earlier than its arrival, so taken by arrival, oldest first, the
    jobs after one that arrived when the earliest found is due cannot be due sooner:
    only jobs that wait for a ``not_before`` make it read more than the oldest.
    """
    first: float | None = None
    for job_id, stamp in sorted(pending, key=lambda p: p[1].ctime_ns):
        if first is not None and stamp.ctime_ns / 1e9 >= first:
            break
        due = _due_at(reader, reader.entry(job_id, stamp))
        first = due if first is None else min(first, due)
    return first


def _due_at(reader: SpoolReader, entry: Entry) -> float:
    """When a pending job may run: its arrival (ctime), or, if later, its not_before or
    its retry's backoff (:meth:`~spool.models.Record.due_at`)."""
    arrived = entry.ctime_ns / 1e9
    record = reader.load(entry)  # a job that cannot be read is due at its arrival
    due = record.due_at() if record is not None else None
    return max(arrived, due.timestamp()) if due is not None else arrived


MAX_COUNT = 2**31 - 1


def _plausible(status: OwnerStatus) -> bool:
    """A status as a processor writes it.  Anything else in ``owners/`` is not read as
    one: a timestamp without an offset cannot be compared with the others', and a
    count past 64 bits cannot be encoded."""
    counts = (status.pid, status.job_num, status.busy_workers, status.fast_running,
              status.done_last_60s, status.failed_last_60s, *status.left_to_others.values())
    return (status.heartbeat_at.tzinfo is not None and status.started_at.tzinfo is not None
            and all(0 <= n <= MAX_COUNT for n in counts))


def stats_document(counts: dict[str, int], oldest_pending_age_s: float | None,
                   processors: list[OwnerStatus], now: float, *,
                   finished_recently: dict[str, int],
                   oldest_due_pending_age_s: float | None,
                   in_progress: InProgress | None) -> dict[str, Any]:
    """The stats document (docs/operations.md, "The stats document", says what each
    figure means).  ``processors`` are the lock holders; only those whose heartbeat is
    fresh are live and count.  ``finished_recently``: records written in the last
    ``RECENT_S`` by state (``done``, ``failed``), from the folders, so a processor's
    restart, death or hang cannot reset, lose or freeze them.  ``in_progress``: the files
    in ``pending/`` under an in-progress name (None: not known, null in the document)."""
    live = [p for p in processors if heartbeat_fresh(p, now)]
    live_owners = {p.owner for p in live}
    heartbeat: datetime | None = max((p.heartbeat_at for p in processors), default=None)
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "oldest_pending_age_s": oldest_pending_age_s,
        "oldest_due_pending_age_s": oldest_due_pending_age_s,
        "in_progress_drops": None if in_progress is None else in_progress.document(now),
        "job_num": sum(p.job_num for p in live),
        # An older processor's status has no room: its JOB_NUM, as it had then.
        "compute_room": sum(p.job_num if p.compute_room is None else p.compute_room
                            for p in live),
        "busy_workers": sum(p.busy_workers for p in live),
        "fast_running": sum(p.fast_running for p in live),
        "left_to_others": left_to_others(live, counts.get(JobState.PENDING.value)),
        "processor": {"alive": bool(live), "heartbeat_at": heartbeat, "count": len(live),
                      "io_trouble": sum(p.io_trouble is not None for p in live)},
        "processors": [{**p.model_dump(exclude={"tools"}), "alive": p.owner in live_owners}
                       for p in processors],
        "throughput": {
            "done_last_60s": finished_recently.get(JobState.DONE.value, 0),
            "failed_last_60s": finished_recently.get(JobState.FAILED.value, 0),
        },
    }
