"""Parsing what people type: durations, timestamps, ids and ``key=value`` params.

Each parser is an argparse ``type``: a bad value raises
``argparse.ArgumentTypeError`` so argparse reports it as a usage error
(exit 2) before any command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from spool.catalogue import referred
from spool.exact import EPOCH_SECONDS, big_integer_reason, cut_literal, fits_64_bits
from spool.ids import is_valid_id
from spool.stdio import integer

UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$")


def duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match and _DURATION.match(text.strip().removeprefix("-")):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    if not match:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 30s, 15m, 12h, 7d, 2w)")
    value = float(match.group(1)) * UNITS_S[match.group(2) or "s"]
    if not math.isfinite(value):  # 400 digits parse as inf: no duration, no cutoff
        raise argparse.ArgumentTypeError(f"duration too large: {text[:20]!r}...")
    return value


def duration_text(seconds: float) -> str:
    """``seconds`` as :func:`duration` reads it, in the largest unit it is a whole
    number of (``3m``, ``90s``, ``36h``, ``1w``): ``purge --older-than 3m`` said "older
    than 3.0m" (h386)."""
    for unit, size in sorted(UNITS_S.items(), key=lambda item: -item[1]):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def age(text: str) -> float:
    """A :func:`duration` with its unit written out: for a command that removes what is
    older, where a bare ``7`` could mean days to whoever typed it and seconds to us."""
    match = _DURATION.match(text)
    if match and not match.group(2):
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a unit: {match.group(1)}d for days, h, m or s")
    return duration(text)


def positive_seconds(text: str) -> float:
    """A duration above zero: a timeout of 0 would mean 'never wait' by accident."""
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def _whole_number(text: str, least: int) -> int:
    value = integer(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r}: must be {least} or more")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def two_or_more(text: str) -> int:
    return _whole_number(text, 2)


def seed(text: str) -> int:
    """A random seed for the demo data: a whole number, 0 or more, as numpy takes it
    (a negative one failed in ``python -m processor.quant.synth``, exit 1)."""
    return _whole_number(text, 0)


def port(text: str) -> int:
    """A TCP port, or 0 for a free one."""
    try:
        value = integer(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 to 65535")
    return value


def timestamp(text: str) -> datetime:
    """ISO 8601 with an offset (``Z`` allowed), or epoch seconds (DESIGN section 9)."""
    if EPOCH_SECONDS.fullmatch(text):
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except (ValueError, OverflowError, OSError):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range in UTC") from None
    try:  # RFC 3339 allows a lowercase t and z, and so does a job file's not_before
        value = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a timestamp: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a UTC offset, e.g. 2026-11-28T12:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range in UTC") from None


def job_id(text: str) -> str:
    """A valid job id, checked before any path is built from it."""
    if not is_valid_id(text):
        raise argparse.ArgumentTypeError(
            f"invalid id {text!r}: use letters, digits and ._- (at most 128, starting "
            "with a letter or digit)")
    return text


def utf8_text(value: str) -> str:
    """Text a job may carry: an argument with bytes that are not UTF-8 cannot be JSON.

    Where the locale is not UTF-8 (``LC_ALL=C`` with ``PYTHONUTF8=0``) Python decodes the
    arguments as ASCII, each byte past it a lone surrogate: the argument is its bytes
    read as UTF-8 then, as they are in UTF-8 mode.  ``-p message=é`` there was refused
    as "not valid UTF-8: b'message=\\xc3\\xa9'", and ``ls --tool é`` listed nothing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise argparse.ArgumentTypeError(f"not valid UTF-8: {raw!r}") from None
    return value


def json_value(text: str) -> Any:
    """``text`` as JSON when it parses, else the string itself (``-p name=x`` stays "x").

    A number the spool's JSON cannot hold exactly is refused rather than changed."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text  # orjson refuses 1e400 and 400 digits, which are JSON: checked below
    inexact_number(text)
    return value


def inexact_number(text: str | bytes) -> None:
    """Raise ArgumentTypeError naming the first number in the JSON ``text`` that the
    spool's JSON (orjson) cannot hold: an integer past 64 bits, which it reads as a float
    (1e+23) or cannot write, or a number past a float's range."""

    def exact(literal: str) -> int:
        if not fits_64_bits(literal):
            raise argparse.ArgumentTypeError(big_integer_reason(cut_literal(literal)))
        return int(literal)

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"the number {cut_literal(literal)} is out of "
                                             "range; quote it to send it as a string")
        return value

    try:
        json.loads(text, parse_int=exact, parse_float=finite)
    except (ValueError, RecursionError):  # not JSON to this parser either (or nested past
        return  # the stack, which orjson refuses too): orjson's answer stands


