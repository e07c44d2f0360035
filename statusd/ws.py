"""WebSocket endpoints: one task's live stream, and the stream of every transition.

The events stream opened with ``view=brief`` sends each transition's record as
its brief list row (as ``GET /api/v1/tasks?view=brief`` does), for a live list:
a large job's params and result are left out, not sent at every transition.

Each connection has two halves: a *pump* task that sends what the hub queued
for it, and the handler itself, which reads the socket (so pongs and close
frames are processed).  The connection ends when either half ends:

* the client closes, or the heartbeat (ws ping) gets no pong: a client that is gone,
  or one whose reading is more than the pong's wait behind, counted as dropped;
* the pump sent a task's terminal message (close 1000);
* the task left the spool (a drop withdrawn, a purge): close 1008, as for an id
  removed while the handshake ran;
* the hub dropped the client for falling behind (pump cancelled; close 1013,
  or an abort if even the close frame cannot be written);
* a message, the snapshot included, that the client does not take: cut off
  (see :class:`statusd.sending.StallGuard`), however few messages it is behind;
  so is a pong: the read loop answers a client's pings itself, under the same
  guard (aiohttp's autoping waited for good for a client that pings and never
  reads, holding its connection and the pongs queued for it);
* statusd shuts down (every socket is closed 1001, and so is one whose handshake was
  still running: :class:`Sockets`).

However it ends, the connection is gone ``CLOSE_TIMEOUT_S`` after the close (an
abort when the client has not taken what was queued for it by then).

The snapshot of a task is taken in the same loop step as the subscription,
so no transition falls between them and none arrives out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import weakref
from collections.abc import Iterator

from aiohttp import WSCloseCode, WSMsgType, web

from spool.states import TERMINAL
from statusd import messages
from statusd.errors import (
    DROPPED_CLIENTS,
    ApiError,
    brief_view,
    flag_value,
    not_found,
    query_value,
    task_id,
)
from statusd.hub import GONE, Message, Subscriber
from statusd.items import Item
from statusd.origins import REACH
from statusd.sending import StallGuard, abort
from statusd.services import SERVICES, Services

log = logging.getLogger("spoolq.statusd")

CLOSE_TIMEOUT_S = 1.0
MAX_CLIENT_MSG_BYTES = 4096
WS_VERSIONS = ("13", "8", "7")
"""What aiohttp's handshake accepts."""
STOPPING_MESSAGE = b"statusd is stopping"
PUMP_BATCH = 256
"""The most messages a client's pump takes from its queue at once (:func:`_pump`)."""
PUMP_BATCH_BYTES = 256 * 1024
"""... and the most bytes: a batch ends with the message that passes it."""
WRITE_HIGH_BYTES = 64 * 1024
"""A pump waits while more than this waits in its transport (asyncio's default high
water mark, which aiohttp's writes wait on)."""
FRAGMENT_BYTES = 60 * 1024
"""A text longer than this is sent as fragments of this size (:func:`_write_frames`)."""
DRAIN_POLL_S = (0.01, 0.2)
"""How often a waiting pump looks at its transport again: first, and at most (doubling
between): 60 clients that read nothing cost 0.03 to 0.07 CPU-s a second at 10 ms (a
review)."""


