"""Clients cut off for not reading are logged a few lines a minute, not one line each:
each such client is a client's choice, as often as it likes (QA h396: 400 WebSockets
that read nothing made 400 lines).  A real server on 127.0.0.1, raw sockets."""

from __future__ import annotations

import logging
import time

import pytest
from statusdkit import ServerThread, settings_for, stalled_ws_client, wait_for

from spool.transitions import Spool
from statusd.errors import CLIENT_FAULT_LINES

CLIENTS = CLIENT_FAULT_LINES + 5


def test_many_clients_dropped_at_once_are_a_few_lines(
        spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spoolq.statusd")
    # heartbeat 1 s: a client that answers no ping is dropped 0.5 s after the first one.
    srv = ServerThread(settings_for(spool.layout.root), heartbeat_s=1.0).start()
    socks = [stalled_ws_client(srv.port, "/api/v1/ws/events") for _ in range(CLIENTS)]
    try:
        wait_for(lambda: srv.in_loop(lambda: srv.services.hub.dropped_total) == CLIENTS,
                 timeout=20, what="every silent client dropped")
        time.sleep(0.2)
        said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(said) == CLIENT_FAULT_LINES, said
    finally:
        for sock in socks:
            sock.close()
        srv.stop()
