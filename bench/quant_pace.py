"""How well the quant tools' progress bars track their wall time.

Run from the repository root: ``python -m bench.quant_pace`` (``--help`` for sizes).
Writes seeded synthetic data to a temporary directory and runs ``analyze_factor``
and ``run_backtest`` on it with the files' pages dropped from the page cache
(``POSIX_FADV_DONTNEED``) and not parsed, then in the page cache and not parsed,
then parsed (the DataStore warm).  For each run it prints the wall time, the time
``analyze_factor`` spent reading (up to its last ``read`` report), where the bar
stood a quarter, half and three quarters of the way through the run, and the
largest distance between the bar and the share of the wall time gone: the time left
``spoolq wait`` and the dashboard draw from the bar is right when that is small.  That
distance is taken at the reports, then "with the waits": at any moment, the bar standing
at its last report until the next (a bar that stands still for a long read and then
jumps to the right place is close at its reports only).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processor.quant.analysis import analyze_factor
from processor.quant.backtest import run_backtest
from processor.quant.data import DataStore
from processor.quant.params import BacktestParams, FactorParams
from processor.quant.synth import write_synthetic

Tool = Callable[[Any, DataStore, Callable[[float, str], None]], Any]


def drop_pages(data_dir: Path) -> None:
    """Drop the data files' pages from the page cache (clean pages: written back first)."""
    for path in data_dir.glob("*.csv"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(tool: Tool, params: Any, store: DataStore) -> str:
    marks: list[tuple[float, float, str]] = []
    start = time.perf_counter()
    result = tool(params, store, lambda f, m: marks.append((time.perf_counter() - start, f, m)))
    total = time.perf_counter() - start
    # Freed only now: a backtest's equity curves, a tuple and a float a bar, take 50 to
    # 80 ms to free at 500 x 2520, after the tool's last report (in the worker, after
    # the result is sent); freed inside the timing, they read as a bar run ahead.
    del result

    def bar_at(share: float) -> float:
        return max((f for t, f, _ in marks if t <= share * total), default=0.0)

    reads = [t for t, _, m in marks if m.startswith("read ")]
    read = f"read {reads[-1]:.3f} s ({reads[-1] / total:.0%})  " if reads else ""
    worst = max(abs(f - t / total) for t, f, _ in marks)
    return (f"total {total:.3f} s  {read}bar at 25/50/75% of the time "
            f"{bar_at(0.25):.2f}/{bar_at(0.5):.2f}/{bar_at(0.75):.2f}  "
            f"max |bar - time| {worst:.2f}, {held_gap(marks, total):.2f} with the waits  "
            f"({len(marks)} reports)")


def held_gap(marks: list[tuple[float, float, str]], total: float) -> float:
    """The largest distance between bar and time gone at any moment: the bar stands at
    its last report (0 before the first) until the next, so besides the reports' own
    distances this takes the one just before each report and at the end."""
    shown, worst = 0.0, 0.0
    for t, f, _ in marks:
        worst = max(worst, abs(shown - t / total), abs(f - t / total))
        shown = f
    return max(worst, 1.0 - shown)


def run_all(data_dir: Path, symbols: list[str], repeat: int) -> None:
    tools: list[tuple[str, Tool, Any]] = [
        ("analyze_factor", analyze_factor, FactorParams(symbols=symbols)),
        ("run_backtest", run_backtest, BacktestParams(symbols=symbols))]
    for name, tool, params in tools:
        print(name)
        for label, pages_cold, parsed in (("files not cached", True, False),
                                          ("in the page cache", False, False),
                                          ("parsed", False, True)):
            for _ in range(repeat):
                store = DataStore(data_dir)
                if parsed:
                    for symbol in symbols:
                        store.bars(symbol)
                if pages_cold:
                    drop_pages(data_dir)
                print(f"  {label:<18} {measure(tool, params, store)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quant_pace", description=__doc__)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolq-bench-") as tmp:
        symbols = write_synthetic(Path(tmp), args.symbols, args.bars, args.seed)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.csv"))
        print(f"data: {args.symbols} symbols x {args.bars} bars, seed {args.seed}, "
              f"{size / 1e6:.1f} MB")
        run_all(Path(tmp), symbols, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
