"""``spoolq``: submit, watch and manage the jobs of a spool; no daemon needed.

The parser is built from :data:`COMMANDS`, a table of
:class:`~spool.cli.command.Command` entries kept in the modules that own
them; ``demo`` (``spool.cli.demo``) brings its own parser and is added after
the table.  ``main`` is the one boundary where errors become exit codes and
a single ``spoolq: error: ...`` line on stderr (never a traceback):

* 0 success; 1 the thing asked for does not exist or cannot be done
  (``wait``: the job failed); 2 usage errors; 3 ``wait`` timed out.

Settings come from ``SPOOL_*`` variables and ``.env`` (DESIGN section 7),
overridden by ``--spool-dir`` and ``--fsync``, which every command accepts
before or after its name.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import io
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from spool.cli import admin, catalog, demo, jobs, overview, submit, waiting
from spool.cli.command import (
    EXIT_FAILED,
    EXIT_USAGE,
    Command,
    OutputError,
    SignalAfter,
    UsageError,
    add_globals,
)
from spool.cli.render import printable
from spool.errors import ConfigError, NotASpool, SpoolError
from spool.stdio import EXIT_BROKEN_PIPE, Parser, discard, parse_args
from spool.text import bytes_quoted
from spool.version import add_version
from spool.view import shown

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from spool.settings import Settings

COMMANDS: tuple[Command, ...] = (
    admin.INIT, submit.SUBMIT, overview.LS, jobs.SHOW, waiting.WAIT, jobs.CANCEL, jobs.RETRY,
    admin.PURGE, overview.STATS, catalog.TOOLS, catalog.SCHEMA, catalog.DATA,
)
EXIT_INTERRUPTED = 130


class _Parser(Parser):
    """argparse with DESIGN's one-line usage errors and exit code 2, and a help text that
    is written or said not to be (:class:`spool.stdio.Parser`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A negative duration ("-1d", "-2.5h") is a value for its option to refuse, not an
        # option: argparse's own pattern takes only "-1" and "-1.5" for values, so
        # "--older-than -1d" read as the option without its argument.
        self._negative_number_matcher = re.compile(r"^-(\d+(\.\d+)?|\.\d+)\s*[smhdw]?$")

    def error(self, message: str) -> NoReturn:
        self._usage_error(message, self.prog)

    def _usage_error(self, message: str, prog: str) -> NoReturn:
        """The one line of a usage error, what argparse quotes as typed escaped."""
        self.exit(EXIT_USAGE, f"spoolq: error: {printable(bytes_quoted(message))} (see "
                  f"'{prog} --help')\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's, with an unknown argument pointing to its command's help: the top
        parser finds it, after the command's parser has passed it on."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            words = [self.prog, getattr(parsed, "command", None),
                     getattr(parsed, "data_command", None)]
            prog = " ".join(w for w in words if w)
            # Told as error() tells the rest: as typed, an escape in them reached the
            # terminal, and a byte past ASCII under LC_ALL=C read '\udcc3' (h411).
            self._usage_error(f"unrecognized arguments: {' '.join(extras)}", prog)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spoolq", description="Submit, watch and manage the jobs of a "
                     "spool (a queue that is a directory); no daemon needed.",
                     epilog="Run 'spoolq COMMAND --help' for a command's options.")
    add_globals(parser, on_command=False)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help,
                               description=command.description or command.help)
        add_globals(child, on_command=True)
        command.configure(child)
        child.set_defaults(run=command.run)
    _add_demo(sub)
    return parser


def _add_demo(sub: Any) -> None:
    """``demo`` registers its own parser; it takes no Settings (it makes its own spool)."""
    demo.register(sub)
    child = sub.choices["demo"]
    add_globals(child, on_command=True, spool_dir_help=demo.SPOOL_DIR_HELP,
                 fsync_help=demo.FSYNC_HELP)
    child.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace, settings: Settings) -> int:
    return demo.run(args)


def explain(exc: Exception) -> tuple[int, str]:
    """The exit code and the one line an error becomes."""
    if isinstance(exc, UsageError | ConfigError):  # a bad option or SPOOL_* setting
        return EXIT_USAGE, str(exc)
    if isinstance(exc, SpoolError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return EXIT_FAILED, f"{exc.strerror or exc}{where}"
    # A bug: still one line, never a traceback (DESIGN section 5).
    return EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc} (a bug in spoolq; please " \
        "report it)"


