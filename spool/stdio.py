"""What the daemons' and the CLI's commands share about their standard streams.

``--help`` and ``--version`` (:class:`Parser`, :func:`parse_args`) tell a failed write
as every other output of the CLI does: one line on stderr and exit status 1, 141 when
the reader went away.  argparse drops an OSError as it writes its help, so ``spoolq
--help > /dev/full`` exited 0 in silence (a script's ``> help.txt`` on a full disk read
as written), or 120 with "Exception ignored" once the interpreter's exit flushed the
text; ``--version`` there was a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from spool.text import bytes_quoted

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXIT_BROKEN_PIPE = 141
"""A reader that went away (``| head``): what a shell reports for a death by SIGPIPE,
said quietly."""
EXIT_OUTPUT = 1
"""Standard output could not be written (a full disk, a descriptor open for reading)."""


class Parser(argparse.ArgumentParser):
    """argparse whose help text, once asked for, is written or raises (see the module's
    docstring); with standard output closed it goes to stderr, as argparse does.  A
    usage error is one line, as every other error of the daemons is
    (``spool-processor --job-num abc`` printed argparse's usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {bytes_quoted(message)} (see '{self.prog} "
                  "--help')\n")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        file = file or sys.stdout
        if file is None:
            super().print_help()
            return
        file.write(self.format_help())  # flushed by parse_args, as the exit comes


_INTEGER = re.compile(r"[+-]?[0-9]+")


def integer(text: str) -> int:
    """An argument's whole number in ASCII digits: ``int`` also reads ``4_0`` (as 40),
    blanks around it and other scripts' digits, so ``--job-num 4_0`` ran forty workers."""
    if not _INTEGER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, the text of ``--help`` or ``--version`` written out
    before the exit it asks for: when it cannot be, one line and :data:`EXIT_OUTPUT`
    (quietly :data:`EXIT_BROKEN_PIPE` for a reader gone) as a SystemExit."""
    try:
        try:
            return parser.parse_args(argv)
        except SystemExit:
            if sys.stdout is not None:  # what is buffered: its error now, not at the exit
                sys.stdout.flush()
            raise
    except OSError as exc:
        raise SystemExit(output_failed(parser.prog, exc)) from None


def output_failed(prog: str, exc: OSError | None) -> int:
    """Standard output could not be written (``exc``; None when it is closed): the exit
    status, :data:`EXIT_BROKEN_PIPE` for a reader gone (quietly), else
    :data:`EXIT_OUTPUT` after one line on stderr.  What is still buffered is discarded."""
    if exc is not None:
        discard(sys.stdout)
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    why = "it is closed" if exc is None else exc.strerror or str(exc)
    if sys.stderr is not None:
        with contextlib.suppress(OSError):  # stderr full too
            print(f"{prog}: error: cannot write to standard output: {why}",
                  file=sys.stderr, flush=True)
    return EXIT_OUTPUT


def discard(stream: TextIO | None) -> None:
    """Point ``stream``'s descriptor at /dev/null: what is still buffered goes there at
    exit, so the interpreter's final flush cannot fail a second time ("Exception ignored
    ...")."""
    if stream is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no descriptor
            to_devnull(stream.fileno())


def open_standard_fds() -> None:
    """Fds 0, 1 and 2 open, each on /dev/null where it was closed (a daemon started
    with ``>&-`` or ``2>&-``), and ``sys.stdout`` and ``sys.stderr`` on them.  Left
    closed, the daemon's next descriptors took their numbers: its log went into an
    internal pipe, a forkserver's stderr was its listening socket, and a FAST tool's
    write to fd 1 failed EBADF (QA).  A daemon under systemd always has all three."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free: ``fd`` itself
            if opened != fd:
                os.dup2(opened, fd)  # inheritable
                os.close(opened)
            else:  # opened close-on-exec, as Python opens: closed again in each child
                os.set_inheritable(fd, True)
    if sys.stdout is None:
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - for good
    if sys.stderr is None:
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - for good


def to_devnull(*fds: int) -> None:
    """Point each of ``fds`` at /dev/null, for writing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)
