"""Commands on one job by id: ``show``, ``wait``, ``cancel``, ``retry``.

``wait`` is what scripts branch on: exit 0 done, 1 failed (or no such job),
2 usage error, 3 still pending or running at ``--timeout``.  A job whose file in
``done/`` or ``failed/`` is not a readable record (not JSON, truncated, not
UTF-8) has no outcome to trust: ``show`` and ``wait`` print what is known (its
state, from the folder, and why the record is unreadable) and exit 1 with an
error line, whatever the folder; a done job is never shown with a made-up null
result.  Waiting never
changes the job; Ctrl-C stops the waiting only.

A record over :data:`spool.large.PARSE_MAX_BYTES` (8 MiB) is never read or parsed
whole: ``show`` and ``wait`` print its leading fields and its size in place of
the result, and with ``--json`` write its file to stdout as stored, a chunk at a
time (:mod:`spool.large`).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from spool.cli import parse
from spool.cli.command import (
    EXIT_FAILED,
    EXIT_NOT_FINISHED,
    EXIT_OK,
    Command,
    UsageError,
    UserReader,
    add_json,
    check_can_change,
    client_of,
    folders,
    note,
    out_of_reach,
    reader_of,
)
from spool.cli.lookout import QUIET_S, lookout_for
from spool.cli.progress import watcher_for
from spool.cli.render import printable, record_json, show_record, unreadable_note
from spool.client import CANCEL_WAIT_S, Client
from spool.errors import ErrorType, NotFoundError, SpoolError
from spool.large import BoundedReader
from spool.models import Record
from spool.reader import HEARTBEAT_STALE_S, SpoolReader
from spool.settings import Settings
from spool.states import TERMINAL, JobState


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=parse.job_id, help="the job id")


# -- show -----------------------------------------------------------------------------------


def _configure_show(parser: argparse.ArgumentParser) -> None:
    _add_id(parser)
    add_json(parser, "the record (the same JSON as done/ and failed/ hold)")


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    layout = reader_of(settings).layout
    blind = SpoolReader(layout).unsearchable_states()
    seen = [state for state in JobState if state not in blind]
    if not seen:
        raise SpoolError(f"spoolq show needs to look into {out_of_reach(blind)} (see "
                         "Permissions in docs/operations.md)")
    reader = UserReader(layout, seen)
    try:
        record = reader.get(args.id)
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
    show_record(record, args.json, reader.large.get(args.id))
    if blind and record.state is not JobState.PENDING:  # a pending drop wins over the rest
        note(f"job {args.id} as found without looking into {out_of_reach(blind)}: a newer "
             "drop or run of it there would not show here")
    if record.unreadable is not None:
        note(unreadable_note(record))
        return EXIT_FAILED
    return EXIT_OK


# -- wait -----------------------------------------------------------------------------------


def _configure_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="+", type=parse.job_id, metavar="ID",
                        help="the job id; several are waited for together")
    parser.add_argument("--timeout", type=parse.positive_seconds, metavar="S",
                        help="give up after this long (30, 30s, 5m, 2h), for all the jobs "
                        "together; exit 3 then")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print nothing; the exit code tells")
    add_json(parser, "the final record (with several ids: one JSON line each)")


def run_wait(args: argparse.Namespace, settings: Settings) -> int:
    client = client_of(settings, usage=True)
    check_can_follow(client, "spoolq wait")
    ids = list(dict.fromkeys(args.id))  # each once, in the order given
    if len(ids) == 1:
        return wait_for(client, ids[0], args.timeout, as_json=args.json, quiet=args.quiet)
    return wait_all(client, ids, args.timeout, as_json=args.json, quiet=args.quiet)


def check_can_follow(client: Client, what: str, done_so_far: str = "") -> None:
    """A usage error (exit 2) when this user cannot look into every state folder.

    Under ``spoolq init --system`` (docs/operations.md, "Permissions") a member of the
    submit group only may drop jobs but not enter ``running/``, ``done/``, ``failed/``,
    and a member of the spool's group only may read records but not enter ``pending/``:
    waiting would end in EACCES, exit 1, which a script reads as "the job failed".
    """
    blocked = client.reader.unsearchable_states()
    if blocked:
        raise UsageError(f"{what} needs to look into {out_of_reach(blocked)}{done_so_far}; "
                         "follow the job through statusd (GET /api/v1/tasks/ID) or as "
                         "the spool user (see Permissions in docs/operations.md)")


def wait_for(client: Client, job_id: str, timeout: float | None, *, as_json: bool,
             quiet: bool) -> int:
    """Wait for ``job_id``, show the outcome, and return ``wait``'s exit code.

    Ctrl-C stops the waiting (exit 130) with a line naming the job, which goes on:
    after ``submit --wait --json`` that line is the only place its id is shown.  Unless
    ``quiet``, a line on stderr says so when no processor seems to be running
    (:mod:`spool.cli.lookout`), once, and the wait goes on.
    """
    seen: list[Record] = []
    reader = client.reader = BoundedReader(client.layout)  # a large record: its head only
    try:
        with watcher_for(sys.stderr, quiet) as watcher, lookout_for(
                client.layout, job_id, watcher.note,
                lambda: bool(seen) and seen[0].state not in TERMINAL, quiet=quiet):
            def update(record: Record) -> None:
                seen[:] = [record]
                watcher.update(record)

            record = client.wait(job_id, timeout, on_update=update)
    except KeyboardInterrupt:  # the bar is cleared by now
        if not quiet:
            state = f"last seen {seen[0].state.value}" if seen else "not seen yet"
            note(f"interrupted: stopped waiting for job {job_id} ({state}); the job goes "
                 f"on (spoolq cancel {job_id} stops it)")
        raise
    if not quiet:
        show_record(record, as_json, reader.large.get(job_id))
    code = _exit_code(record)
    if quiet:
        return code
    if record.unreadable is not None:  # finished, but with no outcome a script can trust
        note(unreadable_note(record))
    elif code == EXIT_NOT_FINISHED:
        note(f"job {job_id} is still {record.state.value} after {timeout or 0:g} s")
    return code


def wait_all(client: Client, ids: list[str], timeout: float | None, *, as_json: bool,
             quiet: bool) -> int:
    """Wait for every job of ``ids`` within one ``timeout``; a line on stdout for each as
    its end is known (``ID STATE [ERROR]``, or its record as one JSON line), in the order
    given.  Exit 1 when any failed or is unknown, else 3 when any is unfinished, else 0."""
    deadline = None if timeout is None else time.monotonic() + timeout
    client.reader = BoundedReader(client.layout)  # a large record: its head only
    codes: list[int] = []
    for job_id in ids:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            record = _wait_one(client, job_id, left, quiet)
        except NotFoundError as exc:
            if not quiet:
                note(f"error: {exc}")
            codes.append(EXIT_FAILED)
            continue
        except KeyboardInterrupt:
            if not quiet:
                note(f"interrupted: stopped waiting at job {job_id}; the jobs go on")
            raise
        code = _exit_code(record)
        codes.append(code)
        if quiet:
            continue
        if as_json:
            sys.stdout.write(orjson.dumps(record_json(record)).decode() + "\n")
        else:
            error = f" {record.error.type.value}: {record.error.message}" if (
                record.error and record.state is JobState.FAILED) else ""
            print(printable(f"{job_id} {record.state.value}{error}"))
        sys.stdout.flush()
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_NOT_FINISHED if EXIT_NOT_FINISHED in codes else EXIT_OK


def _wait_one(client: Client, job_id: str, timeout: float | None, quiet: bool) -> Record:
    """``client.wait`` for one of several jobs, saying once (unless ``quiet``) when no
    processor seems to be running while it waits."""
    seen: list[Record] = []

    def update(record: Record) -> None:
        seen[:] = [record]

    with lookout_for(client.layout, job_id, note,
                     lambda: bool(seen) and seen[0].state not in TERMINAL, quiet=quiet):
        return client.wait(job_id, timeout, on_update=update)


def _exit_code(record: Record) -> int:
    """``wait``'s exit code for a job whose last seen record is ``record``."""
    if record.unreadable is not None or record.state is JobState.FAILED:
        return EXIT_FAILED
    return EXIT_OK if record.state is JobState.DONE else EXIT_NOT_FINISHED


