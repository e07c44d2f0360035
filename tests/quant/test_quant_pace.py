"""The quant tools' cost estimates (processor.quant.pace): the gauge a backtest's bar is
drawn on, and what it learns from each file it reads."""

from __future__ import annotations

import pytest

from processor.quant.data import ToRead
from processor.quant.pace import (
    BACKTEST_BAR_S,
    ISO_ROW_S,
    SHORT_OF_DONE,
    BacktestPace,
    Gauge,
    parse_s,
)


def test_a_gauge_mends_a_wrong_estimate_from_where_it_stands() -> None:
    gauge = Gauge(10.0)
    assert (gauge.at(), gauge.at(5.0)) == (0.0, 0.5)
    gauge.spend(5.0)
    gauge.revise(15.0)  # three times what was thought left: the rest goes slower
    assert gauge.at() == 0.5 and gauge.at(7.5) == pytest.approx(0.75)
    gauge.spend(20.0)  # past the estimate: short of done all the same
    assert gauge.at() == SHORT_OF_DONE
    gauge.revise(0.0)
    assert gauge.at(1.0) == SHORT_OF_DONE


def test_a_parsed_files_iso_text_is_part_of_its_read() -> None:
    """A parsed file's first backtest makes its timestamps' ISO text, about as long as
    the backtest of its bars: taken for free, the bar stood still through it.  Files of
    one calendar share one text, made once (DataStore.to_read counts it once)."""
    pace = BacktestPace([ToRead(9000, False, 300, 300), ToRead(9000, False, 300, 0)])
    total = 300 * ISO_ROW_S + 600 * BACKTEST_BAR_S
    assert pace.parsing(0, 1.0) == 0.0
    pace.parsed(0, 300, 300)
    assert pace.formatting(0, 1.0) == pytest.approx(300 * ISO_ROW_S / total)
    pace.formatted(0)
    assert pace.simulated(0, 1) == pytest.approx((300 * ISO_ROW_S + 300 * BACKTEST_BAR_S) / total)


def test_files_to_parse_are_taken_to_be_like_the_last_one_parsed() -> None:
    """Before any file is read, a file to parse is guessed to hold a bar for each 60 bytes
    and to need its ISO text made; once one is read, the others are taken to be like it
    (here: 100 bars in its 9,000 bytes, on a calendar whose text is made), and the rest
    of the bar is spread over that estimate from where it stands."""
    pace = BacktestPace([ToRead(9000, True, None, None)] * 3)
    guess = 3 * (parse_s(9000) + 150 * (ISO_ROW_S + BACKTEST_BAR_S))
    assert pace.parsing(0, 1.0) == pytest.approx(parse_s(9000) / guess)
    pace.parsed(0, 100, 0)
    start = pace.gauge.at()
    left = 2 * parse_s(9000) + 300 * BACKTEST_BAR_S
    assert pace.parsing(1, 1.0) == pytest.approx(start + (1 - start) * parse_s(9000) / left)
    pace.parsed(1, 100, 0)
    pace.formatted(1)
    pace.parsed(2, 100, 0)  # as foretold: the bar goes on at the same pace
    assert pace.gauge.at() == pytest.approx(start + (1 - start) * 2 * parse_s(9000) / left)
    assert pace.simulating(0, 3, 0.5) == pytest.approx(
        start + (1 - start) * (2 * parse_s(9000) + 150 * BACKTEST_BAR_S) / left)
