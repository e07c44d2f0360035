"""``spoolq wait``: what scripts branch on.

Exit 0 done, 1 failed (or no such job), 2 usage error (and when the outcome cannot be
written to stdout: a full disk), 3 still pending or running at ``--timeout``.  A job
whose file in ``done/`` or ``failed/`` is not a readable record (not JSON, truncated,
not UTF-8) has no outcome to trust: ``wait`` prints what is known and exits 1 with an
error line, as ``show`` does (:mod:`spool.cli.jobs`).  A record over
8 MiB is shown by its head (:mod:`spool.large`).  Waiting never changes the job; Ctrl-C
stops the waiting only.  ``submit --wait`` waits here too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson

from spool.cli import parse
from spool.cli.catalog import shown_limits
from spool.cli.command import (
    EXIT_FAILED,
    EXIT_NOT_FINISHED,
    EXIT_OK,
    Command,
    OutputError,
    UsageError,
    add_json,
    client_of,
    note,
    out_of_reach,
)
from spool.cli.lookout import QUIET_S, lookout_for
from spool.cli.progress import watcher_for
from spool.cli.render import (
    UNREADABLE,
    json_text,
    listed_json,
    printable,
    show_record,
    unreadable_note,
)
from spool.client import Client, one_timeout
from spool.errors import NotFoundError
from spool.lease import HEARTBEAT_STALE_S
from spool.states import TERMINAL, JobState

if TYPE_CHECKING:
    from spool.large import LargeRecord
    from spool.models import Record
    from spool.settings import Settings


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
    if len(args.id) == 1:  # "wait a a" is several ids: a script reads a line for each
        return wait_for(client, args.id[0], args.timeout, as_json=args.json,
                        quiet=args.quiet)
    return wait_all(client, args.id, args.timeout, as_json=args.json, quiet=args.quiet)


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


class WaitStopped(KeyboardInterrupt):
    """A Ctrl-C :func:`wait_for` has told of: a caller that tells of one that came before
    the wait began (``submit --wait``) leaves this one be."""


def wait_for(client: Client, job_id: str, timeout: float | None, *, as_json: bool,
             quiet: bool) -> int:
    """Wait for ``job_id``, show the outcome, and return ``wait``'s exit code.

    Ctrl-C stops the waiting (exit 130) with a line naming the job, which goes on:
    after ``submit --wait --json`` that line is the only place its id is shown.  Unless
    ``quiet``, a line on stderr says so when no processor seems to be running
    (:mod:`spool.cli.lookout`), once, and the wait goes on.
    """
    seen: list[Record] = []
    try:  # from the start: a Ctrl-C as spool.large loads is told too (submit --wait's
        # id just printed, it ended 130 with no word of the job, or by SIGINT itself)
        from spool.large import BoundedReader  # noqa: PLC0415 - lazy, see spool.cli

        reader = client.reader = BoundedReader(client.layout)  # a large record: its head
        with watcher_for(sys.stderr, quiet) as watcher, lookout_for(
                client.layout, job_id, watcher.note,
                lambda: bool(seen) and seen[0].state not in TERMINAL, quiet=quiet):
            def update(record: Record) -> None:
                seen[:] = [record]
                watcher.update(record)

            record = client.wait(job_id, timeout, on_update=update)
    except KeyboardInterrupt as exc:  # the bar is cleared by now
        if not quiet:
            state = f"last seen {seen[0].state.value}" if seen else "not seen yet"
            note(f"interrupted: stopped waiting for job {job_id} ({state}); the job goes "
                 f"on (spoolq cancel {job_id} stops it)")
        raise WaitStopped from exc
    if not quiet:
        with _told(record, "its record"):
            show_record(record, as_json, reader.large.get(job_id),
                        limits=shown_limits(client.layout, record, as_json))
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
    given: an id given twice is waited for once, and has a line each time (a script
    pairs its ids with the lines).  Exit 1 when any failed or is unknown, else 3 when any
    is unfinished, else 0."""
    from spool.large import BoundedReader  # noqa: PLC0415 - lazy, see spool.cli

    reader = client.reader = BoundedReader(client.layout)  # a large record: its head only
    codes: list[int] = []
    known: dict[str, Record | NotFoundError] = {}
    for job_id, left in one_timeout(ids, timeout):
        if job_id not in known:
            try:
                known[job_id] = _wait_one(client, job_id, left, quiet)
            except NotFoundError as exc:
                known[job_id] = exc
            except KeyboardInterrupt:
                if not quiet:
                    note(f"interrupted: stopped waiting at job {job_id}; the jobs go on")
                raise
        record = known[job_id]
        if isinstance(record, NotFoundError):
            if not quiet:
                note(f"error: {record}")
            codes.append(EXIT_FAILED)
            continue
        code = _exit_code(record)
        codes.append(code)
        if quiet:
            continue
        job_line(job_id, record, reader.large.get(job_id), as_json=as_json)
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return EXIT_NOT_FINISHED if EXIT_NOT_FINISHED in codes else EXIT_OK


