"""A data file's rows before pandas reads them: its bytes read whole and unchanged, every
row with as many fields as its header, and the line each row is on.

pandas' C parser, given the columns to keep (``usecols``), drops a row's fields past the
header's and pads a short row with NaN, both silently: a price with an unquoted
thousands separator (``3,250.5``) shifted the row (open 3, high 250.5), and a last line
cut short by a download made its close 1 and the backtest lost 99 % (QA).  It also
skips blank lines, so a row's index plus two was not its line.  Guarantees:

* :func:`read_whole` gives the bytes of a file no one wrote to while they were read
  (read again, twice at most, then ToolError): a file rewritten in place under a parse
  gave results of a part of it.
* :func:`csv_rows` raises ToolError naming the line of the first row with fewer fields
  than the header, or more (unless the extra ones are empty: a trailing comma on every
  line is a common export; the header's own trailing commas ask for no fields), and a
  header that lacks a column; else gives each data
  row's line number (1-based, as an editor counts), blank lines skipped as pandas
  skips them.  Fields are counted with numpy, a few ms for a million rows, and a quoted
  field may hold a comma or a line end; a file with a quote that neither opens, closes
  nor doubles within a field (``5"``, `` "a"``) is counted by the csv module.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spool.errors import ToolError
from spool.text import UTF8_BOM

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
Lines = npt.NDArray[np.int64]
"""The line number of each data row, in order."""
READS = 3
_COMMA, _CR, _LF, _QUOTE = ord(","), ord("\r"), ord("\n"), ord('"')
_BESIDE = np.isin(np.arange(256), [_COMMA, _CR, _LF, _QUOTE])
"""By byte: whether a quote that opens a field may follow it, and one that closes it
precede it."""
_BLANK = b" \t\r\n"
"""What a line pandas skips holds, if anything."""
_BLANK_TEXT = _BLANK.decode()


def read_whole(path: Path, symbol: str) -> bytes:
    """The file's bytes, as no writer had them while they were read."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except PermissionError as exc:  # said "PermissionError: [Errno 13]", a tool_error (QA)
        raise ToolError(f"data file for symbol {symbol!r}: this processor's user (uid "
                        f"{os.geteuid()}) may not read {path}: {exc.strerror}; make the "
                        "data files readable to it") from exc
    with handle:
        for _ in range(READS):
            before = os.fstat(handle.fileno())
            handle.seek(0)
            data = handle.read()
            after = os.fstat(handle.fileno())
            if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size) \
                    == (after.st_mtime_ns, len(data)):
                return data
    raise ToolError(f"data file for symbol {symbol!r} kept changing while it was read: "
                    "replace data files by rename (write a temporary file, then mv), not in "
                    "place")


def csv_rows(symbol: str, data: bytes) -> Lines:
    """Each data row's line number, once every row has the header's fields (see the
    module's guarantees)."""
    if not data:
        return np.empty(0, np.int64)  # an empty file: pandas says so (numpy indexed none)
    counted = _counted(data)
    if counted is None:  # a quote inside a field, or one left open
        counted = _counted_by_csv(data)
    header, counts, lines, extra_empty = counted
    if header is None:
        return np.empty(0, np.int64)  # an empty file: pandas says so
    _check_header(symbol, header)
    named = len(header)
    while not header[named - 1]:  # a header's trailing commas (its columns named none)
        named -= 1                # ask for no fields of rows that end before them
    short = np.flatnonzero(counts < named)
    long = np.flatnonzero((counts > len(header)) & ~extra_empty)
    bad = [int(rows[0]) for rows in (short, long) if rows.size]
    if bad:
        row = min(bad)
        wanted = named if counts[row] < named else len(header)
        raise ToolError(f"data file for symbol {symbol!r}: line {int(lines[row])} has "
                        f"{int(counts[row])} fields where the header has {wanted} (an "
                        "unquoted comma in a number, or a line cut short)")
    return lines


def _check_header(symbol: str, header: list[str]) -> None:
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        shown = ",".join(header)
        raise ToolError(f"data file for symbol {symbol!r}: its header (line 1) "
                        f"{shown[:200]!r} has no {', '.join(missing)} column (it must "
                        f"name {','.join(COLUMNS)}, in lower case, in any order)")


