"""The processors of ``bench/chaos.py``: incarnations, and the slots that stop them.

An :class:`Incarnation` is one ``python -m processor`` run.  A :class:`Fleet` keeps
``processors`` slots busy until ``stops`` stops are spent (shared by the slots):
each slot starts an incarnation (``start(slot)``, the slot's number from 0), stops it
at a random moment (a fifth of the stops during start-up and recovery, the rest
0.05 s to ``max_gap_s`` after it is ready) and starts the next at once.  A stop is a
SIGKILL, or with probability ``sigterm_share`` a SIGTERM (a graceful stop: running
jobs finish or are requeued, DESIGN section 9), after which the slot waits for the
exit and notes its status (:attr:`FleetTally.early_term_deaths` apart).
:func:`sweep_strays` finds what outlived them all.
With one slot and no SIGTERMs the random draws are those of the first soak, so
``--seed`` gives the same kill times as before.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
STARTUP_KILL_SHARE = 0.2
STARTUP_KILL_WINDOW_S = 1.5
TERM_EXIT_TIMEOUT_S = 60.0


class Incarnation:
    """One ``python -m processor`` run; its log goes to ``log``."""

    def __init__(self, root: Path, env: dict[str, str], log: Path) -> None:
        self.root = root
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"processor exited {self.proc.returncode} (see its log)")
        return any(f"-{self.proc.pid}-" in n and n.endswith(".json")
                   for n in os.listdir(self.root / "owners"))

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("processor not ready in time")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(30)

    def stop(self, timeout_s: float = TERM_EXIT_TIMEOUT_S) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()


@dataclass(slots=True)
class FleetTally:
    """What the slots did: stops by kind, and every SIGTERM's exit status that was not 0."""

    kills: int = 0
    startup_stops: int = 0
    sigterms: int = 0
    bad_term_exits: list[int] = field(default_factory=list)
    early_term_deaths: int = 0
    """SIGTERMs that ended a processor (-15) before it logged a line: Python's default
    action, before the processor installed its handlers (after its lease, before
    recovery and any claim: it had touched no job)."""
    kill_ns: dict[int, int] = field(default_factory=dict)


class Fleet:
    """``processors`` slots stopping and restarting processors until ``stops`` are spent."""

    def __init__(self, start: Callable[[int], Incarnation], rng: random.Random, *,
                 stops: int, processors: int, sigterm_share: float, max_gap_s: float
                 ) -> None:
        self.start = start
        self.rng = rng
        self.processors = processors
        self.sigterm_share = sigterm_share
        self.max_gap_s = max_gap_s
        self.tally = FleetTally()
        self._left = stops
        self._lock = threading.Lock()

    def run(self) -> FleetTally:
        """Block until every stop is spent (with one slot, in this thread)."""
        if self.processors == 1:
            self._slot(self.rng, 0)
            return self.tally
        slots = [threading.Thread(target=self._slot, name=f"chaos-slot-{n}",
                                  args=(random.Random(self.rng.random()), n))
                 for n in range(self.processors)]
        for slot in slots:
            slot.start()
        for slot in slots:
            slot.join()
        return self.tally

    def _take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def _slot(self, rng: random.Random, slot: int) -> None:
        while self._take():
            inc = self.start(slot)
            startup = rng.random() < STARTUP_KILL_SHARE
            if startup:
                time.sleep(rng.uniform(0.0, STARTUP_KILL_WINDOW_S))
            else:
                inc.wait_ready()
                time.sleep(rng.uniform(0.05, self.max_gap_s))
            term = self.sigterm_share > 0 and rng.random() < self.sigterm_share
            self._stop(inc, term=term, startup=startup)

    def _stop(self, inc: Incarnation, *, term: bool, startup: bool) -> None:
        if term:
            status = inc.stop()
        else:
            self.tally.kill_ns[inc.proc.pid] = time.monotonic_ns()
            inc.kill()
        with self._lock:
            self.tally.startup_stops += startup
            if term:
                self.tally.sigterms += 1
                if status == -signal.SIGTERM and not inc.log.stat().st_size:
                    self.tally.early_term_deaths += 1
                elif status != 0:
                    self.tally.bad_term_exits.append(status)
            else:
                self.tally.kills += 1


def sweep_strays(token: str) -> int:
    """Processes carrying the soak's marker (``SPOOLQ_CHAOS_SOAK=token``) still alive 5 s
    after the last stop; they are killed."""
    deadline = time.monotonic() + 5.0
    while True:
        strays = [p for p in psutil.process_iter() if _ours(p, token)]
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for proc in strays:
        proc.kill()
    return len(strays)


def _ours(proc: psutil.Process, token: str) -> bool:
    try:
        return bool(proc.environ().get("SPOOLQ_CHAOS_SOAK") == token)
    except (psutil.Error, OSError):
        return False
