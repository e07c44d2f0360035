"""Entries kept in their own folder, and the records that account for them.

A directory spoolq may neither move out of its folder nor remove (another user's) is
renamed within that folder to ``.<name>.kept-<id>`` (:meth:`spool.layout.Layout.kept_str`)
beside a failed record ``failed/<id>.json`` (``invalid_job``, ``source.kept_at`` saying
where it is) that tells an operator to remove it.  Every pass and reader ignores the
kept name, so that record is the only thing that accounts for the entry.  This module
owns what keeps the two together:

* :class:`KeptLedger` (recovery) writes the record of a kept entry that has none: its
  writer was killed between the rename and the record.  It writes under the id the name
  carries, never over anything at the record's name, so a second pass changes nothing.
  Only names whose id is one spoolq gives (``invalid-<UTC time>-<6 hex>``) are taken
  for kept entries, and one kept less than :data:`KEPT_GRACE_S` ago (by that time) is
  left to its writer, which may still be writing the record, and looked at again by
  every later pass.
* :func:`held_entry` and :func:`held_by_record_file` (purge) tell whether a record's
  kept entry is still there: such a record is kept until an operator has removed the
  entry.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from spool.clock import utc_from_ns
from spool.errors import ErrorType, UnreadableDrop
from spool.fsops import failing_file, failing_read, is_there
from spool.ids import JOB_SUFFIX
from spool.layout import FOLDER_NAMES, KEPT_TAG, Layout, is_kept_name
from spool.models import ErrorInfo, Record, Source, kind_of, parse_record, record_bytes
from spool.reader import read_regular
from spool.states import JobState
from spool.text import valid_text
from spool.transitions import Spool

KEPT_GRACE_S = 10.0
"""How long after its id's time a kept entry without a record is left to its writer."""
KEPT_RECORD_MAX_BYTES = 64 * 1024
"""The largest record :func:`held_by_record_file` reads (a kept entry's is under 2 KiB)."""
_KEPT_NAME_BYTES = 200
"""The most of its old name a kept name keeps (as :meth:`Layout.kept_str` cuts it)."""
_KEPT_ID = re.compile(r"invalid-(\d{8}T\d{6}Z)-[0-9a-f]{6}")
"""The ids :func:`spool.ids.invalid_id` gives, the only ones a kept name carries."""


def kept_record_id(name: str) -> str | None:
    """The id of the record of the kept entry ``name``; None when ``name`` is not one."""
    if not is_kept_name(name):
        return None
    record_id = name.rpartition(KEPT_TAG)[2]
    return record_id if _KEPT_ID.fullmatch(record_id) else None


def kept_since(record_id: str) -> datetime:
    """When the entry kept under ``record_id`` (one :func:`kept_record_id` gave) was kept,
    by its writer's clock, to the second."""
    match = _KEPT_ID.fullmatch(record_id)
    assert match is not None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def held_entry(layout: Layout, record: Record) -> str | None:
    """The path of the kept entry ``record`` accounts for while it is still there, else
    None (no kept entry named, or it is gone: removed by an operator).  Raised when the
    disk cannot say (:func:`~spool.fsops.is_there`: EIO as that entry's
    :class:`~spool.errors.UnreadableDrop`, which purge keeps and names).

    ``source.kept_at`` is ``<folder>/<name>`` with bytes that are not UTF-8 written as
    escapes; where it holds a backslash, the folder is searched for the one kept name
    that carries the record's id.
    """
    kept_at = record.source.kept_at if record.source is not None else None
    folder_name, _, name = (kept_at or "").partition("/")
    if (kept_record_id(name) != record.id
            or folder_name not in FOLDER_NAMES):
        return None  # not a kept name of this record's in a folder of the spool
    path = layout.folder_named(folder_name) / name
    # Not os.path.lexists, which took the disk failing (EIO) for nothing there: purge
    # removed the record of an entry still in place, then accounted for by nothing.
    if is_there(path, f"cannot look up {kept_at}, which a record accounts for"):
        return str(path)
    return _search(path.parent, record.id) if "\\" in name else None


def _search(folder: Path, record_id: str) -> str | None:
    """The path of the kept entry of ``record_id`` in ``folder``, if one is there."""
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if kept_record_id(entry.name) == record_id:
                    return entry.path
    except (FileNotFoundError, NotADirectoryError):
        pass
    return None


