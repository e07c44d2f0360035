"""OHLCV data for the quant tools: symbol names, CSV parsing, the parsed cache, panels.

Owns every read of ``SPOOL_DATA_DIR``.  Guarantees:

* A symbol is an id (``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``, matched in full).
  A name that is not, or that has no ``<SYMBOL>.csv``, raises
  :class:`~spool.errors.InvalidParams` naming the symbol; a path is only ever
  built from a name that passed the check.
* A file is ``timestamp,open,high,low,close,volume`` (extra columns ignored).
  Timestamps are ISO 8601, parsed once per file; offsets are converted to UTC
  and dropped, so every timestamp is naive UTC (``datetime64[us]``).  They must
  be strictly increasing.  Empty cells are NaN (a missing value); a present
  price must be > 0.  A file that breaks these rules raises
  :class:`~spool.errors.ToolError` naming the symbol.
* :class:`DataStore` caches parsed files keyed by path and re-parses a file
  when its ``(mtime_ns, size, inode)`` changes.  It is thread-safe, and threads
  asking for one uncached file parse it once (the others wait); cached
  arrays are read-only and shared (files with identical timestamps share
  one timestamp array and its ISO text).  The cache is bounded by
  ``max_bytes`` (least recently used files are dropped first).
* :class:`Panel` outer-joins symbols on timestamp: a missing bar is NaN, never
  forward filled.
* A read can report how far it has gone (``on_part``: the share of a file parsed, of
  its ISO text made), and :meth:`DataStore.to_read` says beforehand what reading
  symbols means now (bytes to parse, bars, ISO text to make): what the tools' progress
  bars weigh reading by (:mod:`processor.quant.pace`).  Neither changes what is read.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from processor.quant.params import SYMBOL_PATTERN
from spool.errors import InvalidParams, ToolError

_SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
FIELDS = ("open", "high", "low", "close", "volume")
DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_CALENDARS = 64
_DTYPES = {name: np.float64 for name in FIELDS} | {"timestamp": object}

F64 = npt.NDArray[np.float64]
Times = npt.NDArray[np.datetime64]
FileKey = tuple[int, int, int]
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
GLANCE_BYTES = 1 << 20
"""A file to parse of this size or more is glanced at (:func:`glance`) for its bars and
calendar: the estimate of one such file weighs on a bar, which a file of a MB or more
(10 ms and more to parse) pays 20 to 30 us for; smaller ones are foretold in bulk."""
GLANCE_SAMPLE = 4096
"""Bytes :func:`glance` reads at each end of a file."""


def validate_symbol(symbol: object) -> str:
    """Return ``symbol`` if it is a valid id, else raise InvalidParams naming it."""
    if not isinstance(symbol, str) or _SYMBOL_RE.fullmatch(symbol) is None:
        raise InvalidParams(f"invalid symbol {symbol!r}: must match {SYMBOL_PATTERN}")
    return symbol


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


class _IsoCache:
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
    _iso: _IsoCache = field(repr=False, compare=False)
    _iso_slice: slice = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.timestamps)

    def iso(self, on_part: PartFn | None = None) -> list[str]:
        """The timestamps as ISO 8601 strings (cached per file; made for the whole file
        at the first call, reporting to ``on_part`` as it goes)."""
        return self._iso.get(on_part)[self._iso_slice]

    def iso_to_make(self) -> int:
        """The timestamps whose ISO text :meth:`iso` would make now: none once the text
        of the file (or of another on its calendar) is made, else every one of the
        file's, whatever part of it these bars are."""
        return 0 if self._iso.made() else len(self._iso.timestamps)

    def iso_of(self, rows: slice) -> list[str]:
        """The ISO 8601 strings of ``rows`` of these bars (a slice with step 1), the
        same text :meth:`iso` has for them; cached per file only when they are a
        large part of it (see ``ISO_CACHE_SHARE``)."""
        lo, hi, _ = rows.indices(len(self))
        base = self._iso_slice.start
        return self._iso.part(slice(base + lo, base + max(lo, hi)))

    def between(self, start: np.datetime64 | None, end: np.datetime64 | None) -> Bars:
        """The bars with ``start <= timestamp <= end`` (both optional, inclusive)."""
        if start is None and end is None:
            return self
        lo = 0 if start is None else int(np.searchsorted(self.timestamps, start, "left"))
        hi = len(self) if end is None else int(np.searchsorted(self.timestamps, end, "right"))
        base = self._iso_slice.start
        cut = slice(lo, max(lo, hi))
        return Bars(self.symbol, self.timestamps[cut], self.open[cut], self.high[cut],
                    self.low[cut], self.close[cut], self.volume[cut], self._iso,
                    slice(base + cut.start, base + cut.stop))

    @property
    def nbytes(self) -> int:
        return int(self.timestamps.nbytes) + 5 * int(self.close.nbytes)


