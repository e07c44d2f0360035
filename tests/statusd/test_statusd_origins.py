"""Pages of other origins read nothing from statusd (statusd.origins).

Reads need no token, and a browser reaches a loopback statusd for any page it shows:
a page on another site or port opened ``ws://127.0.0.1:.../api/v1/ws/tasks/ID`` and read
the job's params and results (browsers apply no same-origin policy to WebSockets), and a
site whose name was pointed at 127.0.0.1 (DNS rebinding) read the REST API as its own
origin (QA).  A real server on 127.0.0.1, raw requests with the headers a browser sends.
"""

from __future__ import annotations

import base64
import os
import socket

import pytest
from statusdkit import ServerThread, request, run_job, settings_for

from spool.errors import ConfigError
from spool.settings import load_settings
from spool.transitions import Spool
from statusd.origins import bound_to_loopback


def _handshake(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A WebSocket handshake with ``headers``: the status and the response's bytes."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1]), head


@pytest.fixture
def served(spool: Spool) -> ServerThread:
    run_job(spool, "secret", result={"pnl": 1})
    return ServerThread(settings_for(spool.layout.root)).start()


def test_a_websocket_from_another_origin_is_refused(served: ServerThread) -> None:
    port = served.port
    try:
        own = {"Host": f"127.0.0.1:{port}"}
        for path in ("/api/v1/ws/tasks/secret", "/api/v1/ws/events"):
            status, head = _handshake(port, path, {**own, "Origin": "http://127.0.0.1:18111"})
            assert status == 403, head
            assert b'"forbidden"' in head and b"STATUSD_ALLOWED_ORIGINS" in head, head
            status, _ = _handshake(port, path, {**own, "Origin": "null"})
            assert status == 403
            # statusd's own page (the dashboard), and clients that are no browser.
            assert _handshake(port, path, {**own, "Origin": f"http://127.0.0.1:{port}"}
                              )[0] == 101
            assert _handshake(port, path, own)[0] == 101
    finally:
        served.stop()


def test_a_request_for_another_host_name_is_refused(served: ServerThread) -> None:
    """DNS rebinding: the page's requests carry its own site's name as the Host."""
    base, port = served.base, served.port
    try:
        for path in ("/api/v1/tasks/secret", "/api/v1/tasks", "/api/v1/stats", "/metrics", "/"):
            reply = request(base, "GET", path, headers={"Host": f"rebind.example:{port}"})
            assert reply.status == 403, (path, reply.status)
            assert reply.json()["error"]["type"] == "forbidden"
            assert b"pnl" not in reply.body
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.2",
                     "LOCALHOST", "localhost.", f"app.localhost:{port}",
                     f"[::ffff:7f00:1]:{port}", socket.gethostname()):
            reply = request(base, "GET", "/api/v1/tasks/secret", headers={"Host": host})
            assert reply.status == 200, (host, reply.status)
        status, _ = _handshake(port, "/api/v1/ws/events", {"Host": "rebind.example"})
        assert status == 403
        for host in ("0.0.0.0", f"evil.example@127.0.0.1:{port}", "127.0.0.1.nip.io"):
            assert request(base, "GET", "/healthz", headers={"Host": host}).status == 403, host
    finally:
        served.stop()


def test_origins_named_in_the_settings_are_let_in(spool: Spool) -> None:
    """A reverse proxy's origin: its pages' WebSockets, and its host name as the Host."""
    run_job(spool, "secret")
    settings = settings_for(spool.layout.root,
                            statusd_allowed_origins="https://dash.example.com")
    srv = ServerThread(settings).start()
    try:
        proxied = {"Host": "dash.example.com", "Origin": "https://dash.example.com"}
        assert _handshake(srv.port, "/api/v1/ws/events", proxied)[0] == 101
        # A page of the named origin, through a proxy that sends its own Host (nginx's
        # default), or straight: let in by the list, not as statusd's own origin.
        listed = {"Host": f"127.0.0.1:{srv.port}", "Origin": "https://dash.example.com"}
        assert _handshake(srv.port, "/api/v1/ws/events", listed)[0] == 101
        assert request(srv.base, "GET", "/api/v1/tasks/secret",
                       headers={"Host": "dash.example.com"}).status == 200
        other = {"Host": f"127.0.0.1:{srv.port}", "Origin": "https://evil.example.com"}
        assert _handshake(srv.port, "/api/v1/ws/events", other)[0] == 403
    finally:
        srv.stop()


