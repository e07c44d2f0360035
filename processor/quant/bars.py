"""One symbol's bars: the arrays, their ISO 8601 text, and the parse of a data file.

Split from :mod:`processor.quant.data`, which owns the reads of ``SPOOL_DATA_DIR`` and
calls :func:`parse_csv` and :func:`glance` on paths it has checked.  Guarantees:

* A file is ``timestamp,open,high,low,close,volume`` (extra columns ignored).
  Timestamps are ISO 8601, parsed once per file; offsets are converted to UTC and
  dropped, so every timestamp is naive UTC (``datetime64[us]``).  They must be
  strictly increasing.  Empty cells are NaN (a missing value); a present price must be
  > 0.  A file that breaks these rules raises :class:`~spool.errors.ToolError` naming
  the symbol.
* :class:`Bars` arrays are read-only; slices of one file share its :class:`IsoCache`
  (its ISO text, made once, in the one unit the whole file needs).
* A long parse or ISO text reports how far it has gone (``on_part``) without changing
  what is read.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from processor.quant.csvrows import COLUMNS, Lines, csv_rows, read_whole
from spool.errors import InvalidParams, ToolError

FIELDS = ("open", "high", "low", "close", "volume")
_DTYPES = {name: np.float64 for name in FIELDS} | {"timestamp": object}

F64 = npt.NDArray[np.float64]
Times = npt.NDArray[np.datetime64]
PartFn = Callable[[float], None]
"""Called as a long read goes with the share (0 to 1) of its step done so far."""
PARSE_CHUNK_ROWS = 1 << 16
"""Rows parsed between two reports of a read (some 3 to 5 MB, 30 to 60 ms)."""
PARSE_CHUNK_BYTES = 8 << 20
"""A file this large or smaller is parsed in one go, a larger one chunk by chunk when
someone hears how far it has gone.  Measured against one go: 3-6% slower on files of
100,000 rows (5.6 MB, two chunks), within 3% either way at 150,000 and 200,000 rows
(9 and 15 MB), 2-6% faster at 300,000 (24 MB); a file this size parses in 80 ms."""
ISO_PART_ROWS = 1 << 16
"""Timestamps whose ISO text is made between two reports (some 20 to 30 ms)."""
GLANCE_SAMPLE = 4096
"""Bytes :func:`glance` reads at each end of a file."""


def to_time(value: datetime | str | None) -> np.datetime64 | None:
    """A bound for slicing as naive UTC ``datetime64[us]`` (offsets converted)."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise InvalidParams(f"invalid timestamp {value!r}") from exc
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    moment: np.datetime64 = stamp.to_datetime64().astype("datetime64[us]")
    return moment


def iso_unit(timestamps: Times) -> Literal["s", "us"]:
    """The unit ISO text of ``timestamps`` is written to: the second unless finer is needed."""
    return "s" if np.array_equal(timestamps.astype("datetime64[s]"), timestamps) else "us"


def iso_strings(timestamps: Times, unit: Literal["s", "us"] | None = None) -> list[str]:
    """ISO 8601 text of naive UTC timestamps, in ``unit`` (default: :func:`iso_unit`'s)."""
    text: list[str] = np.datetime_as_string(timestamps, unit=unit or iso_unit(timestamps)).tolist()
    return text


ISO_CACHE_SHARE = 4
"""ISO text of a file is made whole and cached when a read wants at least a
1/ISO_CACHE_SHARE part of it; a smaller part is formatted alone."""


class IsoCache:
    """ISO text of a file's timestamps, computed on first use (benign race), all in
    the one unit the whole file needs; and the span of the timestamps, the first and the
    last in microseconds (None when there are none)."""

    __slots__ = ("_text", "_unit", "span", "timestamps")

    def __init__(self, timestamps: Times) -> None:
        self.timestamps = timestamps
        self._text: list[str] | None = None
        self._unit: Literal["s", "us"] | None = None
        self.span = (int(timestamps[0].astype(np.int64)), int(timestamps[-1].astype(np.int64))
                     ) if len(timestamps) else None

    def get(self, on_part: PartFn | None = None) -> list[str]:
        """The whole text; made now if not yet, ``ISO_PART_ROWS`` at a time with a
        report to ``on_part`` between two when it is given (the same text)."""
        if self._text is None:
            self._text = self._make(on_part)
        return self._text

    def _make(self, on_part: PartFn | None) -> list[str]:
        rows, unit = len(self.timestamps), self.unit()
        if on_part is None or rows <= ISO_PART_ROWS:
            return iso_strings(self.timestamps, unit)
        text: list[str] = []
        for lo in range(0, rows, ISO_PART_ROWS):
            text += iso_strings(self.timestamps[lo: lo + ISO_PART_ROWS], unit)
            if lo + ISO_PART_ROWS < rows:
                on_part((lo + ISO_PART_ROWS) / rows)
        return text

    def made(self) -> bool:
        return self._text is not None

    def unit(self) -> Literal["s", "us"]:
        if self._unit is None:
            self._unit = iso_unit(self.timestamps)
        return self._unit

    def part(self, rows: slice) -> list[str]:
        """The text of ``rows`` (step 1): from the cache when it is made or ``rows`` is a
        large part of the file, else formatted alone (five bars of a file of millions
        must not format, and keep, the text of them all)."""
        size = rows.stop - rows.start
        if self._text is not None or size * ISO_CACHE_SHARE >= len(self.timestamps):
            return self.get()[rows]
        return iso_strings(self.timestamps[rows], self.unit())


