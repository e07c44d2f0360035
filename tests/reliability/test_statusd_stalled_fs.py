"""statusd on a spool whose filesystem stops answering (a hung NFS server, a stopped FUSE
daemon: here bindfs, SIGSTOPped).

The stats, the tools and /metrics read the processors' state (``owners/``) on the event
loop: one such request on a stalled filesystem froze statusd whole, ``/healthz`` too, so
monitoring took statusd for hung (QA).  They read it off the loop and answer 503
``processors_unknown`` (or /metrics without the processors' gauges) after 2 s.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from daemonkit import bindfs_daemon, bindfs_spool
from relkit import Daemon, statusd_port


def _get(port: int, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def fuse_root(tmp_path: Path) -> Iterator[Path]:
    with bindfs_spool(tmp_path) as root:
        yield root


def test_a_stalled_filesystem_does_not_freeze_statusd(fuse_root: Path, tmp_path: Path) -> None:
    d = Daemon(fuse_root, tmp_path / "statusd.log", module="statusd",
               STATUSD_HOST="127.0.0.1", STATUSD_PORT="0")
    d.start(wait_ready=False)
    server = bindfs_daemon(fuse_root.parent)
    try:
        port = statusd_port(d)
        assert _get(port, "/api/v1/stats")[0] == 200
        server.suspend()
        try:
            for path in ("/api/v1/stats", "/api/v1/tools"):
                started = time.monotonic()
                status, body = _get(port, path)
                assert status == 503, body
                assert orjson.loads(body)["error"]["type"] == "processors_unknown", body
                assert time.monotonic() - started < 10
            status, body = _get(port, "/metrics")
            assert status == 200 and b"spoolq_statusd_processors_ok 0.0" in body, body
            assert _get(port, "/healthz", timeout=10)[0] in (200, 503), \
                "statusd answers while the filesystem stalls"
        finally:
            server.resume()
        assert _get(port, "/api/v1/stats")[0] == 200
        assert d.stop() == 0
    finally:
        server.resume()
        d.abort()