# -- cancel ---------------------------------------------------------------------------------


def _configure_cancel(parser: argparse.ArgumentParser) -> None:
    _add_id(parser)
    parser.add_argument("--timeout", type=parse.positive_seconds, default=CANCEL_WAIT_S,
                        metavar="S", help="how long to wait for a running job to stop "
                        f"(default {CANCEL_WAIT_S:g} s)")
    add_json(parser, "the record")


def run_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = client_of(settings)
    layout = client.layout
    check_can_change(layout, "spoolq cancel", write=[
        *map(layout.folder, (JobState.PENDING, JobState.DONE, JobState.FAILED)), layout.tmp,
        layout.cancel], enter=list(map(layout.folder, JobState)),
        instead=f" or through statusd (POST /api/v1/tasks/{args.id}/cancel)")
    record = client.cancel(args.id, wait_s=args.timeout)
    show_record(record, args.json)
    if record.state in TERMINAL and not _cancelled(record):
        # The run ended (done, or failed for another reason) before its processor acted
        # on the request: nothing was cancelled, as for a job that had already finished.
        note(f"error: job {args.id} finished ({record.state.value}) before the cancel took "
             "effect")
        return EXIT_FAILED
    if record.state not in TERMINAL:
        alive = client.reader.processors()
        note(f"job {args.id} is still {record.state.value}: the cancel request stays in "
             "cancel/ " + ("for its processor to act on" if alive
                           else "but no processor is running to act on it"))
    return EXIT_OK


