"""sd_notify(3) without a dependency: READY, WATCHDOG pings, STOPPING, STATUS.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) to a ``Type=notify`` service, and ``WATCHDOG_USEC`` (with
``WATCHDOG_PID``) when ``WatchdogSec=`` is set.  Without ``NOTIFY_SOCKET``
every method is a no-op, so the daemon runs the same under systemd, in a
terminal and in tests.

Guarantees:

* Nothing here raises.  A failed send (no listener, a full queue, an address
  family this module does not speak) is logged once and dropped: the daemon's
  work matters more than its supervisor's bookkeeping, and systemd's own
  timeouts (``TimeoutStartSec=``, ``WatchdogSec=``) catch a daemon whose
  messages never arrive.
* A send never blocks for more than ``SEND_TIMEOUT_S``: a stalled receiver
  cannot stall the caller's main loop.
* Watchdog pings are sent only when the watchdog is meant for this process
  (``sd_watchdog_enabled(3)``: ``WATCHDOG_USEC`` > 0 and ``WATCHDOG_PID``
  unset or equal to our pid), so a child that inherited the environment of a
  supervised parent stays quiet.
* Free text (``STATUS=``) cannot inject other assignments: newlines become
  spaces.

Reads (given explicitly by ``main()``): ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``,
``WATCHDOG_PID``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("spoolq.notify")

SEND_TIMEOUT_S = 2.0


class SystemdNotifier:
    """Sends state changes to systemd's notify socket, if there is one."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_usec(environ, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def watchdog(self) -> None:
        if self.watchdog_usec is not None:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def extend_timeout(self, usec: int) -> None:
        """Ask for ``usec`` more before systemd's start/stop timeout (during a long stop)."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, int(usec))}")

    def ping_unsaid(self) -> None:
        """A watchdog ping whose failure is dropped unsaid (from a thread that must not
        log: :class:`WaitingLogPinger`)."""
        if self.watchdog_usec is not None:
            with contextlib.suppress(OSError, ValueError):
                self._deliver("WATCHDOG=1")

    def _send(self, message: str) -> None:
        try:
            self._deliver(message)
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s (further failures are not "
                            "logged)", self.address, exc)

    def _deliver(self, message: str) -> None:
        if self.address is None:
            return
        target = _sockaddr(self.address)
        # A socket per message, as libsystemd does: nothing to leak into children, and a
        # restarted systemd (new socket file) just works.  Connected, so a full receiver
        # queue blocks (bounded by the timeout) instead of failing at once or spinning.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(target)
            sock.sendall(message.encode("utf-8", "replace"))


class WaitingLogPinger:
    """Watchdog pings, on a thread of their own, while the loop waits only for its log's
    reader: a write the reader does not take (journald stalled) held the loop past
    ``WatchdogSec``, and systemd killed a processor a restart would not help, its
    running jobs then requeued with their attempt counted, or failed ``abandoned``.

    ``waiting_since`` says since when the loop has been waiting for its log; the thread pings
    once it has waited half the ping interval, looking four times an interval, so the
    first ping comes well before systemd's deadline.  A loop held anywhere else gets no
    ping from here, and systemd restarts it.  The thread never logs (its lines would wait
    for the same reader).
    """

    def __init__(self, notifier: SystemdNotifier,
                 waiting_since: Callable[[], float | None]) -> None:
        self._notifier = notifier
        self._waiting_since = waiting_since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread, when there is a watchdog to feed."""
        interval = self._notifier.watchdog_interval_s
        if interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True,
                                        name="spoolq-log-wait-pings")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SEND_TIMEOUT_S + 1)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval / 4):
            since = self._waiting_since()
            if since is not None and time.monotonic() - since >= interval / 2:
                self._notifier.ping_unsaid()


def _sockaddr(address: str) -> str:
    """``/path`` as is, ``@name`` as the abstract name ``\\0name``; anything else is refused."""
    if address.startswith("@") and len(address) > 1:
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    raise ValueError(f"unsupported NOTIFY_SOCKET address {address!r} (want /path or @name)")


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for ``pid`` (sd_watchdog_enabled semantics)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None  # sd_watchdog_enabled returns an error: no pings
    return usec
