"""The row check counts a quoted file's fields with numpy, as the csv module does.

A file with any quote went to the csv module whole: a 300 MB quoted export parsed in
6.9 s where it had taken 2.7, with twice the memory (the forty-seventh session's own
review).  Quotes that open, close or double within a field are counted with numpy now;
these check its counts, lines and empty extra fields against the csv module's, over
files an export writes and files a hand edits.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.quant import bars as bars_module
from processor.quant import csvrows
from spool.errors import ToolError

TEXTS = ["1.5", "", "3,250.5", 'say "hi"', "two\nlines", "a\r\nb", " spaced ", "x"]
QUOTING = [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]


@st.composite
def exports(draw: st.DrawFn) -> bytes:
    """A header and rows as csv.writer writes them, some short, some long, some blank."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from(QUOTING)),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(list(csvrows.COLUMNS))
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()) and draw(st.booleans()):
            out.write("\n")  # a blank line
            continue
        width = draw(st.integers(4, 9))
        writer.writerow([draw(st.sampled_from(TEXTS)) for _ in range(width)])
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # the last line without its end
    return text.encode()


def _by_numpy(data: bytes) -> tuple[object, ...]:
    counted = csvrows._counted(data)
    assert counted is not None, data
    return _plain(counted)


def _plain(counted: tuple[object, ...]) -> tuple[object, ...]:
    """The counts as lists, "fields past the header's all empty" said of long rows only
    (the one thing the check asks of it)."""
    header, counts, lines, empty = counted
    if header is not None:
        assert isinstance(counts, np.ndarray) and isinstance(empty, np.ndarray)
        empty = empty & (counts > len(header))
    return tuple(x.tolist() if isinstance(x, np.ndarray) else x
                 for x in (header, counts, lines, empty))


@settings(max_examples=300, deadline=None)
@given(exports())
def test_an_exports_quoted_fields_are_counted_as_the_csv_module_counts_them(
        data: bytes) -> None:
    assert _by_numpy(data) == _plain(csvrows._counted_by_csv(data))


HEAD = b"timestamp,open,high,low,close,volume\n"
PIECES = [b"1", b",", b'"', b'""', b" ", b"\t", b"\n", b"\r\n", b"\r"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map(lambda xs: HEAD + b"".join(xs)))
def test_what_numpy_counts_of_a_hand_edited_file_is_what_the_csv_module_counts(
        data: bytes) -> None:
    """Quotes anywhere: each file numpy takes it counts as the csv module does (the rest
    are the csv module's)."""
    counted = csvrows._counted(data)
    if counted is not None:
        assert _plain(counted) == _plain(csvrows._counted_by_csv(data))


def test_a_fully_quoted_file_is_counted_with_numpy_and_its_lines_named() -> None:
    data = (b'"timestamp","open","high","low","close","volume"\r\n'
            b'"2024-01-02","1","2","0.5","1.5","10"\r\n'
            b'\r\n'
            b'"2024-01-03","1","2","0.5","1.5","10",""\r\n'
            b'"2024-01-04","1","2","0.5","1.5","10","note\nacross lines"\r\n')
    header, counts, lines, empty = _by_numpy(data)
    assert header == list(csvrows.COLUMNS)
    assert counts == [6, 7, 7] and lines == [2, 4, 6] and empty == [False, True, False]


def test_quotes_inside_a_field_or_left_open_go_to_the_csv_module() -> None:
    head = b"timestamp,open,high,low,close,volume\n"
    for row in (b'2024-01-02,1",2,0.5,1.5,10\n',      # a quote closing no field
                b'2024-01-02, "1",2,0.5,1.5,10\n',    # after a space: the field's text
                b'2024-01-02,"1"x,2,0.5,1.5,10\n',    # a quote then more of the field
                b'2024-01-02,"1,2,0.5,1.5,10\n'):     # left open
        assert csvrows._counted(head + row) is None, row
    assert csvrows.csv_rows("X", head + b'2024-01-02,1",2,0.5,1.5,10\n').tolist() == [2]
    with pytest.raises(ToolError, match="line 2 has 2 fields"):  # the rest is one field
        csvrows.csv_rows("X", head + b'2024-01-02,"1,2,0.5,1.5,10\n')


def test_lines_of_spaces_and_tabs_are_skipped_as_pandas_skips_them() -> None:
    """pandas skips them as blank lines; the check refused each as a row of one field
    (the forty-seventh session's own review)."""
    data = (b"timestamp,open,high,low,close,volume\n  \n"
            b"2024-01-02,1,2,0.5,1.5,10\n \t \r\n2024-01-03,1,2,0.5,1.5,x\n   ")
    for counted in (csvrows._counted(data), csvrows._counted_by_csv(data)):
        assert counted is not None and _plain(counted)[1:3] == ([6, 6], [3, 5])
    assert csvrows.csv_rows("X", data).tolist() == [3, 5]


def test_a_headers_trailing_comma_asks_rows_for_no_field_of_their_own() -> None:
    """pandas reads it (an unnamed column, empty); the check refused every row as short."""
    data = b"timestamp,open,high,low,close,volume,\n2024-01-02,1,2,0.5,1.5,10\n"
    assert csvrows.csv_rows("X", data).tolist() == [2]
    with pytest.raises(ToolError, match="line 3 has 5 fields where the header has 6"):
        csvrows.csv_rows("X", data + b"2024-01-03,1,2,0.5,1.5\n")
    with pytest.raises(ToolError, match="line 3 has 9 fields where the header has 7"):
        csvrows.csv_rows("X", data + b"2024-01-03,1,2,0.5,1.5,10,3,4,5\n")


def test_a_cr_alone_ends_a_line_as_pandas_ends_it(tmp_path: Path) -> None:
    """In a file of LF lines, a CR alone (files joined from two systems, a hand edit)
    ended no line for the check but one for pandas: two rows refused as one of eleven
    fields, and a row split in two named the wrong line ("no timestamp on line 4")."""
    head = b"timestamp,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\n"
    joined = tmp_path / "JOINED.csv"
    joined.write_bytes(head + b"2024-01-03,1,2,0.5,1.5,11\r2024-01-04,1,2,0.5,1.5,12\n"
                       b"2024-01-05,1,2,0.5,1.5,13\r\n")
    assert bars_module.parse_csv(joined, "JOINED").volume.tolist() == [10, 11, 12, 13]
    split = tmp_path / "SPLIT.csv"
    split.write_bytes(head + b"2024-01-03,1,2\r,0.5,1.5,10\n2024-01-04,1,2,0.5,1.5,12\n")
    with pytest.raises(ToolError, match="line 3 has 3 fields where the header has 6"):
        bars_module.parse_csv(split, "SPLIT")


def test_an_empty_file_is_said_malformed_naming_its_symbol(tmp_path: Path) -> None:
    """A 0-byte file (a download that failed) failed every tool naming it, and every
    default analysis, with "IndexError: index 0 is out of bounds" (QA)."""
    empty = tmp_path / "EMPTY0.csv"
    empty.write_bytes(b"")
    with pytest.raises(ToolError, match="data file for symbol 'EMPTY0' is malformed: No "
                                        "columns to parse"):
        bars_module.parse_csv(empty, "EMPTY0")