@dataclass(frozen=True, slots=True)
class ToRead:
    """What reading a symbol's file means now (:meth:`DataStore.to_read`)."""

    size: int
    """The file's bytes (0: a name or file :meth:`DataStore.bars` refuses)."""
    parse: bool
    """Whether it must be parsed: not cached, or changed since."""
    bars: int | None
    """Its bars between start and end: foretold by a :func:`glance` when it must be
    parsed (None: it was not glanced at, or could not be)."""
    iso_rows: int | None
    """The timestamps whose ISO text :meth:`Bars.iso` would make: 0 when its calendar's
    text is made, or counted for an earlier symbol of the list (a file parsed on the
    calendar of another shares its text); foretold, or None, as ``bars``."""


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
    header, *heads = head.split(b"\n")[:-1]  # whole lines only
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


def _share_between(first: np.datetime64, last: np.datetime64, lo: np.datetime64 | None,
                   hi: np.datetime64 | None) -> float:
    """The share of the time from ``first`` to ``last`` between ``lo`` and ``hi``."""
    start = first if lo is None else max(first, lo)
    stop = last if hi is None else min(last, hi)
    if stop < start:
        return 0.0
    return 1.0 if last == first else float((stop - start) / (last - first))


def parse_csv(path: Path, symbol: str, on_part: PartFn | None = None) -> Bars:
    """Parse one ``<SYMBOL>.csv``; a malformed file raises ToolError naming the symbol.
    ``on_part`` hears the share of the file's bytes parsed after each chunk of a large
    file but the last."""
    try:
        frame = _read_frame(path, on_part)
        stamps = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError) as exc:
        raise ToolError(f"data file for symbol {symbol!r} is malformed: {exc}") from exc
    times = stamps.dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    columns = [frame[name].to_numpy(dtype=np.float64, copy=True) for name in FIELDS]
    _check_bars(symbol, times, columns)
    for array in [times, *columns]:
        array.flags.writeable = False
    open_, high, low, close, volume = columns
    return Bars(symbol, times, open_, high, low, close, volume, _IsoCache(times),
                slice(0, len(times)))