class Sockets:
    """The app's open WebSockets, for shutdown to close (1001).  A handshake still running
    when shutdown closed them is closed 1001 as soon as it completes: it was served on,
    its client answering the heartbeat, and held the stop until aiohttp's shutdown
    timeout (60 s then; statusd's ``STOP_S`` now)."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.stopping = False

    def __iter__(self) -> Iterator[web.WebSocketResponse]:
        return iter(list(self._live))

    def enlist(self, ws: web.WebSocketResponse) -> bool:
        """Count ``ws`` in; False (and not counted) once shutdown has begun."""
        if self.stopping:
            return False
        self._live.add(ws)
        return True


SOCKETS = web.AppKey("websockets", Sockets)
GONE_CODE = WSCloseCode.POLICY_VIOLATION
"""How a task stream ends when its task is not (or no longer) in the spool."""


def _socket(request: web.Request, services: Services) -> web.WebSocketResponse:
    request.app[REACH].check_origin(request)
    ws = web.WebSocketResponse(heartbeat=services.heartbeat_s, autoping=False,
                               max_msg_size=MAX_CLIENT_MSG_BYTES, timeout=CLOSE_TIMEOUT_S)
    if ws.can_prepare(request).ok:
        return ws
    # What the handshake lacks (RFC 6455 4.2.2), said without echoing the client's bytes.
    headers = request.headers
    if request.method != "GET" or "websocket" not in headers.get("Upgrade", "").lower():
        raise ApiError(426, "upgrade_required", "this endpoint speaks WebSocket only",
                       {"Upgrade": "websocket"})
    if headers.get("Sec-WebSocket-Version") not in WS_VERSIONS:
        raise ApiError(426, "upgrade_required", "unsupported WebSocket version: this "
                       "endpoint speaks version 13", {"Sec-WebSocket-Version": "13"})
    raise ApiError(400, "bad_request", "bad WebSocket handshake (Connection: Upgrade and a "
                   "Sec-WebSocket-Key of 16 bytes in base64 are required)")


async def task_stream(request: web.Request) -> web.WebSocketResponse:
    services = request.app[SERVICES]
    job_id = task_id(request)
    ws = _socket(request, services)
    # The snapshot is what the disk says now; while the index applies a batch it is the
    # index's, and the move the batch is behind on follows as a transition.
    await services.tracker.catch_up(job_id, wait=False)
    if services.index.get(job_id) is None:
        await services.tracker.refresh([job_id])
        if services.index.get(job_id) is None:
            raise not_found(services.layout, job_id, f"no task {job_id}")
    if not await _open(request, ws):
        return ws
    sub = services.hub.subscribe(job_id)
    item = services.index.get(job_id)  # same loop step as subscribe: nothing in between
    guard = StallGuard(request)
    try:
        if item is None:  # purged while the handshake ran
            await ws.close(code=GONE_CODE, message=b"unknown task")
            return ws
        snapshot = await snapshot_of(item)
        if not await guard.send(ws.send_frame(snapshot, WSMsgType.TEXT)):
            return ws
        del snapshot
        if item.state not in TERMINAL:
            await _serve(request, guard, ws, sub)
    finally:
        _leave(request, ws, guard, sub)
    await _close(request, ws, _code(sub))
    return ws


async def events_stream(request: web.Request) -> web.WebSocketResponse:
    services = request.app[SERVICES]
    with_progress = flag_value(request, "progress")
    brief = brief_view(query_value(request, "view"))
    ws = _socket(request, services)
    if not await _open(request, ws):
        return ws
    sub = services.hub.subscribe(None, with_progress=with_progress, brief=brief)
    guard = StallGuard(request)
    try:
        await _serve(request, guard, ws, sub)
    finally:
        _leave(request, ws, guard, sub)
    await _close(request, ws, _code(sub))
    return ws


async def _open(request: web.Request, ws: web.WebSocketResponse) -> bool:
    """Complete the handshake and count the socket in for shutdown's close; False (the
    socket closed 1001) when shutdown began as the handshake ran (:class:`Sockets`)."""
    await ws.prepare(request)
    if request.app[SOCKETS].enlist(ws):
        return True
    await _close(request, ws, WSCloseCode.GOING_AWAY, STOPPING_MESSAGE)
    return False


def _leave(request: web.Request, ws: web.WebSocketResponse, guard: StallGuard,
           sub: Subscriber) -> None:
    """A stream is over: its guard stopped, its subscription ended, and a client cut off
    counted as dropped and logged: the hub's drop for falling behind, the guard's for
    taking nothing, and the heartbeat's for no pong, which a client that reads but is
    more than the pong's wait behind gets too (it was counted nowhere, said nowhere)."""
    services = request.app[SERVICES]
    guard.close()
    if guard.dropped:  # the guard's own line says so
        services.hub.cut_off(sub)
    elif sub.dropped:
        request.app[DROPPED_CLIENTS].note(
            logging.INFO, "websocket client %s on %s dropped: more than %d messages behind",
            request.remote, request.path, services.hub.queue_max)
    elif isinstance(ws.exception(), TimeoutError):
        services.hub.cut_off(sub)
        request.app[DROPPED_CLIENTS].note(
            logging.INFO, "websocket client %s on %s dropped: no pong within %g s of a ping "
            "(its reading is that far behind, or it is gone)", request.remote, request.path,
            services.heartbeat_s / 2)
    services.hub.unsubscribe(sub)


