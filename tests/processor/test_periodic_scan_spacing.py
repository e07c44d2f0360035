"""The periodic pass's schedule: a pass as long as ``SPOOL_SCAN_S`` (1.2 million drops
in ``pending/``, each looked up) had the next begin as it ended, so the loop scanned and
scarcely judged or claimed (QA, h313: 1.6 jobs/s, against 7,000 at 300,000 drops)."""

from __future__ import annotations

from typing import Any

import pytest

from processor import periodic_scan
from processor.periodic_scan import SCAN_SPACING, PeriodicScan
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode, Settings
from spool.transitions import Spool


class _Discovery:
    """A rescan that takes ``took`` seconds of the fake clock, in ``slices``."""

    def __init__(self, clock: list[float], took: float, slices: int = 1) -> None:
        self.clock, self.took = clock, took
        self.cpu = [5.0]
        self.next_scan = self.scan_floor = 0.0
        self.slices = self.left = slices

    @property
    def scanning(self) -> bool:
        return self.left > 0 and self.left < self.slices

    def begin_rescan(self) -> None:
        self.left = self.slices

    def scan_more(self) -> None:
        self.clock[0] += self.took / self.slices
        self.cpu[0] += self.took / self.slices / 2  # half of it on the CPU
        self.left -= 1


def _scanned(settings: Settings, monkeypatch: pytest.MonkeyPatch, took: float,
             slices: int = 1) -> tuple[list[float], Any, PeriodicScan]:
    """A periodic scan on a fake clock, whose rescan takes ``took`` s in ``slices``."""
    clock = [1000.0]
    monkeypatch.setattr(periodic_scan.time, "monotonic", lambda: clock[0])
    layout = Layout(settings.spool_dir)
    discovery: Any = _Discovery(clock, took=took, slices=slices)
    monkeypatch.setattr(periodic_scan.time, "thread_time", lambda: discovery.cpu[0])
    scan = PeriodicScan(settings, Spool(layout, Mover(layout, FsyncMode.NEVER)), discovery,
                        max_attempts=lambda job: 1, io_trouble=lambda exc: None)
    return clock, discovery, scan


def test_the_next_pass_is_due_after_this_ones_end_and_never_back_to_back(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(periodic_scan.time, "monotonic", lambda: clock[0])
    layout = Layout(settings.spool_dir)
    discovery: Any = _Discovery(clock, took=2 * settings.scan_s)  # longer than the period
    monkeypatch.setattr(periodic_scan.time, "thread_time", lambda: discovery.cpu[0])
    scan = PeriodicScan(settings, Spool(layout, Mover(layout, FsyncMode.NEVER)), discovery,
                        max_attempts=lambda job: 1, io_trouble=lambda exc: None)
    scan.run()
    ended = clock[0]
    assert ended >= 1000.0 + discovery.took
    assert discovery.next_scan == ended + settings.scan_s
    # Its CPU's multiple, not its wall time's: a pass a stalled mount held (waiting,
    # not working) put every rescan off by three times the stall (the review).
    assert discovery.scan_floor == pytest.approx(ended + SCAN_SPACING * discovery.took / 2)


def test_a_pass_waiting_on_its_reads_is_spaced_by_its_length(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaced by its CPU alone, a pass that waited on its reads (a cold cache, a network
    filesystem) set no floor, and passes could run back to back again (a review): its
    length counts too, up to one scan interval."""
    clock = [1000.0]
    monkeypatch.setattr(periodic_scan.time, "monotonic", lambda: clock[0])
    layout = Layout(settings.spool_dir)
    discovery: Any = _Discovery(clock, took=settings.scan_s / 2)
    monkeypatch.setattr(periodic_scan.time, "thread_time", lambda: 5.0)  # no CPU at all
    scan = PeriodicScan(settings, Spool(layout, Mover(layout, FsyncMode.NEVER)), discovery,
                        max_attempts=lambda job: 1, io_trouble=lambda exc: None)
    scan.run()
    assert discovery.scan_floor == pytest.approx(clock[0] + settings.scan_s / 2)


def test_a_pass_sliced_over_the_loops_passes_is_scheduled_once_over(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rescan goes on a slice a pass of the loop (a FAST job waited 0.2 to 0.8 s
    behind one of 50,000 drops: h333); the next pass is due from its end, spaced by the
    CPU of all its slices, and what asks for one sooner meanwhile (events lost) holds."""
    clock, discovery, scan = _scanned(settings, monkeypatch, took=3.0, slices=3)
    scan.run()
    assert discovery.scanning and discovery.scan_floor == 0.0
    clock[0] += 7.0  # the loop's other work between slices
    scan.more()
    assert discovery.scanning
    discovery.next_scan = 0.0  # events lost meanwhile: a scan again at once
    scan.more()
    assert not discovery.scanning
    assert discovery.next_scan == 0.0
    # Its slices' 3 s (1.5 of CPU), not the 7 s of the loop's work between them.
    assert discovery.scan_floor == pytest.approx(clock[0] + max(SCAN_SPACING * 1.5, min(
        3.0, settings.scan_s)))


def test_the_loops_work_between_slices_does_not_put_the_next_pass_off(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaced by the time from the pass's start to its end, a sliced rescan that took
    little CPU but was spread by the loop's other work (FAST runs, intake) over seconds
    set a floor of a whole SPOOL_SCAN_S: a rescan asked for at once (events lost, a drop
    waiting to settle) waited that long after it (QA h336)."""
    clock, discovery, scan = _scanned(settings, monkeypatch, took=0.01, slices=10)
    scan.run()
    while discovery.scanning:
        clock[0] += 0.5  # FAST runs between two slices
        scan.more()
    assert not discovery.scanning
    discovery.next_scan = 0.0  # events lost: a rescan again as soon as the floor allows
    assert discovery.scan_floor - clock[0] == pytest.approx(SCAN_SPACING * 0.005)
    assert discovery.scan_floor - clock[0] < 0.1


def test_a_pass_spread_by_the_loops_work_is_due_as_if_it_had_run_in_one_go(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Due SPOOL_SCAN_S after its end, a rescan the loop's other work spread over seconds
    put the next recovery pass, and an orphan's requeue, off by as much (DESIGN: orphans
    are found within SPOOL_SCAN_S)."""
    clock, discovery, scan = _scanned(settings, monkeypatch, took=0.04, slices=4)
    started = clock[0]
    scan.run()
    while discovery.scanning:
        clock[0] += 1.0  # the loop's work between two slices
        scan.more()
    assert clock[0] - started == pytest.approx(3.04)
    assert discovery.next_scan == pytest.approx(started + 0.04 + settings.scan_s)
