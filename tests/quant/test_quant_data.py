"""DataStore: symbol names, parsing, cache invalidation, panels; and the synthetic writer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from quant_reference import read_rows, write_bars

from processor.quant import bars as bars_module
from processor.quant import csvrows, data, synth
from processor.quant.data import GLANCE_BYTES, DataStore, ToRead, validate_symbol
from spool.errors import InvalidParams, ToolError


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "", ".hidden", "a/b",
                                  "A\n", "x" * 65, "a b", "-x", "é"])
def test_bad_symbol_names_are_invalid_params(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidParams, match="is not a symbol id"):
        validate_symbol(name)
    with pytest.raises(InvalidParams, match="is not a symbol id"):
        DataStore(tmp_path).bars(name)


@pytest.mark.parametrize("name", ["AAPL", "BRK.B", "es_f-1", "0", "x" * 64])
def test_good_symbol_names(name: str) -> None:
    assert validate_symbol(name) == name


def test_missing_file_and_directory_are_invalid_params(tmp_path: Path) -> None:
    (tmp_path / "DIR.csv").mkdir()
    store = DataStore(tmp_path)
    with pytest.raises(InvalidParams, match="'NOPE'"):
        store.bars("NOPE")
    with pytest.raises(InvalidParams, match="'DIR'"):
        store.bars("DIR")
    assert DataStore(tmp_path / "absent").list_symbols() == []


def test_parsed_values_match_the_file(synth_dir: Path) -> None:
    bars = DataStore(synth_dir).bars("S0002")
    rows = read_rows(synth_dir / "S0002.csv")
    assert bars.close.tolist() == rows.close and bars.open.tolist() == rows.open
    assert bars.iso() == [t.isoformat() for t in rows.timestamps]
    assert not bars.close.flags.writeable


def test_list_symbols_skips_other_files(tmp_path: Path) -> None:
    write_bars(tmp_path, "B", [1.0, 2.0])
    write_bars(tmp_path, "A", [1.0, 2.0])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".A.csv.tmp").write_text("x")
    (tmp_path / "bad name.csv").write_text("x")
    assert DataStore(tmp_path).list_symbols() == ["A", "B"]


def test_cache_reuses_and_invalidates(tmp_path: Path) -> None:
    header = "timestamp,open,high,low,close,volume\n"
    path = tmp_path / "AAA.csv"
    path.write_text(header + "2020-01-01,1,1,1,1,1\n")
    store = DataStore(tmp_path)
    first = store.bars("AAA")
    assert store.bars("AAA").close is first.close
    before = path.stat()
    staged = tmp_path / "staged"
    staged.write_text(header + "2020-01-01,1,2,1,2,1\n")  # same size
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    os.replace(staged, path)  # only the inode differs
    assert path.stat().st_size == before.st_size
    assert store.bars("AAA").close.tolist() == [2.0]
    path.write_text(header + "2020-01-01,1,3,1,3,1\n2020-01-02,1,4,1,4,1\n")  # in place
    assert store.bars("AAA").close.tolist() == [3.0, 4.0]
    before = path.stat()
    path.write_text(header + "2020-01-01,1,5,1,5,1\n2020-01-02,1,6,1,6,1\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p, tar, touch -r
    assert store.bars("AAA").close.tolist() == [5.0, 6.0]  # the change time tells (h335)


def test_cache_is_bounded(tmp_path: Path) -> None:
    for name in ("A", "B", "C"):
        write_bars(tmp_path, name, np.arange(1.0, 101.0))
    store = DataStore(tmp_path, max_bytes=2 * 100 * 8 * 6)
    kept = store.bars("A")
    store.bars("B")
    store.bars("C")
    assert store.bars("A").close is not kept.close
    assert store.bars("C").close.tolist() == kept.close.tolist()


def test_threads_share_one_store(synth_dir: Path) -> None:
    store = DataStore(synth_dir)
    symbols = store.list_symbols()
    assert len(symbols) == 30, symbols  # an empty list had the threads read nothing
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for s in symbols:
                assert len(store.bars(s)) == 600
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_threads_wanting_one_file_parse_it_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads asking for one uncached file each parsed it: in the processor, FAST
    get_kline jobs on a 5,000,000-row file (each abandoned at its timeout, the parse
    going on) held some 650 MB apiece, two of them 1.3 GB.  One parses; the others
    wait for its bars."""
    write_bars(tmp_path, "ONE", np.arange(1.0, 50.0))
    parses: list[str] = []
    first_started = threading.Event()
    real_parse = data.parse_csv

    def slow_parse(path: Path, symbol: str,
                   on_part: bars_module.PartFn | None = None) -> bars_module.Bars:
        parses.append(symbol)
        first_started.set()
        time.sleep(0.5)
        return real_parse(path, symbol, on_part)

    monkeypatch.setattr(data, "parse_csv", slow_parse)
    store = DataStore(tmp_path)
    got: list[bars_module.Bars] = []
    threads = [threading.Thread(target=lambda: got.append(store.bars("ONE")))
               for _ in range(4)]
    threads[0].start()
    assert first_started.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert parses == ["ONE"]
    assert len(got) == 4 and all(b.close is got[0].close for b in got)


