"""``spoolq submit``: build a job from options or take a job file, drop it, print its id.

Two forms (DESIGN section 9)::

    spoolq submit TOOL [-p key=value ...] [--params JSON] [--priority N] ...
    spoolq submit --file JOB.json          (``-`` reads standard input)

Bad options are usage errors (exit 2); a job file that is not a valid job
exits 1 with the validation reason, so the file never reaches ``pending/``
only to be quarantined there.  For the same reason a tool that the running
processor does not offer (the catalogue in its status file, as ``spoolq tools``
shows it) is refused, exit 2, unless ``--any-tool``: it would fail ``unknown_tool``
at once.  With no processor running (or ``owners/`` out of this user's reach)
nothing is checked: the job waits for a processor, which may know it.  The job
is written through :meth:`spool.client.Client.submit`: staged in ``tmp/`` and
renamed in.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from spool.catalogue import own_object
from spool.cli import parse
from spool.cli.command import (
    EXIT_OK,
    Command,
    OutputError,
    SignalAfter,
    UsageError,
    add_json,
    check_can_change,
    client_of,
    layout_of,
    note,
)
from spool.cli.render import emit_json
from spool.cli.waiting import WaitStopped, check_can_follow, wait_for
from spool.errors import SpoolError
from spool.layout import Layout
from spool.states import JobState
from spool.stdio import integer

if TYPE_CHECKING:
    from pydantic import ValidationError

    from spool.client import Client
    from spool.models import Job, OwnerStatus
    from spool.settings import Settings

# Options that describe the job; with --file the file describes it alone.
OPTION_OF = {"priority": "argument --priority", "timeout": "argument --timeout",
             "max_attempts": "argument --max-attempts",
             "not_before": "argument --not-before", "meta": "argument --meta"}
"""The option each job field comes from, to name it in an error as argparse does."""
JOB_OPTIONS = ("tool", "param", "params", "priority", "timeout", "max_attempts", "not_before",
               "meta")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tool", nargs="?", type=parse.utf8_text,
                        help="a tool name (see spoolq tools)")
    parser.add_argument("-p", dest="param", action="append", type=parse.key_value,
                        metavar="KEY=VALUE", help="one param; VALUE is JSON when it parses, "
                        "else a string; a number, true, false or null for a param the running "
                        "processor's tool takes as text stays text (symbol=600519) "
                        "(repeatable; wins over "
                        "--params)")
    parser.add_argument("--params", type=parse.json_object, metavar="JSON",
                        help="params as a JSON object")
    parser.add_argument("--file", metavar="JOB.json",
                        help="submit this job file as it is ('-' for stdin)")
    parser.add_argument("--id", type=parse.job_id, help="the job id (default: a new, "
                        "time-ordered one)")
    parser.add_argument("--priority", type=integer, metavar="N", help="higher runs first")
    parser.add_argument("--timeout", type=parse.positive_seconds, metavar="S",
                        help="the job's run time limit (30, 30s, 5m); may only lower the "
                        "tool's execution_timeout; not how long --wait waits (that is "
                        "'spoolq wait ID --timeout S')")
    parser.add_argument("--max-attempts", type=integer, metavar="N",
                        help="runs allowed when a run times out or crashes")
    parser.add_argument("--not-before", type=parse.timestamp, metavar="T",
                        help="not before this time: ISO 8601 with offset, or epoch seconds")
    parser.add_argument("--meta", type=parse.json_object, metavar="JSON",
                        help="a JSON object echoed back in the record")
    parser.add_argument("--wait", action="store_true",
                        help="then wait like 'spoolq wait' (its output and exit codes)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="with --wait: print only the id, then wait in silence; the "
                        "exit code tells")
    parser.add_argument("--any-tool", action="store_true",
                        help="submit even a tool the running processor does not offer, "
                        "or params its catalogue says the tool does not take or lacks "
                        "(by default that is refused, exit 2; one that starts later may "
                        "offer it)")
    add_json(parser, '{"id": ...} (with --wait: the final record)')


def run_submit(args: argparse.Namespace, settings: Settings) -> int:
    check_form(args)
    live = _live_processors(layout_of(settings))
    job = job_from_file(args.file, settings.max_job_bytes) if args.file is not None \
        else job_from_options(args, functools.partial(_params_schema, live))
    # Refuses a job over SPOOL_MAX_JOB_BYTES as written; with --wait, a spool this user
    # may not enter is a usage error (exit 1 would read as "the job failed").
    client = client_of(settings, usage=args.wait)
    _check_before_the_drop(client, job, args, live, settings.grace_s)
    # The id is printed inside the hold too: a signal between the drop and its id (the
    # handlers put back, nothing printed yet) ended submit with 130, the job in pending/
    # and no id, as before the hold.
    held: list[int] = []  # a signal that came as the job was published
    printed: list[bool] = []  # set as its id goes out: a signal from then is the wait's
    try:
        with _held_signals(held, printed):
            try:
                job_id = client.submit(job, args.id)
            except ValueError as exc:  # the file's "id" disagrees with --id
                raise UsageError(str(exc)) from exc
            printed.append(True)  # before: its reader may send a signal upon the line
            announce(job_id, as_json=args.json, wait=args.wait)
    except KeyboardInterrupt:
        # A Ctrl-C as the handlers were put back (a second one, or one between their
        # restores), its id out: the wait's, told as the wait tells it; it got out as 130
        # with no word of the job.
        if printed and args.wait and not args.quiet:
            _stopped_waiting(job_id)
        raise
    except Exception as exc:
        if held:  # told first, then acted on (see _held_signals)
            raise SignalAfter(exc, abs(held[0])) from exc
        raise
    # The try is here, not inside a function called for it: Python acts on a signal at a
    # function's first instruction, so a Ctrl-C that came between the hold's end and the
    # wait's own watch was raised before such a try began (130 with no word of the job,
    # one run in 16 on a loaded host).  Nothing between the hold's try and this one lets
    # Python act on a signal (no call, no backward jump).
    try:
        if held:
            _act_on_held(held[0], job_id, args)
        if not args.wait:
            return EXIT_OK
        return wait_for(client, job_id, None, as_json=args.json, quiet=args.quiet)
    except WaitStopped:
        raise
    except KeyboardInterrupt:
        if args.wait and not held and not args.quiet:  # before the wait's watch began
            _stopped_waiting(job_id)
        raise


def _check_before_the_drop(client: Client, job: Job, args: argparse.Namespace,
                           live: Callable[[], list[OwnerStatus] | None],
                           grace_s: float) -> None:
    """What must hold before the job is dropped: its tool offered (unless --any-tool;
    ``grace_s``: ``SPOOL_GRACE_S``, see :func:`check_catalogue`), this user allowed to
    drop it and, with --wait, to follow it."""
    layout = client.layout
    if not args.any_tool:
        check_catalogue(live(), job, layout, grace_s)
    if job.timeout is not None:
        _note_a_capped_timeout(live(), job, job.timeout)
    # With --wait, exit 1 would read as "the job failed" (as in check_can_follow).
    refused = UsageError if args.wait else SpoolError
    check_attempts_left(layout, job, refused)
    check_can_change(layout, "spoolq submit", write=[layout.tmp, layout.folder(
        JobState.PENDING)], instead=" or as a member of the submit group", error=refused)
    if args.wait:  # before the drop: a user who cannot wait is told so with nothing submitted
        check_can_follow(client, "--wait", " (nothing was submitted)")
        # What the wait loads, loaded before the id is printed: a Ctrl-C just after it,
        # as the module was compiled, ended spoolq by SIGINT itself (no note, exit -2).
        import spool.large  # noqa: F401, PLC0415 - lazy, see spool.cli


def _act_on_held(signum: int, job_id: str, args: argparse.Namespace) -> None:
    """Tell the signal held as the job was dropped (``signum``, negative once its id was
    out), then act on it: its handler's way, 130 for SIGINT."""
    if signum < 0 and args.wait:
        # After its id was printed (read by now, a Ctrl-C upon it): the wait's signal, told
        # as the wait tells it; taken for the drop's, --wait ended saying the job landed.
        if not args.quiet:
            _stopped_waiting(job_id)
        signal.raise_signal(-signum)
        return
    signum = abs(signum)
    print(f"spoolq: interrupted ({signal.Signals(signum).name}) as job {job_id} was "
          "submitted: it is in pending/", file=sys.stderr)
    signal.raise_signal(signum)


