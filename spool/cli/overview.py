"""Commands over the whole spool: ``ls`` and ``stats``.

Both read the folders directly (:class:`spool.reader.SpoolReader`), like
Postfix's ``showq``: they work while every daemon is down.  Their JSON is the
shape statusd serves (DESIGN section 9: list and stats).  ``ls`` reads a record
over 32 KiB from its head (:class:`spool.large.BoundedReader`), never whole, and
lists it as statusd's list does: without ``result``, with ``"result_omitted": true``.
"""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spool.cli import parse
from spool.cli.command import (
    EXIT_OK,
    Command,
    UsageError,
    add_json,
    folders,
    note,
    out_of_reach,
    reader_of,
)
from spool.cli.render import (
    LIST_HEADER,
    emit_json,
    human_duration,
    listed_json,
    printable,
    record_row,
    table,
)
from spool.cursor import MAX_PAGE
from spool.errors import SpoolError
from spool.layout import Layout
from spool.states import TERMINAL, JobState

if TYPE_CHECKING:
    from spool.cli.user_reader import UserReader
    from spool.settings import Settings

DEFAULT_LIMIT = 50


# -- ls -------------------------------------------------------------------------------------


def _page_limit(text: str) -> int:
    value = parse.positive_int(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_PAGE} a page")
    return value


