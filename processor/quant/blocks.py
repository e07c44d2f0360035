"""Row blocks of a 2-D backtest: how a run is cut into blocks of rows between two
progress reports, and the running values that cross from one block to the next.

Owns: the block size (:data:`BLOCK_CELLS`), the blocks (:func:`row_blocks`), the
cells past a column's own bars (:func:`past_end`), and the running sum, product or
maximum continued from the row above a block (:func:`accumulate`).

Guarantees: a block continues every running sum, product and maximum from the row
before it, in the same order as one pass over all rows, so a result computed block
by block is the one a single pass gives, bit for bit, whatever the block size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
BLOCK_CELLS = 1 << 17
"""Rows x symbols computed between two progress reports (some 20-30 ms of work)."""


def accumulate(op: np.ufunc, values: npt.NDArray[Any], carry: npt.NDArray[Any] | None,
               out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    """``op.accumulate`` down the columns of ``values``, continuing from ``carry``, the
    running value of the row above (None: the first row).  The first row is
    ``carry op values[0]``, the very step one pass over all rows takes, so a running
    sum keeps its row order (``ndarray.sum`` would sum pairwise, and a symbol's last
    digits would depend on the block size and on the symbols sharing its job)."""
    if carry is None:
        result: npt.NDArray[Any] = op.accumulate(values, axis=0, out=out)
        return result
    if out is None:
        out = np.empty_like(values)
    out[0] = op(carry, values[0])
    out[1:] = values[1:]
    result = op.accumulate(out, axis=0, out=out)
    return result


def past_end(start: int, stop: int, lengths: Ints) -> Bools | None:
    """The cells of rows ``start:stop`` past their column's bars; None when there are
    none (the usual case: symbols of one calendar), which spares the masking."""
    if stop <= lengths.min():
        return None
    past: Bools = np.arange(start, stop)[:, None] >= lengths[None, :]
    return past


def row_blocks(rows: int, width: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row blocks of about ``BLOCK_CELLS`` cells."""
    size = max(1, BLOCK_CELLS // max(1, width))
    for start in range(0, rows, size):
        yield start, min(rows, start + size)
