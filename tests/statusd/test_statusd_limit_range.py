"""A list's limit out of range is answered with the range, negative or not."""

from __future__ import annotations

from statusdkit import ServerThread, request, run_job, wait_for

from spool.reader import MAX_PAGE
from spool.transitions import Spool


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


def test_leading_zeros_do_not_make_a_limit_out_of_range(server: ServerThread,
                                                         spool: Spool) -> None:
    # Ten digits were taken for more than MAX_PAGE before reading them: "0000000001" is 1.
    for n in range(3):
        run_job(spool, f"job-{n}")
    wait_for(lambda: len(request(server.base, "GET", "/api/v1/tasks").json()["tasks"]) == 3,
             what="the three records listed")
    # 4,301 digits or more, zeros too, made int() raise: a 500 (review).
    for value, taken in (("0000000001", 1), ("002", 2), ("0" * 40 + "2", 2),
                         ("0" * 5000 + "2", 2)):
        reply = request(server.base, "GET", f"/api/v1/tasks?limit={value}")
        assert reply.status == 200, (value, reply.body)
        assert len(reply.json()["tasks"]) == taken, value
    reply = request(server.base, "GET", "/api/v1/tasks?limit=" + "0" * 40)
    assert reply.status == 400