@dataclass(frozen=True, slots=True)
class Bars:
    """One symbol's bars in time order; arrays are read-only views."""

    symbol: str
    timestamps: Times
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    calendar: IsoCache = field(repr=False, compare=False)
    """The ISO text and span of the whole file's timestamps, shared by its slices (and
    by files of the same timestamps, :class:`~processor.quant.data.DataStore` sees to it)."""
    _iso_slice: slice = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.timestamps)

    def iso(self, on_part: PartFn | None = None) -> list[str]:
        """The timestamps as ISO 8601 strings (cached per file; made for the whole file
        at the first call, reporting to ``on_part`` as it goes)."""
        return self.calendar.get(on_part)[self._iso_slice]

    def iso_to_make(self) -> int:
        """The timestamps whose ISO text :meth:`iso` would make now: none once the text
        of the file (or of another on its calendar) is made, else every one of the
        file's, whatever part of it these bars are."""
        return 0 if self.calendar.made() else len(self.calendar.timestamps)

    def iso_of(self, rows: slice) -> list[str]:
        """The ISO 8601 strings of ``rows`` of these bars (a slice with step 1), the
        same text :meth:`iso` has for them; cached per file only when they are a
        large part of it (see ``ISO_CACHE_SHARE``)."""
        lo, hi, _ = rows.indices(len(self))
        base = self._iso_slice.start
        return self.calendar.part(slice(base + lo, base + max(lo, hi)))

    def between(self, start: np.datetime64 | None, end: np.datetime64 | None) -> Bars:
        """The bars with ``start <= timestamp <= end`` (both optional, inclusive)."""
        if start is None and end is None:
            return self
        lo = 0 if start is None else int(np.searchsorted(self.timestamps, start, "left"))
        hi = len(self) if end is None else int(np.searchsorted(self.timestamps, end, "right"))
        base = self._iso_slice.start
        cut = slice(lo, max(lo, hi))
        return Bars(self.symbol, self.timestamps[cut], self.open[cut], self.high[cut],
                    self.low[cut], self.close[cut], self.volume[cut], self.calendar,
                    slice(base + cut.start, base + cut.stop))

    @property
    def nbytes(self) -> int:
        return int(self.timestamps.nbytes) + 5 * int(self.close.nbytes)


def glance(path: Path, size: int) -> tuple[float, np.datetime64, np.datetime64] | None:
    """A file's rows foretold from its size and the lines at its head and its tail, and
    its first and last timestamps; None when they cannot be made out (its parse says why)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(GLANCE_SAMPLE)
            handle.seek(max(0, size - GLANCE_SAMPLE))
            tail = handle.read(GLANCE_SAMPLE)
    except OSError:
        return None
    whole = head.split(b"\n")[:-1]  # whole lines only
    if not whole:  # no line end in its first bytes (CR-only lines, a long header)
        return None
    header, *heads = whole
    tails = tail.rstrip(b"\r\n").split(b"\n")[1:]
    names = [name.strip() for name in header.split(b",")]
    if not heads or not tails or b"timestamp" not in names:
        return None
    column = names.index(b"timestamp")
    lines = [*heads, *tails]
    try:
        first, last = (to_time(line.split(b",")[column].decode()) for line in (heads[0], tails[-1]))
    except (InvalidParams, ValueError, OverflowError, IndexError):  # a bad line, or text
        return None
    if first is None or last is None or np.isnat(first) or np.isnat(last):
        return None
    row = (sum(map(len, lines)) + len(lines)) / len(lines)
    return (size - len(header) - 1) / row, first, last


_OUT_OF_MEMORY = "C error: out of memory"
"""How pandas' C tokenizer says a malloc failed ("Error tokenizing data. C error: out of
memory"); a cell that reads "out of memory" is a ValueError, a malformed file."""


def parse_csv(path: Path, symbol: str, on_part: PartFn | None = None) -> Bars:
    """Parse one ``<SYMBOL>.csv``; a malformed file raises ToolError naming the symbol.
    ``on_part`` hears the share of the file's bytes parsed after each chunk of a large
    file but the last."""
    data = read_whole(path, symbol)
    lines = csv_rows(symbol, data)
    try:
        frame = _read_frame(data, on_part)
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError) as exc:
        if isinstance(exc, pd.errors.ParserError) and _OUT_OF_MEMORY in str(exc):
            # pandas' C tokenizer on a failed malloc: the file is fine, the worker short
            # of memory (its cap); said "data file ... is malformed", and a second read of
            # the whole file to say where asked for more (QA, memory pressure).
            raise MemoryError(f"parsing the data file of {symbol!r}: "
                              f"{str(exc).strip()}") from exc
        raise ToolError(_bad_number(symbol, data, lines, exc)) from exc
    try:
        stamps = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ToolError(_bad_time(symbol, frame["timestamp"], lines, exc)) from exc
    times = stamps.dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    columns = [frame[name].to_numpy(dtype=np.float64, copy=True) for name in FIELDS]
    _check_bars(symbol, times, columns, lines)
    for array in [times, *columns]:
        array.flags.writeable = False
    open_, high, low, close, volume = columns
    return Bars(symbol, times, open_, high, low, close, volume, IsoCache(times),
                slice(0, len(times)))