def test_a_file_parsed_in_chunks_is_the_file_parsed_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long parse says how far it has gone (a backtest's bar stood still through a
    file of 300,000 bars, 0.2 s and more), chunk by chunk, and gives the same bars."""
    synth.write_synthetic(tmp_path, symbols=1, bars=40_000, seed=5)  # some 2 MB
    whole = DataStore(tmp_path).bars("S0000")
    monkeypatch.setattr(bars_module, "PARSE_CHUNK_BYTES", 100_000)
    monkeypatch.setattr(bars_module, "PARSE_CHUNK_ROWS", 3_000)
    parts: list[float] = []
    store = DataStore(tmp_path)
    chunked = store.bars("S0000", on_parse=parts.append)
    for name in ("timestamps", *bars_module.FIELDS):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert chunked.iso() == whole.iso()
    assert len(set(parts)) >= 4 and parts == sorted(parts), parts
    assert parts[0] > 0 and parts[-1] < 1, parts
    more: list[float] = []
    assert store.bars("S0000", on_parse=more.append).close is chunked.close
    assert more == []  # cached: nothing parsed


def test_iso_text_made_in_parts_is_the_text_made_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ISO text of a file's timestamps, made at a backtest's first read of it (as
    long as its parse on long files), says how far it has gone, and is the same text:
    in the file's one unit (here microseconds, which one bar needs)."""
    days = [f"2020-01-01T{h:02d}:{m:02d}:00" for h in range(10) for m in range(0, 60, 12)]
    days[3] = "2020-01-01T00:36:00.25"
    write_bars(tmp_path, "US", np.arange(1.0, 51.0), days=days)
    want = DataStore(tmp_path).bars("US").iso()
    monkeypatch.setattr(bars_module, "ISO_PART_ROWS", 7)
    cut = DataStore(tmp_path).bars("US", start="2020-01-01T05:00:00")
    assert len(cut) == 25 and cut.iso_to_make() == 50  # the whole file's text is made
    parts: list[float] = []
    assert cut.iso(parts.append) == want[25:]
    assert parts == [k / 50 for k in range(7, 50, 7)]
    assert cut.iso_to_make() == 0 and want[3] == "2020-01-01T00:36:00.250000"


def test_to_read_says_what_reading_costs_now(tmp_path: Path) -> None:
    """What the bars weigh a read by: a file to parse by its size, a cached one by its
    bars between start and end and the ISO text still to make, counted once for the
    files of one calendar (they share one text)."""
    for name in ("A", "B"):
        write_bars(tmp_path, name, np.arange(1.0, 21.0))
    write_bars(tmp_path, "C", np.arange(1.0, 11.0))
    size = {n: (tmp_path / f"{n}.csv").stat().st_size for n in "ABC"}
    store = DataStore(tmp_path)
    assert store.to_read(["A", "C", "NOPE", "../x"]) == [
        ToRead(size["A"], True, None, None), ToRead(size["C"], True, None, None),
        ToRead(0, False, 0, 0), ToRead(0, False, 0, 0)]
    store.bars("A")
    store.bars("B")
    assert store.to_read(["B", "A", "C"], start="2010-01-11", end="2010-01-15") == [
        ToRead(size["B"], False, 5, 20), ToRead(size["A"], False, 5, 0),
        ToRead(size["C"], True, None, None)]
    store.bars("A").iso()
    store.bars("C")
    assert store.to_read(["A", "B", "C"]) == [
        ToRead(size["A"], False, 20, 0), ToRead(size["B"], False, 20, 0),
        ToRead(size["C"], False, 10, 10)]
    write_bars(tmp_path, "C", np.arange(1.0, 12.0))
    assert store.to_read(["C"]) == [ToRead((tmp_path / "C.csv").stat().st_size, True,
                                           None, None)]


