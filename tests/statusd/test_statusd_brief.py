"""``GET /api/v1/tasks?view=brief``: rows a list can carry, whatever the jobs hold.

The default list rows are the records (DESIGN fixes that): 50 pending jobs with
1 MiB params made a 50 MB page for the dashboard.  A brief row of a record over
4 KiB leaves out params, meta and result and cuts the error to its type and the
start of its message, and says so; a small record's row is the record.
"""

from __future__ import annotations

from statusdkit import ServerThread, claim, finish, request, run_job, submit, wait_for

from spool.errors import ErrorType
from spool.models import ErrorInfo
from spool.transitions import Spool

BIG = "x" * 1_000_000


def test_brief_rows_leave_out_what_the_list_does_not_show(server: ServerThread,
                                                           spool: Spool) -> None:
    for n in range(3):
        submit(spool, f"big-{n}", params={"blob": BIG}, meta={"note": "m"})
    failed = run_job(spool, "crashed", error=(ErrorType.TOOL_ERROR, "-"))
    spool.publish_terminal(failed.model_copy(update={"error": ErrorInfo(
        type=ErrorType.TOOL_ERROR, message="why " * 2000, traceback="Traceback: " + BIG)}))
    run_job(spool, "small", {"ok": True})
    wait_for(lambda: "traceback" in request(server.base, "GET", "/api/v1/tasks/crashed")
             .json()["error"], what="the new failure indexed")
    wait_for(lambda: len(request(server.base, "GET", "/api/v1/tasks?view=brief")
                         .json()["tasks"]) == 5, what="every job listed")

    full = request(server.base, "GET", "/api/v1/tasks")
    brief = request(server.base, "GET", "/api/v1/tasks?view=brief")
    assert len(full.body) > 3_000_000  # the records, as DESIGN fixes the default
    assert len(brief.body) < 10_000, len(brief.body)
    rows = {t["id"]: t for t in brief.json()["tasks"]}
    records = {t["id"]: t for t in full.json()["tasks"]}
    assert set(rows) == set(records) == {"big-0", "big-1", "big-2", "crashed", "small"}

    big = rows["big-1"]
    assert "params" not in big and "meta" not in big
    assert big["params_omitted"] is True and big["meta_omitted"] is True
    expected = {k: v for k, v in records["big-1"].items() if k not in ("params", "meta")}
    assert {k: v for k, v in big.items() if k not in ("params_omitted", "meta_omitted")} \
        == expected

    crashed = rows["crashed"]
    assert crashed["error_cut"] is True
    assert crashed["error"] == {"type": "tool_error", "message": ("why " * 2000)[:1000]}
    assert rows["small"] == records["small"] and rows["small"]["result"] == {"ok": True}

    # The task's own view is the whole record; a bad view is refused.
    one = request(server.base, "GET", "/api/v1/tasks/big-1").json()
    assert one["params"] == {"blob": BIG} and one["meta"] == {"note": "m"}
    assert request(server.base, "GET", "/api/v1/tasks?view=full").body == full.body
    bad = request(server.base, "GET", "/api/v1/tasks?view=short")
    assert bad.status == 400 and bad.json()["error"]["type"] == "bad_request"


def test_a_large_result_row_says_it_left_the_result_out(server: ServerThread,
                                                        spool: Spool) -> None:
    """Over 32 KiB the index keeps no result at all: the brief row still says so."""
    submit(spool, "heavy", params={"blob": "p" * 10_000})
    finish(spool, claim(spool, "heavy"), {"curve": list(range(20_000))})
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks?view=brief")
             .json()["tasks"], what="the record listed")
    row = request(server.base, "GET", "/api/v1/tasks?view=brief").json()["tasks"][0]
    assert row["result_omitted"] is True and row["params_omitted"] is True
    assert "result" not in row and "params" not in row and row["state"] == "done"