def _configure_ls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=[s.value for s in JobState],
                        help="only jobs in this state")
    parser.add_argument("--tool", type=parse.utf8_text, help="only jobs of this tool")
    parser.add_argument("--limit", type=_page_limit, default=DEFAULT_LIMIT,
                        metavar="N", help=f"jobs per page (default {DEFAULT_LIMIT}, "
                        f"at most {MAX_PAGE})")
    parser.add_argument("--cursor", metavar="C", help="the page after the one that printed C")
    add_json(parser, '{"tasks": [record, ...], "next_cursor": C|null} (a record over '
             '32 KiB without its result, "result_omitted": true, which spoolq show --json '
             'ID prints)')


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    from spool.cli.user_reader import UserReader  # noqa: PLC0415 - lazy, see spool.cli
    from spool.large import LIST_WHOLE_MAX_BYTES  # noqa: PLC0415 - lazy, see spool.cli

    state = JobState(args.state) if args.state else None
    layout = reader_of(settings).layout
    seen, blind = listable(layout, "spoolq ls" + (f" --state {state.value}" if state else ""),
                           state)
    # A record over 32 KiB: its head only, as statusd's list carries it (51 rows of 3 MB
    # backtests held 877 MB, a --json page of 100 of them 4 GB: QA).
    reader = UserReader(layout, seen, whole_max=LIST_WHOLE_MAX_BYTES)
    try:
        page = reader.page(state=state, tool=args.tool, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:  # a cursor that is not ours, a limit out of range
        raise UsageError(str(exc)) from exc
    if args.json:
        emit_json({"tasks": [listed_json(r, reader.large.get(r.id)) for r in page.records],
                   "next_cursor": page.next_cursor})
        _note_unseen(reader, blind, state)
        return _trouble_said(page.trouble)
    if page.records:
        print(table(LIST_HEADER, [record_row(r) for r in page.records]))
        unreadable = [r.id for r in page.records  # corrupt: a read error is said below
                      if r.unreadable is not None and r.unreadable not in page.trouble]
        if unreadable:
            note(f"{len(unreadable)} record(s) on this page cannot be read (corrupt): "
                 f"spoolq show {unreadable[0]} says why")
    else:
        note("no jobs" + (" on this page" if args.cursor else ""))
    _note_unseen(reader, blind, state)
    if page.next_cursor:
        note(f"more: {_next_page_command(args, page.next_cursor)}")
    return _trouble_said(page.trouble)


def _trouble_said(trouble: tuple[str, ...]) -> int:
    """Exit 1, each read error named, when a record listed could not be read (EIO): the
    listing is not whole, which a script must not take for the spool's."""
    for error in trouble:
        note(f"error: {error}")
    return 1 if trouble else EXIT_OK


def listable(layout: Layout, what: str, state: JobState | None
             ) -> tuple[list[JobState], list[JobState]]:
    """The state folders this user may list, and those it may not (docs/operations.md,
    "Permissions": a member of the spool's group only may not look into ``pending/``).
    SpoolError (exit 1) when it may list none that ``what`` needs (``state``'s, else any):
    an empty answer would read as "no jobs"."""
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli

    blind = SpoolReader(layout).unsearchable_states(listing=True)
    needed = [state] if state is not None else list(JobState)
    if all(s in blind for s in needed):
        raise SpoolError(f"{what} needs to list {folders(needed)}, which this user may not "
                         "(see Permissions in docs/operations.md; statusd's API serves every "
                         "state)")
    return [s for s in JobState if s not in blind], blind


def _note_unseen(reader: UserReader, blind: list[JobState], state: JobState | None) -> None:
    """Say what a page leaves out: the ``blind`` folders, and jobs whose file this user
    may not read."""
    if reader.unread:
        ids = sorted(reader.unread)
        note(f"{len(ids)} job(s) not listed: this user may not read their files in "
             f"{folders(sorted(set(reader.unread.values())))} ({', '.join(ids[:3])}"
             f"{', ...' if len(ids) > 3 else ''}; a submitter's drop keeps its group until "
             "its record is written): see them through statusd or as the spool user")
    if blind:
        lead = (f"jobs in {folders(blind)} are not listed (this user may not look into "
                f"{'it' if len(blind) == 1 else 'them'}), and" if state is None else
                f"{folders(blind)} not looked into (this user may not):")
        note(f"{lead} a job listed may have a newer drop or run there (see Permissions in "
             "docs/operations.md)")


def _next_page_command(args: argparse.Namespace, cursor: str) -> str:
    """The command for the next page, as the shell takes it: a ``--spool-dir`` given on
    the command line stays (else the hint lists SPOOL_DIR's spool), and every word is
    quoted (a tool name with a space)."""
    words = ["spoolq", "ls"]
    if args.spool_dir:
        words += ["--spool-dir", args.spool_dir]
    if args.state:
        words += ["--state", args.state]
    if args.tool:
        words += ["--tool", args.tool]
    if args.limit != DEFAULT_LIMIT:
        words += ["--limit", str(args.limit)]
    return shlex.join([*words, "--cursor", cursor])


# -- stats ----------------------------------------------------------------------------------


def _configure_stats(parser: argparse.ArgumentParser) -> None:
    add_json(parser, "the stats document statusd serves at /api/v1/stats")
    parser.add_argument(
        "--partial", action="store_true",
        help="while whether a processor is alive cannot be told (owners/ or a status "
        "file this user may not read, a failing disk), print what is known of the spool "
        "and why, and exit 0 (in --json: processors_unknown in place of the processors' "
        "fields, as /api/v1/stats?partial=1); without it, that is an error (exit 1)")


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli

    layout = reader_of(settings).layout
    seen, blind = listable(layout, "spoolq stats", None)
    stats = SpoolReader(layout, seen).stats(partial=args.partial)
    _with_left_why(layout, stats, settings.grace_s)
    if blind:
        not_counted(stats, blind)
    if args.json:
        emit_json(stats)
        if blind:
            note(f"not counted: {out_of_reach(blind, 'look into')} (null in the document)")
    else:
        print("\n".join(stats_lines(stats)))
    return EXIT_OK


def _with_left_why(layout: Layout, stats: dict[str, Any], grace_s: float) -> None:
    """The stats' ``left_why`` (:func:`spool.stats.left_why`), as statusd's document has
    it: why the jobs of each tool in ``left_to_others`` wait.  Said "left to the
    processors that offer it" alike, a tool's jobs left for a restart's grace by its mark
    alone read as claimed soon, and failed ``unknown_tool`` once the grace was over (QA
    h417)."""
    from spool.stats import left_why, readable_processors  # noqa: PLC0415 - lazy

    left = stats.get("left_to_others")
    if left is None:  # partial: no processors' fields
        return
    live = readable_processors(layout) if left else []
    now = datetime.now(UTC).timestamp()
    stats["left_why"] = {} if live is None else left_why(layout, live, left, now, grace_s)


def not_counted(stats: dict[str, Any], blind: list[JobState]) -> None:
    """Make ``null`` what the ``blind`` folders would have told, never a 0 that reads as
    "none there", and name them in ``not_counted``."""
    for state in blind:
        stats["counts"][state.value] = None
        if state in TERMINAL:
            stats["throughput"][f"{state.value}_last_60s"] = None
    stats["total"] = None
    if JobState.PENDING in blind:
        stats["oldest_pending_age_s"] = stats["oldest_due_pending_age_s"] = None
        stats["in_progress_drops"] = None
    stats["not_counted"] = [state.value for state in blind]


def _span_s(start: datetime, end: datetime) -> float:
    """Seconds from ``start`` to ``end``, 0 when ``start`` is later: a time stamped
    before the wall clock stepped back (or a grace period already over)."""
    return max(0.0, (end - start).total_seconds())


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """``spoolq stats``'s text."""
    counts = stats["counts"]
    oldest = stats["oldest_pending_age_s"]
    lines = [f"{state:<10}{n}" if n is not None else
             f"{state:<10}?  (not counted: this user may not look into {state}/)"
             for state, n in counts.items()]
    if oldest is not None:
        due = stats.get("oldest_due_pending_age_s")
        note = f"oldest waiting {human_duration(oldest)}"
        if due is None:  # each waits for its not_before: none is late, none looks stuck
            note += ", none due yet"
        elif due < oldest - 1:
            note += f"; oldest due for {human_duration(due)}"
        lines[0] += f"  ({note})"
    drops = stats.get("in_progress_drops")
    if drops and drops["count"]:  # an upload going on, or one cut off that stays for good
        files = "1 file" if drops["count"] == 1 else f"{drops['count']} files"
        # Under pending's line: below failed's, it read as a note of the failed jobs.
        lines.insert(1, f"          {files} in pending/ under an in-progress name, ignored "
                     f"until renamed; the stalest unchanged for "
                     f"{human_duration(drops['idle_s'])}")
    proc = stats.get("processor")
    if proc is None:  # --partial: their state could not be read, nor their workers
        lines.append(f"processor ?: {printable(stats['processors_unknown'])}")
    elif proc["alive"]:
        now = datetime.now(UTC)
        lines.append(f"processor up: {proc['count']} live, last heartbeat "
                     f"{human_duration(_span_s(proc['heartbeat_at'], now))} ago")
        stopping = [p for p in stats.get("processors", []) if p.get("stopping")]
        if stopping:  # draining: claiming nothing more, running jobs in their grace period
            ends = [p["grace_ends_at"] for p in stopping if p.get("grace_ends_at")]
            left = _span_s(now, min(ends)) if ends else None
            lines[-1] += f"; {len(stopping)} stopping" + (
                f" (grace ends in {human_duration(left)})" if left is not None else "")
        troubled = [p["io_trouble"] for p in stats.get("processors", [])
                    if p.get("alive") and p.get("io_trouble")]
        if troubled:  # the spool refuses its writes: claims wait until it takes them again
            # (Claims pause after each refusal; the outage is called over once every
            # refused write has been tried again: claims may run meanwhile.)
            since = _span_s(min(t["since"] for t in troubled), now)
            lines.append(f"I/O trouble for {human_duration(since)}, last refusal: "
                         f"{printable(troubled[0]['error'])[:200]}")
        held = [p for p in stats.get("processors", []) if not p.get("alive")]
        if held:  # its lock held, its heartbeat stale: no live one takes its running jobs
            lines.append(f"processor hung: {_held_by(held)}; its running jobs wait for it")
        lines.append(f"workers   {stats['busy_workers']} busy of {stats['job_num']} (JOB_NUM)")
        room = stats.get("compute_room", stats["job_num"])
        if room < stats["job_num"]:  # COMPUTE jobs wait for room a Dask cluster lacks
            lines.append(f"          room for {room} now: " + _short_of_room(stats, room))
        lines.extend(_left_lines(stats))
    else:  # no workers to count: "0 busy of 0" read as a spool configured with none
        lines.append(f"processor down: {_why_down(stats.get('processors', []))}")
    done, failed = (stats["throughput"][f"{s}_last_60s"] for s in ("done", "failed"))
    lines.append(f"last 60 s {'?' if done is None else done} done, "
                 f"{'?' if failed is None else failed} failed")
    return lines


LEFT_LINES = 5
"""The most tools ``spoolq stats`` names a line each whose jobs are left to others."""


def _left_lines(stats: dict[str, Any]) -> list[str]:
    """A line for each tool whose pending jobs some live processors leave (a rolling
    upgrade, docs/scaling.md): shown only as "pending", they looked stuck.  Why, as the
    stats' ``left_why`` says it (``spoolq show``'s words); where it says nothing, left to
    the processors that offer the tool."""
    left: dict[str, int] = stats.get("left_to_others") or {}
    why_left: dict[str, str] = stats.get("left_why") or {}
    lines = []
    for tool, n in list(left.items())[:LEFT_LINES]:
        jobs = "1 pending job" if n == 1 else f"{n} pending jobs"
        if (why := why_left.get(tool)) is not None:
            lines.append(printable(f"          {jobs} of tool {tool!r}: {why}"))
            continue
        leaving = [f"pid {p['pid']} on {p['host']}" for p in stats["processors"]
                   if p.get("alive") and tool in (p.get("left_to_others") or {})]
        verb = "does" if len(leaving) == 1 else "do"
        lines.append(printable(f"          {jobs} of tool {tool!r} left to the processors "
                               f"that offer it ({', '.join(leaving)} {verb} not load it)"))
    if len(left) > LEFT_LINES:
        lines.append(f"          and those of {len(left) - LEFT_LINES} more tools")
    return lines


def _short_of_room(stats: dict[str, Any], room: int) -> str:
    """Why the live processors can run fewer COMPUTE jobs than ``job_num``: a local pool
    whose workers cannot start (its tools modules removed or broken since it started:
    jobs claimed wait for a worker, and fail ``worker_crashed`` at their time limit), or
    what a Dask cluster lacks."""
    short = [p for p in stats.get("processors", []) if p.get("alive")
             and p.get("compute_room") is not None and p["compute_room"] < p.get("job_num", 0)]
    if short and all(p.get("executor") == "local" for p in short):
        return ("workers cannot start (see the processor's log: 'worker cannot start'; "
                "restart it once its tools import)")
    return ("no Dask scheduler connected, or no worker" if room == 0
            else "the Dask cluster has fewer threads than JOB_NUM")


def _why_down(processors: list[dict[str, Any]]) -> str:
    """What the document tells of no processor live: a lock holder whose heartbeat is
    stale (SIGSTOPped or hung) is named, as ``wait`` names it; "no live processor"
    alone sent an operator looking for a process that had died, not one to kill."""
    held = [p for p in processors if not p.get("alive")]
    if not held:
        return "no live processor on this spool"
    return _held_by(held)


def _held_by(held: list[dict[str, Any]]) -> str:
    """The processors that hold their locks with a stale heartbeat (``held``, one at
    least), named by the newest heartbeat's: beside a live one too, whose "0 busy" said
    nothing of the jobs the held one keeps in running/ (QA h388)."""
    newest = max(held, key=lambda p: p["heartbeat_at"])
    ago = human_duration(_span_s(newest["heartbeat_at"], datetime.now(UTC)))
    who = f"pid {newest['pid']} on {printable(newest['host'])}"
    if len(held) > 1:
        who = f"{len(held)} processors hold their locks; the newest, {who},"
    else:
        who += " holds its lock,"
    return f"{who} last heartbeat {ago} ago (stopped or hung?)"


LS = Command(
    "ls", "list jobs, newest first", _configure_ls, run_ls,
    description="List jobs newest first (by submission time), a page at a time; "
    "the hint on stderr gives the command for the next page.  A user who may not look "
    "into some state folders (a member of the spool's group only: pending/) is shown "
    "the others' jobs, with a line on stderr naming the folders left out; exit 1 when it "
    "may list none that it asked for.  Each page reads the spool's folders whole (no "
    "daemon needed): seconds a page past 100,000 records.  A script that pages through "
    "a large spool asks statusd (GET /api/v1/tasks, paged from its index) instead.")
STATS = Command(
    "stats", "counts per state, oldest pending, processor liveness, workers",
    _configure_stats, run_stats,
    description="Counts per state, the oldest pending job's wait, processor liveness and "
    "workers, read from the folders.  A state folder this user may not look into (a "
    "member of the spool's group only: pending/) is not counted: '?' in the table, null "
    "in --json (and so are total and what that folder tells), named in 'not_counted'; "
    "exit 1 when it may list none.")
