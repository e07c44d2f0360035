"""Client faults at the body: one throttled line each, never a traceback, never a 5xx, and
never a connection held open (statusd.errors, statusd.writes).

A reviewer found that a body that is not its ``Content-Encoding`` logged aiohttp's
``ERROR ... Unhandled exception`` and ~29 lines of traceback per request, for anyone
who can reach the port; that a client hanging up mid-body logged a traceback and
``500`` in the access log; and that an authorized POST whose body never completes was
held open for good.  The real daemon on 127.0.0.1, spoken to over raw sockets.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from statusd_daemonkit import statusd_daemon
from statusdkit import TOKEN, make_spool

from statusd.errors import CLIENT_FAULT_LINES, ClientFaults, ServerLog

QUICK_IDLE_S = 2.0
"""statusd's IDLE_S (and so its body bound) in these tests; it ships 15 s."""
STALL_IDLE_S = 1.0
"""IDLE_S where a test waits the body bound out (a stalled body's 408)."""
# The daemon as ``spool-statusd --access-log`` runs it, with IDLE_S shortened first
# (as tests/reliability/quick_statusd does); "broken" makes GET /healthz a server bug.
_DAEMON = """
import sys
import statusd.__main__ as main
from statusd import routes
main.IDLE_S = float(sys.argv[1])
if sys.argv[2] == "broken":
    async def health(request):
        raise RuntimeError("a bug in a handler")
    routes.health = health
sys.exit(main.main(["--access-log"]))
"""


@contextmanager
def statusd(tmp_path: Path, *, broken: bool = False, idle_s: float = QUICK_IDLE_S
            ) -> Iterator[tuple[int, list[str]]]:
    """The daemon on 127.0.0.1, its IDLE_S ``idle_s``; yields its port and its stderr lines
    (complete once the block ends: it is stopped with SIGTERM and must exit 0)."""
    root = tmp_path / "spool"
    make_spool(root)
    log: list[str] = []
    with statusd_daemon(root, log=log, argv=["-c", _DAEMON, str(idle_s),
                                             "broken" if broken else "whole"],
                        STATUSD_TOKEN=TOKEN) as (port, _):
        yield port, log


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(port: int, data: bytes, timeout_s: float = 10.0) -> tuple[int, bytes, float]:
    """Send ``data``; the status and everything received until the server closed the
    connection, and how long after sending that was.  AssertionError if it stays open
    for ``timeout_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sent = time.monotonic()
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise AssertionError(f"still open after {timeout_s} s: {chunks!r}") from None
        closed = time.monotonic() - sent
    raw = b"".join(chunks)
    assert raw.startswith(b"HTTP/1.1 "), raw
    return int(raw.split(b" ", 2)[1]), raw, closed


def error_of(raw: bytes) -> dict[str, str]:
    error: dict[str, str] = orjson.loads(raw.partition(b"\r\n\r\n")[2])["error"]
    return error


def test_bodies_that_are_not_their_content_encoding_are_one_throttled_line_each(
        tmp_path: Path) -> None:
    """Any client could make statusd log ~30 lines of traceback at ERROR per request, on
    any endpoint, with ``Content-Encoding: gzip`` on bytes that are not."""
    body = b"not gzip"
    sizes = ("Content-Encoding: gzip", f"Content-Length: {len(body)}", "Connection: close")
    requests = [(head("GET", "/healthz", *sizes) + body, 200),  # no body read
                (head("POST", "/api/v1/tasks", "Authorization: Bearer wrong", *sizes) + body,
                 401),  # answered before the body is read
                (head("POST", "/api/v1/tasks", f"Authorization: Bearer {TOKEN}",
                      "Content-Type: application/json", *sizes) + body, 400)]  # read
    with statusd(tmp_path) as (port, log):
        for n in range(30):
            data, status = requests[n % 3]
            assert answer(port, data)[0] == status
        assert answer(port, head("GET", "/healthz", "Connection: close"))[0] == 200
    text = "".join(log)
    assert "Traceback" not in text and "ERROR" not in text, text[-4000:]
    lines = [line for line in text.splitlines() if "bad request from" in line]
    assert len(lines) == CLIENT_FAULT_LINES, text[-4000:]
    for line in lines:
        assert " WARNING spoolq.statusd: bad request from 127.0.0.1: Can not decode " \
               "content-encoding: gzip (" in line, line
    assert '"POST /api/v1/tasks HTTP/1.1" 400 ' in text, text[-4000:]


def test_a_client_that_hangs_up_mid_body_is_not_a_500(tmp_path: Path) -> None:
    """A hang-up mid-body logged ``ERROR ... Error handling request`` with a traceback,
    and ``500`` in the access log, so 5xx dashboards counted the client's hang-up."""
    with statusd(tmp_path) as (port, log):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head("POST", "/api/v1/tasks", f"Authorization: Bearer {TOKEN}",
                              "Content-Type: application/json", "Content-Length: 100")
                         + b'{"tool"')
            time.sleep(0.3)  # the handler is reading the body
        deadline = time.monotonic() + 10
        while '"POST /api/v1/tasks' not in "".join(log) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer(port, head("GET", "/healthz", "Connection: close"))[0] == 200
    text = "".join(log)
    assert "Traceback" not in text and "ERROR" not in text, text[-4000:]
    access = [line for line in text.splitlines() if '"POST /api/v1/tasks' in line]
    assert len(access) == 1 and '"POST /api/v1/tasks HTTP/1.1" 499 ' in access[0], text
    assert "INFO spoolq.statusd: hang-up from 127.0.0.1 during POST /api/v1/tasks" in text, \
        text


