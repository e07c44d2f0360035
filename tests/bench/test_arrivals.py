"""``bench.throughput.Arrivals``: the benchmark's client sees the last record when it
comes, though it sleeps through most of the others (its CPU is the daemon's too)."""

from __future__ import annotations

import os
import select
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import throughput
from bench.throughput import Arrivals, BenchError


def _spool(tmp_path: Path) -> tuple[Path, Path, Path]:
    folders = tuple(tmp_path / name for name in ("stage", "done", "failed"))
    for folder in folders:
        folder.mkdir()
    return folders  # type: ignore[return-value]


class _Clock:
    """``bench.throughput``'s time, moved by hand, and the writer it drives: each step
    of the writer (one file renamed into its folder) is taken when the waiter's sleep
    or poll reaches its time, as a writer thread would have taken it meanwhile.

    With a real thread and the real clock, how late the waiter came was the host's as
    much as the wait's: a loaded 2-CPU host paused it 0.1 to 0.37 s past the last
    record, as late as the sleeps these tests are here to catch (QA).  Here a sleep
    that outlasts the last record is the only way to be late, by exactly its overrun.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.steps: deque[tuple[float, Callable[[], None]]] = deque()

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        # A real sleep, even of 0, takes some time: without it a pace of 0 (a burst
        # read at one instant) would spin on one instant for ever.
        end = self.now + max(seconds, 1e-4)
        while self.steps and self.steps[0][0] <= end:
            self.step()
        self.now = end

    def step(self) -> None:
        at, step = self.steps.popleft()
        self.now = max(self.now, at)
        step()


class _Poller:
    """The wait's poller on the hand-moved clock: a poll that would block takes the
    writer's next steps until the descriptor is readable or the timeout is up."""

    def __init__(self, real: select.poll, clock: _Clock) -> None:
        self.real, self.clock = real, clock

    def poll(self, timeout_ms: float = 0) -> list[tuple[int, int]]:
        ready = self.real.poll(0)
        if ready or not timeout_ms:
            return ready
        end = self.clock.now + timeout_ms / 1e3
        while not ready and self.clock.steps and self.clock.steps[0][0] <= end:
            self.clock.step()
            ready = self.real.poll(0)
        if not ready:
            self.clock.now = end
        return ready


def _rename(stage: Path, folder: Path, name: str) -> Callable[[], None]:
    def publish() -> None:
        (stage / name).write_bytes(b"{}")
        os.rename(stage / name, folder / name)
    return publish


def _publish(clock: _Clock, stage: Path, folders: list[Path], names: list[str],
             pause_s: float) -> list[float]:
    """Each name into its folder by rename, ``pause_s`` apart: when each goes."""
    times = [pause_s * (i + 1) for i in range(len(names))]
    clock.steps.extend((at, _rename(stage, folder, name))
                       for at, folder, name in zip(times, folders, names, strict=True))
    return times


def _wait(monkeypatch: pytest.MonkeyPatch, clock: _Clock, arrivals: Arrivals,
          names: list[str]) -> tuple[float, list[str]]:
    """``arrivals.wait`` for ``names`` while ``clock`` takes the writer's steps."""
    monkeypatch.setattr(throughput, "time", clock)
    monkeypatch.setattr(arrivals, "poller", _Poller(arrivals.poller, clock))
    try:
        return arrivals.wait(set(names), clock.perf_counter() + 30)
    finally:
        arrivals.close()


def test_wait_returns_when_the_last_name_came_and_names_the_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    names = [f"j{i:03d}.json" for i in range(60)]
    targets = [failed if i in (7, 59) else done for i in range(60)]
    clock = _Clock()
    # An unrelated name first: not waited for, not counted.
    times = _publish(clock, stage, [done, *targets], ["other.json", *names], 0.01)
    came, failures = _wait(monkeypatch, clock, arrivals, names)
    assert sorted(failures) == ["j007.json", "j059.json"]
    assert not clock.steps
    # Sleeping through the early ones, it still woke for the last: the last ones are
    # waited for one by one (a sleep past it would be a quarter of the time the rest
    # took, ~0.1 s).  The writer keeps its pace, so no sleep may outlast the last.
    assert came == times[-1], came - times[-1]


def _bursts(clock: _Clock, stage: Path, done: Path, names: list[str],
            shape: tuple[float, int, float]) -> list[float]:
    """``names`` into ``done`` by rename: the first burst after ``first_s``, then one of
    ``size`` every ``pause_s`` (``shape``); when each burst goes."""
    first_s, size, pause_s = shape
    starts = range(0, len(names), size)
    times = [first_s + pause_s * k for k in range(len(starts))]
    clock.steps.extend((at, _rename(stage, done, name))
                       for at, start in zip(times, starts, strict=True)
                       for name in names[start:start + size])
    return times


@pytest.mark.parametrize(("first_s", "size", "pause_s"), [
    (0.02, 16, 0.02),  # W3 with JOB_NUM=16: a pace from the start slept 0.55 s past it
    (0.05, 1, 0.001),  # a slow first record, then fast ones: 2.2 s past it
])
def test_wait_is_not_fooled_by_the_first_records_latency(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_s: float, size: int,
        pause_s: float) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    names = [f"b{i:03d}.json" for i in range(400 if size > 1 else 250)]
    clock = _Clock()
    times = _bursts(clock, stage, done, names, (first_s, size, pause_s))
    came, _ = _wait(monkeypatch, clock, arrivals, names)
    # A burst comes at one instant, faster than any pace: the docstring lets a sleep
    # begun before the last one outlast it, by a quarter of the time its records
    # would take at the pace seen (a few ms), never by a pause between bursts.
    assert 0 <= came - times[-1] < max(pause_s, 0.01), came - times[-1]


def test_wait_reports_names_that_never_come(tmp_path: Path) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    try:
        _rename(stage, done, "a.json")()
        with pytest.raises(BenchError, match="1 of 2 jobs unfinished"):
            arrivals.wait({"a.json", "b.json"}, time.perf_counter() + 0.3)
    finally:
        arrivals.close()
