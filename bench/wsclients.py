"""The clients of bench.ws_fanout: raw-socket WebSocket clients in one asyncio loop (a
handshake, frame parsing, pongs, each terminal event's arrival by id), and a ``/healthz``
poller in a process of its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

EVENTS_PATH = "/api/v1/ws/events"
WS_PATH = f"{EVENTS_PATH}?view=brief"
TERMINAL = re.compile(rb'"id":"([^"]+)","state":"(?:done|failed)"')
JOB_ID = re.compile(rb'"id":"([^"]+)"')
POLL_S = 0.05
IDLE_S = 10.0
"""The wait for events ends when no client got a frame for this long."""


class BenchError(Exception):
    """A server would not start, or the clients could not connect."""


# -- the clients -----------------------------------------------------------------------


class WsClient(asyncio.Protocol):
    """One WebSocket client: handshake, frame parsing, pongs; terminal events by id."""

    def __init__(self, port: int, done: Callable[[], None]) -> None:
        self.port, self.done = port, done
        self.transport: asyncio.Transport | None = None
        self.buf, self.upgraded = b"", False
        self.frames, self.last_at = 0, 0.0
        self.terminal: dict[bytes, float] = {}
        self.expected: set[bytes] = set()
        self.sample: list[bytes] = []
        """The frames of the first record seen, up to its terminal one (its first
        client only: see :meth:`Fleet.connect`)."""
        self.sample_id: bytes | None = None
        self.sampling = False
        self.closed: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.closed = f"handshake: {self.buf[:40]!r}"
                return
            self.upgraded, self.buf = True, self.buf[end + 4:]
            self.done()
        self._parse(time.monotonic())

    def _parse(self, now: float) -> None:
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            start = pos + head
            if size - start < length:
                break
            pos = start + length
            if opcode == 1:
                self._message(buf, start, pos, now)
            elif opcode in (8, 9):
                self._control(opcode, buf[start:pos], now)
        self.buf = buf[pos:]

    def _message(self, buf: bytes, start: int, end: int, now: float) -> None:
        self.frames += 1
        self.last_at = now
        if self.sampling:
            self._sample(buf[start:end])
        found = TERMINAL.search(buf, start, min(end, start + 400))
        if found is not None and (job_id := found.group(1)) not in self.terminal:
            self.terminal[job_id] = now
            if len(self.terminal) == len(self.expected) and self.expected <= self.terminal.keys():
                self.done()

    def _sample(self, frame: bytes) -> None:
        found = JOB_ID.search(frame, 0, 400)
        if found is None:
            return
        if self.sample_id is None:
            self.sample_id = found.group(1)
        if found.group(1) == self.sample_id:
            self.sample.append(frame)
            self.sampling = TERMINAL.search(frame, 0, 400) is None

    def _control(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 9:  # ping: pong
            self._send(0xA, payload)
        else:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.closed = f"close frame {code} at {now:.3f}"
            self._send(0x8, payload[:2])

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = f"connection lost at {time.monotonic():.3f} ({exc!r})"
        self.done()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class Fleet:
    """All the clients of one server, and a wake-up for whoever waits on them."""

    clients: list[WsClient] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, port: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        for i in range(count):
            client = WsClient(port, self.changed.set)
            client.sampling = i == 0
            await loop.create_connection(lambda c=client: c, "127.0.0.1", port)  # type: ignore[misc]
            self.clients.append(client)
        await self._until(lambda: all(c.upgraded or c.closed for c in self.clients), 30.0)
        if failed := [c.closed for c in self.clients if not c.upgraded]:
            raise BenchError(f"{len(failed)} clients not connected: {failed[0]}")

    def expect(self, ids: list[str]) -> None:
        wanted = {job_id.encode() for job_id in ids}
        for client in self.clients:
            client.expected = wanted

    def finished(self) -> bool:
        return all(c.closed or len(c.terminal) >= len(c.expected) for c in self.clients)

    async def wait_events(self) -> None:
        """Until every client has every event or is gone, or none got a frame for IDLE_S."""
        start = time.monotonic()

        def idle() -> bool:
            last = max([start, *(c.last_at for c in self.clients)])
            return time.monotonic() - last > IDLE_S
        await self._until(lambda: self.finished() or idle(), None)

    async def _until(self, test: Callable[[], bool], timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not test():
            self.changed.clear()
            if deadline is not None and time.monotonic() > deadline:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.5)

    def close(self) -> None:
        for client in self.clients:
            client.abort()


# -- the /healthz poller -----------------------------------------------------------------

_POLLER = """
import http.client, json, signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
port, every, polls = int(sys.argv[1]), float(sys.argv[2]), []
print("polling", flush=True)
while not stop:
    start = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
        conn.close()
    except OSError as exc:
        status = repr(exc)[:60]
    end = time.monotonic()
    polls.append((start, end - start, status))
    time.sleep(max(0.0, start + every - time.monotonic()))
json.dump(polls, sys.stdout)
"""


def start_poller(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _POLLER, str(port), str(POLL_S)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def stop_poller(proc: subprocess.Popen[str]) -> list[tuple[float, float, object]]:
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return [tuple(p) for p in json.loads(out)]