@pytest.mark.parametrize(("framing", "data"), [
    pytest.param("Content-Length: 100", b"{", id="short of its Content-Length"),
    pytest.param("Transfer-Encoding: chunked", b'5\r\n{"too', id="unfinished chunks"),
])
def test_a_body_that_never_completes_is_answered_408_and_closed(
        tmp_path: Path, framing: str, data: bytes) -> None:
    """An authorized POST whose body stalled was held open for good (still open after
    300 s), with what it had sent; now 408 and closed within the bound (IDLE_S)."""
    with statusd(tmp_path, idle_s=STALL_IDLE_S) as (port, log):
        status, raw, closed = answer(port, head(
            "POST", "/api/v1/tasks", f"Authorization: Bearer {TOKEN}",
            "Content-Type: application/json", framing) + data,
            timeout_s=STALL_IDLE_S + 8)
        assert answer(port, head("GET", "/healthz", "Connection: close"))[0] == 200
    assert status == 408, raw
    assert error_of(raw) == {"type": "request_timeout",
                             "message": f"the body did not arrive within {STALL_IDLE_S:g} s"}
    assert b"\r\nConnection: close\r\n" in raw, raw
    assert closed < STALL_IDLE_S + 5, closed
    text = "".join(log)
    assert "Traceback" not in text and "ERROR" not in text, text[-4000:]
    assert '"POST /api/v1/tasks HTTP/1.1" 408 ' in text, text[-4000:]


def test_a_bug_in_a_handler_still_logs_its_traceback(tmp_path: Path) -> None:
    """What is not the client's fault stays an ERROR with its traceback, and a 500."""
    with statusd(tmp_path, broken=True) as (port, log):
        status, raw, _ = answer(port, head("GET", "/healthz", "Connection: close"))
    assert status == 500 and error_of(raw)["type"] == "internal", raw
    text = "".join(log)
    assert "ERROR spoolq.statusd: unhandled error on GET /healthz\nTraceback" in text, text
    assert "RuntimeError: a bug in a handler" in text, text


def _payload_error() -> web.RequestPayloadError:
    exc = web.RequestPayloadError("payload error")
    exc.__cause__ = ContentEncodingError("Can not decode content-encoding: gzip")
    return exc


def test_the_server_log_passes_anything_but_a_client_fault_on_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    server = ServerLog(logging.getLogger("aiohttp.server"), ClientFaults())
    with caplog.at_level(logging.DEBUG):
        server.exception("Unhandled exception", exc_info=RuntimeError("a bug"))
        server.exception("Unhandled exception", exc_info=_payload_error())
        server.exception("Unhandled exception", exc_info=ConnectionResetError("lost"))
    found = [(r.name, r.levelname, r.getMessage(), r.exc_info is not None)
             for r in caplog.records]
    assert found == [
        ("aiohttp.server", "ERROR", "Unhandled exception", True),
        ("spoolq.statusd", "WARNING", "bad request from unknown client: Can not decode "
         "content-encoding: gzip (a request)", False),
        ("spoolq.statusd", "INFO", "hang-up from unknown client during a request", False),
    ]


def test_what_the_client_fault_log_held_back_is_counted_in_its_next_line(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    faults = ClientFaults(per_minute=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="spoolq.statusd"):
        for n in range(5):
            faults.note(logging.WARNING, "fault %d", n)
        now[0] += 59.9
        faults.note(logging.WARNING, "fault %d", 5)  # still the same minute: held back
        now[0] += 0.2
        faults.note(logging.INFO, "fault %d", 6)
        faults.note(logging.INFO, "fault %d", 7)
    assert [r.getMessage() for r in caplog.records] == [
        "fault 0", "fault 1",
        "fault 6 (4 more client faults since the last such line were not logged)",
        "fault 7"]
