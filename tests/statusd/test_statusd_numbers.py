"""POST /api/v1/tasks refuses an integer the spool's JSON cannot hold, as intake does.

orjson reads an integer past 64 bits as a float: the body's 98765432109876543210
was written to ``pending/`` as 9.876543210987654e+19 and answered 202, so the job
ran with another number (and ``meta`` was not echoed back untouched).
"""

from __future__ import annotations

import os

import pytest
from statusdkit import TOKEN, ServerThread, request

from spool.transitions import Spool


@pytest.mark.parametrize("raw", [
    b'{"tool": "echo", "meta": {"order": 98765432109876543210}}',
    b'{"tool": "echo", "params": {"message": [-9223372036854775809]}}',
])
def test_an_integer_past_64_bits_is_refused(server: ServerThread, spool: Spool,
                                            raw: bytes) -> None:
    reply = request(server.base, "POST", "/api/v1/tasks", raw=raw, token=TOKEN,
                    headers={"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["type"] == "invalid_job" and "does not fit 64 bits" in error["message"]
    assert os.listdir(spool.layout.root / "pending") == []


def test_integers_that_fit_are_kept_exactly(server: ServerThread) -> None:
    raw = b'{"tool": "echo", "meta": {"a": 18446744073709551615, "b": -9223372036854775808}}'
    reply = request(server.base, "POST", "/api/v1/tasks", raw=raw, token=TOKEN,
                    headers={"Content-Type": "application/json"})
    assert reply.status == 202, reply.body
    record = request(server.base, "GET", f"/api/v1/tasks/{reply.json()['task_id']}").json()
    assert record["meta"] == {"a": 18446744073709551615, "b": -9223372036854775808}
