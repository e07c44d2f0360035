"""The tool catalogues live processors publish in their status files, merged by
name: what ``spoolq tools`` and ``GET /api/v1/tools`` list.

A status file's tool list is not checked when it is read (an entry may be any
JSON object); an entry without a string name is left out here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not imported: spoolq's commands load spool.models only when they use it
    from spool.models import OwnerStatus


def catalogue_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """One tool in one shape, from a status file (``execution_*`` keys) or ``tools --json``."""
    return {
        "name": raw["name"],
        "mode": raw.get("mode", raw.get("execution_mode")),
        "timeout": raw.get("timeout", raw.get("execution_timeout")),
        "category": raw.get("category"),
        "max_attempts": raw.get("max_attempts"),
        "description": raw.get("description") or "",
        "params_schema": raw.get("params_schema") or {},
    }


def merged_catalogue(processors: list[OwnerStatus]) -> list[dict[str, Any]]:
    """Every tool the ``processors`` offer, by name; of a name two of them offer, the
    first one's entry."""
    merged: dict[str, dict[str, Any]] = {}
    for status in processors:
        for raw in status.tools:
            if isinstance(raw.get("name"), str):
                merged.setdefault(raw["name"], catalogue_entry(raw))
    return sorted(merged.values(), key=lambda t: t["name"])
