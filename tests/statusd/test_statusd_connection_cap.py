"""Connections over the cap are answered 503 and let go, so that clients holding
connections open (WebSockets answer their pings and stay) cannot use up statusd's
descriptors: out of them, it accepted nobody and could not read the spool, and the
clients it had got no updates (QA h396).  A real server on 127.0.0.1, raw sockets."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from statusdkit import TOKEN, ServerThread, request, run_job, settings_for, stalled_ws_client

from spool.transitions import Spool
from statusd.protocol import FD_RESERVE, OVER_CAP_WAIT_S, connection_cap

CAP = 3


class CappedServer(ServerThread):
    runner_kwargs = {"max_connections": CAP}


@pytest.fixture
def server(spool: Spool, tmp_path: Path) -> Any:
    srv = CappedServer(settings_for(spool.layout.root)).start()
    yield srv
    srv.stop()


def _raw_get(port: int, path: str) -> tuple[bytes, bytes]:
    """The status line and body of a GET sent on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def test_a_connection_over_the_cap_is_answered_503_and_the_others_are_served(
        spool: Spool, server: CappedServer) -> None:
    run_job(spool, "a1")
    held = [stalled_ws_client(server.port, "/api/v1/ws/events") for _ in range(CAP)]
    try:
        time.sleep(0.3)
        status, body = _raw_get(server.port, "/api/v1/stats")
        assert status.startswith(b"HTTP/1.1 503"), status
        error = orjson.loads(body)["error"]
        assert error["type"] == "unavailable"
        assert f"{CAP} connections" in error["message"]
        # A liveness probe and a scrape are answered: a 503 read as statusd down (h399).
        status, body = _raw_get(server.port, "/healthz")
        assert status.startswith(b"HTTP/1.1 200"), status
        assert orjson.loads(body)["status"] == "ok"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            scraped = b""
            while chunk := sock.recv(65536):  # the connection closed after its answer
                scraped += chunk
        assert scraped.startswith(b"HTTP/1.1 200") and b"spoolq_jobs" in scraped, scraped[:200]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert request(server.base, "GET", "/api/v1/tasks/a1").status == 200


def test_a_connection_over_the_cap_that_sends_nothing_is_closed_soon(
        server: CappedServer) -> None:
    held = [stalled_ws_client(server.port, "/api/v1/ws/events") for _ in range(CAP)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            started = time.monotonic()
            assert idle.recv(100) == b""  # closed without a request, long before IDLE_S
            assert time.monotonic() - started < OVER_CAP_WAIT_S + 2
    finally:
        for sock in held:
            sock.close()


def test_the_cap_leaves_two_descriptors_a_connection_and_a_reserve() -> None:
    assert connection_cap(1024) == (1024 - FD_RESERVE) // 2
    assert connection_cap(20000) * 2 + FD_RESERVE <= 20000
    assert connection_cap(64) == (64 - 16) // 2  # a quarter of a small limit kept back
    assert connection_cap(3) == 1


@pytest.mark.parametrize("token", [TOKEN, "wrong"])
def test_a_write_over_the_cap_that_asks_100_continue_is_refused_before_its_body(
        server: CappedServer, token: str) -> None:
    """Over the cap, a write with ``Expect: 100-continue`` was told 100 Continue (its
    token good), sent its body (up to a MiB) and then got 503; or was told 401 (its
    token wrong), where every other request over the cap is 503 (QA h399)."""
    held = [stalled_ws_client(server.port, "/api/v1/ws/events") for _ in range(CAP)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(f"POST /api/v1/tasks HTTP/1.1\r\nHost: localhost\r\n"
                         f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                         "Content-Length: 16\r\nExpect: 100-continue\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        for sock in held:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "unavailable"