async def snapshot_of(item: Item) -> bytes:
    """A task stream's first message, from the index alone (no disk read): the record,
    or for a large one its summary (no ``result``) with a link to the full record."""
    return messages.snapshot(item, item.body if item.body is not None else item.summary)


def _code(sub: Subscriber) -> int:
    if sub.dropped:
        return WSCloseCode.TRY_AGAIN_LATER
    return GONE_CODE if sub.gone else WSCloseCode.OK


async def _serve(request: web.Request, guard: StallGuard, ws: web.WebSocketResponse,
                 sub: Subscriber) -> None:
    """Run the pump beside a read loop until either ends."""
    if sub.dropped:
        return  # it fell behind before there was a pump to cancel: the caller closes 1013
    pump = asyncio.create_task(_pump(request, guard, ws, sub))
    sub.pump = pump
    reader = asyncio.create_task(_drain(guard, ws))
    try:
        await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, reader):
            task.cancel()
        await asyncio.gather(pump, reader, return_exceptions=True)


async def _pump(request: web.Request, guard: StallGuard, ws: web.WebSocketResponse,
                sub: Subscriber) -> None:
    """Send what the hub queues for ``sub``: each wait's worth, up to PUMP_BATCH messages,
    in one write (:func:`_write_frames`), or, to a client that asked for compression, a
    compressed message a write (:func:`_send_each`)."""
    while True:
        message = await sub.queue.get()
        batch, size = [message], len(message.data)
        while (not _ends(message, sub) and len(batch) < PUMP_BATCH
               and size < PUMP_BATCH_BYTES and not sub.queue.empty()):
            message = sub.queue.get_nowait()
            batch.append(message)
            size += len(message.data)
        texts = [m.data for m in batch if m is not GONE]
        # A client that asked for compression (a browser) gets each message compressed
        # by aiohttp, as before: written uncompressed, a dashboard's events took ten
        # times the bytes (a review).  It pays a write a message; few such clients do.
        if texts and not await guard.send(
                _send_each(ws, texts) if ws.compress else _write_frames(request, ws, texts)):
            return
        if _ends(message, sub):
            return


async def _send_each(ws: web.WebSocketResponse, texts: list[bytes]) -> None:
    for text in texts:
        await ws.send_frame(text, WSMsgType.TEXT)


def _ends(message: Message, sub: Subscriber) -> bool:
    """``message`` is the last of ``sub``'s stream: its task's terminal one, or GONE."""
    return message is GONE or (message.terminal and sub.job_id is not None)


