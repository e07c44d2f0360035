"""Numbers the spool's JSON holds exactly.

orjson, which writes every job file and record, holds integers from -2**63 to
2**64 - 1 and reads any other integer as a float, while pydantic's JSON parser
reads it exactly (and orjson then cannot write it). A job holding one is
refused where it comes in: intake quarantines it, ``POST /api/v1/tasks``
answers 400, and what reads a job file again treats it as not a valid job.
"""

from __future__ import annotations

import json
import re

from spool.text import without_bom

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""The integers the spool's JSON (orjson) holds exactly; it reads any other as a float."""
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
EPOCH_SECONDS = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
"""Epoch seconds as a string, ASCII digits only (``float`` takes others, ``1e10`` and
``1_000``, which a job file's reading refuses): how ``spoolq submit --not-before`` tells them."""


def inexact_integer(data: bytes) -> str | None:
    """The first integer literal in the JSON ``data`` that the spool's JSON cannot hold
    exactly (cut to 40 characters), or None.

    orjson reads an integer past 64 bits as a float (98765432109876543210 becomes
    9.876543210987654e+19: the job would run with another number), and pydantic's JSON
    parser, which reads a claimed file again, reads it exactly, so that orjson then
    cannot write the job's record. Only data with 19 digits in a row can hold one, so
    anything else costs one regex scan. Data that is not JSON to ``json`` gives None.
    """
    if _LONG_DIGITS.search(data) is None:
        return None
    found: list[str] = []

    def check(literal: str) -> int:
        if not found and not fits_64_bits(literal):
            found.append(cut_literal(literal))
        return 0

    try:
        json.loads(without_bom(data), parse_int=check,
                   parse_float=len, parse_constant=len)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None


def fits_64_bits(literal: str) -> bool:
    """The integer literal is one the spool's JSON holds exactly."""
    # At most 20 characters (2**64 - 1, -2**63): int() of 4,301 digits raises.
    return len(literal) <= 20 and INT_MIN <= int(literal) <= INT_MAX


def cut_literal(literal: str) -> str:
    """A number's literal as a message shows it: at most 40 characters."""
    return literal if len(literal) <= 40 else f"{literal[:37]}..."


def big_integer_reason(literal: str) -> str:
    return (f"the integer {literal} does not fit 64 bits ({INT_MIN} to {INT_MAX}); "
            "quote it to send it as a string")