def _counted(data: bytes) -> tuple[list[str] | None, Lines, Lines,
                                  npt.NDArray[np.bool_]] | None:
    """The header's names, and each data row's field count, line number and whether its
    fields past the header's are all empty, counting commas with numpy.  A comma or line
    end inside quotes is no separator; None when a quote is other than one opening a
    field, closing it or doubled within it (the csv module counts those files)."""
    buf = np.frombuffer(data, np.uint8)
    ends = _line_ends(buf, data)
    commas = np.flatnonzero(buf == _COMMA)
    lines_at = None
    if b'"' in data:
        quotes = _quotes(buf)
        if quotes is None:
            return None
        # A row's line, as the csv module counts (that of its last line): the line ends
        # before its own, quoted ones too.
        lines_at = ends
        ends, commas = _outside(quotes, ends), _outside(quotes, commas)
    if not buf.size or not ends.size or ends[-1] != buf.size - 1:
        ends = np.append(ends, buf.size)  # a last line without its line end
    starts = np.concatenate(([0], ends[:-1] + 1))
    stops = ends - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR))
    # Each line's commas: those before its end less those before the line before it
    # ended (a line end is no comma).
    counts = np.diff(np.searchsorted(commas, ends), prepend=0) + 1
    numbers = np.flatnonzero(stops > starts)  # pandas skips blank lines,
    alone = numbers[counts[numbers] == 1]  # and those of spaces and tabs only
    if alone.size:
        numbers = np.setdiff1d(numbers, [n for n in alone.tolist()
                                         if not data[starts[n]:stops[n]].strip(_BLANK)])
    if not numbers.size:
        return None, *_none()
    row_lines = (numbers if lines_at is None else np.searchsorted(lines_at, ends[numbers])) + 1
    starts, stops, counts = starts[numbers], stops[numbers], counts[numbers]
    header = next(csv.reader([data[starts[0]:stops[0]].decode("utf-8-sig", "replace")]))
    counts, starts, stops, row_lines = counts[1:], starts[1:], stops[1:], row_lines[1:]
    extra = counts - len(header)
    empty = np.zeros(len(counts), bool)
    one = extra == 1  # a trailing comma on each line: looked at all at once
    empty[one] = buf[stops[one] - 1] == _COMMA
    # Else each on its own (rows with fields past the header's are few: a bad file's).
    for row in np.flatnonzero((extra > 1) | (one & ~empty & (buf[stops - 1] == _QUOTE))):
        line = data[starts[row]:stops[row]]
        if b'"' not in line:
            empty[row] = line.endswith(b"," * int(extra[row]))
            continue
        fields = next(csv.reader([line.decode("utf-8", "replace")]))
        empty[row] = not any(fields[len(header):])
    return header, counts, row_lines, empty


def _line_ends(buf: npt.NDArray[np.uint8], data: bytes) -> npt.NDArray[np.intp]:
    """Where lines end, as pandas ends them: at each LF, and at each CR not before one
    (a CRLF ends at its LF).  A CR alone in a file of LF lines ends a line all the same:
    pandas split the row there, into two padded with NaN, where this counted one."""
    lf = np.flatnonzero(buf == _LF)
    if b"\r" not in data:
        return lf
    cr = np.flatnonzero(buf == _CR)
    alone = cr[buf[np.minimum(cr + 1, buf.size - 1)] != _LF]  # (the last byte: itself)
    return np.union1d(lf, alone) if alone.size else lf


def _quotes(buf: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp] | None:
    """Where the quotes are, every other one opening a field and the next closing it;
    None unless every quote opens a field (after a comma, a line end or the file's
    start), closes one (before a comma, a line end or the end) or is doubled in one, and
    the last is closed: the files the count of quotes before a byte tells in or out of a
    field.  (Two quotes in a row pass both tests: ``""`` in a field, or an empty one.)"""
    at = np.flatnonzero(buf == _QUOTE)
    if at.size % 2:
        return None  # a quote left open
    first, last = at[0::2], at[1::2]
    start = len(UTF8_BOM) if buf[:len(UTF8_BOM)].tobytes() == UTF8_BOM else 0
    if not (_BESIDE[buf[first - 1]] | (first == start)).all():
        return None
    if not (_BESIDE[buf[np.minimum(last + 1, buf.size - 1)]] | (last == buf.size - 1)).all():
        return None
    return at


def _outside(at: npt.NDArray[np.intp], where: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Those of ``where`` outside quotes: after an even number of them."""
    even: npt.NDArray[np.bool_] = (np.searchsorted(at, where) & 1) == 0
    return where[even]


def _counted_by_csv(data: bytes) -> tuple[list[str] | None, Lines, Lines,
                                          npt.NDArray[np.bool_]]:
    """As :func:`_counted`, by the csv module: a quoted field may hold a comma."""
    last = [""]

    def physical() -> Iterator[str]:  # each line as read, the last kept
        for last[0] in io.StringIO(data.decode("utf-8-sig", "replace"), newline=""):
            yield last[0]

    reader = csv.reader(physical())
    header: list[str] | None = None
    counts: list[int] = []
    lines: list[int] = []
    empty: list[bool] = []
    for fields in reader:
        if not fields or (len(fields) == 1 and not last[0].strip(_BLANK_TEXT)):
            continue  # a blank line, or one of spaces and tabs only
        if header is None:
            header = fields
            continue
        counts.append(len(fields))
        lines.append(reader.line_num)
        empty.append(not any(fields[len(header):]))
    if header is None:
        return None, *_none()
    return header, np.array(counts, np.int64), np.array(lines, np.int64), np.array(empty, bool)


def _none() -> tuple[Lines, Lines, npt.NDArray[np.bool_]]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool)
