"""The reader ``ls`` and ``show`` look through: the folders this user may look into.

A module of its own because it is built on :class:`spool.large.BoundedReader`, and
so on the record models: the commands import it when they run, never to build the
parser (see :mod:`spool.cli`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from spool.cli.command import EFFECTIVE
from spool.large import PARSE_MAX_BYTES, BoundedReader
from spool.layout import Layout
from spool.models import Record
from spool.reader import Entry
from spool.states import ACTIVE, JobState


class UserReader(BoundedReader):
    """A reader of the state folders this user may look into, that notes the jobs whose
    file in ``pending/`` or ``running/`` it may not read.

    Under ``spoolq init --system`` a submitter's drop keeps group ``spoolq-submit`` until
    its record is written, so a member of the spool's group only may not read a running
    job's file (docs/operations.md, "Permissions").  The reader takes such a file for one
    gone (a job not found, a row not listed); ``unread`` lets the command say why.
    """

    def __init__(self, layout: Layout, states: Iterable[JobState] = JobState, *,
                 whole_max: int = PARSE_MAX_BYTES) -> None:
        super().__init__(layout, states, whole_max=whole_max)
        self.unread: dict[str, JobState] = {}

    def load(self, entry: Entry, *, strict: bool = False) -> Record | None:
        record = super().load(entry, strict=strict)
        if record is None and entry.state in ACTIVE and os.path.isfile(entry.path) and \
                not os.access(entry.path, os.R_OK, effective_ids=EFFECTIVE):
            self.unread[entry.job_id] = entry.state
        return record
