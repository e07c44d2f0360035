"""Every error answer of the API is ``{"error": {"type", "message"}}`` JSON (DESIGN
section 6), including those aiohttp makes itself: requests it cannot parse
(answered before any route or middleware), an ``Expect`` it does not support,
a wrong method, a body over the limit.

The real daemon (``python -m statusd``) on 127.0.0.1, spoken to over raw sockets,
since an HTTP client library will not send most of these requests.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp.http_exceptions import LineTooLong
from statusd_daemonkit import statusd_daemon
from statusdkit import TOKEN, make_spool

from statusd import protocol
from statusd.protocol import BAD_REQUEST_LINES

MAX_BODY = 1024


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One daemon for the module (its requests do not change the spool)."""
    root = tmp_path_factory.mktemp("shapes") / "spool"
    make_spool(root)
    with statusd_daemon(root, STATUSD_TOKEN=TOKEN,
                        STATUSD_MAX_BODY_BYTES=str(MAX_BODY)) as (found, _):
        yield found


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is; the status, headers and body of the one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        raw = b""
        while True:
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:])
                length = int(headers.get("Content-Length", "-1"))
                if 0 <= length <= len(body):
                    status = int(head.split(b" ", 2)[1])
                    return status, headers, body
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed mid-answer: {raw!r}")
            raw += chunk


def req(first: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [first, "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


CASES: dict[str, tuple[bytes, int]] = {
    "wrong method": (req("PUT /api/v1/stats HTTP/1.1", "Content-Length: 0"), 405),
    "wrong method on a task": (req("DELETE /api/v1/tasks/abc HTTP/1.1"), 405),
    "unknown Expect on a route": (req("POST /api/v1/tasks HTTP/1.1", "Expect: 200-ok",
                                      "Content-Length: 2", "Connection: close"), 417),
    "unknown Expect off any route": (req("GET /api/v1/nothing HTTP/1.1", "Expect: x"), 417),
    "an Expect that is not UTF-8": (req("GET /api/v1/stats HTTP/1.1", "Expect: \xff"), 417),
    "an Expect that is not UTF-8 off any route": (req("GET /api/v1/nothing HTTP/1.1",
                                                      "Expect: a\xffb"), 417),
    "header too long": (req("GET /api/v1/stats HTTP/1.1", "X-Big: " + "a" * 20_000), 400),
    "request line too long": (req("GET /api/v1/tasks?x=" + "a" * 20_000 + " HTTP/1.1"), 400),
    "too many headers": (req("GET /api/v1/stats HTTP/1.1",
                             *(f"X-{n}: y" for n in range(200))), 400),
    "not HTTP": (b"GARBAGE\r\n\r\n", 400),
    "bad method token": (req("G(T /api/v1/stats HTTP/1.1"), 400),
    "bad version": (req("GET /api/v1/stats HTTP/9.9"), 400),
    "NUL in the path": (req("GET /api/v1/\x00 HTTP/1.1"), 400),
    "bad header name": (req("GET /api/v1/stats HTTP/1.1", "Bad Header: y"), 400),
    "bad Content-Length": (req("POST /api/v1/tasks HTTP/1.1", "Content-Length: abc"), 400),
    "two Content-Lengths": (req("POST /api/v1/tasks HTTP/1.1", "Content-Length: 2",
                                "Content-Length: 3", body=b"{}"), 400),
    "Content-Length with chunked": (req("POST /api/v1/tasks HTTP/1.1", "Content-Length: 2",
                                        "Transfer-Encoding: chunked", body=b"{}"), 400),
    "unknown Transfer-Encoding": (req("POST /api/v1/tasks HTTP/1.1",
                                      "Transfer-Encoding: gzip"), 400),
    "bad chunk size": (req("POST /api/v1/tasks HTTP/1.1", "Transfer-Encoding: chunked",
                           body=b"zz\r\n"), 400),
    "body over the limit": (req("POST /api/v1/tasks HTTP/1.1", f"Authorization: Bearer {TOKEN}",
                                "Content-Type: application/json",
                                f"Content-Length: {4 * MAX_BODY}", body=b"x" * 4 * MAX_BODY),
                            413),
    "unknown path": (req("GET /api/v1/nothing HTTP/1.1"), 404),
    "invalid id": (req("GET /api/v1/tasks/..%2f.. HTTP/1.1"), 400),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_error_answer_is_the_json_shape(port: int, case: str) -> None:
    data, expected = CASES[case]
    status, headers, body = exchange(port, data)
    assert status == expected, (status, body)
    assert headers["Content-Type"] == "application/json", (headers, body)
    assert int(headers["Content-Length"]) == len(body)
    error = orjson.loads(body)["error"]
    assert set(error) == {"type", "message"} and isinstance(error["type"], str), error
    assert error["message"] and len(error["message"]) <= 200, error
    assert "aaaa" not in error["message"]  # the client's bytes are not echoed back
    assert "Traceback" not in body.decode()


def test_the_api_serves_no_conditional_or_range_errors(port: int) -> None:
    """412 and 416 come from aiohttp's file server only (the dashboard, /static/): the
    API ignores If-Match and Range, so they never reach an /api/ path."""
    for header in ('If-Match: "nope"', "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
                   "Range: bytes=999999-"):
        for path in ("/api/v1/stats", "/api/v1/openapi.json", "/api/v1/tasks"):
            status, headers, body = exchange(port, req(f"GET {path} HTTP/1.1", header))
            assert status == 200 and headers["Content-Type"] == "application/json", path
            orjson.loads(body)


def test_a_good_request_after_100_continue_still_works(port: int) -> None:
    payload = b'{"tool": "echo"}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(req("POST /api/v1/tasks HTTP/1.1", f"Authorization: Bearer {TOKEN}",
                         "Content-Type: application/json", "Expect: 100-continue",
                         f"Content-Length: {len(payload)}", "Connection: close"))
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == b"202", answer


REFUSED_BEFORE_THE_BODY = {
    "no token": (("POST /api/v1/tasks HTTP/1.1",), 401),
    "a wrong token": (("POST /api/v1/tasks HTTP/1.1", "Authorization: Bearer nope"), 401),
    "a body over the limit": (("POST /api/v1/tasks HTTP/1.1", f"Authorization: Bearer {TOKEN}",
                               "Content-Type: application/json"), 413),
    "a retry with no token": (("POST /api/v1/tasks/abc/retry HTTP/1.1",), 401),
    "a cancel from another site's name": (("POST /api/v1/tasks/abc/cancel HTTP/1.1",
                                           "Host: evil.example"), 403),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BEFORE_THE_BODY))
