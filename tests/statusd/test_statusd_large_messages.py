"""A large message to a client that reads slowly, or not at all, is not copied whole into
its connection's buffer: it goes in fragments of at most WRITE_HIGH_BYTES, each once the
one before has drained (RFC 6455 5.4 lets a ping or pong come between them).  Written
whole, each such client held a copy of the message (QA h396: 300 events clients that
read nothing and 30 echo jobs of 900 KB took statusd from 208 to 609 MB).  A real server
on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from statusdkit import ServerThread, settings_for, stalled_ws_client, unsent_bytes, wait_for

from spool.models import Job
from spool.transitions import Spool
from statusd import ws

BIG = 900_000




def test_a_large_message_to_a_client_that_reads_nothing_is_not_held_whole(
        spool: Spool) -> None:
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sock = stalled_ws_client(srv.port, "/api/v1/ws/events")
    try:
        wait_for(lambda: srv.ws_clients() == 1)
        held = []
        for n in range(12):  # until the kernel's buffer (some 4 MiB) is full
            spool.submit(Job(tool="echo", params={"pad": "x" * BIG}), f"big-{n}")
            wait_for(lambda: srv.indexed_state(f"big-{n}") is not None,  # noqa: B023
                     what=f"big-{n} published")
            held.append(max(unsent_bytes(srv), default=0))
        assert any(held), "the kernel took every message"
        assert max(held) <= 2 * ws.WRITE_HIGH_BYTES, held
    finally:
        sock.close()
        srv.stop()


def test_a_client_that_reads_gets_large_messages_whole(spool: Spool) -> None:
    srv = ServerThread(settings_for(spool.layout.root), heartbeat_s=0.2).start()

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events") as sock:
            for n in range(3):
                spool.submit(Job(tool="echo", params={"pad": "x" * BIG}), f"whole-{n}")
            got: list[Any] = []
            async with asyncio.timeout(20):
                while len(got) < 3:
                    msg = await sock.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, msg
                    got.append(orjson.loads(msg.data))
                    await asyncio.sleep(0.3)  # slow: pings come between the fragments
            return got

    try:
        got = asyncio.run(scenario())
        assert [m["record"]["params"]["pad"] == "x" * BIG for m in got] == [True] * 3
    finally:
        srv.stop()