def job_line(job_id: str, record: Record, large: LargeRecord | None, *, as_json: bool) -> None:
    """One job's line of ``wait_all``: ``ID STATE [ERROR]``, or its record as one JSON
    line (one over 8 MiB, read from its head, without its result, marked as ``ls
    --json`` marks it).  A record that cannot be read is said so on the line and on
    stderr, as for one job: never a clean "done"."""
    if record.unreadable is not None:
        note(unreadable_note(record))
    with _told(record, "its line"):
        if as_json:
            data = listed_json(record, large)
            sys.stdout.write(json_text(orjson.dumps(data)) + "\n")
        else:
            error = f" {record.error.type.value}: {record.error.message}" if (
                record.error and record.state is JobState.FAILED) else ""
            if record.unreadable is not None:
                error = f" {UNREADABLE}: {record.unreadable}"
            print(printable(f"{job_id} {record.state.value}{error}"))


def _wait_one(client: Client, job_id: str, timeout: float | None, quiet: bool) -> Record:
    """``client.wait`` for one of several jobs, saying once (unless ``quiet``) when no
    processor seems to be running while it waits."""
    seen: list[Record] = []

    def update(record: Record) -> None:
        seen[:] = [record]

    with lookout_for(client.layout, job_id, note,
                     lambda: bool(seen) and seen[0].state not in TERMINAL, quiet=quiet):
        return client.wait(job_id, timeout, on_update=update)


@contextlib.contextmanager
def _told(record: Record, what: str) -> Iterator[None]:
    """Write ``what`` of ``record`` to stdout, flushed; a usage error (exit 2) when stdout
    cannot take it (a full disk under ``> file``): exit 1, as other commands give then,
    read as "the job failed", for a job that was done.  The error line says how it
    ended.  A reader gone (EPIPE) is 141, as everywhere."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        reason = exc.reason if isinstance(exc, OutputError) else exc.strerror or str(exc)
        raise UsageError(f"job {record.id} is {record.state.value}, but {what} could not be "
                         f"written to standard output: {reason}") from exc


def _exit_code(record: Record) -> int:
    """``wait``'s exit code for a job whose last seen record is ``record``."""
    if record.unreadable is not None or record.state is JobState.FAILED:
        return EXIT_FAILED
    return EXIT_OK if record.state is JobState.DONE else EXIT_NOT_FINISHED


WAIT = Command(
    "wait", "wait for jobs: exit 0 done, 1 failed, 3 still unfinished at --timeout",
    _configure_wait, run_wait,
    description="Wait until the job is done (exit 0) or failed (exit 1); exit 3 if it "
    "is still pending or running at --timeout, 1 if there is no such job or its record "
    "in done/ or failed/ cannot be read (corrupt), 2 on usage errors (and when this "
    "user may not enter the spool, or look into running/, done/ or failed/: a submitter "
    "only; and when the outcome cannot be written to stdout, a full disk: an error line "
    "says how the job ended).  On a terminal a "
    "progress bar (state, fraction, message, time) is drawn on stderr; otherwise each "
    "state change is one line on stderr.  The final record goes to stdout.  When no "
    "processor seems to be running (none holds its lock with a heartbeat under "
    f"{HEARTBEAT_STALE_S:g} s old), a line on stderr says so, once: at once when owners/ "
    f"shows one killed or hung, after {QUIET_S:g} s when it holds no status file; the "
    "wait goes on.  With several ids, all are waited for within one --timeout, with no "
    "bar: one line each on stdout, 'ID STATE [ERROR]' (--json: its record as one JSON "
    "line), in the order given, an id given twice too; the exit code is 1 if any failed "
    "or is unknown, else 3 "
    "if any is unfinished, else 0.  Ctrl-C stops the wait, not the job: exit 130.")
