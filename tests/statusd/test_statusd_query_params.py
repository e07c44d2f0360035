"""Query parameters a careless client gets wrong: each is a 400 that names it, never an
answer to a question the client did not ask.  A real server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from statusdkit import ServerThread, request, run_job

from spool.transitions import Spool

TWICE = [  # (path, the parameter given twice)
    ("/api/v1/tasks?state=done&state=failed", "state"),
    ("/api/v1/tasks?limit=1&limit=2", "limit"),
    ("/api/v1/tasks?tool=echo&tool=sleep", "tool"),
    ("/api/v1/tasks?view=brief&view=full", "view"),
    ("/api/v1/tasks?cursor=WzEsIngiXQ&cursor=WzIsInkiXQ", "cursor"),  # both valid
    ("/api/v1/tasks?limit=5&state=done&limit=5", "limit"),
    ("/api/v1/stats?partial=1&partial=0", "partial"),
]


def _handshake(url: str) -> int:
    """The status of a WebSocket handshake with ``url`` (101 when it upgrades)."""

    async def connect() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    return asyncio.run(connect())


@pytest.mark.parametrize(("path", "name"), TWICE)
def test_a_parameter_given_twice_is_refused(server: ServerThread, spool: Spool,
                                            path: str, name: str) -> None:
    """``state=done&state=failed`` answered the done tasks only (the first value won,
    silently): a client that meant both was told there were no failed ones."""
    run_job(spool, "one-done")
    reply = request(server.base, "GET", path)
    assert reply.status == 400, (path, reply.body)
    error = reply.json()["error"]
    assert error["type"] == "bad_request" and name in error["message"], (path, error)


def test_the_events_stream_refuses_a_progress_or_view_it_does_not_know(
        server: ServerThread) -> None:
    """``progress`` is 0 or 1 (OpenAPI's enum): ``progress=true`` was taken for 0, so a
    client that asked for progress silently got none."""
    base = f"{server.base}/api/v1/ws/events"
    for query in ("", "?progress=0", "?progress=1", "?progress=", "?progress=1&view=brief"):
        assert _handshake(base + query) == 101, query
    for query in ("?progress=true", "?progress=yes", "?progress=2", "?progress=1&progress=1",
                  "?view=brief&view=brief"):
        assert _handshake(base + query) == 400, query
    reply = request(server.base, "GET", "/api/v1/ws/events?progress=true")
    assert reply.status == 400
    assert reply.json()["error"] == {"type": "bad_request",
                                     "message": "progress must be 0 or 1"}
