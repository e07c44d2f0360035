"""Commands on one job by id: ``show``, ``cancel``, ``retry`` (``wait``:
:mod:`spool.cli.waiting`).

A job whose file in ``done/`` or ``failed/`` is not a readable record (not JSON,
truncated, not UTF-8) has no outcome to trust: ``show`` prints what is known (its
state, from the folder, and why the record is unreadable) and exits 1 with an error
line, whatever the folder; a done job is never shown with a made-up null result.

A record over :data:`spool.large.PARSE_MAX_BYTES` (8 MiB) is never read or parsed
whole: ``show`` prints its leading fields and its size in place of the result, and
with ``--json`` writes its file to stdout as stored, a chunk at a time
(:mod:`spool.large`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from spool.cli import parse
from spool.cli.catalog import live_reader, shown_limits
from spool.cli.command import (
    EXIT_FAILED,
    EXIT_OK,
    Command,
    add_json,
    check_can_change,
    client_of,
    folders,
    note,
    out_of_reach,
    reader_of,
)
from spool.cli.progress import held
from spool.cli.render import show_record, unreadable_note
from spool.cli.waiting import job_line
from spool.client import CANCEL_WAIT_S, MOVE_WAIT_S, CancelAsked, find_moved
from spool.errors import ConflictError, ErrorType, NotFoundError, SpoolError, SpoolIOError
from spool.states import TERMINAL, JobState

if TYPE_CHECKING:
    from spool.client import Client
    from spool.layout import Layout
    from spool.models import Record
    from spool.settings import Settings


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=parse.job_id, help="the job id")


# -- show -----------------------------------------------------------------------------------


def _configure_show(parser: argparse.ArgumentParser) -> None:
    _add_id(parser)
    add_json(parser, "the record (the same JSON as done/ and failed/ hold)")


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from spool.cli.user_reader import UserReader  # noqa: PLC0415 - lazy, see spool.cli
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli
    from spool.stats import pending_wait, waiting_for  # noqa: PLC0415 - lazy

    layout = reader_of(settings).layout
    blind = SpoolReader(layout).unsearchable_states()
    seen = [state for state in JobState if state not in blind]
    if not seen:
        raise SpoolError(f"spoolq show needs to look into {out_of_reach(blind)} (see "
                         "Permissions in docs/operations.md)")
    reader = UserReader(layout, seen)
    try:
        # A cancel or retry holding the job between folders: looked for again, not "no job".
        record = find_moved(layout, args.id, reader.get, time.monotonic() + MOVE_WAIT_S)
    except NotFoundError:
        if args.id in reader.unread:
            state = reader.unread[args.id].value
            raise SpoolError(f"job {args.id} is {state}, but this user may not read its file "
                             f"{state}/{args.id}.json (a submitter's drop keeps its group "
                             "until its record is written): see it through statusd or as "
                             "the spool user (Permissions in docs/operations.md)") from None
        if not blind:
            raise
        raise NotFoundError(f"no job {args.id} in {folders(seen)} (not looked into: "
                            f"{out_of_reach(blind)}; see Permissions in docs/operations.md)"
                            ) from None
    live = live_reader(layout)  # read once, for the limits and why a pending job waits
    show_record(record, args.json, reader.large.get(args.id),
                limits=shown_limits(layout, record, args.json, live))
    if record.state is JobState.PENDING and JobState.RUNNING not in blind and (
            layout.job(JobState.RUNNING, args.id).exists()):
        # Never claimed while that file stays (a claim never overwrites); shown pending
        # alone, a drop kept there by an orphan the processor cannot read said nothing.
        note(f"job {args.id} waits behind running/{args.id}.json (a run of the same id, or "
             "an orphan recovery has yet to settle: see the processor's log); it is claimed "
             "once that file leaves running/")
    elif record.state is JobState.PENDING and record.tool is not None and (
            why := pending_wait(live(), record.tool, time.time(),
                                *waiting_for(layout, settings.grace_s))):
        # A job held by its not_before or a retry's backoff said only "left to the
        # processors that offer it", as if they could claim it now (h403).
        until = held(record)
        note(f"job {args.id} waits: {f'{until}; then ' if until else ''}{why}")
    if blind and record.state is not JobState.PENDING:  # a pending drop wins over the rest
        note(f"job {args.id} as found without looking into {out_of_reach(blind)}: a newer "
             "drop or run of it there would not show here")
    if record.unreadable is not None:
        note(unreadable_note(record))
        return EXIT_FAILED
    return EXIT_OK


# -- cancel ---------------------------------------------------------------------------------


def _add_ids(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("id", nargs="+", type=parse.job_id, metavar="ID",
                        help=f"the job id; several are {what}, each said on a line of "
                        "its own (ID STATE [ERROR], or one JSON line)")


def _one(ids: list[str]) -> str:
    """The id a hint names: the one given, or ``ID`` for several."""
    return ids[0] if len(ids) == 1 else "ID"


def _each(ids: list[str], act: Callable[[str], Record], as_json: bool) -> int:
    """``act`` on each job of a command given several ids: a line each, as ``wait``
    prints several (``ID STATE [ERROR]``, or a JSON line); a job refused (unknown, in
    another state) is an error line on stderr, exit 1, and the others go on.  One call a
    job cost an operator 0.25 s of start-up each, 40 minutes for 10,000 ids (QA)."""
    code = EXIT_OK
    for n, job_id in enumerate(ids):
        try:
            record = act(job_id)
        except KeyboardInterrupt:
            if left := ids[n + 1:]:
                note(f"interrupted: not tried: {' '.join(left)}")
            raise
        except SpoolIOError:
            # The spool's trouble, not this job's: the rest would meet it too.  Named, as
            # a cancel of several names them (a retry of several said nothing of them).
            if left := ids[n + 1:]:
                note(f"not tried: {' '.join(left)}")
            raise
        except SpoolError as exc:
            note(f"error: {exc}")
            code = EXIT_FAILED
            continue
        job_line(job_id, record, None, as_json=as_json)
    return code


def _configure_cancel(parser: argparse.ArgumentParser) -> None:
    _add_ids(parser, "cancelled together (every request written before any wait)")
    parser.add_argument("--timeout", type=parse.positive_seconds, default=CANCEL_WAIT_S,
                        metavar="S", help="how long to wait for a running job to stop, "
                        f"one wait for several (default {CANCEL_WAIT_S:g} s)")
    add_json(parser, "the record")


def run_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = client_of(settings)
    layout = client.layout
    check_can_change(layout, "spoolq cancel", write=[
        *map(layout.folder, (JobState.PENDING, JobState.DONE, JobState.FAILED)), layout.tmp,
        layout.cancel], enter=list(map(layout.folder, JobState)),
        instead=f" or through statusd (POST /api/v1/tasks/{_one(args.id)}/cancel)")
    if len(args.id) > 1:
        return _cancel_several(client, args.id, args.timeout, args.json)
    job_id = args.id[0]
    try:
        record = client.cancel(job_id, wait_s=args.timeout)
    except KeyboardInterrupt:
        _said_interrupted(layout, job_id)
        raise
    show_record(record, args.json,
                limits=shown_limits(layout, record, args.json))
    if (finished := _finished_first(job_id, record)) is not None:
        note(f"error: {finished}")
        return EXIT_FAILED
    if record.state not in TERMINAL:
        try:
            alive = bool(client.reader.processors())
        except SpoolIOError:  # out of descriptors: the request is in all the same
            alive = True
        note(f"job {job_id} is still {record.state.value}: the cancel request stays in "
             "cancel/ " + ("for its processor to act on" if alive
                           else "but no processor is running to act on it"))
    return EXIT_OK


def _said_interrupted(layout: Layout, job_id: str) -> None:
    """A Ctrl-C while a cancel waits: its request, once written, stays and acts."""
    if layout.cancel_request(job_id).exists():  # asked: the cancel goes on without us
        note(f"interrupted: stopped waiting for job {job_id}; its cancel request stays "
             f"in cancel/, for its processor to act on (spoolq show {job_id} tells the "
             "outcome)")


def _finished_first(job_id: str, record: Record) -> str | None:
    """Why a cancel did nothing, when the run ended (done, or failed for another reason)
    before its processor acted on the request, as for a job that had already finished."""
    if record.state in TERMINAL and not (
            record.error is not None and record.error.type is ErrorType.CANCELLED):
        return f"job {job_id} finished ({record.state.value}) before the cancel took effect"
    return None


def _cancel_several(client: Client, ids: list[str], wait_s: float, as_json: bool) -> int:
    """Cancel several jobs: every request is written first, then each outcome waited
    for within one ``wait_s``, a line each in the order given (as :func:`_each` says
    them).  One after another, each running job's wait came before the next request:
    100 running jobs with no processor to act took 100 times the wait (QA)."""
    asked: list[Record | CancelAsked | SpoolError] = []
    trouble: SpoolIOError | None = None
    for n, job_id in enumerate(ids):
        try:
            asked.append(client.ask_cancel(job_id))
        except KeyboardInterrupt:
            _said_interrupted_at(client.layout, ids[:n + 1], ids[n + 1:])
            raise
        except SpoolIOError as exc:
            # The spool's trouble, not this job's: the rest would meet it too.  Those
            # asked already are said first (cancelled on disk, they went unsaid).
            trouble = exc
            if left := ids[n + 1:]:
                note(f"not tried: {' '.join(left)}")
            break
        except SpoolError as exc:
            asked.append(exc)
    deadline = time.monotonic() + wait_s
    code = EXIT_OK
    for n, (job_id, outcome) in enumerate(zip(ids, asked, strict=False)):
        try:
            record = _outcome(client, outcome, deadline)
            job_line(job_id, record, None, as_json=as_json)
        except KeyboardInterrupt:  # as a line is printed too: the requests still stay
            _said_interrupted_at(client.layout, ids[n:], [])
            raise
        except SpoolIOError:
            raise
        except SpoolError as exc:
            note(f"error: {exc}")
            code = EXIT_FAILED
    if trouble is not None:
        raise trouble
    return code


def _outcome(client: Client, asked: Record | CancelAsked | SpoolError, deadline: float
             ) -> Record:
    """One of several ids' cancel outcome: its record, with a line on stderr when the
    request still waits in cancel/; the error it met; ConflictError when the run ended
    otherwise first."""
    if isinstance(asked, SpoolError):
        raise asked
    record = client.cancel_outcome(asked, deadline) if isinstance(asked, CancelAsked) \
        else asked
    if (finished := _finished_first(record.id, record)) is not None:
        raise ConflictError(finished)
    if record.state not in TERMINAL:
        note(f"job {record.id} is still {record.state.value}: the cancel request stays "
             "in cancel/")
    return record


def _said_interrupted_at(layout: Layout, asked: list[str], left: list[str]) -> None:
    """A Ctrl-C in a cancel of several: the requests written stay and act, one line for
    them all; the ids not yet asked are named."""
    staying = [job_id for job_id in dict.fromkeys(asked)
               if layout.cancel_request(job_id).exists()]
    if staying:
        note(f"interrupted: stopped waiting; the cancel requests of {' '.join(staying)} "
             "stay in cancel/, for their processors to act on (spoolq show ID tells the "
             "outcome)")
    if left:
        note(f"interrupted: not tried: {' '.join(left)}")


# -- retry ----------------------------------------------------------------------------------


def _configure_retry(parser: argparse.ArgumentParser) -> None:
    _add_ids(parser, "retried one after another")
    add_json(parser, "the record")


def run_retry(args: argparse.Namespace, settings: Settings) -> int:
    client = client_of(settings)
    layout = client.layout
    check_can_change(layout, "spoolq retry", write=[
        layout.folder(JobState.FAILED), layout.tmp, layout.folder(JobState.PENDING)],
        enter=list(map(layout.folder, JobState)),
        instead=f" or through statusd (POST /api/v1/tasks/{_one(args.id)}/retry)")
    if len(args.id) > 1:
        return _each(args.id, client.retry, args.json)
    record = client.retry(args.id[0])  # ConflictError for a job in another state
    show_record(record, args.json,
                limits=shown_limits(layout, record, args.json))
    return EXIT_OK


SHOW = Command(
    "show", "one job's record", _configure_show, run_show,
    description="Print one job's record (exit 0).  Exit 1 when there is no such job, or "
    "when its file in done/ or failed/ cannot be read (corrupt): what is known is "
    "printed, with 'unreadable' saying why, and an error line on stderr.  A record over "
    "8 MiB is shown without its result (its size instead); --json writes its file as "
    "stored.  A user who may not enter some state folders (a member of the spool's "
    "group only cannot enter pending/) is shown what the others hold, with a line on "
    "stderr naming the folders not looked into; exit 1 naming the file when the job's "
    "file is one it may not read (a submitter's drop, running).")
CANCEL = Command(
    "cancel", "cancel a pending or running job", _configure_cancel, run_cancel,
    description="A pending job fails 'cancelled' at once.  For a running job a "
    "cancel request is written; its processor kills the run and fails it "
    "'cancelled'; a Ctrl-C while it waits for that stops the waiting, not the cancel "
    "(a line on stderr says the request stays).  Prints the record (exit 0; with several "
    "ids, a line each); exit 1 when "
    "the job is unknown or "
    "already finished, or finishes before the cancel takes effect (its record is "
    "printed); exit 1 too, before anything is changed, when this user may not write to "
    "the folders a cancel changes (a member of one of the spool's groups only: run it as "
    "the spool user), or when a re-drop waits behind a run of its id that has ended but "
    "whose running file is not yet settled (try again).")
RETRY = Command(
    "retry", "move a failed job back to pending/ (attempts reset to 0)",
    _configure_retry, run_retry,
    description="Move a failed job back to pending/ with attempts reset to 0, so it "
    "gets its full max_attempts again; the failed record's error goes with it (shown "
    "as 'last error').  With several ids, a line each.  Exit 1 when a job is not "
    "failed, or (before anything is "
    "changed) when this user may not write to failed/, tmp/ and pending/.  Quarantined files "
    "(invalid_job with a source) cannot be retried: fix the file and drop it again.")
