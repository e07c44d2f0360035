"""sd_notify(3) without a dependency: READY, WATCHDOG pings, STOPPING, STATUS.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) to a ``Type=notify`` service, and ``WATCHDOG_USEC`` (with
``WATCHDOG_PID``) when ``WatchdogSec=`` is set.  Without ``NOTIFY_SOCKET``
every method is a no-op, so the daemon runs the same under systemd, in a
terminal and in tests.  A failed send is logged once and never raises: the
daemon's work matters more than its supervisor's bookkeeping.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("spoolq.notify")


class SystemdNotifier:
    """Sends state changes to systemd's notify socket, if there is one."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of ``WatchdogSec``, as sd_watchdog_enabled(3) advises."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        if self.watchdog_usec is not None:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def extend_timeout(self, usec: int) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={usec}")

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (sd_watchdog_enabled semantics)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec
