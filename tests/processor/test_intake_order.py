"""The order and pace of intake: dirty names are judged in the order they came, a pass
judges no more than ``INTAKE_BUDGET_S`` of work, and the start-up scan's backlog is
judged whole before the first claim (DESIGN section 9: higher priority first, then
submission order)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from daemonkit import drop

from processor import discovery as discovery_module
from processor.discovery import CATCH_UP_S, INTAKE_BUDGET_S, LARGE_DROP_BYTES, Discovery
from processor.inbox import Inbox
from processor.queues import Queues
from processor.tools import ExecutionMode
from spool.clock import SystemClock
from spool.intake import Inspection, Intake
from spool.settings import Settings
from spool.transitions import Spool


def _discovery(settings: Settings, inbox: Inbox, judged: list[str],
               settle_s: float = 0.0) -> Discovery:
    spool = Spool.from_settings(settings, SystemClock())
    intake = Intake(spool, max_job_bytes=settings.max_job_bytes, settle_s=settle_s,
                    clock=SystemClock())
    queues = Queues(lambda tool: ExecutionMode.COMPUTE)

    def enqueue(cand: object) -> None:
        judged.append(cand.job_id)  # type: ignore[attr-defined]
        queues.add(cand)  # type: ignore[arg-type]

    return Discovery(settings, spool.layout, inbox, intake, ready=queues.ready,
                     enqueue=enqueue, withdraw=queues.withdraw)


def test_names_are_judged_in_the_order_they_came(settings: Settings, inbox: Inbox) -> None:
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    names = [f"n{i:03d}" for i in range(300)][::-1]  # neither sorted nor hashed
    for name in names:
        drop(settings.spool_dir, name, {"tool": "echo"})
        discovery.on_change("pending", name + ".json")
    while discovery.dirty:
        discovery.intake_batch()
    assert judged == names


def test_a_pass_judges_no_more_than_its_budget(settings: Settings, inbox: Inbox,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging a large drop is slow (1 MB: up to 70 ms); a pass stops at its budget, so
    FAST runs, cancels and claims go on between batches (256 such drops held the loop
    for 17 s, QA)."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    inspect = discovery._inspect

    def slow(name: str, quarantine: bool, defer: bool = False, told: bool = False) -> bool:
        time.sleep(INTAKE_BUDGET_S / 2)
        return inspect(name, quarantine, defer, told)

    monkeypatch.setattr(discovery, "_inspect", slow)
    for i in range(20):
        drop(settings.spool_dir, f"big{i:02d}", {"tool": "echo"})
        discovery.on_change("pending", f"big{i:02d}.json")
    discovery.intake_batch()
    assert 1 <= len(judged) <= 2, judged  # the budget, then the pass goes on
    assert len(discovery.dirty) == 20 - len(judged)
    while discovery.dirty:
        discovery.intake_batch()
    assert judged == [f"big{i:02d}" for i in range(20)]


def test_a_small_drop_is_judged_before_large_ones_that_came_first(
        settings: Settings, inbox: Inbox) -> None:
    """Judging a drop takes about 20 ms a MB: 256 drops of 1 MB judged first come first
    served held a FAST drop that came after them about 5 s (QA)."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    pad = "x" * LARGE_DROP_BYTES
    for name in ("big0", "big1", "small", "big2", "small2"):
        drop(settings.spool_dir, name, {"tool": "echo", "meta": {"pad": pad}}
             if name.startswith("big") else {"tool": "echo"})
        discovery.on_change("pending", name + ".json")
    discovery.intake_batch()
    while discovery.waiting:
        discovery.intake_batch()
    assert judged == ["small", "small2", "big0", "big1", "big2"]


