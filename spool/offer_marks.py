"""When each tool was last offered on the spool: a record that outlives the processors.

``offers/<key>`` (:meth:`spool.layout.Layout.offer_str`) is an empty file per tool whose
mtime every processor that offers the tool sets at each heartbeat while it claims (not
once stopping).  The status files say what the live processors offer, and a crashed one
what it offered until a recovery removes its files; a processor that stopped cleanly, or
was killed before another read its status file, left nothing there.  A processor started
in that window (a rolling upgrade: the only processor offering a tool restarting, this
one restarting beside it) took the tool for one nobody offers and failed its jobs
``unknown_tool`` at once (the rolling-upgrade soak under load: up to 90 of 825; h414).
A mark under a restart's grace old leaves the tool's jobs waiting for it instead
(:mod:`processor.elsewhere`), and the clients take them (:func:`spool.stats.catalogue_refusal`).

Guarantees:

* a mark is only ever made or touched, never removed (one this user may not date,
  another user's, is replaced by one of its own): a tool offered once on a spool
  keeps a file of no bytes, and one whose mark is older than the grace counts for
  nothing;
* marks are advisory: a mark that cannot be made or read (``offers/`` not writable, the
  disk full, a spool made before it) leaves things as they were without them;
* a symlink in ``offers/`` is never followed, by the writer or the readers.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable

from spool.errors import SpoolIOError
from spool.fsops import FILE_MODE, Mover
from spool.layout import Layout

RESTART_GRACE_S = 60.0
"""How long past the moment a processor last offered a tool its jobs are still left to
it, beyond its stop's grace: a restart of the only processor that offers it
(``systemctl restart``: a stop, its ``SPOOL_GRACE_S``, a start that loads its tools) made
another one fail every waiting job of that tool ``unknown_tool`` at once, 5.5 s after
the stop (h398)."""

LATELY_S = 10.0
"""How recent another user's mark may be for a processor to leave it as it is (that
user's processor dates it at each heartbeat, 1 s); older, it is replaced."""

_MARK_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def offered_within(layout: Layout, tool: str, grace_s: float, now: float) -> float | None:
    """How many seconds before ``now`` (the wall clock) a processor last offered ``tool``
    on the spool, when under ``grace_s``; None when longer, never, or it cannot be told.
    A mark dated ahead of ``now`` (another host's clock, a clock set back) counts by how
    far off it is."""
    try:
        st = os.lstat(layout.offer_str(tool))
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    age = abs(now - st.st_mtime)
    return age if stat.S_ISREG(st.st_mode) and age < grace_s else None


def offered_lately(layout: Layout, grace_s: float) -> Callable[[str], float | None]:
    """For a client of the spool (``spoolq submit`` and ``show``, statusd's POST): how
    long ago a tool was last offered, within the processors' grace for a restart
    (``grace_s``, their ``SPOOL_GRACE_S``, then :data:`RESTART_GRACE_S`), as they judge
    it; None past it."""
    return lambda tool: offered_within(layout, tool, grace_s + RESTART_GRACE_S, time.time())


class OfferMarks:
    """A processor's marks of the tools it offers, touched by :meth:`touch`; ``mover``
    replaces a mark this user may not date (:meth:`_replace`)."""

    def __init__(self, mover: Mover, tools: Iterable[str]) -> None:
        self.mover = mover
        self.layout = mover.layout
        self.paths = [self.layout.offer_str(tool) for tool in tools]

    def touch(self) -> None:
        """Date every mark now, making those missing (and ``offers/``, with ``owners/``'s
        mode, on a spool made before it).  OSError (or the Mover's SpoolIOError) when one
        cannot be: the rest are still tried."""
        failed: OSError | SpoolIOError | None = None
        for path in self.paths:
            try:
                os.utime(path, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    self._make(path)
                except OSError as exc:
                    failed = exc
            except PermissionError:
                try:
                    if not self._dated_lately(path):
                        self._replace(path)
                except (OSError, SpoolIOError) as exc:
                    failed = exc
            except OSError as exc:
                failed = exc
        if failed is not None:
            raise failed

    def _make(self, path: str) -> None:
        try:
            fd = os.open(path, _MARK_FLAGS, FILE_MODE)
        except FileNotFoundError:
            folder = self.layout.offers
            mode = stat.S_IMODE(os.stat(self.layout.owners).st_mode)
            try:
                os.mkdir(folder, mode)
                os.chmod(folder, mode)  # as owners/, the umask notwithstanding
            except FileExistsError:
                pass
            fd = os.open(path, _MARK_FLAGS, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # as every file spoolq writes (operations.md)
        finally:
            os.close(fd)

    @staticmethod
    def _dated_lately(path: str) -> bool:
        """Whether the mark at ``path`` was dated in the last :data:`LATELY_S`: another
        user's processor offering the tool dates it itself.  Replaced at each heartbeat,
        the marks of two users' processors took turns, a write and a rename a tool a
        second each (QA h419)."""
        return abs(time.time() - os.lstat(path).st_mtime) < LATELY_S

    def _replace(self, path: str) -> None:
        """A mark this user may not date, another user's (root ran a processor on the
        spool: its marks 0640, root's), replaced by one of this user's, published over it
        (the spool user owns ``offers/``).  Dated no more, such a mark aged past the
        grace while this processor offered its tool, and the processor warned of it at
        each start, as marks are never removed (QA h417)."""
        self.mover.publish(path, b"", durable=False)