def _check_streams(args: argparse.Namespace) -> None:
    """Standard streams closed at start-up (``>&-``) are ``None`` in Python.

    ``print`` to a ``None`` stdout drops the output without a word, and ``print`` to a
    ``None`` stderr writes to stdout: so a closed stderr becomes /dev/null, and a
    closed stdout is refused before anything is done (a submit would otherwise
    drop a job whose id goes nowhere), unless the command prints nothing.
    """
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout = _named(sys.stdout)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A stdout that is not UTF-8 (LC_ALL=C with PYTHONUTF8=0, PYTHONIOENCODING=ascii)
        # stopped ``show`` of a record holding "é" half-way, exit 1 (to ``wait``: the job
        # failed): what it cannot encode is shown as escapes (``\xe9``), as stderr does;
        # JSON carries such characters as JSON escapes (render.json_text).
        codecs.register_error(OUT_ERRORS, _escape)
        sys.stdout.reconfigure(errors=OUT_ERRORS)
    # Only wait's --quiet prints nothing: submit --wait --quiet still prints the id (it
    # was dropped, then print(None stdout) failed as "a bug in spoolq", exit 1).
    silent = args.command == "wait" and getattr(args, "quiet", False)
    if sys.stdout is None and not silent:
        why = "standard output is closed, and it is where spoolq prints its results"
        if args.command == "wait":
            # wait's exit 1 reads as "the job failed" (as in waiting.check_can_follow)
            raise UsageError(f"{why} (--quiet prints nothing: the exit code tells)")
        if getattr(args, "wait", False) is True:
            raise UsageError(f"{why} (submit --wait prints the job's id there, --quiet "
                             "too; nothing was submitted)")
        raise OSError(errno.EBADF, why)


OUT_ERRORS = "spoolq.escape"
"""stdout's error handler: :func:`_escape`."""


def _escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    """A path's bytes that are not UTF-8 (lone surrogates) as those bytes, as Python's
    ``surrogateescape`` writes them (``init`` names the spool it made: the name must be
    the folder's); any other character the encoding lacks as an escape (``\\xe9``)."""
    try:
        return codecs.lookup_error("surrogateescape")(exc)
    except UnicodeError:
        return codecs.lookup_error("backslashreplace")(exc)


def _named(stdout: io.TextIOWrapper) -> io.TextIOWrapper:
    """``stdout`` over fd 1 as :class:`_Stdout`, whose write errors name standard output;
    unbuffered (``PYTHONUNBUFFERED``, ``-u``: set in many containers and units), as a
    line-buffered one that writes each line through at once.  A stream with no descriptor
    (a test's capture) is left as it is.

    Only the write at the end (:func:`flush_stdout`) named standard output: one made as
    the command went (a print past the buffer, each print unbuffered, a large record's
    copy) said "File too large" or "No space left on device", naming nothing.

    Unbuffered, Python hands each print to one write(2) and drops what a partial write
    left over: under a file-size limit, on a disk filling up or to a reader gone mid-way
    (``| head -c 10``), ``ls --json > file`` left the JSON cut short and exited 0, where
    buffered the error line and exit 1 (or 141) tell.  A buffered writer writes the rest
    or raises."""
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        return stdout
    if isinstance(stdout.buffer, _Stdout):
        return stdout  # main run again in one process
    unbuffered = not isinstance(stdout.buffer, io.BufferedIOBase)
    with contextlib.suppress(OSError, ValueError):
        stdout.flush()  # what a caller of main printed before it goes first
    raw = io.FileIO(fd, "w", closefd=False)  # fd 1 stays the old stream's
    return io.TextIOWrapper(_Stdout(raw), encoding=stdout.encoding,
                            errors=stdout.errors, write_through=unbuffered,
                            line_buffering=unbuffered or stdout.line_buffering)


