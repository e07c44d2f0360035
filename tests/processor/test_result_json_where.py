"""A result that is not JSON fails its job saying what is not, and where in the result.

Only the failing path walks the result: a result that is JSON is encoded as before."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from processor import runner
from processor.runner import result_json

STAMPS = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=2)})


@pytest.mark.parametrize(("value", "says"), [
    # A table converted as pandas' docs show: its times are Timestamps still.
    ({"trades": STAMPS.to_dict(orient="records")},
     "Type is not JSON serializable: Timestamp at result['trades'][0]['t']"),
    ({"summary": {"by_symbol": [1.0, (2, pd.DataFrame({"a": [1]}))]}},
     "Type is not JSON serializable: DataFrame at result['summary']['by_symbol'][1][1]"),
    ([np.complex128(1 + 2j)], "Type is not JSON serializable: numpy.complex128 at result[0]"),
    # A missing time (an exit time of a trade still open) read as a unit orjson lacks.
    ({"exit": np.array(["2026-01-01", "NaT"], dtype="datetime64[s]")},
     "result['exit'] is a numpy datetime64 that holds NaT (a missing time), which JSON "
     "cannot hold: write a missing time as None"),
    ({"exit": np.datetime64("NaT")}, "result['exit'] is a numpy datetime64 that holds NaT"),
    # orjson's "Dict key must a type serializable with OPT_NON_STR_KEYS".
    ({"by_year": {np.int64(2026): 0.1}},
     "a key of result['by_year'] is a numpy.int64 (np.int64(2026)): a key must be a str, "
     "int, float, bool, None, datetime, date, time, enum or UUID (a numpy number: int(key) "
     "or float(key))"),
])
def test_a_result_that_is_not_json_says_what_and_where(value: Any, says: str) -> None:
    """It said "Type is not JSON serializable: Timestamp" (no place in a result of many
    tables), "unsupported numpy.datetime64 unit: NaT", or orjson's "Dict key must a type
    serializable with OPT_NON_STR_KEYS" (QA h395)."""
    with pytest.raises(TypeError) as caught:
        result_json(value)
    assert str(caught.value).startswith(f"the result is not JSON: {says}"), caught.value


def test_a_result_that_is_json_is_written_as_before() -> None:
    value = {"t": dt.datetime(2026, 1, 2, 3, 4, 5), "x": np.array([1.0, np.nan]),
             "k": {1: "a", None: "b"}, "n": np.int64(3)}
    assert result_json(value) == (b'{"t":"2026-01-02T03:04:05","x":[1.0,null],'
                                  b'"k":{"1":"a","null":"b"},"n":3}')


def test_the_look_for_where_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The look costs the result's size times its depth: 40,000 ints at each of 250
    levels took 8.6 s of the job's time, which could end it as a timeout instead (QA
    h399).  Past its budget orjson's words are said, no place."""
    monkeypatch.setattr(runner, "WHERE_BUDGET_S", 0.2)
    value: Any = [pd.Timestamp("2026-01-01")]
    for _ in range(200):
        value = [*range(20_000), value]
    began = time.monotonic()
    with pytest.raises(TypeError) as caught:
        result_json(value)
    assert time.monotonic() - began < 5, "the look went on past its budget"
    assert str(caught.value) == "the result is not JSON: Type is not JSON serializable: " \
        "Timestamp", caught.value
