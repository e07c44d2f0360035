"""How durable the spool's writes are: ``SPOOL_FSYNC`` / ``--fsync`` (DESIGN section 7).

A module of its own, with no import beyond the standard library, so that what only
names the modes (``spoolq``'s parser, :mod:`spool.fsops`) does not load the settings
library; :mod:`spool.settings` re-exports :class:`FsyncMode`.
"""

from __future__ import annotations

from enum import StrEnum


class FsyncMode(StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"
