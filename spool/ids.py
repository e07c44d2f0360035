"""Job ids: validation and generation.

A job's id is its file name without ``.json``.  Every id is checked here
before any path is built from it, so no id can name a place outside its
folder.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_SUFFIX = ".json"


def is_valid_id(value: str) -> bool:
    """True when ``value`` is a valid job id (fullmatch, so no trailing newline)."""
    return ID_RE.fullmatch(value) is not None


def id_from_name(name: str) -> str | None:
    """The id of a job file name ``<id>.json``, or None when the name is not one."""
    if not name.endswith(JOB_SUFFIX):
        return None
    stem = name[: -len(JOB_SUFFIX)]
    return stem if is_valid_id(stem) else None


def new_job_id(now: datetime) -> str:
    """A fresh, sortable id: ``<yyyymmddThhmmss>-<12 random hex>``."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"


def invalid_id(now: datetime) -> str:
    """The id given to a quarantined file whose own name is not a valid id."""
    return f"invalid-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
