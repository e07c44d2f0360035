"""The tool catalogues live processors publish in their status files, merged by
name: what ``spoolq tools`` and ``GET /api/v1/tools`` list.

A status file's tool list is not checked when it is read (an entry may be any
JSON object): an entry without a string name is left out here, and a value of
the wrong type is given as absent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not imported: spoolq's commands load spool.models only when they use it
    from spool.models import OwnerStatus


def catalogue_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """One tool in one shape, from a status file (``execution_*`` keys) or ``tools --json``.

    A value of the wrong type (a status file another writer left, or one edited) is
    given as absent (null, or an empty description or schema), never passed on: the
    catalogue's readers (``GET /api/v1/tools``'s clients, ``spoolq tools``'s table)
    take these types as the OpenAPI document gives them."""
    timeout = raw.get("timeout", raw.get("execution_timeout"))
    attempts = raw.get("max_attempts")
    description, schema = raw.get("description"), raw.get("params_schema")
    return {
        "name": raw["name"],
        "mode": _text(raw.get("mode", raw.get("execution_mode"))),
        "timeout": timeout if _positive(timeout) else None,
        "category": _text(raw.get("category")),
        "max_attempts": attempts if _positive(attempts) and isinstance(attempts, int) else None,
        "description": description if isinstance(description, str) else "",
        "params_schema": schema if isinstance(schema, dict) else {},
    }


def param_names(schema: dict[str, Any]) -> list[str]:
    """A params JSON Schema's top-level names, a required one marked ``*``.  A model that
    holds itself (a tree's ``children: list[Node]``) has its schema behind a ``$ref``
    into ``$defs``, which is followed (:func:`own_object`): read at the top, such a
    tool was listed as taking no params."""
    schema = own_object(schema)
    properties, required = schema.get("properties"), schema.get("required")
    if not isinstance(properties, dict):
        return []
    needed = set(required) if isinstance(required, list) else set()
    return [f"{name}*" if name in needed else str(name) for name in properties]


def own_object(schema: dict[str, Any]) -> dict[str, Any]:
    """A params JSON Schema's own object: what its top-level ``$ref`` names, for a model
    that holds itself (pydantic puts it in ``$defs``), else the schema itself."""
    target = referred(schema, schema.get("$defs"))
    return target if isinstance(target, dict) else schema


def referred(node: dict[str, Any], defs: object) -> object:
    """What ``node``'s local ``$ref`` (``#/$defs/NAME``) names in ``defs``, the whole
    schema's ``$defs``; None when it has none, or another kind of reference."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and isinstance(defs, dict):
        return defs.get(ref.removeprefix("#/$defs/"))
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _positive(value: object) -> bool:
    """A number above 0 (not a bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def merged_catalogue(processors: list[OwnerStatus]) -> list[dict[str, Any]]:
    """Every tool the ``processors`` offer, by name; of a name two of them offer, the
    first one's entry."""
    merged: dict[str, dict[str, Any]] = {}
    for status in processors:
        for raw in status.tools:
            if isinstance(raw.get("name"), str):
                merged.setdefault(raw["name"], catalogue_entry(raw))
    return sorted(merged.values(), key=lambda t: t["name"])


def catalogue_differences(processors: list[OwnerStatus]) -> list[str]:
    """What the ``processors``' catalogues disagree on, a line a tool: one some of them
    do not offer (it runs only on those that do; see docs/scaling.md), or whose
    ``params_schema`` differs between them (:func:`merged_catalogue` shows the first
    one's).  Empty with one processor, or when they all offer the same tools alike.  The
    merged list alone told an operator nothing of a rolling upgrade's mixed ``SPOOL_TOOLS``
    (h394).  A processor stopping, or hung (its heartbeat stale), is named so: the others
    leave it no job (h398)."""
    if len(processors) < 2:
        return []
    from spool.lease import heartbeat_fresh  # noqa: PLC0415 - lazy, see TYPE_CHECKING

    now = time.time()
    offers: dict[str, list[tuple[str, Any]]] = {}
    for status in processors:
        owner = status.owner + (" (stopping)" if status.stopping else ""
                                if heartbeat_fresh(status, now) else " (hung)")
        for raw in status.tools:
            if isinstance(raw.get("name"), str):
                offers.setdefault(raw["name"], []).append(
                    (owner, catalogue_entry(raw)["params_schema"]))
    lines = []
    for name in sorted(offers):
        owners = [owner for owner, _ in offers[name]]
        if len(set(owners)) < len(processors):
            lines.append(f"{name}: offered by {', '.join(owners)} only, of the "
                         f"{len(processors)} running processors")
        elif any(schema != offers[name][0][1] for _, schema in offers[name]):
            lines.append(f"{name}: the running processors take different params "
                         f"(shown: {owners[0]}'s)")
    return lines
