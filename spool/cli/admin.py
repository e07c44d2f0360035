"""Commands that keep a spool: ``init`` and ``purge``.

``init`` is idempotent: run it again (say from a unit's ``ExecStartPre``) and
it changes nothing that is already right.  ``purge`` removes only finished
records (and quarantined originals beside them) through
:meth:`spool.client.Client.purge`; ``--dry-run`` asks it to count, not remove.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import stat
from typing import TYPE_CHECKING

from spool.cli import parse
from spool.cli.command import (
    EXIT_FAILED,
    EXIT_OK,
    Command,
    UsageError,
    add_json,
    check_can_change,
    client_of,
    note,
)
from spool.cli.render import emit_json, printable_path
from spool.cli.system import DEFAULT_GROUP, DEFAULT_USER, DROP_MODE, init_system
from spool.errors import SpoolError
from spool.fsops import Mover
from spool.layout import Layout
from spool.states import TERMINAL, JobState
from spool.view import guarded, shown

if TYPE_CHECKING:
    from spool.purge import PurgeReport
    from spool.settings import Settings

# -- init -----------------------------------------------------------------------------------


def _configure_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", action="store_true",
                        help="system spool: Postfix-style owners and modes (needs root)")
    parser.add_argument("--user", help=f"with --system: the spool's owner, who runs the "
                        f"daemons (default {DEFAULT_USER})")
    parser.add_argument("--group", help=f"with --system: the group that may submit "
                        f"(default {DEFAULT_GROUP})")
    add_json(parser, "the spool root and its folders")


def run_init(args: argparse.Namespace, settings: Settings) -> int:
    layout = Layout(settings.spool_dir)
    if args.system:
        init_system(layout, settings.fsync, args.user or DEFAULT_USER,
                    args.group or DEFAULT_GROUP)
    elif args.user or args.group:
        raise UsageError("--user and --group go with --system")
    else:
        _not_anothers_as_root(layout)
        Mover(layout, settings.fsync).make_folders()
    if args.json:
        emit_json({"spool": str(layout.root), "system": args.system or _is_system(layout),
                   "folders": [p.name for p in layout.all_folders()]})
    else:
        print(printable_path(f"spool ready at {layout.root}"))
    return EXIT_OK


def _is_system(layout: Layout) -> bool:
    """The spool is a system spool (``init --system`` made it): its ``pending/`` has the
    setgid and sticky bits of :data:`~spool.cli.system.DROP_MODE`.  The spool user's
    own ``init --json`` of one said ``"system": false``, of whether --system was given
    (h386)."""
    try:
        mode = layout.folder(JobState.PENDING).stat().st_mode
    except OSError:
        return False
    special = stat.S_ISGID | stat.S_ISVTX
    return mode & special == DROP_MODE & special


def _not_anothers_as_root(layout: Layout) -> None:
    """Refuse a plain init by root of another user's spool short of a folder: the folders
    it made were root's, mode 0750, and that user's processor failed on them at its next
    start.  A whole one is left as it is (again, harmless)."""
    try:
        owner = layout.root.stat().st_uid
    except OSError:
        return
    if os.geteuid() == 0 and owner != 0 and not all(
            folder.is_dir() for folder in layout.all_folders()):
        try:
            name = pwd.getpwuid(owner).pw_name
            whose, user = f"{name}'s (uid {owner})", name
        except KeyError:  # no name: sudo takes a uid as #UID (a bare number is a name)
            whose, user = f"uid {owner}'s (no user of that name)", f"#{owner}"
        # Only --system was named: a user's own spool made before offers/ (which its
        # processor makes) was to be turned into a system spool to be mended (QA h417).
        raise SpoolError(f"{layout.root} is {whose}: run spoolq init as "
                         f"that user (sudo -u {shlex.quote(user)} spoolq init --spool-dir "
                         f"{shlex.quote(str(layout.root))}), or, for a system spool, mend it "
                         "with its owners and modes as root: spoolq init --system --user "
                         "USER --group GROUP")
    guarded(layout)  # a whole one of another's, but a folder a symlink: said, not "ready"


# -- purge ----------------------------------------------------------------------------------


def _configure_purge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", type=parse.age, required=True,
                        metavar="DURATION", help="finished before this long ago, with its "
                        "unit: 30s, 15m, 12h, 7d, 2w")
    parser.add_argument("--state", choices=["done", "failed", "all"], default="all",
                        help="which finished records (default all)")
    parser.add_argument("--dry-run", action="store_true",
                        help="count what would go; remove nothing")
    add_json(parser, '{"removed": n, "kept": n, "held": [path, ...], "unreadable": '
             '[error, ...], "unremoved": [error, ...], "dry_run": bool}')


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    states = sorted(TERMINAL) if args.state == "all" else [JobState(args.state)]
    client = client_of(settings)
    folders = [client.layout.folder(state) for state in states]
    check_can_change(client.layout, "spoolq purge" + " --dry-run" * args.dry_run,
                     write=[] if args.dry_run else folders,
                     listing=folders if args.dry_run else [])
    try:
        report = client.purge(args.older_than, states, dry_run=args.dry_run)
    except KeyboardInterrupt:
        if not args.dry_run:  # it said nothing, thousands removed by then (QA)
            note("interrupted: what was removed so far stays removed (the records being "
                 "removed then are finished first); run it again to purge the rest")
        raise
    removed, kept = report.removed, report.kept
    if args.json:
        emit_json({"removed": removed, "kept": kept, "held": list(report.held),
                   "unreadable": [shown(error) for error in report.unread],
                   "unremoved": [shown(error) for error in report.unremoved],
                   "dry_run": args.dry_run})
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {removed} record(s) older than {parse.duration_text(args.older_than)}; "
              f"kept {kept}")
        if report.held:
            # Each is the only account of another user's directory spoolq could not move.
            print(f"{len(report.held)} of them stay while what they record is there; "
                  "remove it (as its owner or root) and purge again:")
            for kept_at in report.held:
                print(printable_path(f"  {client.layout.root / kept_at}"))
    return _said_trouble(report)


UNREMOVED_SAID = 20
"""The most records a purge names whose removal the disk failed (the rest counted): on a
disk failing every unlink, a line each for a spool's worth of records."""


