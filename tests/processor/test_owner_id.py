"""A processor's owner id (``owners/<owner>.lock``): unique where host names and pids
are not (containers: two "box", each pid 1)."""

from __future__ import annotations

import os
import re
import socket

import pytest

from processor import lifecycle


def test_an_owner_id_keeps_its_random_part_whatever_the_host_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """4 hex digits met in 1 of 65,536 starts of two such processors, and a long host
    name cut the random part off (the id was cut to 120 characters whole)."""
    for host in ("box", "h" * 200, "-odd name.", "héllo-wörld"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        ids = {lifecycle.owner_id() for _ in range(100)}
        assert len(ids) == 100
        for owner in ids:
            assert len(owner) <= 120
            assert re.fullmatch(rf"[A-Za-z0-9._-]+-{os.getpid()}-[0-9a-f]{{12}}", owner), owner
