"""``bench.throughput.Arrivals``: the benchmark's client sees the last record when it
comes, though it sleeps through most of the others (its CPU is the daemon's too)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.throughput import Arrivals, BenchError


def _spool(tmp_path: Path) -> tuple[Path, Path, Path]:
    folders = tuple(tmp_path / name for name in ("stage", "done", "failed"))
    for folder in folders:
        folder.mkdir()
    return folders  # type: ignore[return-value]


def _publish(stage: Path, folders: list[Path], names: list[str], pause_s: float,
             times: list[float]) -> None:
    """Each name into its folder by rename, ``pause_s`` apart; when each went, in times."""
    for folder, name in zip(folders, names, strict=True):
        time.sleep(pause_s)
        (stage / name).write_bytes(b"{}")
        times.append(time.perf_counter())  # (before: the waiter may see it first)
        os.rename(stage / name, folder / name)


def _wait_beside(arrivals: Arrivals, names: list[str], writer: Callable[..., None],
                 args: tuple[Any, ...]) -> tuple[float, list[str]]:
    """``arrivals.wait`` for ``names`` while ``writer(*args)`` runs in a thread."""
    thread = threading.Thread(target=writer, args=args)
    try:
        thread.start()
        got = arrivals.wait(set(names), time.perf_counter() + 30)
        thread.join()
    finally:
        arrivals.close()
    return got


def test_wait_returns_when_the_last_name_came_and_names_the_failed(tmp_path: Path) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    names = [f"j{i:03d}.json" for i in range(60)]
    targets = [failed if i in (7, 59) else done for i in range(60)]
    times: list[float] = []
    # An unrelated name first: not waited for, not counted.
    came, failures = _wait_beside(arrivals, names, _publish, (
        stage, [done, *targets], ["other.json", *names], 0.01, times))
    assert sorted(failures) == ["j007.json", "j059.json"]
    assert len(times) == 61
    # Sleeping through the early ones, it still woke for the last (within scheduling
    # noise: a sleep past it would be a quarter of the time the rest took, ~0.1 s).
    assert 0 <= came - times[-1] < 0.05, came - times[-1]


def _bursts(stage: Path, done: Path, names: list[str], shape: tuple[float, int, float],
            times: list[float]) -> None:
    """``names`` into ``done`` by rename: the first burst after ``first_s``, then one of
    ``size`` every ``pause_s`` (``shape``)."""
    first_s, size, pause_s = shape
    time.sleep(first_s)
    for at in range(0, len(names), size):
        if at:
            time.sleep(pause_s)
        times.append(time.perf_counter())  # (before: the waiter may see it first)
        for name in names[at:at + size]:
            (stage / name).write_bytes(b"{}")
            os.rename(stage / name, done / name)


@pytest.mark.parametrize(("first_s", "size", "pause_s"), [
    (0.02, 16, 0.02),  # W3 with JOB_NUM=16: a pace from the start slept 0.55 s past it
    (0.05, 1, 0.001),  # a slow first record, then fast ones: 2.2 s past it
])
def test_wait_is_not_fooled_by_the_first_records_latency(
        tmp_path: Path, first_s: float, size: int, pause_s: float) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    names = [f"b{i:03d}.json" for i in range(400 if size > 1 else 250)]
    times: list[float] = []
    came, _ = _wait_beside(arrivals, names, _bursts,
                           (stage, done, names, (first_s, size, pause_s), times))
    assert 0 <= came - times[-1] < 0.1, came - times[-1]


def test_wait_reports_names_that_never_come(tmp_path: Path) -> None:
    stage, done, failed = _spool(tmp_path)
    arrivals = Arrivals([done, failed])
    times: list[float] = []
    try:
        _publish(stage, [done], ["a.json"], 0.0, times)
        with pytest.raises(BenchError, match="1 of 2 jobs unfinished"):
            arrivals.wait({"a.json", "b.json"}, time.perf_counter() + 0.3)
    finally:
        arrivals.close()