def _read_frame(path: Path, on_part: PartFn | None) -> pd.DataFrame:
    """The file's columns: in one go, or ``PARSE_CHUNK_ROWS`` at a time (the same frame)
    when someone hears how far it has gone and there is enough to say."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
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


def _check_bars(symbol: str, times: Times, columns: list[F64]) -> None:
    missing = np.flatnonzero(np.isnat(times))
    if missing.size:
        raise ToolError(f"data file for symbol {symbol!r}: no timestamp on line "
                        f"{int(missing[0]) + 2}")
    if len(times) > 1:
        bad = np.flatnonzero(np.diff(times) <= np.timedelta64(0, "us"))
        if bad.size:
            raise ToolError(f"data file for symbol {symbol!r}: timestamps not strictly "
                            f"increasing on line {int(bad[0]) + 3}")
    for name, values in zip(FIELDS[:4], columns[:4], strict=True):
        if np.any(values <= 0) or np.any(np.isinf(values)):
            raise ToolError(f"data file for symbol {symbol!r}: {name} must be positive")


@dataclass(frozen=True, slots=True)
class Panel:
    """Symbols outer-joined on timestamp: arrays of shape (T, N), NaN for missing bars."""

    symbols: tuple[str, ...]
    timestamps: Times
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.timestamps), len(self.symbols))


def build_panel(series: list[Bars], max_cells: int | None = None) -> Panel:
    """Outer-join ``series`` on timestamp (no forward fill); more than ``max_cells``
    cells (dates x symbols) is InvalidParams, raised before the arrays are made."""
    first = series[0].timestamps if series else np.array([], dtype="datetime64[us]")
    if all(np.array_equal(s.timestamps, first) for s in series):
        union, rows = first, None
    else:
        union = np.unique(np.concatenate([s.timestamps for s in series]))
        rows = [np.searchsorted(union, s.timestamps) for s in series]
    if max_cells is not None and len(union) * len(series) > max_cells:
        raise InvalidParams(
            f"at most {max_cells} cells (dates x symbols, the symbols' timestamps "
            f"outer-joined) fit in one job, and these make {len(union)} dates x "
            f"{len(series)} symbols = {len(union) * len(series)}: give fewer symbols "
            f"or a narrower start and end")
    arrays = []
    for name in FIELDS:
        out = np.full((len(union), len(series)), np.nan)
        for j, bars in enumerate(series):
            out[slice(None) if rows is None else rows[j], j] = getattr(bars, name)
        arrays.append(out)
    return Panel(tuple(s.symbol for s in series), union, *arrays)


def _foretold(path: Path, size: int, lo: np.datetime64 | None, hi: np.datetime64 | None,
              spans: set[tuple[int, int]]) -> ToRead:
    """A file to parse, glanced at when it is large: its bars between ``lo`` and ``hi``
    and, unless ``spans`` has its first and last times (a calendar whose text is made or
    counted), its rows' ISO text to make; the calendar is counted then."""
    seen = glance(path, size) if size >= GLANCE_BYTES else None
    if seen is None:
        return ToRead(size, True, None, None)
    rows, first, last = seen
    span = (int(first.astype(np.int64)), int(last.astype(np.int64)))
    iso_rows = 0 if span in spans else round(rows)
    spans.add(span)
    return ToRead(size, True, round(rows * _share_between(first, last, lo, hi)), iso_rows)


