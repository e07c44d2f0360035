"""The dashboard's files removed under a running statusd (spoolq reinstalled, or removed,
while it runs): an empty 404, unsaid, sent the operator looking for a wrong address
(QA, h314).  A 503 that says why, and one log line a file."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import orjson
import pytest
from statusdkit import ServerThread, request, settings_for

from spool.transitions import Spool
from statusd import routes


def test_a_page_file_gone_since_the_start_is_said(spool: Spool, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    static = tmp_path / "static"
    shutil.copytree(routes.STATIC_DIR, static)
    monkeypatch.setattr(routes, "STATIC_DIR", static)
    srv = ServerThread(settings_for(spool.layout.root)).start()
    try:
        assert request(srv.base, "GET", "/static/app.js").status == 200
        (static / "app.js").unlink()
        (static / "index.html").unlink()
        with caplog.at_level(logging.WARNING, logger="spoolq.statusd"):
            for _ in range(2):
                for path, name in (("/static/app.js", "app.js"), ("/", "index.html")):
                    reply = request(srv.base, "GET", path)
                    assert reply.status == 503, (path, reply.status, reply.body)
                    message = orjson.loads(reply.body)["error"]["message"]
                    assert message.startswith(f"the dashboard's {name} is gone from "
                                              f"{static}: spoolq upgraded or removed"), message
        said = [r.getMessage() for r in caplog.records if "is gone from" in r.getMessage()]
        assert len(said) == 2, said  # once a file
        assert request(srv.base, "GET", "/static/nothing.js").status == 404  # never served
        assert request(srv.base, "GET", "/static/app.css").status == 200
        # There, and unreadable: said as it is, not as gone (root reads any mode).
        monkeypatch.setattr(routes, "_read_page_file", _refused)
        reply = request(srv.base, "GET", "/static/app.css")
        message = orjson.loads(reply.body)["error"]["message"]
        assert (reply.status, message) == (
            503, f"cannot read the dashboard's app.css in {static}: Permission denied")
    finally:
        srv.stop()


def _refused(path: Path) -> tuple[bytes, os.stat_result]:
    """The page file's open as a folder statusd may not read answers it."""
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
