"""A list's limit out of range is answered with the range, negative or not."""

from __future__ import annotations

from statusdkit import ServerThread, request

from spool.reader import MAX_PAGE


def test_a_negative_limit_is_told_the_range(server: ServerThread) -> None:
    # "-1" read as not an integer at all: "limit must be an integer".
    for value in ("-1", "-0", "-99999999999999", "0", str(MAX_PAGE + 1)):
        reply = request(server.base, "GET", f"/api/v1/tasks?limit={value}")
        assert reply.status == 400, value
        assert reply.json()["error"] == {
            "type": "bad_request", "message": f"limit must be 1..{MAX_PAGE}"}, value
    for value in ("x", "1_0", "%2B5", "1.5"):
        reply = request(server.base, "GET", f"/api/v1/tasks?limit={value}")
        assert reply.status == 400, value
        assert f"1..{MAX_PAGE}" in reply.json()["error"]["message"], value
