"""``get_kline``'s answer: one symbol's bars as ``columns`` and ``rows``, in time order.

Guarantees: rows are in time order, cut to ``start``/``end`` (inclusive) and then to
``limit`` (the first rows when only ``start`` is given, else the most recent ones);
a missing value is ``None``, never NaN.  An answer holds at most ``MAX_KLINE_ROWS``
(1,000,000) bars: without ``limit``, more bars than that between ``start`` and ``end``
is :class:`~spool.errors.InvalidParams` (a FAST tool must not spend its lane, and
the processor's memory, on a file of millions of bars).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.quant.bars import FIELDS, Bars
from processor.quant.data import DataStore
from processor.quant.params import MAX_KLINE_ROWS, KlineParams
from spool.errors import InvalidParams


def kline(bars: Bars, params: KlineParams) -> dict[str, Any]:
    """``columns`` and ``rows`` of ``bars`` (already cut to start/end), limited."""
    if params.limit is None and len(bars) > MAX_KLINE_ROWS:
        raise InvalidParams(
            f"symbol {bars.symbol!r} has {len(bars)} bars between start and end, and "
            f"get_kline answers at most {MAX_KLINE_ROWS}: give a limit (at most "
            f"{MAX_KLINE_ROWS}) or a narrower start and end")
    if params.limit is not None and params.limit < len(bars):
        keep = slice(0, params.limit) if params.start is not None and params.end is None \
            else slice(len(bars) - params.limit, len(bars))
    else:
        keep = slice(0, len(bars))
    columns = [getattr(bars, name)[keep] for name in FIELDS]
    lists: list[list[float | None]] = [c.tolist() for c in columns]
    for values, array in zip(lists, columns, strict=True):
        if not np.isfinite(array).all():
            for i in np.flatnonzero(~np.isfinite(array)).tolist():
                values[i] = None
    return {"symbol": bars.symbol, "columns": ["timestamp", *FIELDS],
            "rows": list(map(list, zip(bars.iso_of(keep), *lists, strict=True)))}


def get_kline(store: DataStore, params: KlineParams) -> dict[str, Any]:
    """Bars of one symbol between ``start`` and ``end``, at most ``limit`` rows."""
    return kline(store.bars(params.symbol, params.start, params.end), params)