def test_a_large_file_to_parse_is_foretold_from_its_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file to parse is glanced at when it is large: its bars from its size and the
    rows at its head and tail (rows of 300,000 synthetic bars grow from 60 to 120 bytes
    as prices drift: a fixed 60 bytes a row put one file's bars at twice the truth), its
    span for start and end, and whether its calendar's text is made or counted already
    (files of one calendar share one text: a backtest's bar counted it for each)."""
    monkeypatch.setattr(data, "GLANCE_BYTES", 10_000)
    monkeypatch.setattr(bars_module, "GLANCE_SAMPLE", 1_000)
    synth.write_synthetic(tmp_path, symbols=2, bars=3_000, seed=11)
    write_bars(tmp_path, "SHORT", np.arange(1.0, 2001.0))  # another calendar
    (tmp_path / "ODD.csv").write_text("when,open\n" + "x,1\n" * 5000)
    store = DataStore(tmp_path)
    facts = store.to_read(["S0000", "SHORT", "S0001", "ODD"])
    assert [f.parse for f in facts] == [True] * 4
    assert facts[0].bars == pytest.approx(3000, rel=0.05)
    assert facts[1].bars == pytest.approx(2000, rel=0.05)
    assert facts[2].bars == pytest.approx(3000, rel=0.05)
    assert [f.iso_rows for f in facts[:3]] == [facts[0].bars, facts[1].bars, 0]
    assert facts[3] == ToRead((tmp_path / "ODD.csv").stat().st_size, True, None, None)
    half = store.to_read(["S0000"], end=str(store.bars("SHORT").timestamps[999]))
    assert half[0].bars == pytest.approx(3000 * 1000 / 3000, rel=0.05)  # a third of its span
    store.bars("S0000").iso()
    (tmp_path / "S0000.csv").touch()  # to parse again, on a calendar whose text is made
    assert [f.iso_rows for f in store.to_read(["S0000", "S0001"])] == [0, 0]


@pytest.mark.parametrize(("text", "match"), [
    ("timestamp,open,high,low,close\n2010-01-04,1,1,1,1\n",
     "its header \\(line 1\\) 'timestamp,open,high,low,close' has no volume column"),
    ("timestamp,open,high,low,close,volume\n2010-01-05,1,1,1,1,1\n2010-01-04,1,1,1,1,1\n",
     "strictly increasing \\(to the microsecond\\) on line 3"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n2010-01-04,1,1,1,1,1\n",
     "strictly increasing"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,-1,1\n",
     "close must be a positive finite number, not -1 on line 2$"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n2010-01-05,1,1,1,inf,1\n",
     "close must be a positive finite number, not inf on line 3$"),
    # Subnormal prices: SMAs tied in their decimals compared unequal (a buy on a tie).
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1e-310,1,1\n",
     "low must be at least 2.2250738585072014e-308 \\(the smallest normal float\\), "
     "not 1e-310 on line 2$"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,-5\n",
     "volume must be a finite number at least 0, not -5 on line 2$"),
    ("timestamp,open,high,low,close,volume\nnot a date,1,1,1,1,1\n",
     "timestamp 'not a date' on line 2 is not a valid ISO 8601 time$"),
    # One line naming the value and its line: pandas' message ran over four lines of
    # advice ("passing `format`...") no job can follow, and named no line.
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n2010-02-30,1,1,1,1,1\n",
     "timestamp '2010-02-30' on line 3 is not a valid ISO 8601 time$"),
    ("timestamp,open,high,low,close,volume\n1262563200,1,1,1,1,1\n",
     "timestamp '1262563200' on line 2"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n04/01/2010,1,1,1,1,1\n",
     "timestamp '04/01/2010' on line 3"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,x,1,1,1,1\n",
     "open 'x' on line 2 is not a number$"),
    # Two exports concatenated: the second header, not "could not convert 'open'".
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n"
     "timestamp,open,high,low,close,volume\n2010-01-05,1,1,1,1,1\n",
     "open 'open' on line 3 is not a number$"),
    # Fields past the header's (an unquoted thousands separator) or short of them (a
    # line cut short): pandas dropped or padded them, silently (QA: prices shifted, a
    # close of 1 from "1,204,300"; a last line cut to its close).
    ("timestamp,open,high,low,close,volume\n2020-01-02,3250.5,3260.0,3240.0,3255.1,1,204,300\n",
     "line 2 has 8 fields where the header has 6"),
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n2010-01-05,129.0,130.0,128.0,1",
     "line 3 has 5 fields where the header has 6"),
    # Line numbers as an editor counts them, blank lines and all.
    ("timestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n\n\r\n"
     "2010-01-05,1,1,1,1,1\n2010-01-0X,1,1,1,1,1\n",
     "timestamp '2010-01-0X' on line 6 is not a valid ISO 8601 time$"),
    ("# exported by a terminal\ntimestamp,open,high,low,close,volume\n2010-01-04,1,1,1,1,1\n",
     "its header \\(line 1\\) '# exported by a terminal' has no timestamp, open"),
    ('timestamp,open,high,low,close,volume,name\n2010-01-04,1,1,1,1,1,"Apple, Inc."\n'
     '2010-01-05,1,1,1,1\n',
     "line 3 has 5 fields where the header has 7"),
    ("timestamp,open,high,low,close,volume\n,1,1,1,1,1\n", "no timestamp on line 2"),
])
def test_malformed_files_are_tool_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "BAD.csv").write_text(text)
    with pytest.raises(ToolError, match=match):
        DataStore(tmp_path).bars("BAD")


