"""OHLCV data for the quant tools: symbol names, the parsed cache, panels.

Owns every read of ``SPOOL_DATA_DIR``.  Guarantees:

* A symbol is an id (``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``, matched in full).
  A name that is not, or that has no ``<SYMBOL>.csv``, raises
  :class:`~spool.errors.InvalidParams` naming the symbol; a path is only ever
  built from a name that passed the check.
* A file is parsed by :func:`processor.quant.bars.parse_csv`, which says what it must
  hold: a file that breaks its rules raises :class:`~spool.errors.ToolError` naming
  the symbol.
* :class:`DataStore` caches parsed files keyed by path and re-parses a file
  when its ``(mtime_ns, ctime_ns, size, inode)`` changes (the change time: a
  rewrite of the same size with its mtime put back, as ``cp -p`` or ``tar`` do).  It
  is thread-safe, and threads asking for one uncached file parse it once (the others
  wait); cached arrays are read-only and shared (files with identical timestamps
  share one timestamp array and its ISO text).  The cache is bounded by ``max_bytes``
  (least recently used files are dropped first).
* :class:`Panel` outer-joins symbols on timestamp: a missing bar is NaN, never
  forward filled.
* A read can report how far it has gone (``on_part``: the share of a file parsed, of
  its ISO text made), and :meth:`DataStore.to_read` says beforehand what reading
  symbols means now (bytes to parse, bars, ISO text to make): what the tools' progress
  bars weigh reading by (:mod:`processor.quant.pace`).  Neither changes what is read.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from processor.quant.bars import (
    F64,
    FIELDS,
    Bars,
    IsoCache,
    PartFn,
    Times,
    glance,
    parse_csv,
    to_time,
)
from processor.quant.params import is_symbol, not_a_symbol
from spool.errors import InvalidParams

DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_CALENDARS = 64


class FileKey(NamedTuple):
    """What tells a data file changed: a cached parse is used while it is the same."""

    mtime_ns: int
    ctime_ns: int  # a rewrite of the same size with its mtime put back (cp -p, tar)
    size: int
    inode: int


GLANCE_BYTES = 1 << 20
"""A file to parse of this size or more is glanced at (:func:`glance`) for its bars and
calendar: the estimate of one such file weighs on a bar, which a file of a MB or more
(10 ms and more to parse) pays 20 to 30 us for; smaller ones are foretold in bulk."""


def validate_symbol(symbol: object) -> str:
    """Return ``symbol`` if it is a valid id, else raise InvalidParams naming it."""
    if not is_symbol(symbol):
        raise InvalidParams(not_a_symbol(symbol))
    return symbol


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


def _share_between(first: np.datetime64, last: np.datetime64, lo: np.datetime64 | None,
                   hi: np.datetime64 | None) -> float:
    """The share of the time from ``first`` to ``last`` between ``lo`` and ``hi``."""
    start = first if lo is None else max(first, lo)
    stop = last if hi is None else min(last, hi)
    if stop < start:
        return 0.0
    return 1.0 if last == first else float((stop - start) / (last - first))


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
        self._calendars: OrderedDict[tuple[int, int, int], IsoCache] = OrderedDict()

    def no_directory(self) -> str | None:
        """Why no symbol's file can be there, for a message that says none is: the data
        directory does not exist (the processor's SPOOL_DATA_DIR unset, no ``spoolq data
        synth`` run), where "no data file" sent users to look at the symbol."""
        if os.path.isdir(self.data_dir):
            return None
        if os.path.lexists(self.data_dir):  # said "does not exist" of /etc/passwd (QA)
            return (f"the data directory {self.data_dir} is no directory: set the "
                    "processor's SPOOL_DATA_DIR to the folder of the <SYMBOL>.csv files")
        return (f"the data directory {self.data_dir} does not exist: set the processor's "
                "SPOOL_DATA_DIR, or run `spoolq data synth`")

    def list_symbols(self) -> list[str]:
        """Every symbol with a ``<SYMBOL>.csv`` regular file, sorted."""
        try:
            entries = list(os.scandir(self.data_dir))
        except FileNotFoundError:
            return []
        names = (e.name[:-4] for e in entries if e.name.endswith(".csv") and e.is_file())
        return sorted(n for n in names if is_symbol(n))

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
        counted: dict[int, IsoCache] = {}  # calendars whose text is counted (kept alive)
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
            size = key.size
            if entry is None or entry[0] != key:
                out.append(_foretold(path, size, lo, hi, spans))
                continue
            bars = entry[1]
            iso_rows = 0 if id(bars.calendar) in counted else bars.iso_to_make()
            counted[id(bars.calendar)] = bars.calendar
            if bars.calendar.span is not None:
                spans.add(bars.calendar.span)
            out.append(ToRead(size, False, len(bars.between(lo, hi)), iso_rows))
        return out

    def _file(self, symbol: str) -> tuple[Path, FileKey]:
        """``symbol``'s data file and its cache key (mtime, ctime, size, inode); InvalidParams
        when the name is not a symbol or no regular file has it."""
        path = self._paths.get(symbol)
        if path is None:
            path = self.data_dir / f"{validate_symbol(symbol)}.csv"
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise InvalidParams(f"unknown symbol {symbol!r}: no data file "
                                f"({self.no_directory() or f'{path.name} in {path.parent}'})"
                                ) from exc
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A symlink loop is no file, as a dangling link is (it was a tool_error,
            # "OSError: [Errno 40]", QA).
            raise InvalidParams(f"unknown symbol {symbol!r}: not a regular file "
                                f"({path.name} is a loop of symlinks)") from exc
        if not stat.S_ISREG(info.st_mode):
            raise InvalidParams(f"unknown symbol {symbol!r}: not a regular file")
        # One path a file (which keeps its hash): joining and hashing a new one for
        # every look-up took a third of a cached read.
        self._paths.setdefault(symbol, path)
        return path, FileKey(info.st_mtime_ns, info.st_ctime_ns, info.st_size,
                             info.st_ino)

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
        times, span = bars.timestamps, bars.calendar.span
        if span is None:
            return bars
        ident = (len(times), *span)
        with self._lock:
            known = self._calendars.get(ident)
            if known is None or not np.array_equal(known.timestamps, times):
                self._calendars[ident] = bars.calendar
                while len(self._calendars) > MAX_CALENDARS:
                    self._calendars.popitem(last=False)
                return bars
        return dataclasses.replace(bars, timestamps=known.timestamps, calendar=known)

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
