"""The run ledger of ``bench/chaos.py``: who ran which job when, read from the markers.

:class:`Ledger` tails the markers log that ``bench/chaos_tools.py`` appends to
and keeps one :class:`Run` per start marker.  A run ends at its ``end``
marker; a run without one (killed with its worker or its processor) ends when
its process died, which :meth:`Ledger.poll` observes: every open run's process
(pid and start time, so a reused pid is not mistaken for it) is checked on each
poll, and the first poll that finds it gone stamps the run.  That stamp is an
upper bound of the death, so an overlap can be over-reported, never missed.

:func:`overlapping_ids` then finds ids with two runs alive at once, and
``lock_conflicts`` the ids whose run found the per-id ``flock`` held: the
kernel's own word that another live process was running that id.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos_tools import proc_start_time

POLL_S = 0.005


@dataclass(slots=True)
class Run:
    job_id: str
    token: str
    processor_pid: int
    pid: int
    pid_start: int | None
    start_ns: int
    lock_held: bool
    end_ns: int | None = None
    gone_ns: int | None = None

    @property
    def finish_ns(self) -> float:
        """When the run stopped: its end marker, else its process's death, else never."""
        if self.end_ns is not None:
            return self.end_ns
        return self.gone_ns if self.gone_ns is not None else math.inf


class Ledger:
    """Every run seen in the markers log; :meth:`poll` reads on and stamps deaths."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.runs: dict[str, Run] = {}
        self.open: dict[str, Run] = {}
        self.malformed = 0
        self._offset = 0
        self._partial = b""
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            self._read()
            self._stamp_deaths()

    def _read(self) -> None:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._parse(line.decode())

    def _parse(self, line: str) -> None:
        parts = line.split()
        try:
            if parts[0] == "start" and len(parts) == 8:
                run = Run(parts[1], parts[2], int(parts[3]), int(parts[4]),
                          None if parts[5] == "None" else int(parts[5]), int(parts[6]),
                          parts[7] == "1")
                self.runs[run.token] = run
                self.open[run.token] = run
                return
            if parts[0] == "end" and len(parts) == 4:
                run = self.runs[parts[2]]
                run.end_ns = int(parts[3])
                self.open.pop(run.token, None)
                return
        except (IndexError, KeyError, ValueError):
            pass
        self.malformed += 1

    def _stamp_deaths(self) -> None:
        now = time.monotonic_ns()
        alive: dict[tuple[int, int | None], bool] = {}
        for token, run in list(self.open.items()):
            key = (run.pid, run.pid_start)
            if key not in alive:
                current = proc_start_time(run.pid)
                alive[key] = current is not None and (run.pid_start in (None, current))
            if not alive[key]:
                run.gone_ns = now
                del self.open[token]

    def by_id(self) -> dict[str, list[Run]]:
        with self._lock:
            grouped: dict[str, list[Run]] = {}
            for run in self.runs.values():
                grouped.setdefault(run.job_id, []).append(run)
        for runs in grouped.values():
            runs.sort(key=lambda r: r.start_ns)
        return grouped


def overlapping_ids(grouped: dict[str, list[Run]]) -> set[str]:
    """Ids with a run that started before an earlier run of the id had stopped."""
    found: set[str] = set()
    for job_id, runs in grouped.items():
        latest_finish = -math.inf
        for run in runs:
            if run.start_ns < latest_finish:
                found.add(job_id)
            latest_finish = max(latest_finish, run.finish_ns)
    return found


def lock_conflicts(grouped: dict[str, list[Run]]) -> set[str]:
    return {job_id for job_id, runs in grouped.items() if any(not r.lock_held for r in runs)}


class Watcher:
    """Polls a ledger on a thread of its own until :meth:`stop`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-ledger", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.ledger.poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.ledger.poll()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return proc_start_time(pid) is not None