def test_files_with_extra_empty_fields_quotes_or_cr_lines_read_whole(tmp_path: Path) -> None:
    """What exports do and is still a whole file: a trailing comma on every line, a quoted
    field holding a comma, old Mac line ends (CR alone)."""
    (tmp_path / "TRAIL.csv").write_text("timestamp,open,high,low,close,volume\n"
                                        "2010-01-04,1,2,1,2,10,\n2010-01-05,2,3,2,3,20,,\n")
    (tmp_path / "QUOTED.csv").write_text('timestamp,name,open,high,low,close,volume\n'
                                         '2010-01-04,"Apple, Inc.",1,2,1,2,"10"\n')
    rows = "".join(f"2010-01-{d:02d},1,2,1,2,{d}\r" for d in range(1, 29))
    (tmp_path / "MAC.csv").write_bytes(b"timestamp,open,high,low,close,volume\r"
                                       + rows.encode() * 1)
    store = DataStore(tmp_path)
    assert list(store.bars("TRAIL").volume) == [10.0, 20.0]
    assert list(store.bars("QUOTED").volume) == [10.0]
    assert len(store.bars("MAC")) == 28


def test_a_large_file_without_a_line_end_in_its_head_is_read_not_glanced(
        tmp_path: Path) -> None:
    """The progress estimate's glance at a file of a MB or more split its first 4 KiB into
    lines and unpacked none from a file with CR-only line ends (or a header longer than
    that): run_backtest failed "not enough values to unpack" where get_kline read it
    (QA).  An estimate that cannot be made is none."""
    rows = "".join(f"{day},1,2,1,2,1\r" for day in
                   pd.date_range("1900-01-01", periods=60_000, freq="D").strftime("%Y-%m-%d"))
    data = ("timestamp,open,high,low,close,volume\r" + rows).encode()
    assert len(data) >= GLANCE_BYTES
    (tmp_path / "MAC.csv").write_bytes(data)
    store = DataStore(tmp_path)
    [seen] = store.to_read(["MAC"])
    assert seen.parse and seen.bars is None
    assert len(store.bars("MAC")) == 60_000