def _said_trouble(report: PurgeReport) -> int:
    """Name the records the disk kept the purge from; exit 1 if any, the rest purged."""
    # Each may account for a kept entry still there: kept, said, and exit 1 once the
    # rest is purged (it failed the whole purge, nothing removed).
    for error in report.unread:
        note(f"error: kept a record whose read the disk failed: {error}")
    # Each in its folder again (raised, the first one ended the purge, and left every
    # record staged by then invisible in stage/, QA).
    for why in report.unremoved[:UNREMOVED_SAID]:
        note(f"error: {why}")
    if (more := len(report.unremoved) - UNREMOVED_SAID) > 0:
        note(f"error: and {more} more record(s) whose removal the disk failed, kept")
    return EXIT_FAILED if report.unread or report.unremoved else EXIT_OK


INIT = Command(
    "init", "create the spool's folders (idempotent)", _configure_init, run_init,
    description="Create the spool's folders; running it again is harmless.  With "
    "--system (as root): pending/ and tmp/ get mode 3730, owner the spool user and "
    "group the submit group, so members can drop jobs (new files keep the group) "
    "but cannot list what others dropped (one who knows a waiting job's id can read "
    "it: drops are group-readable, for the processor); the other folders get mode 0750, "
    "private to the spool user and its group, but stage/ (the processor's own staging) "
    "gets 0700.  The user and group must exist "
    "(useradd/groupadd) and the user must be in the submit group to read the drops.")
PURGE = Command(
    "purge", "remove finished records older than a duration", _configure_purge,
    run_purge,
    description="Remove done/failed records whose files are older than --older-than "
    "(and the quarantined originals beside failed ones).  Pending and running jobs "
    "are never touched; a running file whose run is recorded and whose processor died "
    "before removing it is removed first (as the next recovery would), and a record it "
    "cannot so settle is kept.  Exit 1, with nothing removed, when this user may not write to "
    "(with --dry-run: list) those folders; exit 1 too when the disk failed the read of a "
    "record purge must read to judge (a kept entry's), or a record's removal: that "
    "record is kept (in its folder) and named, the others purged.")