async def _write_frames(request: web.Request, ws: web.WebSocketResponse,
                        texts: list[bytes]) -> None:
    """Write ``texts`` to the client as text frames, the small ones in one write, then
    wait while more than WRITE_HIGH_BYTES of what it was sent waits in the transport;
    ConnectionError once the connection closes.

    One ``send_frame`` a message made one ``send()`` a message a client: a burst of
    3,000 records (9,000 events) to 200 clients was 1.8 million system calls on the
    loop, which held ``/healthz`` 3 s (QA).  A text over FRAGMENT_BYTES goes as
    fragments of that size (RFC 6455 5.4), each written once the one before has drained:
    written whole, each client that read slowly or not at all held a copy of it (300
    such clients and 30 jobs of 900 KB took statusd from 208 to 609 MB, QA h396).  A ping
    or pong aiohttp writes meanwhile falls between two fragments, which the RFC allows.
    For a client that did not ask for compression (:func:`_send_each` serves one that
    did)."""
    transport = request.transport
    if ws.closed or transport is None or transport.is_closing():
        raise ConnectionResetError("the WebSocket is closing")
    for piece in _pieces(texts):
        if ws.closed or transport.is_closing():  # its close frame is the last one sent
            raise ConnectionResetError("the WebSocket closed")
        transport.write(piece)
        wait_s = DRAIN_POLL_S[0]
        while not transport.is_closing() and \
                transport.get_write_buffer_size() > WRITE_HIGH_BYTES:
            await asyncio.sleep(wait_s)  # a client reading slowly: the guard watches
            wait_s = min(2 * wait_s, DRAIN_POLL_S[1])
    if transport.is_closing():
        raise ConnectionResetError("the WebSocket closed")


def _pieces(texts: list[bytes]) -> Iterator[bytes]:
    """What :func:`_write_frames` writes: the frames of the texts up to FRAGMENT_BYTES
    joined in one piece, and each longer text as fragments of FRAGMENT_BYTES, a piece
    each (sliced from the shared message, not copied whole)."""
    small: list[bytes] = []
    for text in texts:
        if len(text) <= FRAGMENT_BYTES:
            small += (_text_header(len(text)), text)
            continue
        if small:
            yield b"".join(small)
            small = []
        view = memoryview(text)
        for at in range(0, len(text), FRAGMENT_BYTES):
            part = view[at:at + FRAGMENT_BYTES]
            yield _header(0x1 if at == 0 else 0x0, at + FRAGMENT_BYTES >= len(text),
                          len(part)) + part
    if small:
        yield b"".join(small)


def _text_header(length: int) -> bytes:
    """A server's (unmasked) header of a whole text frame of ``length`` bytes."""
    return _header(0x1, True, length)


def _header(opcode: int, fin: bool, length: int) -> bytes:
    """A server's (unmasked) frame header, the length in the fewest bytes, as RFC 6455
    (5.2) requires: a text frame (0x1) or a continuation (0x0), the last one ``fin``."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


async def _drain(guard: StallGuard, ws: web.WebSocketResponse) -> None:
    """Read what the client sends, answer its pings (under ``guard``) and ignore the rest;
    returns when the socket closes or the client is cut off."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            return
        if msg.type is WSMsgType.PING and not await guard.send(ws.pong(msg.data)):
            return


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int,
                 message: bytes = b"") -> None:
    """Close the socket with ``code`` (unless the client or the heartbeat closed it), and
    let the connection go within ``CLOSE_TIMEOUT_S`` however it was closed: a transport
    closed with bytes unsent waits for the peer to take them, for good if it never reads
    (a heartbeat's close of a client that stopped reading held its connection, and the
    kernel's megabytes queued for it, as long as the peer lived)."""
    if not ws.closed:
        try:
            await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            abort(request)
            return
        except asyncio.CancelledError:
            # The close waited on the transport's drain, which aiohttp shares between
            # writers: a dropped client's pump, cancelled inside its write, cancelled
            # that wait, and the close raised at once.  The connection stayed as long
            # as the client lived (QA).  Not this task's own cancel: it goes on.
            abort(request)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, abort, request)


async def close_all(app: web.Application) -> None:
    """on_shutdown: close every socket with 1001 (going away), all at once; a handshake
    still running closes its socket so once done (:class:`Sockets`)."""
    sockets = app[SOCKETS]
    sockets.stopping = True
    coros = [ws.close(code=WSCloseCode.GOING_AWAY, message=STOPPING_MESSAGE)
             for ws in sockets]
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*coros, return_exceptions=True),
                               CLOSE_TIMEOUT_S * 2)
