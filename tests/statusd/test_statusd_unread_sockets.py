"""Clients that stop reading are let go, whatever made the bytes wait for them.

A connection whose client takes nothing holds its descriptor and every byte queued for
it (the kernel's send buffer, some 4 MiB, and aiohttp's) for as long as the peer keeps
the TCP connection open, unless statusd cuts it off (an abort).  A WebSocket pump's
messages and a large record are cut off so by :class:`statusd.sending.StallGuard`;
these are the other ways bytes came to wait: pongs for a client's pings, a heartbeat
that closes a socket whose buffer is not empty, a large page of the task list.  A real
server on 127.0.0.1, clients over raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time

import aiohttp
import psutil
import pytest
from statusdkit import (
    ServerThread,
    request,
    run_job,
    settings_for,
    stalled_ws_client,
    unsent_bytes,
    wait_for,
)

from spool.models import Job
from spool.transitions import Spool
from statusd import hub, sending
from statusd.ws import CLOSE_TIMEOUT_S

QUICK_STALL_S = 1.0
"""SEND_STALL_S in these tests (it ships 10 s): a client is cut off after twice that."""
FLOOD_CAP_BYTES = 64 * 2**20
PONG = 0xA



def _ping(payload: bytes, opcode: int = 0x9) -> bytes:
    """A masked ping frame (or another ``opcode``), as a client must send it (RFC 6455
    5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _served(port: int) -> int:
    """statusd's established connections (the server's ends, in this process)."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_client_that_pings_and_never_reads_is_cut_off(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp answers each ping with a pong from the socket's read loop, and waits there
    for the pong's bytes to drain: for good, from a client that does not read.  Its
    connection (and ~4 MiB of pongs) stayed, heartbeat or not, as long as the spool was
    quiet."""
    monkeypatch.setattr(sending, "SEND_STALL_S", QUICK_STALL_S)
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sock = stalled_ws_client(srv.port, "/api/v1/ws/events")
    try:
        wait_for(lambda: srv.ws_clients() == 1)
        pings = _ping(b"p" * 125) * 8192
        sock.settimeout(2.0)
        sent = 0
        try:  # until statusd stops reading (its pongs wait), or cuts the client off
            while sent < FLOOD_CAP_BYTES:
                sock.sendall(pings)
                sent += len(pings)
        except (TimeoutError, ConnectionError):
            pass
        assert sent < FLOOD_CAP_BYTES, "statusd read every ping without waiting"
        wait_for(lambda: _served(srv.port) == 0, 2 * QUICK_STALL_S + 8,
                 "statusd to cut off the client that pings and never reads")
        # The hub lets the client go once its handler ends, a moment after the socket
        # (seen failing 2 of 8 runs asked at once: the session's review).
        wait_for(lambda: srv.ws_clients() == 0, what="the hub to let the client go")
    finally:
        sock.close()
        srv.stop()




def test_a_client_the_heartbeat_closes_with_bytes_unsent_is_let_go(spool: Spool) -> None:
    """A client that stopped reading after its last message was queued (no write of the
    pump waits, so no StallGuard runs) and answers no ping: the heartbeat closes its
    socket, and a transport closed with bytes unsent waits for the peer to take them.
    The connection, its descriptor and the kernel's ~4 MiB of queued messages stayed
    for good; now they go within CLOSE_TIMEOUT_S of the close."""
    srv = ServerThread(settings_for(spool.layout.root), heartbeat_s=1.0).start()
    sock = stalled_ws_client(srv.port, "/api/v1/ws/events")
    try:
        wait_for(lambda: srv.ws_clients() == 1)
        for n in range(2000):  # 20 KiB a message: the kernel's buffer fills, then aiohttp's
            job_id = f"pad-{n}"
            sock.sendall(_ping(b"", PONG))  # alive until then: the heartbeat waits
            spool.submit(Job(tool="echo", params={"pad": "x" * 20_000}), job_id)
            wait_for(lambda: srv.indexed_state(job_id) is not None,  # noqa: B023
                     what=f"{job_id} published")
            if any(unsent_bytes(srv)):
                break
        else:
            raise AssertionError("the kernel took every message")
        # Silent from now on: the heartbeat (1 s, then 0.5 s for a pong) closes it, and
        # SEND_STALL_S is 10 s.
        wait_for(lambda: srv.ws_clients() == 0, 10,
                 "the heartbeat to close the client")
        wait_for(lambda: _served(srv.port) == 0, 1.5 + CLOSE_TIMEOUT_S + 5,
                 "statusd to let go of the client the heartbeat closed")
    finally:
        sock.close()
        srv.stop()


def test_a_client_dropped_for_falling_behind_is_let_go(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client more than QUEUE_MAX messages behind is dropped, its pump cancelled inside
    a write that waited for the kernel's buffer to drain: aiohttp shares that wait with
    the close, which the cancel made raise CancelledError at once, so neither the close
    nor the abort behind it ran, and the connection (and its megabytes queued) stayed as
    long as the client lived (QA: 180 s and on)."""
    monkeypatch.setattr(sending, "SEND_STALL_S", 600.0)  # only the drop lets it go
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sock = stalled_ws_client(srv.port, "/api/v1/ws/events")
    try:
        wait_for(lambda: srv.ws_clients() == 1)
        pad = "x" * 20_000
        for n in range(hub.QUEUE_MAX + 600):
            spool.submit(Job(tool="echo", params={"pad": pad}), f"behind-{n}")
        wait_for(lambda: srv.in_loop(lambda: srv.services.hub.dropped_total) == 1, 30,
                 "statusd to drop the client")
        assert srv.ws_clients() == 0
        wait_for(lambda: _served(srv.port) == 0, CLOSE_TIMEOUT_S + 5,
                 "statusd to let go of the client it dropped")
    finally:
        sock.close()
        srv.stop()


def test_a_clients_pings_are_answered(server: ServerThread) -> None:
    """statusd answers pings itself (above), with the ping's own payload."""

    async def scenario() -> list[tuple[aiohttp.WSMsgType, bytes]]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/events", autoping=False) as ws:
            answers = []
            for payload in (b"one", b"two"):
                await ws.ping(payload)
                msg = await ws.receive(timeout=10)
                answers.append((msg.type, msg.data))
            return answers

    assert asyncio.run(scenario()) == [(aiohttp.WSMsgType.PONG, b"one"),
                                       (aiohttp.WSMsgType.PONG, b"two")]


def test_a_client_of_a_large_page_that_never_reads_is_cut_off(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of the task list is built whole (200 rows of 30 KB here; 1,000 rows of up
    to 32 KiB and more are allowed) and was handed to aiohttp whole: a client that asked
    for it and read nothing pinned about twice the page (5 such clients of a 30 MB page:
    +255 MB RSS) for as long as it kept the connection.  It is sent as a large record
    is, under the stall rule."""
    monkeypatch.setattr(sending, "SEND_STALL_S", QUICK_STALL_S)
    for n in range(200):
        run_job(spool, f"wide-{n:03d}", {"blob": "r" * 30_000})
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        page = request(srv.base, "GET", "/api/v1/tasks?limit=200")
        assert page.status == 200 and len(page.json()["tasks"]) == 200
        assert int(page.headers["content-length"]) == len(page.body) > 5 * 2**20
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(b"GET /api/v1/tasks?limit=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: _served(srv.port) == 1, what="the request taken")
        wait_for(lambda: _served(srv.port) == 0, 2 * QUICK_STALL_S + 8,
                 "statusd to cut off the client of a large page that never reads")
        assert request(srv.base, "GET", "/healthz").status == 200
    finally:
        sock.close()
        srv.stop()


def test_clients_accepted_as_statusd_stops_are_let_go(spool: Spool) -> None:
    """Connections accepted in the loop pass that closed the listening socket were never
    made (asyncio, 3.11 to 3.13, asserts its server open): their sockets stayed open, the
    client waiting on them, until the garbage collector found them (a dashboard test's
    browser waited more than 10 s).  Here the loop is held while 20 clients connect,
    so its next pass accepts them beside the stop."""
    srv = ServerThread(settings_for(spool.layout.root)).start()
    assert srv.loop is not None
    srv.loop.call_soon_threadsafe(time.sleep, 0.5)
    clients = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    gc.disable()  # what let them go in the end
    try:
        srv.stop()
        deadline = time.monotonic() + 5
        for sock in clients:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            with contextlib.suppress(ConnectionResetError):  # in the backlog at the close
                assert sock.recv(1) == b""
    finally:
        gc.enable()
        for sock in clients:
            sock.close()
