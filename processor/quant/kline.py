"""``get_kline``'s answer: one symbol's bars as ``columns`` and ``rows``, in time order.

Guarantees: rows are in time order, cut to ``start``/``end`` (inclusive) and then to
``limit`` (the first rows when only ``start`` is given, else the most recent ones);
a missing value is ``None``, never NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.quant.data import FIELDS, Bars, DataStore
from processor.quant.params import KlineParams


def kline(bars: Bars, params: KlineParams) -> dict[str, Any]:
    """``columns`` and ``rows`` of ``bars`` (already cut to start/end), limited."""
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
            "rows": list(map(list, zip(bars.iso()[keep], *lists, strict=True)))}


def get_kline(store: DataStore, params: KlineParams) -> dict[str, Any]:
    """Bars of one symbol between ``start`` and ``end``, at most ``limit`` rows."""
    return kline(store.bars(params.symbol, params.start, params.end), params)