class Unheld(NamedTuple):
    """A ``-p`` value that is one number the spool's JSON cannot hold (an integer past 64
    bits, ``1e999``): refused with ``reason``, unless the tool takes the param as text,
    which keeps it as given (``symbol=`` a long numeric code)."""

    reason: str


class Param(NamedTuple):
    """One ``-p KEY=VALUE``: the value as :func:`json_value` reads it (or :class:`Unheld`),
    and as given."""

    key: str
    value: Any
    text: str


_NUMBER = re.compile(r"\s*-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\s*")
"""A JSON number alone, as :func:`json_value` may be given one."""


def key_value(text: str) -> Param:
    """``fast=10`` -> ``Param("fast", 10, "10")``; the value as :func:`json_value`."""
    key, sep, value = utf8_text(text).partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"-p expects key=value, got {text!r}")
    try:
        return Param(key.strip(), json_value(value), value)
    except argparse.ArgumentTypeError as exc:
        reason = f"{key.strip()}: {exc}"
        if _NUMBER.fullmatch(value):  # the tool's schema, read later, may take it as text
            return Param(key.strip(), Unheld(reason), value)
        raise argparse.ArgumentTypeError(reason) from None


def takes_text_not_numbers(schema: object, defs: object = None) -> bool:
    """A param's JSON Schema takes a string (or a list of them) and no number: a ticker
    such as ``symbol=600519`` is meant as text, where JSON reads it as a number.  Local
    references (``#/$defs/...``: a str Enum, a model that holds itself) are followed
    into ``defs``, the whole schema's ``$defs``."""
    return _text_not_numbers(schema_types(schema, defs))


def _text_not_numbers(types: set[str]) -> bool:
    return "string" in types and not types & {"number", "integer", "boolean"}


def takes_as_text(schema: object, defs: object, value: object) -> bool:
    """``value``, a JSON scalar that is no string (a number, ``true``, ``false``, ``null``)
    given with ``-p``, is meant as its text for a param whose schema takes text and not
    that kind of value: ``-p message=true`` or ``-p name=null`` for a ``str`` param, as
    ``symbol=600519`` (a ``str | None`` param keeps ``null``)."""
    types = schema_types(schema, defs)
    return _text_not_numbers(types) and (value is not None or "null" not in types)


def schema_types(schema: object, defs: object = None) -> set[str]:
    """The JSON types a param's schema names, through ``anyOf``/``oneOf``, ``items`` and
    local references into ``defs``."""
    types: set[str] = set()

    def walk(node: object, depth: int) -> None:
        if not isinstance(node, dict) or depth > 4:
            return
        walk(referred(node, defs), depth + 1)
        kind = node.get("type")
        if isinstance(kind, str):
            types.add(kind)
        elif isinstance(kind, list):
            types.update(t for t in kind if isinstance(t, str))
        for key in ("anyOf", "oneOf"):
            for option in node.get(key) or []:
                walk(option, depth + 1)
        walk(node.get("items"), depth + 1)

    walk(schema, 0)
    return types


def json_object(text: str) -> dict[str, Any]:
    """A JSON object such as ``--params '{"seconds": 1}'``."""
    text = utf8_text(text)
    inexact_number(text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value
