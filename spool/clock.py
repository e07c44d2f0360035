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


def utc_from_ns(ns: int) -> datetime:
    """A UTC datetime from a file timestamp in nanoseconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC)


def isoformat(ts: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` suffix, microsecond precision."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
