"""What every ``spoolq`` command is made of, and the exit codes they share.

A command is a :class:`Command`: a name, its help, a function that adds its
arguments and a function that runs it with the parsed arguments and the one
:class:`~spool.settings.Settings`.  ``spool.cli.main`` builds the parser from a
table of them, so adding a command is adding one entry.

Exit codes (DESIGN section 9): :data:`EXIT_OK` success; :data:`EXIT_FAILED`
the thing asked for does not exist or cannot be done (``wait``: the job
failed); :data:`EXIT_USAGE` usage errors; :data:`EXIT_NOT_FINISHED` ``wait``
gave up at its ``--timeout``.  Commands raise :class:`UsageError` for exit 2
and any :class:`~spool.errors.SpoolError` for exit 1; ``main`` turns them into
one line on stderr.  A signal held while the error came (:class:`SignalAfter`) is
acted on after that line: its exit, not the error's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spool.cli.render import printable
from spool.client import Client, denied, require_spool
from spool.durability import FsyncMode
from spool.errors import SpoolError, SpoolIOError
from spool.layout import Layout
from spool.states import JobState
from spool.view import guarded

if TYPE_CHECKING:
    from spool.reader import SpoolReader
    from spool.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FINISHED = 3

Runner = Callable[[argparse.Namespace, "Settings"], int]
Configure = Callable[[argparse.ArgumentParser], None]


class UsageError(Exception):
    """Arguments that parse but make no sense together: exit 2."""


class OutputError(OSError):
    """A write to standard output failed: said "cannot write to standard output: REASON"
    (``reason``, the system's words), whichever write it was (``spool.cli.main``)."""

    reason: str

    @classmethod
    def of(cls, exc: OSError) -> OutputError:
        reason = exc.strerror or str(exc)
        error = cls(exc.errno, f"cannot write to standard output: {reason}")
        error.reason = reason
        return error


class SignalAfter(Exception):
    """``error`` ended a command that held the signal ``signum`` meanwhile (``submit``, as
    it publishes a job): ``main`` prints the error's line, then acts on the signal, whose
    exit it is (130 for SIGINT, death by SIGTERM or SIGHUP), as it was for the signal
    held through a drop that went well."""

    def __init__(self, error: Exception, signum: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.signum = signum


@dataclass(frozen=True, slots=True)
class Command:
    """One ``spoolq`` subcommand."""

    name: str
    help: str
    configure: Configure
    run: Runner
    description: str | None = None


def add_globals(parser: argparse.ArgumentParser, *, on_command: bool,
                spool_dir_help: str = "the spool root (default: SPOOL_DIR)",
                fsync_help: str = "durability of writes (default: SPOOL_FSYNC, else always)",
                ) -> None:
    """``--spool-dir`` and ``--fsync``, which every command takes before or after its name
    (a command with subcommands, such as ``data synth``, adds them to each)."""
    # On a command the defaults are suppressed, so an option given before the
    # command name is not reset by the command's parser.
    default = argparse.SUPPRESS if on_command else None
    parser.add_argument("--spool-dir", metavar="DIR", default=default, help=spool_dir_help)
    parser.add_argument("--fsync", choices=[m.value for m in FsyncMode], default=default,
                        help=fsync_help)


def note(text: str) -> None:
    """A remark for the person at the terminal, one line, its control characters
    escaped (:func:`~spool.cli.render.printable`: a path or an error's text with an
    escape in it reached the terminal, h401); stdout stays data only.

    What stdout holds so far goes out first, so that where both streams reach one file
    or pipe (``>> log 2>&1``, cron's mail) the remark follows what it is about."""
    if sys.stdout is not None:
        sys.stdout.flush()
    print(f"spoolq: {printable(text)}", file=sys.stderr)


def add_json(parser: argparse.ArgumentParser, what: str = "the output") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def reader_of(settings: Settings) -> SpoolReader:
    """A reader of an initialised spool (SpoolIOError naming ``spoolq init`` if not, or
    the spool when this user may not enter it)."""
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli

    layout = layout_of(settings)
    require_spool(layout)
    return SpoolReader(layout)


def layout_of(settings: Settings) -> Layout:
    """The spool's layout, its folders pinned when root runs this on another user's
    spool (:mod:`spool.view`)."""
    return guarded(Layout(settings.spool_dir))


def folders(states: Sequence[JobState]) -> str:
    """``pending/`` or ``running/, done/``: state folders named as a user sees them."""
    return ", ".join(f"{state.value}/" for state in states)


def out_of_reach(states: Sequence[JobState], verb: str = "enter") -> str:
    """The folders this user may not ``verb``, named in a clause of one error line (a
    member of one of the spool's groups only, docs/operations.md "Permissions")."""
    return f"{folders(states)}, which this user may not {verb}"


def check_can_change(layout: Layout, what: str, *, write: Sequence[Path],
                     enter: Sequence[Path] = (), listing: Sequence[Path] = (),
                     instead: str = "", error: type[Exception] = SpoolError) -> None:
    """A SpoolError (exit 1; ``error`` instead where 1 means something else) naming the
    folders, before anything is changed, when this user may not ``write`` to (create and
    remove entries in), ``enter`` or list (``listing``) folders that ``what`` needs.

    A member of one of the spool's groups only (docs/operations.md, "Permissions") got
    EACCES half-way: a submitter's cancel of her own drop moved it out of ``pending/`` into
    ``tmp/`` and then could not write its record to ``failed/``.  ``instead``: where this
    user can do it (after "run it as the spool user").  A folder of ``write`` on a
    filesystem mounted read-only is named as such: no user can write there."""
    read_only = [p.name for p in write if os.path.isdir(p) and _on_read_only_fs(p)]
    if read_only:  # EROFS for root too: no user could, and statusd cannot either
        are = "is" if len(read_only) == 1 else "are"
        raise error(f"{what} needs to write to {', '.join(n + '/' for n in read_only)}, "
                    f"which {are} on a read-only filesystem; remount it read-write (after "
                    "checking the disk if it turned read-only by itself)")
    lacks: list[tuple[str, list[str]]] = []
    named: set[str] = set()  # a folder named once, under the first (widest) need
    for verb, paths, mode in (("write to", write, os.W_OK | os.X_OK),
                              ("list", listing, os.R_OK | os.X_OK), ("enter", enter, os.X_OK)):
        shut = [p.name for p in paths if p.name not in named and os.path.isdir(p)
                and not os.access(p, mode, effective_ids=EFFECTIVE)]
        named.update(shut)
        if shut:
            lacks.append((verb, shut))
    if lacks:
        needs = " and to ".join(f"{verb} {', '.join(name + '/' for name in names)}"
                                for verb, names in lacks)
        raise error(f"{what} needs to {needs}, which this user may not; run it as the spool "
                    f"user{instead} (see Permissions in docs/operations.md)")


def _on_read_only_fs(path: Path) -> bool:
    """Whether ``path`` is on a filesystem mounted read-only (``os.access`` says only that
    it may not be written, as it says for a folder shut to this user)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


EFFECTIVE = os.access in os.supports_effective_ids
"""Whether ``os.access`` can ask as the effective user and group."""


def client_of(settings: Settings, *, usage: bool = False) -> Client:
    """The client of the spool.  ``usage``: a spool this user may not enter is a usage
    error (exit 2), for ``wait`` and ``submit --wait``, whose exit 1 reads as "the job
    failed" (as :func:`spool.cli.waiting.check_can_follow` does for its folders).  A
    change made whose later step failed is a ``warning:`` line on stderr
    (:mod:`spool.committed`): the command goes on to its usual output and exit 0."""
    try:
        return Client.from_settings(settings, warn=lambda text: note(f"warning: {text}"))
    except SpoolIOError as exc:
        if usage and denied(exc):
            raise UsageError(str(exc)) from exc
        raise
