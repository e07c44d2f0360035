"""An ``invalid_params`` message is one line a researcher can act on: it names the
parameter and what was given, in the check's own words.

A check of its own (a ``ValueError`` in a validator) came out as pydantic prints it:
``run_backtest`` with ``start`` after ``end`` failed "params: Value error, start is
after end", with ``fast`` 50 and ``slow`` 10 "params: Value error, need 1 <= fast <
slow", and ``start=2020`` "start: Value error, 2020 is not an ISO 8601 date ...": a
word of pydantic's internals in every such record, a location of "params" for a check
across fields, and no value given.  Real daemon, real spool (see daemonkit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonkit import Daemon, drop, wait_record

StartDaemon = Callable[..., Daemon]

CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "order": ("run_backtest", {"symbols": ["S0001"], "start": "2015-01-01",
                               "end": "2012-01-01"},
              "start (2015-01-01T00:00:00) is after end (2012-01-01T00:00:00)"),
    "windows": ("run_backtest", {"symbols": ["S0001"], "fast": 50, "slow": 10},
                "fast (50) must be less than slow (10)"),
    "iso": ("analyze_factor", {"start": 2020},
            "start: 2020 is not a date or time spoolq reads (ISO 8601's YYYY-MM-DD, with "
            "or without a time: 2020-01-31 or 2020-01-31T09:30:00Z)"),
    "repeat": ("analyze_factor", {"symbols": ["S0001", "S0001"]}, "symbols must not repeat"),
    # Not "symbols.0: String should match pattern '^[A-Za-z0-9]...'" (h372).
    "symbol": ("run_backtest", {"symbols": ["S0001", "../x"]},
               "symbols.1: '../x' is not a symbol id (A-Z, a-z, 0-9 and ._-, at most 64, "
               "starting with a letter or digit)"),
    "iso-text": ("run_backtest", {"symbols": ["S0001"], "start": "2010-05"},
                 "start: '2010-05' is not a date or time spoolq reads (ISO 8601's "
                 "YYYY-MM-DD, with or without a time: 2020-01-31 or 2020-01-31T09:30:00Z)"),
    # In the form, but no such day (h375): not "not a date ... (YYYY-MM-DD ...)".
    "no-such-day": ("run_backtest", {"symbols": ["S0001"], "end": "2021-02-29"},
                    "end: '2021-02-29' is no such date or time (day is out of range for "
                    "month)"),
}


def test_a_params_check_says_its_own_words(spool_root: Path, daemon: StartDaemon) -> None:
    daemon()
    for case, (tool, params, _) in CASES.items():
        drop(spool_root, case, {"tool": tool, "params": params})
    drop(spool_root, "typed", {"tool": "run_backtest", "params": {"symbols": 5}})
    for case, (_, _, expected) in CASES.items():
        rec = wait_record(spool_root, case)
        assert rec["error"] == {"type": "invalid_params", "message": expected}, rec
    # A type error still names its field, in pydantic's words.
    rec = wait_record(spool_root, "typed")
    assert rec["error"] == {"type": "invalid_params",
                            "message": "symbols: Input should be a valid array"}, rec