def test_a_write_its_headers_refuse_is_refused_before_100_continue(port: int, case: str
                                                                   ) -> None:
    """The client is not asked for a body that would be thrown away: aiohttp said 100
    Continue to any write, and read up to a MiB of it for nothing (QA h396)."""
    first, *headers = REFUSED_BEFORE_THE_BODY[case][0]
    data = req(first, *headers, "Expect: 100-continue", f"Content-Length: {4 * MAX_BODY}")
    if any(h.startswith("Host:") for h in headers):
        data = data.replace(b"Host: 127.0.0.1\r\n", b"", 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)  # the headers only: the body waits for a 100 Continue
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == str(REFUSED_BEFORE_THE_BODY[case][1]).encode(), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head and orjson.loads(body)["error"]["type"], answer


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # reset, before the fix: the answer's read says so
        sock.sendall(data)


@pytest.mark.parametrize("case", ["no token", "a body over the limit"])
def test_a_refused_write_whose_client_sends_its_body_unasked_gets_its_answer(
        port: int, case: str) -> None:
    """A client that sends its body without waiting for 100 Continue (Python's
    http.client, urllib3; curl once its 1 s wait is up) gets the refusal, not a reset:
    closed at once with the body unread, the connection was reset by the kernel, and
    the client read ConnectionResetError, never its 401 or 413 (QA h399; without the
    Expect header the same request was answered)."""
    first, *headers = REFUSED_BEFORE_THE_BODY[case][0]
    body = b"x" * (4 << 20)
    data = req(first, *headers, "Expect: 100-continue", f"Content-Length: {len(body)}",
               body=body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sender = threading.Thread(target=_send_quietly, args=(sock, data))
        sender.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        finally:
            sender.join(10)
    assert answer.split(b" ", 2)[1] == str(REFUSED_BEFORE_THE_BODY[case][1]).encode(), answer
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and orjson.loads(rest)["error"]["type"], answer


UPGRADE = ("Upgrade: websocket", "Connection: Upgrade")
GOOD_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("path", ["/api/v1/ws/events", "/api/v1/ws/tasks/nope"])
def test_a_websocket_handshake_that_is_wrong_is_told_what_is_wrong(port: int,
                                                                     path: str) -> None:
    """RFC 6455 4.2.2: a handshake the server cannot read (a bad key) is a 400; a version
    it does not speak is a 426 naming the versions it does (Sec-WebSocket-Version); only a
    request that asks for no upgrade at all is told to upgrade.  All in the JSON shape, and
    the connection serves the next request."""
    then = req("GET /healthz HTTP/1.1")
    cases = {
        "bad key": (req(f"GET {path} HTTP/1.1", *UPGRADE, "Sec-WebSocket-Key: short",
                        "Sec-WebSocket-Version: 13"), 400, {}),
        "no key": (req(f"GET {path} HTTP/1.1", *UPGRADE, "Sec-WebSocket-Version: 13"),
                   400, {}),
        "version 99": (req(f"GET {path} HTTP/1.1", *UPGRADE, GOOD_KEY,
                           "Sec-WebSocket-Version: 99"), 426,
                       {"Sec-WebSocket-Version": "13"}),
        "no upgrade": (req(f"GET {path} HTTP/1.1"), 426, {"Upgrade": "websocket"}),
    }
    for case, (data, expected, headers_wanted) in cases.items():
        status, headers, body = exchange(port, data)
        assert status == expected, (case, status, body)
        for name, value in headers_wanted.items():
            assert headers.get(name) == value, (case, headers)
        error = orjson.loads(body)["error"]
        assert headers["Content-Type"] == "application/json" and error["message"], case
        assert "short" not in error["message"]  # the client's bytes are not echoed back
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data + then)
            answers = b""
            while answers.count(b"HTTP/1.1 ") < 2 or not answers.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, (case, answers)
                answers += chunk
            assert b'"status":"ok"' in answers, (case, answers)


