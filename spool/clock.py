"""The one choke point for time, so tests and loops can control it.

Wall-clock times are timezone-aware UTC; intervals use ``monotonic()``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def utc_from_ns(ns: int) -> datetime:
    """A UTC datetime from a file timestamp in nanoseconds.

    tmpfs, xfs and btrfs keep 64-bit times, so a file can say a year ``datetime``
    cannot hold (``touch -d @99999999999999``, copied on by ``cp -p``): it reads as
    the nearest time that can be held, not as an error in whatever reads it.
    """
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC)
    except (OverflowError, ValueError, OSError):
        return _LATEST if ns > 0 else _EARLIEST


def isoformat(ts: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` suffix, microsecond precision."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