def held_by_record_file(layout: Layout, path: str | os.PathLike[str]) -> str | None:
    """The ``kept_at`` of the record file at ``path`` while its kept entry is still there
    (:func:`held_entry`), else None.  Only a record of an id spoolq gives a kept entry is
    read (a few hundred bytes).  SpoolIOError when it cannot be opened for lack of
    descriptors: read as none, its record was purged with its entry still there.
    UnreadableDrop when the disk fails its read, or the lookup of its kept entry (EIO):
    that record's trouble, which purge keeps and names while it removes the others."""
    if not _KEPT_ID.fullmatch(os.path.basename(path).removesuffix(JOB_SUFFIX)):
        return None
    try:
        data = read_regular(path, KEPT_RECORD_MAX_BYTES, strict=True)
    except OSError as exc:  # strict: only what says the record cannot be read now
        if (trouble := failing_file(exc, f"cannot read {os.fspath(path)}")) is not None:
            raise trouble from exc
        raise failing_read(exc, "cannot read a kept entry's record") or exc from exc
    try:
        record = parse_record(data) if data is not None else None
    except ValueError:  # pydantic's ValidationError too: no record, nothing it keeps
        return None
    if record is None or held_entry(layout, record) is None:
        return None
    assert record.source is not None and record.source.kept_at is not None
    return record.source.kept_at


class KeptLedger:
    """Writes the missing records of kept entries, for one :class:`~spool.recovery.Recovery`.

    A pass :meth:`note`\\ s the kept names it meets; :meth:`settle` then records those
    whose record is missing and whose writer has had :data:`KEPT_GRACE_S`; younger ones
    are kept in mind and settled by a later pass, wherever they are.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._noted: set[str] = set()
        self._young: set[str] = set()

    def note(self, path: str) -> None:
        """``path`` is an entry a pass found; only a kept one is settled."""
        if kept_record_id(os.path.basename(path)) is not None:
            self._noted.add(path)

    def note_folder(self, folder: Path) -> None:
        """Note every kept entry of ``folder``, which a pass does not list otherwise."""
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if is_kept_name(entry.name):
                        self.note(entry.path)
        except FileNotFoundError:
            return

    def settle(self, unreadable: list[str] | None = None) -> list[str]:
        """Record every noted (or earlier young) kept entry that has no record; the ids of
        the records written.  One the disk cannot look up (EIO) is said in ``unreadable``
        and kept in mind for a later pass: raised, it failed the pass (a pause at each)
        for as long as the sector stayed bad.  (Its record's lookup may take an error for
        none there: the record is then published never over anything at its name.)"""
        paths, self._noted = self._noted | self._young, set()
        self._young = set()
        written = []
        for path in sorted(paths):
            try:
                record_id = self._settle(path)
            except UnreadableDrop as exc:
                self._young.add(path)
                if unreadable is not None:
                    unreadable.append(str(exc))
                continue
            if record_id is not None:
                written.append(record_id)
        return written

    def _settle(self, path: str) -> str | None:
        record_id = kept_record_id(os.path.basename(path))
        assert record_id is not None
        layout = self.spool.layout
        record_path = layout.job_str(JobState.FAILED, record_id)
        if os.path.lexists(record_path):
            return None  # its record (or something at its name: not ours to replace)
        age_s = (self.spool.clock.now() - kept_since(record_id)).total_seconds()
        if abs(age_s) < KEPT_GRACE_S:
            self._young.add(path)  # its writer may be writing the record now
            return None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # removed by an operator, or put back by its writer
        except OSError as exc:
            where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
            if (bad := failing_file(exc, f"cannot look up {valid_text(where)}")) is None:
                raise
            raise bad from exc
        record = self._record(record_id, path, st)
        if not self.spool.mover.publish(record_path, record_bytes(record), replace=False):
            return None  # its writer's record came meanwhile
        return record_id

    def _record(self, record_id: str, path: str, st: os.stat_result) -> Record:
        """The record :meth:`Spool.keep_in_place` would have written, but for what its
        writer alone knew (why it kept the entry)."""
        folder, _, name = path.rpartition("/")
        folder_name = os.path.basename(folder)
        kept_at = valid_text(f"{folder_name}/{name}")
        head = name[1:].rpartition(KEPT_TAG)[0]
        stood = valid_text(f"{folder_name}/{head}")
        cut = (" (or a longer name starting so)"
               if len(os.fsencode(head)) >= _KEPT_NAME_BYTES else "")
        spool = self.spool
        message = (
            f"found at {kept_at} without its record: spoolq renamed it there from "
            f"{stood}{cut}, as the spool user could neither move it out of {folder_name}/ "
            "nor remove it, and the process that did so was killed before writing this "
            "record; spoolq ignores it: an operator must remove it")
        return Record(
            id=record_id, state=JobState.FAILED, submitted_at=utc_from_ns(st.st_mtime_ns),
            finished_at=spool.clock.now(), host=spool.host, pid=spool.pid,
            error=ErrorInfo(type=ErrorType.INVALID_JOB, message=message),
            source=Source(name=stood, size=None, kind=kind_of(st.st_mode), kept_at=kept_at))