@pytest.mark.parametrize("upgrade", ["h2c", "tcp", "foo"])
def test_a_request_pipelined_behind_a_declined_upgrade_is_not_left_hanging(
        port: int, upgrade: str) -> None:
    """aiohttp's parser drops what was pipelined behind a request asking to upgrade to
    anything but WebSocket (curl --http2 asks for h2c).  Such a request is answered and
    its connection closed at once (Connection: close), so the client resends the rest on a
    new one instead of waiting for answers that never come."""
    first = req("GET /api/v1/stats HTTP/1.1", f"Upgrade: {upgrade}",
                "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAAQAAP__")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first + req("GET /healthz HTTP/1.1"))
        answers = b""
        try:
            while chunk := sock.recv(65536):
                answers += chunk
                if answers.count(b"HTTP/1.1 ") == 2 and answers.endswith(b"}"):
                    break
        except TimeoutError:
            raise AssertionError(f"neither answered nor closed within 5 s: {answers!r}") \
                from None
    assert answers.startswith(b"HTTP/1.1 200 "), answers
    if answers.count(b"HTTP/1.1 ") == 1:
        assert b"\r\nConnection: close\r\n" in answers, answers


def test_unparsable_requests_are_logged_in_one_line_each_and_at_most_ten_a_minute(
        tmp_path: Path) -> None:
    """aiohttp logged each request it cannot parse at ERROR with a seven-line traceback,
    so any client could fill the journal at will; now one WARNING line each, without the
    client's bytes, ten a minute at most."""
    root = tmp_path / "spool"
    make_spool(root)
    log: list[str] = []
    bad = req("GET /api/v1/stats HTTP/1.1", "X-Big: " + "a" * 20_000)
    with statusd_daemon(root, log=log) as (found, _):
        for _ in range(25):
            assert exchange(found, bad)[0] == 400
        assert exchange(found, req("GET /api/v1/stats HTTP/1.1"))[0] == 200
    text = "".join(log)
    lines = [line for line in text.splitlines() if "bad request from" in line]
    assert len(lines) == BAD_REQUEST_LINES, text[-3000:]
    for line in lines:
        assert line.endswith("WARNING spoolq.statusd: bad request from 127.0.0.1: "
                             "the request line or a header is too long"), line
    assert "Traceback" not in text and "aaaa" not in text and "ERROR" not in text, text[-3000:]


def test_what_the_bad_request_log_held_back_is_counted_in_its_next_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    monkeypatch.setattr(protocol.time, "monotonic", lambda: now[0])
    counter = protocol._BadRequestLog(per_minute=2)
    exc = LineTooLong("x" * 10, "8190")
    with caplog.at_level(logging.WARNING, logger="spoolq.statusd"):
        for _ in range(5):
            counter.note("10.0.0.1", exc)
        now[0] += 59.9
        counter.note("10.0.0.1", exc)  # still the same minute: held back
        now[0] += 0.2
        counter.note("10.0.0.2", exc)
        counter.note("10.0.0.2", exc)
    messages = [record.getMessage() for record in caplog.records]
    too_long = "the request line or a header is too long"
    assert messages == [
        f"bad request from 10.0.0.1: {too_long}",
        f"bad request from 10.0.0.1: {too_long}",
        f"bad request from 10.0.0.2: {too_long} (4 more since the last such line were not "
        "logged)",
        f"bad request from 10.0.0.2: {too_long}",
    ]
