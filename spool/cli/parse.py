"""Parsing what people type: durations, timestamps, ``key=value`` params."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

import orjson

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds (argparse type)."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 15m, 12h, "
                                         "7d, 2w)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def positive_seconds(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def timestamp(text: str) -> datetime:
    """ISO 8601 with an offset (``Z`` allowed), or epoch seconds (argparse type)."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a timestamp: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. "
                                         "2026-11-28T12:00:00Z")
    return value


def json_value(text: str) -> Any:
    """``text`` as JSON when it parses, else the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def key_values(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; ValueError on a pair without ``=``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"-p expects key=value, got {pair!r}")
        params[key] = json_value(value)
    return params


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (argparse type)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
