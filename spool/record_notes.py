"""Quarantines' record notes: what a quarantine cut short meant to publish.

A quarantine writes the record it is about to publish as a note in ``stage/``
(:data:`spool.quarantine.RECORD_NOTE`, :func:`spool.quarantine.from_pending`) and
removes it once the record is out; recovery (:class:`spool.staged.Staged`,
:class:`spool.terminal_leftovers.TerminalLeftovers`) gives a quarantine cut short the
record its note holds, with the drop's name and why it was refused.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from pydantic import ValidationError

from spool.clock import utc_from_ns
from spool.ids import id_from_name
from spool.layout import StagingName, parse_staging
from spool.models import Record
from spool.quarantine import RECORD_NOTE
from spool.staged import DEAD_STAGING_AGE_S, may_live
from spool.transitions import Spool


class Noted(NamedTuple):
    """A note's record, with the drop's name and why it was refused; ``staged_id``: the
    id the drop was staged under (its record's id differs beside an earlier original);
    ``inode``: the drop's (None: a note an earlier spoolq named by the id alone)."""

    record: Record
    name: str
    message: str
    staged_id: str
    inode: int | None


class RecordNotes:
    """The records quarantines were about to publish, as notes in ``stage/``
    (:data:`spool.quarantine.RECORD_NOTE`), as one recovery pass found them: a
    quarantine cut short gets the record it meant, with the drop's name and why it was
    refused, where recovery alone knows neither.

    A note belongs to the drop whose inode it names, staged or in ``failed/`` (a rename
    keeps the inode, size and mtime its record took), under the staged id or its
    record's: never to another drop of the name, such as one a later quarantine, cut
    short too, staged (on the inode of the first, were that purged since).  A note of
    any age is read (a processor killed mid-quarantine may start again days later); one
    over a day old is removed after the pass, whoever wrote it.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.paths: dict[str, tuple[StagingName, float]] = {}  # note's path -> (its name, age)
        self.records: dict[int | None, list[Noted]] = {}  # a drop's inode -> its notes

    def collect(self, listed: list[os.DirEntry[str]]) -> set[str]:
        """Read the notes among ``stage/``'s entries (there are none but for quarantines
        in flight or cut short); their paths."""
        self.paths.clear()
        self.records.clear()
        now_s = self.spool.clock.now().timestamp()
        for entry in listed:
            parsed = parse_staging(entry.name)
            if parsed is None or not parsed[0].startswith(RECORD_NOTE + "-"):
                continue
            try:
                age_s = now_s - entry.stat(follow_symlinks=False).st_ctime
            except FileNotFoundError:
                continue
            self.paths[entry.path] = (parsed, age_s)
            try:
                with open(entry.path, "rb") as file:
                    record = Record.model_validate_json(file.read())
            except (OSError, ValidationError):
                continue  # unreadable: the quarantine's record is made without it
            if record.source is None or record.error is None:
                continue  # not a quarantine's record: none is written so
            named = parsed[0].removeprefix(RECORD_NOTE + "-")
            inode, _, staged_id = named.partition("-")
            key: int | None = int(inode) if inode.isdigit() else None
            if named in (id_from_name(record.source.name), record.id):
                key, staged_id = None, named  # record-<staged id>: an earlier spoolq's
            elif key is None:
                continue  # no drop's note
            self.records.setdefault(key, []).append(Noted(
                record, record.source.name, record.error.message, staged_id, key))
        return set(self.paths)

    def look_again(self) -> None:
        """Read ``stage/``'s notes afresh.  A quarantine writes its note before it moves
        the drop into ``failed/``: one that began after this pass listed ``stage/`` (a
        second processor's) has its note there by the time the pass finds its original
        without a record, and the pass gives it the record it meant, not one that says
        neither the drop's name nor why it was refused."""
        try:
            with os.scandir(self.spool.layout.stage) as listed:
                self.collect(list(listed))
        except FileNotFoundError:
            return

    def record_now(self, job_id: str, st: os.stat_result) -> Noted | None:
        """:meth:`record`, looking at ``stage/`` again when the notes read so far have
        none (:meth:`look_again`: a quarantine begun since, another processor's)."""
        noted = self.record(job_id, st)
        if noted is None:
            self.look_again()
            noted = self.record(job_id, st)
        return noted

    def record(self, job_id: str, st: os.stat_result) -> Noted | None:
        """The record a quarantine meant for the drop ``st``, staged as ``job_id`` or
        in ``failed/`` as ``job_id``'s original."""
        mtime = utc_from_ns(st.st_mtime_ns)
        candidates = self.records.get(st.st_ino, []) + self.records.get(None, [])
        for noted in candidates:
            source = noted.record.source
            # Not another drop on a freed inode, nor one of the name beside it:
            if (job_id in (noted.staged_id, noted.record.id)
                    and noted.record.submitted_at == mtime
                    and source is not None and source.size in (None, st.st_size)):
                return noted
        return None

    def drop_dead(self) -> int:
        """Remove the notes of dead writers (their quarantines are settled by now), and
        those older than :data:`DEAD_STAGING_AGE_S` (a live process's, as its pid was
        reused: a quarantine takes milliseconds); see :func:`spool.staged.may_live`."""
        return sum(self.spool.mover.unlink(path) for path, (staged, age_s) in self.paths.items()
                   if age_s > DEAD_STAGING_AGE_S or not may_live(staged, age_s))
