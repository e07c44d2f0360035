"""JSON-safe numbers: results never hold NaN or Infinity, only ``None``.

Records go through orjson, which would write NaN as ``null`` anyway; the
quant tools still make every undefined metric an explicit ``None`` and turn
numpy scalars into Python numbers, so a result reads the same in memory, in
JSON and after a pickle round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def finite_or_none(value: float | np.floating[Any] | None) -> float | None:
    """``float(value)``, or ``None`` when it is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def jsonable(value: Any) -> Any:
    """A copy of ``value`` with numpy scalars made Python and non-finite floats ``None``.

    Walks dicts, lists and tuples (tuples become lists).  Meant for small
    results; large arrays are converted where they are built.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return finite_or_none(value)
    return value
