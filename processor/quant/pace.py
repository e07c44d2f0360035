"""How far along a COMPUTE quant tool is: the estimated cost of its work, so that its
progress bar, and the time left the dashboard and ``spoolq wait`` draw from it (a
straight line from the run's start through its latest report), track the wall time.

Owns the cost estimates: reading a symbol's file (:func:`read_costs`), making its
timestamps' ISO text, a pass of ``analyze_factor`` over its panel, a bar of
``run_backtest``; :class:`Plan`, the bar's positions of consecutive stretches of work;
and :class:`Gauge`, a bar over work whose estimate is revised as it goes
(:class:`BacktestPace`, ``run_backtest``'s).  Guarantees: positions only grow and start
at 0; a plan's last stretch ends at exactly 1.0, a gauge stays below it.

Measured (2 shared cores, load 0.5 to 2; synthetic data; ``python -m bench.quant_pace``
and its sizes):
reading is most of a run whose files are not in the parsed cache, whatever the page
cache: ``analyze_factor`` 500 x 2520 (66 MB) reads for 1.5-1.8 s of 2.0-2.3 s with
the files in the page cache, 2.1-2.7 s of 3.1-3.5 s after ``POSIX_FADV_DONTNEED``
(68-80%), 0.008 s of 0.5 s once parsed (1%); 10 x 300,000 (242 MB) 2.0-2.6 of 4.6-5.9 s
(40-45%).  A file costs some 3 ms plus 9-10 ns a byte to parse (500 files of 10 bars:
1.7 s; 500 x 2520: 2.2 s; 20 x 100,000, 112 MB: 1.2 s).  A horizon's pass costs some
70 ns a cell plus 1 us a date (0.09 s at 500 x 2520, 0.5 s at 10 x 300,000).  A
backtest, equity curves included, some 0.26-0.36 us a bar; making a timestamp's ISO
text, which a backtest's first read of a parsed file does for the whole file, 0.30-0.40
us (94 ms of 300,000, beside 0.19 s for the backtest of 2 x 300,000).  With the first
10% of the bar for reading, ``analyze_factor`` 500 x 2520 showed 3-4% a quarter of the
way through its wall time and 10% at three quarters; a backtest of 2 x 300,000 bars,
whose reading had no share, showed 0% half way, 0.29-0.43 off the time at its reports.
Weighing that reading, the text included, as here put it 0.06-0.09 off, its files
parsed or not (``--symbols 2 --bars 300000``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from processor.quant.data import DataStore, ToRead

ProgressFn = Callable[[float, str], None]
PARSE_FILE_S, PARSE_BYTE_S = 3e-3, 10e-9
"""Seconds to parse a file: a part for each file and a part for each byte."""
BYTES_PER_ROW = 60
"""A CSV row's bytes (52 to 81 in synthetic files): a file's bars before it is read."""
HORIZON_CELL_S, HORIZON_ROW_S = 70e-9, 1e-6
"""Seconds of one horizon's pass of ``analyze_factor``: for each cell and each date."""
BACKTEST_BAR_S = 0.36e-6
"""Seconds of ``run_backtest`` for each bar, its equity curve included."""
ISO_ROW_S = 0.35e-6
"""Seconds to make a timestamp's ISO text (a file's first backtest makes its whole file's)."""


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


SHORT_OF_DONE = 1.0 - 1e-6
"""The furthest a :class:`Gauge` goes: 1.0 is the tool's own report that it is done."""


class Gauge:
    """A bar over work whose estimate (in seconds) is revised as the work goes:
    :meth:`at` places work done on the bar, and :meth:`revise` spreads what is left of
    the bar over the new estimate of what is left, so a wrong guess is mended from
    where the bar stands rather than by a jump.  Positions only grow, start at 0 and
    stay below 1.0."""

    def __init__(self, total_s: float) -> None:
        self._base = 0.0  # the position at the last revision
        self._left = total_s  # the work left then, as estimated then
        self._spent = 0.0  # the work done since, as estimated

    def at(self, more_s: float = 0.0) -> float:
        """The position once ``more_s`` seconds of work more than is spent are done."""
        share = min(1.0, (self._spent + more_s) / self._left) if self._left > 0 else 1.0
        return min(SHORT_OF_DONE, self._base + (1.0 - self._base) * share)

    def spend(self, seconds: float) -> None:
        """``seconds`` of work (as estimated) are done."""
        self._spent += seconds

    def revise(self, left_s: float) -> None:
        """The work left (not yet spent) is now estimated at ``left_s`` seconds."""
        self._base, self._left, self._spent = self.at(), left_s, 0.0


