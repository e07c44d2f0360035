"""Sending to clients that may stop reading: large records in bounded pieces, and a
drop for any client that takes nothing for too long.

Guarantees:

* :class:`StallGuard` cuts a connection off (abort, so the unsent bytes are
  freed at once) when its client has taken nothing of a waiting write for
  ``SEND_STALL_S`` twice in a row.  A slow reader that keeps reading is never
  cut off by it (the WebSocket heartbeat cuts one whose reading is more than its
  pong's wait behind: :mod:`statusd.ws`); a client that never reads holds its connection for at most
  ``2 * SEND_STALL_S`` after a write that has to wait.  aiohttp alone waits for good:
  closing a transport whose buffer cannot drain leaves it, and the bytes in it,
  open for as long as the peer lives, and a WebSocket's heartbeat closes it that
  way too.
* :func:`stream_file` sends a record from an open descriptor ``CHUNK_BYTES`` at
  a time, read in a worker thread: a client costs one chunk of memory however
  large the record, and no read or parse holds the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import struct
import termios
import weakref
from collections.abc import Awaitable, Coroutine, Iterator, Sequence

from aiohttp import web

from statusd.errors import DROPPED_CLIENTS
from statusd.services import Services

log = logging.getLogger("spoolq.statusd")

SEND_STALL_S = 10.0
CHUNK_BYTES = 256 * 1024


class StallGuard:
    """Watches one connection's writes and cuts the client off when it stops taking them.

    One timer per connection, armed while a write waits: each ``SEND_STALL_S`` it
    checks that a write finished, or that the bytes queued for the client shrank since
    the last check (the transport's buffer and the socket's unacknowledged bytes:
    taken from one into the other they stay the same; only the client's reading
    lowers them); if neither, the transport is aborted, which fails the waiting write.
    The transport's buffer alone moves only when the kernel takes more, once about
    half its send buffer (up to 4 MB) drained: a client reading steadily at a few
    hundred KB/s was cut off mid-record as one that took nothing (QA).
    """

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.dropped = False
        _LIVE.add(self)
        self._waiting = 0
        self._finished = 0
        self._seen: tuple[int, float] = (-1, math.inf)
        self._timer: asyncio.TimerHandle | None = None

    async def send(self, write: Awaitable[None]) -> bool:
        """Await ``write`` (a send to this client); False when the client was cut off or
        had gone away."""
        if self.dropped:
            if isinstance(write, Coroutine):
                write.close()
            return False
        self._waiting += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SEND_STALL_S, self._check)
        try:
            await write
        except ConnectionError:
            return False
        finally:
            self._waiting -= 1
        self._finished += 1
        return not self.dropped

    def close(self) -> None:
        _LIVE.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cut_off(self) -> None:
        """Drop the client now (its send fails): statusd stops."""
        self.dropped = True
        abort(self.request)

    def _check(self) -> None:
        self._timer = None
        if not self._waiting:
            self._seen = (-1, math.inf)
            return
        transport = self.request.transport
        seen = (self._finished, queued(transport) if transport else 0)
        if seen[0] == self._seen[0] and seen[1] >= self._seen[1]:
            self.dropped = True
            self.request.app[DROPPED_CLIENTS].note(
                logging.INFO, "client %s took nothing in %.0f s; dropped",
                self.request.remote, 2 * SEND_STALL_S)
            abort(self.request)
            return
        self._seen = seen
        self._timer = asyncio.get_running_loop().call_later(SEND_STALL_S, self._check)


_LIVE: weakref.WeakSet[StallGuard] = weakref.WeakSet()
"""The guards of the sends going on, for :func:`cut_off_all`."""


def cut_off_all() -> int:
    """Cut off every client still being sent to (at a stop, once requests in flight had
    their time); how many.  aiohttp waits that long for a handler, then cancels it and
    waits that long again for a handler that a waiting write keeps: a client that took
    nothing held a stop 10 s, where 5 are documented (QA)."""
    guards = list(_LIVE)
    for guard in guards:
        guard.cut_off()
    return len(guards)


def queued(transport: asyncio.BaseTransport) -> int:
    """The bytes sent to a client it has not taken yet: those in ``transport``'s buffer
    and those its socket holds unacknowledged (``SIOCOUTQ``; 0 where it cannot say)."""
    buffered = transport.get_write_buffer_size() if isinstance(
        transport, asyncio.WriteTransport) else 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return buffered
    try:
        unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                 b"\0\0\0\0"))[0]
    except OSError:  # closed meanwhile, or a socket that keeps no such count
        return buffered
    return buffered + int(unacked)


async def stream_file(request: web.Request, services: Services, fd: int, size: int
                      ) -> web.StreamResponse:
    """A 200 with the JSON file open at ``fd`` (``size`` bytes) as its body; closes ``fd``."""
    guard = StallGuard(request)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        offset = 0
        while offset < size:
            try:
                chunk: bytes = await services.in_thread(os.pread, fd, min(
                    CHUNK_BYTES, size - offset), offset)
            except (OSError, RuntimeError) as exc:
                # EIO, or no thread to read in: the headers are out, so the client can
                # only be told by a cut connection (an error answer now was never sent,
                # and the client waited for the rest of the body for good).
                log.warning("cannot read the record sent to %s (%s); connection cut",
                            request.remote, exc)
                abort(request)
                return response
            if not chunk:  # cut short in place (records are replaced, never rewritten)
                abort(request)
                return response
            if not await guard.send(response.write(chunk)):
                return response
            offset += len(chunk)
        return response
    finally:
        guard.close()
        os.close(fd)


async def send_parts(request: web.Request, parts: Sequence[bytes | memoryview]
                     ) -> web.StreamResponse:
    """A 200 with the JSON ``parts`` make in order, written about ``CHUNK_BYTES`` at a
    time under the stall rule.  The parts (a page's rows, which the index holds) are
    never joined whole: a client that read none of a page held a copy of all of it for
    as long as it kept the connection (QA: 40 such clients of a 31 MB page, 1.4 GB)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = sum(len(part) for part in parts)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    guard = StallGuard(request)
    try:
        chunk: list[bytes | memoryview] = []
        size = 0
        for part in _pieces(parts):
            chunk.append(part)
            size += len(part)
            if size >= CHUNK_BYTES:
                if not await guard.send(response.write(_joined(chunk))):
                    return response
                chunk, size = [], 0
        if chunk:
            await guard.send(response.write(_joined(chunk)))
    finally:
        guard.close()
    return response


def _pieces(parts: Sequence[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """``parts`` in order, one over ``CHUNK_BYTES`` (a large record whole) as views of
    ``CHUNK_BYTES`` each."""
    for part in parts:
        if len(part) <= CHUNK_BYTES:
            yield part
            continue
        view = memoryview(part)
        for offset in range(0, len(view), CHUNK_BYTES):
            yield view[offset:offset + CHUNK_BYTES]


def _joined(chunk: list[bytes | memoryview]) -> bytes | memoryview:
    """One write of ``chunk``: a piece alone as it is (a large record's view, uncopied)."""
    return chunk[0] if len(chunk) == 1 else b"".join(chunk)


def abort(request: web.Request) -> None:
    """Drop the connection and what is queued for it, unless it is gone already."""
    if request.transport is not None:
        request.transport.abort()