def test_a_file_rewritten_in_place_while_it_is_read_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data file copied over in place (same inode) while a job parsed it gave results
    of the part read so far (QA: 198,488 of 1,000,000 bars, a different result each
    run).  A read whose file changed meanwhile (its mtime after the read is not the one
    before) is read again; one that keeps changing is a ToolError that says why."""
    write_bars(tmp_path, "CHG", [1.0, 2.0, 3.0], days=["2020-01-01", "2020-01-02", "2020-01-03"])
    real_fstat = os.fstat
    changes = [1]  # the stat after the first read: the file written meanwhile

    def fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if changes and os.readlink(f"/proc/self/fd/{fd}").endswith("CHG.csv"):
            calls.append(fd)
            if len(calls) == 2:
                changes.pop()
                fields = list(st)
                fields[8] += 1  # st_mtime
                return os.stat_result(fields, {"st_mtime_ns": st.st_mtime_ns + 1})
        return st

    calls: list[int] = []
    monkeypatch.setattr(csvrows.os, "fstat", fstat)
    bars = DataStore(tmp_path).bars("CHG")
    assert len(calls) == 2 and not changes, "the read was not looked at again"
    assert list(bars.close) == [1.0, 2.0, 3.0]

    changes[:] = [1] * 10
    calls.clear()
    monkeypatch.setattr(csvrows.os, "fstat", lambda fd: os.stat_result(
        list(real_fstat(fd)), {"st_mtime_ns": time.time_ns()}))
    with pytest.raises(ToolError, match="kept changing while it was read: replace data "
                                        "files by rename"):
        csvrows.read_whole(tmp_path / "CHG.csv", "CHG")


def test_a_symlink_loop_is_an_unknown_symbol_not_a_tool_error(tmp_path: Path) -> None:
    (tmp_path / "LOOP.csv").symlink_to(tmp_path / "LOOP.csv")
    with pytest.raises(InvalidParams, match="unknown symbol 'LOOP'"):
        DataStore(tmp_path).bars("LOOP")


def test_offsets_become_utc(tmp_path: Path) -> None:
    (tmp_path / "TZ.csv").write_text("timestamp,open,high,low,close,volume\n"
                                     "2020-03-02T09:30:00-05:00,1,1,1,1,1\n"
                                     "2020-03-02T15:00:00Z,1,1,1,1,1\n")
    assert DataStore(tmp_path).bars("TZ").iso() == ["2020-03-02T14:30:00", "2020-03-02T15:00:00"]


def test_panel_outer_joins_without_fill(tmp_path: Path) -> None:
    write_bars(tmp_path, "A", [1.0, 2.0, 3.0], days=["2020-01-01", "2020-01-02", "2020-01-03"])
    write_bars(tmp_path, "B", [10.0, 30.0, 40.0], days=["2020-01-01", "2020-01-03", "2020-01-06"])
    store = DataStore(tmp_path)
    panel = store.panel(["A", "B"])
    assert panel.shape == (4, 2)
    np.testing.assert_array_equal(panel.close, [[1, 10], [2, np.nan], [3, 30], [np.nan, 40]])
    cut = store.panel(["A", "B"], "2020-01-02", "2020-01-03")
    assert cut.timestamps.tolist() == [pd.Timestamp("2020-01-02").to_pydatetime(),
                                       pd.Timestamp("2020-01-03").to_pydatetime()]
    np.testing.assert_array_equal(cut.close, [[2, np.nan], [3, 30]])


def test_synthetic_data_is_seeded_and_well_formed(tmp_path: Path) -> None:
    names = synth.write_synthetic(tmp_path / "a", symbols=12, bars=300, seed=5)
    synth.write_synthetic(tmp_path / "b", symbols=12, bars=300, seed=5)
    synth.write_synthetic(tmp_path / "c", symbols=12, bars=300, seed=6)
    assert names == [f"S{i:04d}" for i in range(12)]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"{n}.csv" for n in names]
    same = [(tmp_path / d / "S0003.csv").read_bytes() for d in ("a", "b", "c")]
    assert same[0] == same[1] != same[2]
    frame = pd.read_csv(tmp_path / "a" / "S0007.csv")
    assert frame["timestamp"].iloc[0] == "2010-01-04" and len(frame) == 300
    assert pd.to_datetime(frame["timestamp"]).dt.day_of_week.max() <= 4
    lo, hi = frame[["open", "close"]].min(axis=1), frame[["open", "close"]].max(axis=1)
    assert ((frame["low"] > 0) & (frame["low"] <= lo) & (hi <= frame["high"])).all()


def test_a_long_synthetic_walk_turns_back_at_its_bounds() -> None:
    """1,500,000 bars at seed 10's drift (some 12 % a year) took the close's exponent to
    infinity: a numpy overflow warning, and prices of ``inf`` in the file."""
    prices = synth.generate(1, 1_500_000, seed=10)
    close = prices["close"][:, 0]
    assert close.min() >= synth.PRICE_FLOOR and close.max() <= synth.PRICE_CEILING
    assert close.max() > synth.PRICE_CEILING / 2  # it went up there, and came back
    assert close[-1] < close.max()
    assert all(np.isfinite(a).all() for a in prices.values())


def test_synth_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = synth.main(["--symbols", "3", "--bars", "40", "--seed", "1",
                       "--data-dir", str(tmp_path)])
    assert code == 0
    assert "wrote 3 symbols x 40 bars (S0000..S0002)" in capsys.readouterr().out
    assert DataStore(tmp_path).list_symbols() == ["S0000", "S0001", "S0002"]


def test_synthetic_data_is_readable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    """`spoolq data synth` as root under umask 077 made a 0700 folder of 0600 files, and
    the processor's user failed every job on them (QA)."""
    old = os.umask(0o077)
    try:
        synth.write_synthetic(tmp_path / "data", 2, 5, seed=1)
    finally:
        os.umask(old)
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "data").iterdir()} == {0o644}