def _cancelled(record: Record) -> bool:
    return record.error is not None and record.error.type is ErrorType.CANCELLED


# -- retry ----------------------------------------------------------------------------------


def _configure_retry(parser: argparse.ArgumentParser) -> None:
    _add_id(parser)
    add_json(parser, "the record")


def run_retry(args: argparse.Namespace, settings: Settings) -> int:
    client = client_of(settings)
    layout = client.layout
    check_can_change(layout, "spoolq retry", write=[
        layout.folder(JobState.FAILED), layout.tmp, layout.folder(JobState.PENDING)],
        enter=list(map(layout.folder, JobState)),
        instead=f" or through statusd (POST /api/v1/tasks/{args.id}/retry)")
    record = client.retry(args.id)  # ConflictError for a job in another state
    show_record(record, args.json)
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
WAIT = Command(
    "wait", "wait for jobs: exit 0 done, 1 failed, 3 still unfinished at --timeout",
    _configure_wait, run_wait,
    description="Wait until the job is done (exit 0) or failed (exit 1); exit 3 if it "
    "is still pending or running at --timeout, 1 if there is no such job or its record "
    "in done/ or failed/ cannot be read (corrupt), 2 on usage errors (and when this "
    "user may not enter the spool, or look into running/, done/ or failed/: a submitter "
    "only).  On a terminal a "
    "progress bar (state, fraction, message, time) is drawn on stderr; otherwise each "
    "state change is one line on stderr.  The final record goes to stdout.  When no "
    "processor seems to be running (none holds its lock with a heartbeat under "
    f"{HEARTBEAT_STALE_S:g} s old), a line on stderr says so, once: at once when owners/ "
    f"shows one killed or hung, after {QUIET_S:g} s when it holds no status file; the "
    "wait goes on.  With several ids, all are waited for within one --timeout, with no "
    "bar: one line each on stdout, 'ID STATE [ERROR]' (--json: its record as one JSON "
    "line), in the order given; the exit code is 1 if any failed or is unknown, else 3 "
    "if any is unfinished, else 0.")
CANCEL = Command(
    "cancel", "cancel a pending or running job", _configure_cancel, run_cancel,
    description="A pending job fails 'cancelled' at once.  For a running job a "
    "cancel request is written; its processor kills the run and fails it "
    "'cancelled'.  Prints the record (exit 0); exit 1 when the job is unknown or "
    "already finished, or finishes before the cancel takes effect (its record is "
    "printed); exit 1 too, before anything is changed, when this user may not write to "
    "the folders a cancel changes (a member of one of the spool's groups only: run it as "
    "the spool user).")
RETRY = Command(
    "retry", "move a failed job back to pending/ (attempts reset to 0)",
    _configure_retry, run_retry,
    description="Move a failed job back to pending/ with attempts reset to 0, so it "
    "gets its full max_attempts again; the failed record's error goes with it (shown "
    "as 'last error').  Exit 1 when the job is not failed, or (before anything is "
    "changed) when this user may not write to failed/, tmp/ and pending/.  Quarantined files "
    "(invalid_job with a source) cannot be retried: fix the file and drop it again.")
