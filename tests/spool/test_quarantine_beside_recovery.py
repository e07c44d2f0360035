"""A recovery pass beside another processor's quarantine in flight.

Processor A's recovery pass lists ``stage/`` (where quarantines leave notes of the
record they are about to publish), then looks at ``failed/``.  Processor B's quarantine
of a re-drop of an id whose earlier run failed, begun in between, moved the drop to
``failed/<id>.orig`` before its record: A found an original beside an earlier run's
record, took it for a quarantine cut short, and published "quarantined when its
processor died" over the record B published meanwhile, losing the drop's name and
why it was refused.  B's note is there by then: A reads it and publishes what B meant.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from spoolkit import done_record, drop_raw, make_spool, read_json, submit

from spool.clock import SystemClock
from spool.errors import ErrorType
from spool.intake import Intake
from spool.models import ErrorInfo, Record
from spool.recovery import Recovery, RecoveryReport
from spool.states import JobState
from spool.terminal_leftovers import TerminalLeftovers
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

F = JobState.FAILED


def test_a_pass_gives_a_quarantine_in_flight_the_record_it_means(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_spool(tmp_path / "spool")
    layout = a.layout
    b = Spool(layout, type(a.mover)(layout, a.mover.mode))
    submit(a, "daily")
    claim = a.claim("daily")
    assert claim is not None
    record = done_record(claim, None, F)
    record.error = ErrorInfo(type=ErrorType.TOOL_ERROR, message="yesterday failed")
    a.fail(claim, record)
    recovery = Recovery(a)
    recovery.scan()  # A's first pass, done
    drop_raw(layout, "daily.json", b"{not json")  # today's drop is malformed

    real_publish = Spool.publish_terminal
    real_settle = TerminalLeftovers.settle
    real_for_original = TerminalLeftovers.record_for_original
    moved, go = threading.Event(), threading.Event()

    def b_publishes(self: Spool, record: Record, unwritten: Any = None) -> None:
        if self is b:  # B's quarantine: its original moved, its note written, its record next
            moved.set()
            assert go.wait(10)
        real_publish(self, record, unwritten)

    def b_quarantines() -> None:
        Intake(b, max_job_bytes=1 << 20, settle_s=0, clock=SystemClock()).inspect("daily.json")

    quarantine = threading.Thread(target=b_quarantines)

    def b_begins_after_the_listing(self: TerminalLeftovers, report: RecoveryReport, *,
                                   full: bool) -> None:
        quarantine.start()
        assert moved.wait(10)
        real_settle(self, report, full=full)

    def b_lands_first(self: TerminalLeftovers, *args: Any, **kwargs: Any) -> None:
        go.set()
        quarantine.join(10)
        real_for_original(self, *args, **kwargs)

    monkeypatch.setattr(Spool, "publish_terminal", b_publishes)
    monkeypatch.setattr(TerminalLeftovers, "settle", b_begins_after_the_listing)
    monkeypatch.setattr(TerminalLeftovers, "record_for_original", b_lands_first)
    try:
        recovery.scan()
    finally:
        go.set()
        if quarantine.ident is not None:  # started
            quarantine.join(10)

    error = read_json(layout.job(F, "daily"))["error"]
    assert error["type"] == "invalid_job"
    assert "died" not in error["message"], error
    assert read_json(layout.job(F, "daily"))["source"]["name"] == "daily.json"
    assert layout.original("daily").read_bytes() == b"{not json"