class BacktestPace:
    """``run_backtest``'s bar: each symbol's read (parsing its file unless it is cached,
    then making its timestamps' ISO text unless it is made) and the simulation of its
    bars, in seconds estimated from what the store knows (``facts``, from
    :meth:`DataStore.to_read`), on a :class:`Gauge`.  A cached file's figures are exact,
    a large file's to parse foretold from a glance at its ends; the other files to parse
    are taken to be like the last one parsed (its bars and the ISO text it had to make,
    per byte; before any, a bar each ``BYTES_PER_ROW`` bytes and its text to make), and
    each read revises the estimate of what is left."""

    def __init__(self, facts: list[ToRead]) -> None:
        self.facts = facts
        self.parse = [parse_s(f.size) if f.parse else 0.0 for f in facts]
        self.format = [(f.iso_rows or 0) * ISO_ROW_S for f in facts]
        self.simulate = [(f.bars or 0) * BACKTEST_BAR_S for f in facts]
        self._known = sum(self.parse) + sum(self.format) + sum(self.simulate)
        # Bytes of the files to parse that were not glanced at (DataStore.to_read), still
        # to read: foretold together, a rate a byte.
        self._unread = sum(f.size for f in facts if f.parse and f.bars is None)
        self._byte_s = (ISO_ROW_S + BACKTEST_BAR_S) / BYTES_PER_ROW  # past their parse
        self._done = 0.0
        self.gauge = Gauge(self._left())

    def _left(self) -> float:
        return self._known + self._unread * self._byte_s - self._done

    def _spend(self, seconds: float) -> None:
        self._done += seconds
        self.gauge.spend(seconds)

    def reading_s(self, k: int) -> float:
        """The estimated seconds of reading symbol ``k``'s file: none when it is cached
        with its text made (its bars are as known, and the read is next to free)."""
        return self.parse[k] + self.format[k]

    def parsing(self, k: int, part: float) -> float:
        """The position ``part`` of the way through parsing symbol ``k``'s file."""
        return self.gauge.at(self.parse[k] * part)

    def parsed(self, k: int, bars: int, iso_rows: int) -> None:
        """Symbol ``k``'s file is parsed (or was), with ``bars`` bars to simulate and the
        ISO text of ``iso_rows`` timestamps to make."""
        self._spend(self.parse[k])
        self._known -= self.format[k] + self.simulate[k]
        self.format[k], self.simulate[k] = iso_rows * ISO_ROW_S, bars * BACKTEST_BAR_S
        self._known += self.format[k] + self.simulate[k]
        fact = self.facts[k]
        if fact.parse and fact.bars is None:
            self._unread -= fact.size
        if fact.parse and fact.size:
            self._byte_s = (self.format[k] + self.simulate[k]) / fact.size
        self.gauge.revise(self._left())

    def formatting(self, k: int, part: float) -> float:
        """The position ``part`` of the way through making symbol ``k``'s ISO text."""
        return self.gauge.at(self.format[k] * part)

    def formatted(self, k: int) -> None:
        self._spend(self.format[k])

    def simulating(self, first: int, count: int, part: float) -> float:
        """The position ``part`` of the way through simulating ``count`` symbols from
        ``first`` on (one chunk)."""
        return self.gauge.at(sum(self.simulate[first: first + count]) * part)

    def simulated(self, first: int, count: int) -> float:
        """Those symbols are simulated: the position now."""
        self._spend(sum(self.simulate[first: first + count]))
        return self.gauge.at()
