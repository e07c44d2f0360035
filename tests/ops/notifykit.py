"""A stand-in for systemd's notify socket: receives datagrams with the sender's pid.

The listener binds an AF_UNIX SOCK_DGRAM socket (a path, or an abstract
``@name``) and turns on ``SO_PASSCRED``, as systemd does, so every message
arrives with the sender's pid: ``NotifyAccess=main`` accepts only the main
process's messages, and the tests check that is who sends them.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

UCRED = struct.Struct("3i")  # pid, uid, gid
SO_TIMESTAMPNS = 35  # Linux's (the socket module names it not): a CLOCK_REALTIME stamp
TIMESPEC = struct.Struct("qq")  # its struct timespec (64-bit): seconds, nanoseconds


@dataclass(frozen=True)
class Message:
    at: float  # when the kernel queued it (on time.monotonic's scale), not when read
    pid: int  # the sender, from SCM_CREDENTIALS
    text: str


class Listener:
    """What systemd's notify socket does with our messages: receive them with credentials."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # The kernel stamps each datagram as it is sent: gaps between pings measured at
        # the test's reads held every stall of the test (or of its host) on top.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def next(self, timeout: float = 10.0) -> Message:
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(
            4096, socket.CMSG_SPACE(UCRED.size) + socket.CMSG_SPACE(TIMESPEC.size))
        pid, at = -1, time.monotonic()
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[:UCRED.size])[0]
            elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(payload[:TIMESPEC.size])
                at -= time.time() - (sec + nsec / 1e9)  # how long it waited to be read
        return Message(at, pid, data.decode())

    def until(self, text: str, timeout: float = 10.0,
              sender: subprocess.Popen[bytes] | None = None,
              said: Callable[[], str] | None = None) -> list[Message]:
        """Every message up to and including the first equal to ``text``; given the
        ``sender``, an error as soon as it has exited without sending it (it waited out
        the whole timeout for a process that had died at its start).  ``said``: the
        sender's log, which the error ends with (it named no cause: a sandbox's failed
        import was found only by running the unit again)."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        log = (lambda: "\n" + said()[-3000:]) if said is not None else (lambda: "")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout} s; got {got}{log()}")
            exited = sender is not None and sender.poll() is not None
            try:  # what it sent before it exited is queued: read first
                got.append(self.next(min(left, 0.5) if sender is not None else left))
            except TimeoutError:
                if exited:
                    raise AssertionError(f"no {text!r}: its sender exited "
                                         f"({sender.returncode}); got {got}{log()}") from None
                continue
            if got[-1].text.split("\n")[0] == text:
                return got

    def nothing(self, wait_s: float = 0.2) -> bool:
        self.sock.settimeout(wait_s)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()