def test_large_drops_are_judged_however_many_small_ones_come(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """At least one large drop a pass, with or without time left: a steady stream of small
    drops never starves them."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    monkeypatch.setattr(discovery_module, "INTAKE_BUDGET_S", 0.0)
    pad = "x" * LARGE_DROP_BYTES
    for i in range(2):
        drop(settings.spool_dir, f"big{i}", {"tool": "echo", "meta": {"pad": pad}})
        discovery.on_change("pending", f"big{i}.json")
    for i in range(3):
        drop(settings.spool_dir, f"small{i}", {"tool": "echo"})
        discovery.on_change("pending", f"small{i}.json")
        discovery.intake_batch()
    # Each pass: one dirty name judged (the bigs put off in the first, one lstat each,
    # not counted against the budget), then one large drop.
    assert judged == ["small0", "big0", "small1", "big1", "small2"]
    assert not discovery.waiting


def test_a_drop_put_off_then_rewritten_is_judged_once(settings: Settings,
                                                      inbox: Inbox) -> None:
    """Put off for its size, then rewritten smaller (its event makes it dirty again): it
    is judged as the dirty name it is, and no more."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    drop(settings.spool_dir, "j", {"tool": "echo", "meta": {"pad": "x" * LARGE_DROP_BYTES}})
    discovery.on_change("pending", "j.json")
    discovery.large["j.json"] = None  # as a pass leaves it, put off
    discovery.dirty.clear()
    drop(settings.spool_dir, "j", {"tool": "echo"})
    discovery.on_change("pending", "j.json")
    looks = _count_looks(discovery)
    discovery.intake_batch()
    assert judged == ["j"]
    assert looks == ["j.json"]  # not judged again from the put-off line
    assert not discovery.waiting


def test_claims_wait_for_the_start_up_scans_names(settings: Settings, inbox: Inbox,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    assert not discovery.catching_up()  # nothing scanned yet: nothing held
    for i in range(3):
        drop(settings.spool_dir, f"b{i}", {"tool": "echo"})
    discovery.rescan()
    assert discovery.catching_up()
    discovery.intake_batch()
    assert not discovery.waiting and not discovery.catching_up()
    # A later scan's names hold nothing back: only the start-up's backlog is waited for.
    drop(settings.spool_dir, "later", {"tool": "echo"})
    discovery.rescan()
    assert discovery.found and not discovery.catching_up()


def test_claims_wait_for_the_backlog_no_longer_than_catch_up_s(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    drop(settings.spool_dir, "b0", {"tool": "echo"})
    # The discovery's clock, moved by the test: a CATCH_UP_S of 50 ms and a sleep had the
    # check after rescan() assume it came within 50 ms, which a loaded host need not give.
    clock = [1000.0]
    monkeypatch.setattr(discovery_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    discovery.rescan()
    assert discovery.catching_up()
    clock[0] += CATCH_UP_S - 0.01
    assert discovery.catching_up()  # its backlog unjudged, CATCH_UP_S not over
    clock[0] += 0.02
    assert discovery.found and not discovery.catching_up()


def test_a_backlog_present_at_start_runs_in_priority_then_submission_order(
        spool_root: Path, daemon: object, tmp_path: Path) -> None:
    """600 jobs waiting when the processor starts (more than one intake batch), the last
    of them dropped with the highest priority: claims came from the first batch, in the
    order of the names' hashes (a priority 100 job ran 12th, QA)."""
    log = tmp_path / "order.log"
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(600):
        drop(spool_root, f"j{i:04d}", {"tool": "t_record", "params": {"log": str(log)},
                                       "submitted_at": (base + timedelta(seconds=i)).isoformat()})
    drop(spool_root, "urgent", {"tool": "t_record", "priority": 100,
                                "params": {"log": str(log)}})
    daemon(JOB_NUM="1")  # type: ignore[operator]
    deadline = time.monotonic() + 60
    starts: list[str] = []
    while len(starts) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
        if log.exists():
            starts = [line.split()[1] for line in log.read_text().splitlines()
                      if line.startswith("start")]
    assert starts[:5] == ["urgent", "j0000", "j0001", "j0002", "j0003"]


def test_a_drop_an_event_tells_is_judged_before_a_scans_backlog(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up scan's names and an event's were one line: a priority job dropped
    just after a start on a million-drop backlog waited 63 s for the names before it to
    be judged (QA).  The events' names go first, with half of each pass's budget while
    the scan's wait too, so neither line stalls."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    for i in range(40):
        drop(settings.spool_dir, f"b{i:02d}", {"tool": "echo"})
    discovery.rescan()  # the start-up's backlog
    drop(settings.spool_dir, "urgent", {"tool": "echo", "priority": 10})
    discovery.on_change("pending", "urgent.json")
    # A budget no pass can spend here: 41 names in the real 20 ms was a timing
    # assumption a loaded host broke (33 judged in a full run under load).  The
    # budget's split between the lines is checked below, on a clock of the test's.
    monkeypatch.setattr(discovery_module, "INTAKE_BUDGET_S", 3600.0)
    discovery.intake_batch()
    assert judged[0] == "urgent" and len(judged) == 41, judged
    monkeypatch.setattr(discovery_module, "INTAKE_BUDGET_S", INTAKE_BUDGET_S)
    # Both lines waiting and the budget spent at every name: a name of each a pass.
    clock = [0.0]

    def slow() -> float:
        clock[0] += INTAKE_BUDGET_S
        return clock[0]

    for i in range(3):
        drop(settings.spool_dir, f"c{i}", {"tool": "echo"})
    discovery.rescan()
    for i in range(3):
        drop(settings.spool_dir, f"e{i}", {"tool": "echo"})
        discovery.on_change("pending", f"e{i}.json")
    judged.clear()
    monkeypatch.setattr(discovery_module.time, "monotonic", slow)
    discovery.intake_batch()
    assert len(judged) == 2 and judged[0] == "e0" and judged[1].startswith("c"), judged


def test_an_events_drop_put_off_to_settle_stays_before_the_backlog(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event's drop judged WAITING (a second link of a link-then-unlink publish) left
    the first line, and the next scan put it behind the start-up's backlog (a review)."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged, settle_s=0.2)
    for i in range(40):
        drop(settings.spool_dir, f"b{i:02d}", {"tool": "echo"})
    discovery.rescan()
    pending = settings.spool_dir / "pending"
    drop(settings.spool_dir, "urgent", {"tool": "echo", "priority": 10})
    staged = settings.spool_dir / "urgent.link"
    os.link(pending / "urgent.json", staged)  # its staged name, not unlinked yet
    discovery.on_change("pending", "urgent.json")
    monkeypatch.setattr(discovery_module, "INTAKE_BUDGET_S", 0.0)  # a name of each line
    discovery.intake_batch()
    assert "urgent" not in judged  # put off: still two links
    staged.unlink()  # no event in pending/ for this
    time.sleep(0.25)  # settled
    discovery.rescan()
    assert "urgent.json" in discovery.dirty
    discovery.intake_batch()
    assert "urgent" in judged[:3], judged


def test_a_name_released_by_a_claim_is_judged_once(settings: Settings, inbox: Inbox) -> None:
    """Rewritten in place after it was judged, a name a scan found was put in the first
    line too by the claim that saw other bytes (Starter), and read twice (a review)."""
    judged: list[str] = []
    discovery = _discovery(settings, inbox, judged)
    drop(settings.spool_dir, "x", {"tool": "echo"})
    discovery.on_change("pending", "x.json")
    discovery.intake_batch()
    drop(settings.spool_dir, "x", {"tool": "echo", "meta": {"v": 2}})
    discovery.seen.pop("x.json", None)  # as the starter does before its claim
    discovery.rescan()
    discovery.tell("x.json")  # the starter's release
    looks = _count_looks(discovery)
    while discovery.waiting:
        discovery.intake_batch()
    assert looks == ["x.json"]


def _count_looks(discovery: Discovery) -> list[str]:
    """The names the intake reads from now on, in order, each time it reads one."""
    looks: list[str] = []
    inspect = discovery.intake.inspect

    def counted(name: str, **kwargs: Any) -> Inspection:
        looks.append(name)
        return inspect(name, **kwargs)

    discovery.intake.inspect = counted  # type: ignore[method-assign]
    return looks
