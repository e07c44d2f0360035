"""The loop thread and its standby: FAST tools run on the loop thread itself,
and the loop moves to the standby when one of them holds it too long.

Why: a FAST tool is light I/O, under 100 ms (DESIGN section 4), usually far
less; handing each one to a pool thread and its outcome back costs two
thread wake-ups, more than most FAST tools take (docs/benchmarks.md: about
150 us a job on a 2-vCPU machine).  So the loop thread runs a FAST tool in
place, inside :meth:`Relay.run_inline`.  A standby thread watches: once a
tool has held the loop for ``handoff_s``, the standby becomes the loop thread.
The old one, when its tool returns, finds it no longer leads: its caller
posts the outcome like any other thread, and it stands by in turn (or ends,
when a standby is already there).

The standby sleeps without a timer while no tool has run for a second, and
wakes once per ``handoff_s`` at most while tools run, so an idle daemon is
never woken and a busy one pays no wake-up per job.

The main thread never runs the loop: it waits in :meth:`Relay.wait`.  Stop
signals do not go through that wait: the kernel may hand a signal to any
thread, and a Python-level handler runs on the main thread only once it wakes,
so the processor reads them from a wake-up pipe in its loop instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("spoolq.relay")
PARK_AFTER_S = 1.0
"""With no inline run for this long, the standby sleeps until the next one starts."""


class Relay:
    """Runs ``step`` over and over on one thread at a time until it returns False."""

    def __init__(self, step: Callable[[], bool], handoff_s: float, *,
                 on_lead: Callable[[threading.Thread], None] | None = None,
                 name: str = "loop") -> None:
        self.step = step
        self.handoff_s = handoff_s
        self.on_lead = on_lead
        self.name = name
        self.done = threading.Event()
        # Taken by its lock in run_inline, twice a FAST job: the Condition's own __enter__
        # and __exit__ are Python frames around the same lock's.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._leader: threading.Thread | None = None
        self._inline_since = 0.0  # when the leader's current inline run began; 0: none
        self._last_inline = 0.0
        self._standbys = 0
        self._parked = False  # the standby waits without a timer
        self._threads = 0
        self._error: BaseException | None = None
        self._unspawned = False  # a standby could not be started: tried again at a run

    def start(self) -> None:
        self._spawn()
        self._spawn()  # the first standby

    def wait(self) -> None:
        """Block (the main thread) until the loop is over; re-raise what ended it."""
        self.done.wait()
        if self._error is not None:
            raise self._error

    def run_inline(self, fn: Callable[..., T], *args: Any) -> tuple[bool, T]:
        """Run ``fn(*args)`` on the loop thread; (still the loop thread?, its result)."""
        me = threading.current_thread()
        with self._lock:
            self._inline_since = time.monotonic()
            if self._parked:
                self._cond.notify()
            if self._unspawned:
                if self._standbys:  # a displaced thread stands by since
                    self._unspawned = False
                else:
                    self._respawn()
        try:
            result = fn(*args)
        finally:
            with self._lock:
                self._last_inline = time.monotonic()
                still = self._leader is me
                if still:
                    self._inline_since = 0.0
        return still, result

    # -- threads -----------------------------------------------------------------

    def _spawn(self) -> None:
        self._threads += 1
        threading.Thread(target=self._serve, daemon=True,
                         name=f"{self.name}-{self._threads}").start()

    def _serve(self) -> None:
        me = threading.current_thread()
        try:
            while not self.done.is_set():
                with self._cond:
                    if self._leader is None:
                        self._take_over(me)
                    elif self._leader is not me:
                        if self._standbys:
                            return  # one standby is enough: this thread ends
                        if not self._stand_by(me):
                            return
                if self._leader is me:
                    self._lead(me)
        except BaseException as exc:  # e.g. no thread could be started: never hang
            self._failed(me, exc)

    def _take_over(self, me: threading.Thread) -> None:
        self._leader = me
        self._inline_since = 0.0
        if self.on_lead is not None:
            self.on_lead(me)

    def _lead(self, me: threading.Thread) -> None:
        try:
            while self._leader is me and not self.done.is_set():
                if not self.step():
                    self._finish(None)
                    return
        except BaseException as exc:
            self._failed(me, exc)

    def _failed(self, me: threading.Thread, exc: BaseException) -> None:
        """An error on ``me`` ends the loop if ``me`` leads; a displaced thread's is logged."""
        if self._leader in (me, None):
            self._finish(exc)
        else:
            log.error("error on a displaced loop thread", exc_info=exc)

    def _finish(self, error: BaseException | None) -> None:
        with self._cond:
            self._error = error
            self.done.set()
            self._cond.notify_all()

    def _stand_by(self, me: threading.Thread) -> bool:
        """Wait (holding the condition) until the leader is stuck; False once the loop is over."""
        self._standbys += 1
        try:
            while not self.done.is_set():
                if (timeout := self._watch_timeout()) == 0:
                    break
                self._parked = timeout is None
                self._cond.wait(timeout)
                self._parked = False
            else:
                return False
        finally:
            self._standbys -= 1
        self._take_over(me)
        self._respawn()  # a standby for the new leader; the old one may never return
        return True

    def _respawn(self) -> None:
        """Start the new leader's standby (under the condition); out of threads (a
        limit on processes, RLIMIT_NPROC or the cgroup's pids.max), the loop goes on
        without one, and the next inline run tries again.  Raised, "can't start new
        thread" ended the loop: the processor crashed, and its next start failed every
        run it held as ``abandoned``.  Meanwhile the displaced thread stands by
        itself once its tool returns (see :meth:`_serve`)."""
        try:
            self._spawn()
        except RuntimeError as exc:
            self._threads -= 1
            if not self._unspawned:
                log.warning("cannot start a standby loop thread; going on without one",
                            extra={"fields": {"error": str(exc)}})
            self._unspawned = True
        else:
            if self._unspawned:
                log.info("standby loop thread started again")
            self._unspawned = False

    def _watch_timeout(self) -> float | None:
        """0 once the leader's inline run has lasted ``handoff_s``; else how long to sleep."""
        now = time.monotonic()
        since = self._inline_since
        if since:
            return max(0.0, since + self.handoff_s - now)
        if now - self._last_inline < PARK_AFTER_S:
            return self.handoff_s
        return None