@pytest.mark.parametrize("umask", [0o000, 0o002])
def test_synth_into_a_new_spool_makes_no_folder_others_may_write(tmp_path: Path,
                                                                 umask: int) -> None:
    """`spoolq data synth` run before `spoolq init` makes ``$SPOOL_DIR/data`` and the
    folders above it: under umask 000 (a cron job's, a container's) they were 0777, the
    spool root too, which `init` then kept, so any local user could rename ``pending/``
    or ``done/`` away and put a folder of their own in its place (QA h401), as `init`
    alone no longer allows."""
    root = tmp_path / "new" / "spool"
    code = ("import os, sys; os.umask(int(sys.argv[1])); from spool.cli.main import main; "
            "sys.exit(main(['data', 'synth', '--symbols', '1', '--bars', '5']))")
    proc = subprocess.run([sys.executable, "-c", code, str(umask)],
                          env={**os.environ, "SPOOL_DIR": str(root)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for folder in (tmp_path / "new", root, root / "data"):
        assert folder.stat().st_mode & 0o777 == 0o755, folder
    subprocess.run([sys.executable, "-c", code.replace("'data', 'synth', '--symbols', "
                                                       "'1', '--bars', '5'", "'init'"),
                    str(umask)], env={**os.environ, "SPOOL_DIR": str(root)},
                   capture_output=True, timeout=60, check=True)
    assert root.stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="drops root's DAC override with setpriv")
def test_a_data_file_the_processor_may_not_read_says_so(tmp_path: Path) -> None:
    """It was a tool_error "PermissionError: [Errno 13] ..."."""
    path = tmp_path / "S.csv"
    path.write_text("timestamp,open,high,low,close,volume\n")
    path.chmod(0)
    code = ("import sys; from pathlib import Path; from processor.quant import csvrows\n"
            "try: csvrows.read_whole(Path(sys.argv[1]), 'S')\n"
            "except Exception as e: print(type(e).__name__, e)")
    proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                           "--inh-caps", "-dac_override,-dac_read_search", "--",
                           sys.executable, "-c", code, str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.startswith("ToolError data file for symbol 'S': this processor's "
                                  "user (uid 0) may not read"), proc.stdout + proc.stderr


def test_a_parse_out_of_memory_is_said_as_such_not_as_a_malformed_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas' C tokenizer says a failed malloc as a ParserError ("C error: out of
    memory"): a worker near its SPOOL_WORKER_MEMORY_MB failed the job "data file for
    symbol 'S0055' is malformed" (a fine file), after reading it whole once more to say
    where (QA, memory pressure).  It is a MemoryError, which the worker says as one."""
    path = tmp_path / "AAA.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,2,0.5,1.5,10\n")

    def short_of_memory(*args: object, **kwargs: object) -> None:
        raise pd.errors.ParserError("Error tokenizing data. C error: out of memory")

    monkeypatch.setattr(bars_module, "_read_frame", short_of_memory)
    with pytest.raises(MemoryError, match=r"AAA.*out of memory"):
        bars_module.parse_csv(path, "AAA")


def test_a_cell_that_reads_out_of_memory_is_a_malformed_file(tmp_path: Path) -> None:
    """Only pandas' tokenizer's own words are a MemoryError (a review)."""
    path = tmp_path / "BAD.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "2024-01-02,1,2,0.5,1.5,10\n2024-01-03,out of memory,2,0.5,1.5,10\n")
    with pytest.raises(ToolError, match="not a number"):
        bars_module.parse_csv(path, "BAD")


def test_synth_does_not_write_through_a_link_put_in_its_folder(tmp_path: Path) -> None:
    """A link another user of the data folder put at the staging name synth used
    (``.S0000.csv.tmp``): synth, run as root, wrote its CSV through it and made the
    target 0644 (QA: a root-only file overwritten and opened up).  It stages in a new
    file of its own; the target is untouched."""
    secret = tmp_path / "secret"
    secret.write_text("root's own")
    secret.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / ".S0000.csv.tmp").symlink_to(secret)
    synth.write_synthetic(data, symbols=1, bars=5, seed=0)
    assert secret.read_text() == "root's own"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (data / "S0000.csv").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in data.iterdir()) == [".S0000.csv.tmp", "S0000.csv"]