def _bad_time(symbol: str, column: pd.Series, lines: Lines, exc: Exception) -> str:
    """What is wrong with a file's timestamps, in one line naming the first bad one and its
    line: pandas' own message ran over four lines of advice no job can take ("passing
    `format`...") and named no line."""
    times = pd.to_datetime(column, format="ISO8601", utc=True, errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy() & column.notna().to_numpy())
    if not bad.size:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"data file for symbol {symbol!r} is malformed: {first}"
    value = str(column.iloc[int(bad[0])])
    return (f"data file for symbol {symbol!r}: timestamp {value[:64]!r} on line "
            f"{lines[int(bad[0])]} is not a valid ISO 8601 time")


def _bad_number(symbol: str, data: bytes, lines: Lines, exc: Exception) -> str:
    """What is wrong with a file pandas could not read as numbers, in one line naming the
    first cell of a price or volume that is no number, and its line: pandas' own message
    ("could not convert string to float: 'open'", a second header mid-file) named none."""
    found: list[tuple[int, int, str]] = []  # (row, column, value)
    try:
        frame = pd.read_csv(io.BytesIO(data), engine="c", usecols=list(COLUMNS), dtype=object)
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
        frame = pd.DataFrame()
    for name in FIELDS if not frame.empty else ():
        column = frame[name]
        bad = np.flatnonzero(pd.to_numeric(column, errors="coerce").isna().to_numpy()
                             & column.notna().to_numpy())
        if bad.size:
            found.append((int(bad[0]), FIELDS.index(name), str(column.iloc[int(bad[0])])))
    if not found:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"data file for symbol {symbol!r} is malformed: {first}"
    row, column_index, value = min(found)
    return (f"data file for symbol {symbol!r}: {FIELDS[column_index]} {value[:64]!r} on "
            f"line {lines[row]} is not a number")


def _read_frame(data: bytes, on_part: PartFn | None) -> pd.DataFrame:
    """The file's columns: in one go, or ``PARSE_CHUNK_ROWS`` at a time (the same frame)
    when someone hears how far it has gone and there is enough to say."""
    handle = io.BytesIO(data)
    size = len(data)
    if on_part is None or size <= PARSE_CHUNK_BYTES:
        return pd.read_csv(handle, engine="c", usecols=list(COLUMNS), dtype=_DTYPES)
    frames = []
    with pd.read_csv(handle, engine="c", usecols=list(COLUMNS), dtype=_DTYPES,
                     chunksize=PARSE_CHUNK_ROWS) as reader:
        for frame in reader:
            frames.append(frame)
            if handle.tell() < size:  # the reader's buffer is a little ahead
                on_part(handle.tell() / size)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _check_bars(symbol: str, times: Times, columns: list[F64], lines: Lines) -> None:
    missing = np.flatnonzero(np.isnat(times))
    if missing.size:
        raise ToolError(f"data file for symbol {symbol!r}: no timestamp on line "
                        f"{lines[int(missing[0])]}")
    if len(times) > 1:
        bad = np.flatnonzero(np.diff(times) <= np.timedelta64(0, "us"))
        if bad.size:
            raise ToolError(f"data file for symbol {symbol!r}: timestamps not strictly "
                            f"increasing (to the microsecond) on line "
                            f"{lines[int(bad[0]) + 1]}")
    for name, values in zip(FIELDS[:4], columns[:4], strict=True):
        bad = np.flatnonzero((values <= 0) | np.isinf(values))
        if bad.size:
            raise ToolError(f"data file for symbol {symbol!r}: {name} must be a positive "
                            f"finite number, not {values[int(bad[0])]:g} on line "
                            f"{lines[int(bad[0])]}")
        # A subnormal price has too few digits: SMAs of 1.71e-310 ... tied by their
        # decimals compared unequal (a buy on a tie), and fills and marks lose digits.
        bad = np.flatnonzero(values < sys.float_info.min)
        if bad.size:
            raise ToolError(f"data file for symbol {symbol!r}: {name} must be at least "
                            f"{sys.float_info.min!r} (the smallest normal float), not "
                            f"{float(values[int(bad[0])])!r} on line {lines[int(bad[0])]}")
    volume = columns[4]
    bad = np.flatnonzero((volume < 0) | np.isinf(volume))
    if bad.size:
        raise ToolError(f"data file for symbol {symbol!r}: volume must be a finite number "
                        f"at least 0, not {volume[int(bad[0])]:g} on line "
                        f"{lines[int(bad[0])]}")
