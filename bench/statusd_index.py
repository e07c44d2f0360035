"""The cost of one transition in statusd's index as the spool grows.

Run from the repository root: ``python -m bench.statusd_index [--sizes 100000 1000000]``.
Each size loads an index of that many records (half pending, half done), then times
2,000 ``Index.put`` calls, each moving a record to ``done/`` (what each transition of
a drain costs statusd's loop).  The baseline, measured in the same run on the same
records, keeps each filter's keys in a plain sorted list (``bisect.insort`` and ``del``:
the index before the fifty-third session), whose inserts move the list's tail.
"""

from __future__ import annotations

import argparse
import time
from bisect import bisect_left, insort

from spool.states import TERMINAL, JobState
from statusd.index import Index
from statusd.items import Item, Stamp

PUTS = 2000


def _item(i: int, state: JobState, written_ns: int) -> Item:
    job_id = f"j{i:07d}"
    return Item(job_id, state, "echo", (1_000_000 + i, job_id),
                Stamp(state, written_ns, written_ns, 0, i), b"{}", b"{}")


def _filters(item: Item) -> tuple[tuple[JobState | None, str | None], ...]:
    return ((None, None), (item.state, None), (None, item.tool), (item.state, item.tool))


class ListIndex:
    """The baseline: the index's sorted keys in plain lists."""

    def __init__(self, items: list[Item]) -> None:
        self.items = {item.job_id: item for item in items}
        self.keys: dict[tuple[JobState | None, str | None], list[tuple[int, str]]] = {}
        self.written: dict[JobState, list[tuple[int, str]]] = {s: [] for s in TERMINAL}
        for item in sorted(items, key=lambda item: item.key):
            for flt in _filters(item):
                self.keys.setdefault(flt, []).append(item.key)
            if item.state in TERMINAL:
                self.written[item.state].append((item.stamp.mtime_ns, item.job_id))
        for written in self.written.values():
            written.sort()

    def put(self, item: Item) -> None:
        old = self.items.pop(item.job_id, None)
        if old is not None:
            for flt in _filters(old):
                keys = self.keys[flt]
                at = bisect_left(keys, old.key)
                if at < len(keys) and keys[at] == old.key:
                    del keys[at]
            if old.state in TERMINAL:
                written = self.written[old.state]
                at = bisect_left(written, (old.stamp.mtime_ns, old.job_id))
                if at < len(written) and written[at] == (old.stamp.mtime_ns, old.job_id):
                    del written[at]
        self.items[item.job_id] = item
        for flt in _filters(item):
            insort(self.keys.setdefault(flt, []), item.key)
        if item.state in TERMINAL:
            insort(self.written[item.state], (item.stamp.mtime_ns, item.job_id))


def _time_puts(put: object, n: int) -> float:
    assert callable(put)
    start = time.perf_counter()
    for k in range(PUTS):
        put(_item((k * 7919) % n, JobState.DONE, 2 * 10**18 + k))
    return (time.perf_counter() - start) / PUTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statusd_index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    print(f"one transition (Index.put) after loading N records; the mean of {PUTS} puts")
    for n in args.sizes:
        items = [_item(i, JobState.PENDING if i % 2 else JobState.DONE, 10**18 + i)
                 for i in range(n)]
        index = Index()
        started = time.perf_counter()
        index.load(items)
        loaded = time.perf_counter() - started
        ours = _time_puts(index.put, n)
        baseline = ListIndex(items)
        theirs = _time_puts(baseline.put, n)
        print(f"  N={n:>9,}  index {ours * 1e6:8.1f} us  plain lists {theirs * 1e6:8.1f} us  "
              f"ratio {ours / theirs:5.2f}x  (load {loaded:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