def test_a_statusd_on_another_address_checks_origins_not_hosts(spool: Spool) -> None:
    """Bound to all addresses, it answers any Host (its names are the operator's); a
    WebSocket from another origin is refused all the same."""
    settings = settings_for(spool.layout.root, statusd_host="0.0.0.0")
    srv = ServerThread(settings).start()
    try:
        assert request(srv.base, "GET", "/healthz",
                       headers={"Host": "spool.internal:8000"}).status == 200
        assert _handshake(srv.port, "/api/v1/ws/events",
                          {"Host": "spool.internal:8000",
                           "Origin": "http://elsewhere.example"})[0] == 403
    finally:
        srv.stop()


def test_an_allowed_origin_with_its_default_port_matches_what_browsers_send(
        spool: Spool) -> None:
    """Browsers never write a default port in Origin: one in the setting matched nothing."""
    settings = settings_for(spool.layout.root,
                            statusd_allowed_origins="https://dash.example.com:443")
    srv = ServerThread(settings).start()
    try:
        for host in (f"127.0.0.1:{srv.port}", "dash.example.com", "dash.example.com:443"):
            assert _handshake(srv.port, "/api/v1/ws/events",
                              {"Host": host, "Origin": "https://dash.example.com"})[0] == 101
    finally:
        srv.stop()


def test_a_statusd_bound_by_a_loopback_name_guards_its_host(spool: Spool) -> None:
    """The check followed how STATUSD_HOST was spelt: bound by the machine's own name (a
    loopback address in /etc/hosts) it answered any Host."""
    name = socket.gethostname()
    if not bound_to_loopback(name):
        pytest.skip(f"{name} does not resolve to loopback addresses only here")
    srv = ServerThread(settings_for(spool.layout.root, statusd_host=name)).start()
    try:
        assert request(srv.base, "GET", "/healthz", headers={"Host": "rebind.example"}
                       ).status == 403
        assert request(srv.base, "GET", "/healthz", headers={"Host": name}).status == 200
    finally:
        srv.stop()


def test_a_bad_allowed_origin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUSD_ALLOWED_ORIGINS", "https://ok.example, dash.example")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "STATUSD_ALLOWED_ORIGINS" in str(info.value)
    assert "'dash.example' is no origin" in str(info.value)


def test_every_answer_says_who_may_frame_the_page_and_what_it_runs(
        served: ServerThread, spool: Spool) -> None:
    """The dashboard cancels and retries: a page of another site that framed it could
    take a user's clicks under a decoy.  Every answer (the page, a static file, a record,
    an error, a refused Host) says the page is framed by its own origin only, runs its own
    files only, and is never sniffed for another type."""
    try:
        for path, status in (("/", 200), ("/static/app.js", 200), ("/api/v1/tasks/secret", 200),
                             ("/api/v1/tasks/nobody", 404), ("/api/v1/tasks/%2e%2e", 400)):
            reply = request(served.base, "GET", path)
            assert reply.status == status, (path, reply.status)
            policy = reply.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "object-src 'none'" in policy, policy
            assert policy.endswith("frame-ancestors 'self'"), policy
            assert reply.headers["x-frame-options"] == "SAMEORIGIN"
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["referrer-policy"] == "no-referrer"
        refused = request(served.base, "GET", "/", headers={"Host": "rebind.example"})
        assert refused.status == 403
        assert "frame-ancestors 'self'" in refused.headers["content-security-policy"]
    finally:
        served.stop()
    # A portal named in STATUSD_ALLOWED_ORIGINS may frame it (its WebSockets are let in
    # too); with ``*``, any page.
    for origins, framers in (("https://b.example, https://a.example:8443",
                              "'self' https://a.example:8443 https://b.example"),
                             ("*", "*")):
        srv = ServerThread(settings_for(spool.layout.root,
                                        statusd_allowed_origins=origins)).start()
        try:
            reply = request(srv.base, "GET", "/")
            assert reply.headers["content-security-policy"].endswith(
                f"frame-ancestors {framers}"), reply.headers
            assert "x-frame-options" not in reply.headers
        finally:
            srv.stop()