def _stopped_waiting(job_id: str) -> None:
    """The wait's word of a Ctrl-C that came once the id was out (as ``spoolq wait``'s)."""
    note(f"interrupted: stopped waiting for job {job_id} (not seen yet); the job goes on "
         f"(spoolq cancel {job_id} stops it)")


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _held_signals(held: list[int], printed: list[bool] | None = None) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP held while the job file is published (milliseconds; a
    failing disk's sync, seconds) and its id printed, and listed in ``held``.

    A Ctrl-C after the file's rename (during its folder's fsync) ended ``submit`` with
    130 and the job in ``pending/``, its id never printed: the script that asked took it
    for not submitted and submitted it again, to run twice.  Held, the drop ends one way
    or the other and its id is printed before the signal is acted on.  A second signal
    is not held: it is acted on once the call under way returns (Python runs a handler
    between calls, so a submit stuck in an fsync on a dead disk waits for that call, or
    for SIGKILL; SIGTERM's default action ended it at once before).  One
    ignored (``nohup``'s SIGHUP, a script's background job's SIGINT) stays ignored: held,
    it was told as 'interrupted' while nothing was, and a Ctrl-C after it was taken for
    the second signal, acted on in the middle of the drop.  With ``--wait``, one that
    comes once the id is going out (a Ctrl-C upon reading it) is the wait's: told as
    the wait tells it ("interrupted: stopped waiting for job ID"), not as one that came
    as the job landed.

    A held signal is acted on whether the submit went well or not: when it failed (the
    id already pending, a disk error, its id not written), its error line comes first,
    then the signal's exit.  The signal, not the failure, decides the exit code (130
    for SIGINT, 143 for SIGTERM, 129 for SIGHUP): whoever sent it (a Ctrl-C'd script,
    ``timeout``, a service's stop) is told the command was stopped, as for a signal
    before the drop, which exits 130 with nothing submitted.  So after such an exit the
    code does not say whether the job is in; the output does, as ever: its id on stdout
    (with ``--wait --json``: the stderr line "interrupted (SIG...) as job ID was
    submitted: it is in pending/") means it is in, an error line without it that it is
    not, but for the one error that says the job "was submitted" (its id could not be
    written).  Dropped after a failure (exit 1), the signal went unheard: whoever sent it
    was told only that the submit failed.
    """
    old: dict[int, Any] = {}

    def hold(signum: int, frame: FrameType | None) -> None:
        if held:  # the second: acted on now, as it would have been
            _restore(old)
            signal.raise_signal(signum)
            return
        held.append(-signum if printed else signum)  # negative: once the id was out

    for sig in HELD_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        _restore(old)


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def announce(job_id: str, *, as_json: bool, wait: bool) -> None:
    """Print the id of the job just dropped (with ``--wait --json`` the record says it).

    A stdout that cannot take it (``> file`` on a full disk) must not read as a failed
    submit: the job is in pending/ and a second submit would run it twice.  With
    ``--wait`` that is exit 2, as ``wait`` gives when it cannot write the outcome (exit
    1 reads as "the job failed"); the job is not waited for.
    """
    try:
        if as_json and not wait:
            emit_json({"id": job_id})
        elif not as_json:
            print(job_id)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: stop quietly, as every command does
        raise
    except OSError as exc:
        reason = exc.reason if isinstance(exc, OutputError) else exc.strerror
        raise (UsageError if wait else SpoolError)(
            f"job {job_id} was submitted, but its id could not be written to standard "
            f"output: {reason}") from exc


def job_from_options(args: argparse.Namespace,
                     schema_of: Callable[[str], dict[str, Any] | None] | None = None) -> Job:
    """The job the options describe; ``schema_of``: a tool's params JSON Schema, when
    known (see the -p numbers kept as text below)."""
    from pydantic import ValidationError  # noqa: PLC0415 - lazy, see spool.cli

    from spool.models import Job  # noqa: PLC0415 - lazy, see spool.cli

    if args.tool is None:
        raise UsageError("give a TOOL name or --file JOB.json")
    given = {param.key: param for param in args.param or []}
    params: dict[str, Any] = {**(args.params or {}), **{
        key: param.value for key, param in given.items()}}
    scalars = [param for param in given.values()
               if param.value is None or isinstance(param.value, int | float | parse.Unheld)]
    if scalars and schema_of is not None and (schema := schema_of(args.tool)):
        # A number (or true, false, null) given for a param the tool takes as text
        # (symbol=600519, a ticker; message=true): meant as text.  Sent as JSON's
        # number or literal, the job failed invalid_params ("Input should be a valid
        # string"), and only '"600519"' got it through.
        defs = schema.get("$defs")
        fields_schema = own_object(schema).get("properties")
        for param in scalars:
            if isinstance(fields_schema, dict) and parse.takes_as_text(
                    fields_schema.get(param.key), defs, param.value):
                params[param.key] = param.text
    for value in params.values():
        if isinstance(value, parse.Unheld):  # not taken as text: as argparse refuses
            raise UsageError(f"argument -p: {value.reason} (see 'spoolq submit --help')")
    fields: dict[str, Any] = {"tool": args.tool, "params": params}
    for name in ("priority", "timeout", "max_attempts", "not_before", "meta"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        return Job.model_validate(fields)
    except ValidationError as exc:  # named as the option it came from, as argparse does,
        # and pointing to the command's help as every other usage error does (h365)
        raise UsageError(f"{describe(exc, OPTION_OF)} (see 'spoolq submit --help')") from exc


def job_from_file(path: str, max_job_bytes: int) -> Job:
    """The job in ``path``; SpoolError (exit 1) when it cannot be read or is not a job.

    The job as written must fit ``max_job_bytes`` and indentation rarely more than
    quadruples a file, so a file past four times that (16 MiB at least) is refused
    unread: ``--file /dev/zero`` or a mistaken 40 GB export cannot use up the memory.
    """
    from pydantic import ValidationError  # noqa: PLC0415 - lazy, see spool.cli

    from spool.jobfile import MAX_ACTIVE_BYTES, parse_job  # noqa: PLC0415 - lazy, see spool.cli

    limit = max(4 * max_job_bytes, MAX_ACTIVE_BYTES)
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            if sys.stdin is None:  # started with stdin closed (<&-): Python gives None
                raise SpoolError("cannot read standard input: it is closed (--file - reads "
                                 "the job from it)")
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        raise SpoolError(f"cannot read {name}: {exc.strerror}") from exc
    if len(data) > limit:
        raise SpoolError(f"{name} is too large: more than {limit} bytes, for a job that may "
                         f"have {max_job_bytes} as written (SPOOL_MAX_JOB_BYTES)")
    import orjson  # noqa: PLC0415 - lazy, see spool.cli

    from spool.text import without_bom  # noqa: PLC0415 - lazy, see spool.cli

    try:  # JSON as intake reads a drop: pydantic's parser took NaN and Infinity, which
        orjson.loads(without_bom(data))  # orjson then wrote as null (QA)
    except orjson.JSONDecodeError as exc:
        # Said as intake says it: of a latin-1 file orjson said "str is not valid UTF-8:
        # surrogates not allowed: line 1 column 1 (char 0)", neither where nor what (h401).
        from spool.intake import malformed_reason  # noqa: PLC0415 - lazy, see spool.cli

        # Of the bytes as written: past a byte order mark, the offset was 3 short of the
        # file's, and of what intake says of the same file dropped (h407).
        reason = malformed_reason(data, exc)
        raise SpoolError(f"{name} is not a valid job: {reason}") from exc
    try:
        job = parse_job(data)  # then the job, as intake reads it
        parse.inexact_number(data)
    except ValidationError as exc:
        raise SpoolError(f"{name} is not a valid job: {describe(exc)}") from exc
    except argparse.ArgumentTypeError as exc:
        raise SpoolError(f"{name} is not a valid job: {exc}") from exc
    return job


def _live_processors(layout: Layout) -> Callable[[], list[OwnerStatus] | None]:
    """The live processors' status files (:func:`spool.stats.readable_processors`), read
    at the first call only: the ``-p`` params' schema and the catalogue's check each
    read ``owners/`` again."""
    from spool.stats import readable_processors  # noqa: PLC0415 - lazy, see spool.cli

    return functools.cache(functools.partial(readable_processors, layout))


def _params_schema(live: Callable[[], list[OwnerStatus] | None], tool: str
                   ) -> dict[str, Any] | None:
    """``tool``'s params JSON Schema as the running processors publish it, if they do."""
    from spool.stats import params_schema  # noqa: PLC0415 - lazy, see spool.cli

    return params_schema(live(), tool)


def check_catalogue(live: list[OwnerStatus] | None, job: Job, layout: Layout,
                    grace_s: float) -> None:
    """A usage error (exit 2) when the ``live`` processors' catalogue refuses the job:
    its tool, which they do not offer (naming the known tools: the job would fail
    ``unknown_tool`` at once), or its params' names (:func:`spool.stats.unfit_params`);
    not while a processor of ``layout`` starts, which may offer it, nor for a tool one
    offered within a restart's grace (``grace_s``, ``SPOOL_GRACE_S``, then 60 s)."""
    from spool.errors import ErrorType  # noqa: PLC0415 - lazy, see spool.cli
    from spool.stats import catalogue_refusal, waiting_for  # noqa: PLC0415 - lazy

    if (refusal := catalogue_refusal(live, job, *waiting_for(layout, grace_s))) is not None:
        how = "lists" if refusal.type is ErrorType.UNKNOWN_TOOL else "shows"
        raise UsageError(f"{refusal.reason}; 'spoolq tools' {how} them, --any-tool "
                         "submits it anyway")


def _note_a_capped_timeout(live: list[OwnerStatus] | None, job: Job, asked: float
                           ) -> None:
    """A note when the job asks for a longer ``timeout`` than the live processors' limit
    of its tool, which it may only lower (DESIGN section 9): taken without a word, the
    job was killed at the tool's limit as if its own were ignored (QA h380)."""
    from spool.stats import live_limit  # noqa: PLC0415 - lazy, see spool.cli
    from spool.text import seconds_text  # noqa: PLC0415 - lazy, see spool.cli

    limit = live_limit(live, job.tool, "timeout")
    if limit is not None and asked > limit:
        note(f"tool {job.tool} stops a job after {seconds_text(limit)} (its "
             f"execution_timeout); the job's timeout of {seconds_text(asked)} does not "
             "raise it")


def check_attempts_left(layout: Layout, job: Job,
                        error: type[Exception] = SpoolError) -> None:
    """``error`` (SpoolError: exit 1, as for any file that holds no job to run) when the
    job's own ``attempts`` already reach its limit (:func:`spool.stats.spent_attempts`)."""
    from spool.stats import spent_attempts  # noqa: PLC0415 - lazy, see spool.cli

    if (why := spent_attempts(layout, job)) is not None:
        raise error(why)


def describe(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    """The first validation error as ``field: reason``, counting the rest; ``names``
    gives another name for a top-level field."""
    from spool.models import error_text  # noqa: PLC0415 - lazy, see spool.cli

    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "job"
    where = (names or {}).get(where, where)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {error_text(first)}{more}"


def check_form(args: argparse.Namespace) -> None:
    """``--file`` carries the whole job: refuse job options beside it; ``--quiet`` quiets
    the wait, so it needs ``--wait`` (usage errors)."""
    if args.quiet and not args.wait:
        raise UsageError("--quiet quiets --wait; without it submit prints only the id")
    if args.file is None:
        return
    given = [name for name in JOB_OPTIONS if getattr(args, name) is not None]
    if given:
        flags = ", ".join("TOOL" if n == "tool" else "-p" if n == "param"
                          else "--" + n.replace("_", "-") for n in given)
        raise UsageError(f"--file takes the whole job; drop {flags} (or edit the file)")


SUBMIT = Command(
    "submit", "drop a job into pending/ and print its id", _configure, run_submit,
    description="Submit TOOL with params, or a whole job file with --file.  -p values "
    "are JSON when they parse, else strings: -p symbols='[\"AAA\"]' -p fast=10 "
    "-p name=x gives {\"symbols\": [\"AAA\"], \"fast\": 10, \"name\": \"x\"}.  "
    "Prints the id; exit 1 when the job file is invalid or the id is already "
    "pending, or when this user may not write to tmp/ and pending/ (not in the submit "
    "group), 2 on usage errors and when the running processor does not offer the "
    "tool (see 'spoolq tools'; --any-tool submits it anyway; with no processor running "
    "any tool is taken).  --wait by a user who may not write there, or look into "
    "running/, done/ or failed/, exits 2 before submitting anything; while it waits, a "
    "line on stderr says so when no processor seems to be running (and it waits on).")
