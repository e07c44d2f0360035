"""How far along a COMPUTE quant tool is: the estimated cost of its work, so that its
progress bar, and the time left the dashboard and ``spoolq wait`` draw from it (a
straight line from the run's start through its latest report), track the wall time.

Owns the cost estimates: reading a symbol's file (:func:`read_costs`), a pass of
``analyze_factor`` over its panel, a bar of ``run_backtest``; and :class:`Plan`, the
bar's positions of consecutive stretches of work.  Guarantees: positions only grow,
start at 0 and the last ends at exactly 1.0.

Measured (2 shared cores, load 0.5 to 2; synthetic data; ``python -m bench.quant_pace``
and its sizes):
reading is most of a run whose files are not in the parsed cache, whatever the page
cache: ``analyze_factor`` 500 x 2520 (66 MB) reads for 1.5-1.8 s of 2.0-2.3 s with
the files in the page cache, 2.1-2.7 s of 3.1-3.5 s after ``POSIX_FADV_DONTNEED``
(68-80%), 0.008 s of 0.5 s once parsed (1%); 10 x 300,000 (242 MB) 2.0-2.6 of 4.6-5.9 s
(40-45%).  A file costs some 3 ms plus 9-10 ns a byte to parse (500 files of 10 bars:
1.7 s; 500 x 2520: 2.2 s; 20 x 100,000, 112 MB: 1.2 s).  A horizon's pass costs some
70 ns a cell plus 1 us a date (0.09 s at 500 x 2520, 0.5 s at 10 x 300,000).  A
backtest, equity curves included, some 0.36 us a bar.  With the first 10% of the bar
for reading, ``analyze_factor`` 500 x 2520 showed 3-4% a quarter of the way through
its wall time and 10% at three quarters; a backtest of 2 x 300,000 bars showed 0%
half way (it reads a symbol before it reports its bars).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from processor.quant.data import DataStore

ProgressFn = Callable[[float, str], None]
PARSE_FILE_S, PARSE_BYTE_S = 3e-3, 10e-9
"""Seconds to parse a file: a part for each file and a part for each byte."""
BYTES_PER_ROW = 60
"""A CSV row's bytes (52 to 81 in synthetic files): a file's bars before it is read."""
HORIZON_CELL_S, HORIZON_ROW_S = 70e-9, 1e-6
"""Seconds of one horizon's pass of ``analyze_factor``: for each cell and each date."""
BACKTEST_BAR_S = 0.36e-6
"""Seconds of ``run_backtest`` for each bar, its equity curve included."""


def parse_s(size: int) -> float:
    """The estimated seconds of parsing a file of ``size`` bytes."""
    return PARSE_FILE_S + size * PARSE_BYTE_S


def read_costs(store: DataStore, symbols: list[str]) -> tuple[list[float], list[float]]:
    """Per symbol, the seconds reading its file is estimated to take now (none when it is
    cached), and its bars (foretold from the file's size when it is not parsed yet)."""
    parse, bars = [], []
    for fact in store.to_read(symbols):
        parse.append(parse_s(fact.size) if fact.parse else 0.0)
        bars.append(fact.size / BYTES_PER_ROW if fact.parse or fact.bars is None
                    else fact.bars)
    return parse, bars


def horizon_s(cells: float, dates: float) -> float:
    """The estimated seconds of one horizon's pass over ``cells`` cells of ``dates`` dates."""
    return cells * HORIZON_CELL_S + dates * HORIZON_ROW_S


class Plan:
    """Consecutive stretches of work of estimated ``costs``, laid end to end on the bar."""

    def __init__(self, costs: list[float]) -> None:
        total = sum(costs)
        ends = [min(1.0, end / total) for end in accumulate(costs)] if total > 0 else [
            (k + 1) / len(costs) for k in range(len(costs))]
        self.starts = [0.0, *ends[:-1]]
        self.ends = [*ends[:-1], 1.0]
        self.costs = costs

    def at(self, stretch: int, part: float = 1.0) -> float:
        """The position ``part`` (0 to 1) of the way through ``stretch``."""
        start, end = self.starts[stretch], self.ends[stretch]
        return min(end, start + (end - start) * min(1.0, max(0.0, part)))