class _Stdout(io.BufferedWriter):
    """stdout's buffer over fd 1: a write that fails raises :class:`OutputError`,
    whichever write of the command it was (a reader gone stays BrokenPipeError: exit
    141).  Over the raw file, not in its place: a raw write in Python took a Ctrl-C
    that came just after its write(2) for a failed write, and the buffer wrote the line
    again at exit (a `cancel` of several said a job twice: a CI run)."""

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError.of(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError.of(exc) from exc


def flush_stdout() -> None:
    """Write out what is buffered for stdout, now, while errors still become exit codes.

    Left to the interpreter's exit, a reader that went away (``| true``) or a full disk
    under ``> file`` came out as "Exception ignored ... BrokenPipeError" (or OSError)
    and exit status 120, whatever the command did (with PYTHONUNBUFFERED set, as in
    many test and container environments, every print raises at once instead)."""
    if sys.stdout is None:  # closed, and the command printed nothing (wait -q)
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        discard(sys.stdout)
        if isinstance(exc, OutputError):  # named by _Stdout
            raise
        raise OutputError.of(exc) from exc


class Remarks(io.TextIOBase):
    """``sys.stderr`` while a command runs.  What spoolq says there is for a person
    (progress, notes, the error line): a write of it that fails turns stderr into
    /dev/null and the command goes on, its exit code its own.  ``spoolq wait ID
    2>>log`` on a full disk (or an fd 2 open for reading only) stopped at the first
    state line, exit 1 ("the job failed") without waiting, its record never printed.
    A reader gone (EPIPE) still ends the command, 141, as it does for stdout."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        with self._lenient():
            self.stream.write(shown(text))  # a path through root's view: the real one
        return len(text)

    def flush(self) -> None:
        with self._lenient():
            self.stream.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The stream's (the bar cuts its line to what the stream writes: escapes)."""
        return self.stream.encoding

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @contextlib.contextmanager
    def _lenient(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError:
            discard(self.stream)  # what is still buffered goes to /dev/null, as the rest


def main(argv: list[str] | None = None) -> int:
    try:
        # --help or --version that cannot be written: one line, exit 1 (parse_args).
        args = parse_args(build_parser(), argv)
    except SystemExit:  # --help printed, or a usage error: the same care for stderr
        try:
            if sys.stderr is not None:  # closed at start-up (2>&-): argparse wrote nothing
                sys.stderr.flush()
        except OSError:
            discard(sys.stderr)
        raise
    settings = None
    try:
        _check_streams(args)
        sys.stderr = cast(TextIO, Remarks(sys.stderr))
        from spool.settings import load_settings  # noqa: PLC0415 - lazy, see spool.cli

        settings = load_settings(spool_dir=args.spool_dir, fsync=args.fsync,
                                 options={"spool_dir": "--spool-dir", "fsync": "--fsync"})
        code = int(args.run(args, settings))
        flush_stdout()
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `spoolq ls | head` (or a reader of stderr gone): stop quietly, and keep the
        # interpreter's final flushes quiet too.
        discard(sys.stdout)
        discard(sys.stderr)
        return EXIT_BROKEN_PIPE
    except SignalAfter as held:  # the error told, then the signal held meanwhile acted on
        if isinstance(held.error, BrokenPipeError):
            # The reader gone as well (a Ctrl-C to `spoolq submit ... | reader` stops
            # both): quiet, as a reader gone is everywhere, and the signal's exit.  It
            # was told as "spoolq: error: Broken pipe".
            discard(sys.stdout)
            discard(sys.stderr)
        else:
            _report(held.error)
        return _act_on(held.signum)
    except NotASpool as exc:
        return _report(_default_said(exc, settings))
    except Exception as exc:
        return _report(exc)
    finally:
        if isinstance(sys.stderr, Remarks):
            sys.stderr = sys.stderr.stream


def _default_said(exc: NotASpool, settings: Settings | None) -> NotASpool:
    """``exc``, saying that the spool is SPOOL_DIR's default when neither SPOOL_DIR nor
    --spool-dir chose it and it is no spool: a new shell without ``export SPOOL_DIR`` was
    told "~/.local/state/spoolq is not an initialised spool; run 'spoolq init'", and
    following that made a second, empty spool beside the one meant."""
    if (settings is None or "spool_dir" in settings.model_fields_set
            # Another spool than the default's (the demo's own, gone under it: QA h378).
            or os.path.realpath(exc.root) != os.path.realpath(settings.spool_dir)):
        return exc
    said = type(exc)(f"{exc} (SPOOL_DIR is not set, nor --spool-dir: that is its default; "
                     "export SPOOL_DIR to use your spool)", exc.root)
    said.__cause__ = exc.__cause__
    return said


def _report(exc: Exception) -> int:
    """Say ``exc`` in its one error line; its exit code."""
    code, message = explain(exc)
    try:
        print(f"spoolq: error: {printable(message)}", file=sys.stderr)  # one line
        flush_stdout()  # what was printed before the error still goes out, if it can
    except OSError:  # nowhere to say it: the exit code tells
        discard(sys.stdout)
        discard(sys.stderr)
    return code


def _act_on(signum: int) -> int:
    """Act on ``signum`` as its handler would have: SIGTERM's or SIGHUP's default ends the
    process here; SIGINT's raises KeyboardInterrupt, exit 130 as everywhere else."""
    with contextlib.suppress(KeyboardInterrupt):
        signal.raise_signal(signum)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