class DataStore:
    """Parsed OHLCV files of one data directory, cached and thread-safe."""

    def __init__(self, data_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.data_dir = Path(data_dir)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, tuple[FileKey, Bars]] = OrderedDict()
        self._parsing: dict[Path, threading.Lock] = {}  # one a file ever asked for
        self._paths: dict[str, Path] = {}  # one a file ever found
        self._bytes = 0
        # Files on one calendar share one timestamp array and one ISO text list.
        self._calendars: OrderedDict[tuple[int, int, int], _IsoCache] = OrderedDict()

    def list_symbols(self) -> list[str]:
        """Every symbol with a ``<SYMBOL>.csv`` regular file, sorted."""
        try:
            entries = list(os.scandir(self.data_dir))
        except FileNotFoundError:
            return []
        names = (e.name[:-4] for e in entries if e.name.endswith(".csv") and e.is_file())
        return sorted(n for n in names if _SYMBOL_RE.fullmatch(n))

    def bars(self, symbol: str, start: datetime | str | None = None,
             end: datetime | str | None = None, on_parse: PartFn | None = None) -> Bars:
        """The bars of ``symbol`` between ``start`` and ``end`` (inclusive).  When the file
        must be parsed, ``on_parse`` hears how far along that is (see :func:`parse_csv`)."""
        path, key = self._file(symbol)
        cached = self._get(path, key)
        if cached is None:
            # One thread parses a file; the others wait for its bars (each parse of a
            # file of millions of bars holds hundreds of MB while it runs).
            with self._parse_lock(path):
                cached = self._get(path, key)
                if cached is None:
                    cached = self._share_calendar(parse_csv(path, symbol, on_parse))
                    self._put(path, key, cached)
        return cached.between(to_time(start), to_time(end))

    def to_read(self, symbols: list[str], start: datetime | str | None = None,
                end: datetime | str | None = None) -> list[ToRead]:
        """What reading each of ``symbols`` (between ``start`` and ``end``) means now, in
        order; nothing to read for a name or file :meth:`bars` refuses (it says why).
        What the tools weigh their progress bars by: parsing a file costs more than the
        analysis of its bars, taking it from the cache microseconds, and making its ISO
        text (a backtest's first read of a parsed file) about as much as its backtest."""
        lo, hi = to_time(start), to_time(end)
        out: list[ToRead] = []
        counted: dict[int, _IsoCache] = {}  # calendars whose text is counted (kept alive)
        with self._lock:  # the first and last times of calendars made or counted
            spans = {ident[1:] for ident, iso in self._calendars.items() if iso.made()}
        for symbol in symbols:
            try:
                path, key = self._file(symbol)
            except (InvalidParams, OSError):
                out.append(ToRead(0, False, 0, 0))
                continue
            with self._lock:  # looked at, not touched: a read to come is no use of the cache
                entry = self._cache.get(path)
            _, size, _ = key
            if entry is None or entry[0] != key:
                out.append(_foretold(path, size, lo, hi, spans))
                continue
            bars = entry[1]
            iso_rows = 0 if id(bars._iso) in counted else bars.iso_to_make()
            counted[id(bars._iso)] = bars._iso
            if bars._iso.span is not None:
                spans.add(bars._iso.span)
            out.append(ToRead(size, False, len(bars.between(lo, hi)), iso_rows))
        return out

    def _file(self, symbol: str) -> tuple[Path, FileKey]:
        """``symbol``'s data file and its cache key (mtime, size, inode); InvalidParams
        when the name is not a symbol or no regular file has it."""
        path = self._paths.get(symbol)
        if path is None:
            path = self.data_dir / f"{validate_symbol(symbol)}.csv"
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise InvalidParams(f"unknown symbol {symbol!r}: no data file") from exc
        if not stat.S_ISREG(info.st_mode):
            raise InvalidParams(f"unknown symbol {symbol!r}: not a regular file")
        # One path a file (which keeps its hash): joining and hashing a new one for
        # every look-up took a third of a cached read.
        self._paths.setdefault(symbol, path)
        return path, (info.st_mtime_ns, info.st_size, info.st_ino)

    def _parse_lock(self, path: Path) -> threading.Lock:
        with self._lock:
            return self._parsing.setdefault(path, threading.Lock())

    def panel(self, symbols: list[str], start: datetime | str | None = None,
              end: datetime | str | None = None) -> Panel:
        """The outer-joined panel of ``symbols`` between ``start`` and ``end``."""
        return build_panel([self.bars(s, start, end) for s in symbols])

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._bytes = 0

    def _share_calendar(self, bars: Bars) -> Bars:
        times, span = bars.timestamps, bars._iso.span
        if span is None:
            return bars
        ident = (len(times), *span)
        with self._lock:
            known = self._calendars.get(ident)
            if known is None or not np.array_equal(known.timestamps, times):
                self._calendars[ident] = bars._iso
                while len(self._calendars) > MAX_CALENDARS:
                    self._calendars.popitem(last=False)
                return bars
        return dataclasses.replace(bars, timestamps=known.timestamps, _iso=known)

    def _get(self, path: Path, key: FileKey) -> Bars | None:
        with self._lock:
            entry = self._cache.get(path)
            if entry is None or entry[0] != key:
                return None
            self._cache.move_to_end(path)
            return entry[1]

    def _put(self, path: Path, key: FileKey, bars: Bars) -> None:
        with self._lock:
            old = self._cache.pop(path, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            self._cache[path] = (key, bars)
            self._bytes += bars.nbytes
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _, (_, evicted) = self._cache.popitem(last=False)
                self._bytes -= evicted.nbytes
