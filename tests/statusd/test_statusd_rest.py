"""REST reads against a real statusd on 127.0.0.1: records, lists, ids, errors, stats."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from statusdkit import (
    TOKEN,
    FakeOwner,
    ServerThread,
    claim,
    equity_result,
    finish,
    report,
    request,
    run_job,
    settings_for,
    submit,
    wait_for,
)

import statusd.hints
from spool.client import Client
from spool.errors import ErrorType
from spool.models import Job, Record
from spool.reader import SpoolReader
from spool.states import JobState
from spool.transitions import Spool
from statusd.api_models import ToolCatalogue


def _error(reply_json: dict[str, object]) -> dict[str, object]:
    error = reply_json["error"]
    assert isinstance(error, dict) and set(error) == {"type", "message"}
    return error


def test_a_spool_that_exists_before_start_is_served(spool: Spool) -> None:
    run_job(spool, "old-done", {"message": "x"})
    run_job(spool, "old-failed", error=(ErrorType.TOOL_ERROR, "boom"))
    submit(spool, "old-pending")
    srv = ServerThread(settings_for(spool.layout.root)).start()
    try:
        counts = request(srv.base, "GET", "/api/v1/stats").json()["counts"]
        assert counts == {"pending": 1, "running": 0, "done": 1, "failed": 1}
        done = request(srv.base, "GET", "/api/v1/tasks/old-done").json()
        assert done["state"] == "done" and done["result"] == {"message": "x"}
        failed = request(srv.base, "GET", "/api/v1/tasks/old-failed").json()
        assert failed["error"]["type"] == "tool_error"
    finally:
        srv.stop()


def test_one_record_in_every_state_and_the_legacy_path(server: ServerThread,
                                                       spool: Spool) -> None:
    submit(spool, "p1")
    submit(spool, "r1")
    running = claim(spool, "r1")
    report(spool, running, 0.4, "forty")
    run_job(spool, "d1", {"message": "d1"})
    try:
        def state_of(job_id: str) -> object:
            reply = request(server.base, "GET", f"/api/v1/tasks/{job_id}")
            return reply.status == 200 and reply.json()["state"]

        wait_for(lambda: state_of("p1") == "pending", what="p1 pending")
        wait_for(lambda: state_of("d1") == "done", what="d1 done")
        record = wait_for(lambda: (r := request(server.base, "GET", "/api/v1/tasks/r1").json())
                          .get("progress") and r, what="r1 progress")
        assert record["state"] == "running"
        assert record["progress"]["fraction"] == 0.4 and record["progress"]["message"] == "forty"
        assert record["attempts"] == 1
        for job_id in ("p1", "r1", "d1"):
            main = request(server.base, "GET", f"/api/v1/tasks/{job_id}")
            legacy = request(server.base, "GET", f"/api/v1/backtest/tasks/{job_id}")
            assert main.status == legacy.status == 200
            assert main.json() == legacy.json()
            assert main.headers["content-type"].startswith("application/json")
    finally:
        running.close()


BAD_PATHS = [
    "/api/v1/tasks/..%2f..%2fetc%2fpasswd",
    "/api/v1/tasks/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/tasks/%2e%2e",
    "/api/v1/tasks/%2E%2E%2Fpending",
    "/api/v1/tasks/%252e%252e%252fetc",
    "/api/v1/tasks/..%5c..%5cwindows",
    "/api/v1/tasks/..\\..\\windows",
    "/api/v1/tasks/a%00b",
    "/api/v1/tasks/%E2%80%A4%E2%80%A4",
    "/api/v1/tasks/%EF%BC%8E%EF%BC%8E%EF%BC%8Fetc",
    "/api/v1/tasks/../../etc/passwd",
    "/api/v1/tasks/..",
    "/api/v1/tasks/.hidden",
    "/api/v1/tasks/" + "a" * 129,
    "/api/v1/tasks/" + "a" * 5000,
    "/api/v1/tasks/",
    "/api/v1/tasks/a/b",
    "/api/v1/backtest/tasks/..%2f..%2fdone%2fx",
    "/api/v1/backtest/tasks/%2e%2e",
    "/api/v1/ws/tasks/..%2fx",
    "/api/v1/ws/backtest/%2e%2e",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_ids_are_validated_before_any_path_is_built(server: ServerThread, path: str) -> None:
    reply = request(server.base, "GET", path)
    assert reply.status == 400, reply.body
    assert _error(reply.json())["type"] == "invalid_id"


def test_writes_validate_ids_too(server: ServerThread) -> None:
    for path in ("/api/v1/tasks/..%2fx/cancel", "/api/v1/tasks/%2e%2e/retry"):
        reply = request(server.base, "POST", path, token=TOKEN)
        assert reply.status == 400 and _error(reply.json())["type"] == "invalid_id"


def test_a_404_names_what_stands_in_pending_under_the_id_that_is_no_job(
        server: ServerThread, spool: Spool) -> None:
    """A FIFO in ``pending/`` under a job's name, not yet judged (no processor running):
    a bare 404 "no task" (h381)."""
    os.mkfifo(spool.layout.job(JobState.PENDING, "fifo"))
    reply = request(server.base, "GET", "/api/v1/tasks/fifo")
    assert reply.status == 404, reply.body
    error = _error(reply.json())
    assert error["type"] == "not_found"
    assert error["message"] == ("no task fifo: pending/fifo.json is a fifo, not a job file; "
                                "a processor quarantines it in failed/ when it looks at it")
    assert _error(request(server.base, "GET", "/api/v1/tasks/nope").json())["message"] == (
        "no task nope")
    # In another folder, where spoolq never makes one, it is named too: a bare "no task"
    # of a symlink planted in done/ (h396).
    spool.layout.job(JobState.DONE, "planted").symlink_to("/etc/passwd")
    os.mkfifo(spool.layout.job(JobState.RUNNING, "piped"))
    for job_id, where, kind in (("planted", "done", "symlink"), ("piped", "running", "fifo")):
        reply = request(server.base, "GET", f"/api/v1/tasks/{job_id}")
        assert reply.status == 404, reply.body
        assert _error(reply.json())["message"] == (
            f"no task {job_id}: {where}/{job_id}.json is a {kind}, not a job's file; spoolq "
            "never makes one there: someone put it there, and may remove it"), reply.body


def test_unknown_ids_and_routes_answer_json(server: ServerThread) -> None:
    for path in ("/api/v1/tasks/nope", "/api/v1/backtest/tasks/nope", "/nothing/here"):
        reply = request(server.base, "GET", path)
        assert reply.status == 404 and _error(reply.json())["type"] == "not_found"
    reply = request(server.base, "DELETE", "/api/v1/tasks")
    assert reply.status == 405 and _error(reply.json())["type"] == "method_not_allowed"
    assert "GET" in reply.headers["allow"]
    # limit: an integer as OpenAPI means it (Python's int() also took 1_0, ' 5' and a
    # non-ASCII digit)
    for query in ("state=bogus", "limit=0", "limit=1001", "limit=x", "limit=1_0",
                  "limit=%205", "limit=%D9%A5", "limit=%2B5", "limit=" + "9" * 5000,
                  "cursor=%%%",
                  "cursor=bm90LWEtY3Vyc29y", "tool=" + "t" * 200):
        reply = request(server.base, "GET", f"/api/v1/tasks?{query}")
        assert reply.status == 400, query
        assert _error(reply.json())["type"] == "bad_request"


def test_pages_match_the_reader_order_and_filters(server: ServerThread, spool: Spool) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(130):
        tool = "echo" if n % 3 else "sleep"
        when = base + timedelta(seconds=n // 2)  # pairs share a timestamp: ties by id
        spool.submit(Job(tool=tool, submitted_at=when), f"job-{n:03d}")
    for n in range(0, 130, 4):
        finish(spool, claim(spool, f"job-{n:03d}"), {"n": n})
    reader = SpoolReader(spool.layout)
    wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["counts"]
             == reader.counts(), what="every move indexed")
    for state, tool in [(None, None), ("pending", None), ("done", "echo"), (None, "sleep")]:
        expected = [r.id for r in reader.page(state=state and _state(state), tool=tool,
                                              limit=1000).records]
        seen: list[str] = []
        cursor = None
        while True:
            query = "limit=17" + (f"&state={state}" if state else "") + \
                (f"&tool={tool}" if tool else "") + (f"&cursor={cursor}" if cursor else "")
            page = request(server.base, "GET", f"/api/v1/tasks?{query}").json()
            # The last page says so (null): a cursor never leads to an empty page, one
            # more round trip for every client that pages until null.
            assert page["tasks"], (state, tool, cursor)
            seen.extend(t["id"] for t in page["tasks"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected, (state, tool)
    # Each tool's count per state, as the reader's own listing finds them.
    by_tool = request(server.base, "GET", "/api/v1/stats").json()["counts_by_tool"]
    assert set(by_tool) == {"echo", "sleep"}
    for tool, counts in by_tool.items():
        assert counts == {s.value: len(reader.page(state=s, tool=tool, limit=1000).records)
                          for s in JobState}, tool
    assert by_tool["sleep"] == {"pending": 33, "running": 0, "done": 11, "failed": 0}
    # A page that holds every task is the last one, a page of exactly that many too.
    for limit in (1000, 130):
        whole = request(server.base, "GET", f"/api/v1/tasks?limit={limit}").json()
        assert len(whole["tasks"]) == 130 and whole["next_cursor"] is None, limit


def _state(name: str) -> JobState:
    return JobState(name)


def test_large_records_are_listed_without_their_result(server: ServerThread,
                                                       spool: Spool) -> None:
    result = equity_result(("AAA", "BBB"), bars=1500)
    run_job(spool, "big", result, tool="run_backtest")
    page = wait_for(lambda: (t := request(server.base, "GET", "/api/v1/tasks?state=done")
                             .json()["tasks"]) and t, what="big listed as done")
    assert page[0]["id"] == "big" and page[0]["result_omitted"] is True
    assert "result" not in page[0]
    full = request(server.base, "GET", "/api/v1/tasks/big").json()
    assert full["result"]["symbols"]["BBB"]["equity_curve"] == \
        result["symbols"]["BBB"]["equity_curve"]


def test_stats_report_counts_age_and_processor_liveness(server: ServerThread,
                                                        spool: Spool) -> None:
    stats = request(server.base, "GET", "/api/v1/stats").json()
    assert stats["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    assert stats["oldest_pending_age_s"] is None
    assert stats["processor"] == {"alive": False, "heartbeat_at": None, "count": 0,
                                  "io_trouble": 0}
    before = time.time()
    submit(spool, "waiting")
    days_ago = time.time() - 3 * 86_400  # a copy that kept its mtime waits from its arrival
    os.utime(spool.layout.job(JobState.PENDING, "waiting"), (days_ago, days_ago))
    owner = FakeOwner(spool, busy=1)
    try:
        wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()
                 ["counts"]["pending"] == 1, what="pending counted")
        # The age grows with the wait: "0 <= age < 60" alone held with an age stuck at 0
        # (the REST figure and the gauge alerts are written on).
        time.sleep(1.0)
        stats = request(server.base, "GET", "/api/v1/stats").json()
        age = stats["oldest_pending_age_s"]
        assert 1.0 <= age <= time.time() - before + 1.0, age
        assert 1.0 <= stats["oldest_due_pending_age_s"] <= age, stats
        metrics = request(server.base, "GET", "/metrics").body.decode()
        for name, least in (("spoolq_oldest_pending_age_seconds", age),
                            ("spoolq_oldest_due_pending_age_seconds",
                             stats["oldest_due_pending_age_s"])):
            gauge = re.search(rf"^{name} (\S+)$", metrics, re.M)
            assert gauge is not None and float(gauge.group(1)) >= least, (name, gauge)
        assert stats["processor"]["alive"] is True and stats["processor"]["count"] == 1
        assert stats["job_num"] == 2 and stats["busy_workers"] == 1
        assert {"echo", "sleep"} <= set(stats["tools"])
    finally:
        owner.close()
    stats = request(server.base, "GET", "/api/v1/stats").json()
    assert stats["processor"]["alive"] is False  # the lock is gone: the kernel says so


def test_tools_are_the_live_processors_catalogues_merged_by_name(
        server: ServerThread, spool: Spool) -> None:
    """GET /api/v1/tools: what ``spoolq tools --json`` lists, over HTTP (a client that
    POSTs jobs learns each tool's params schema and attempt limit, the dashboard its
    "attempts 1 of 3"): empty while no processor runs; of a name two processors offer,
    the first one's entry; a status file's entry without a string name left out."""
    assert request(server.base, "GET", "/api/v1/tools").json() == {"tools": [],
                                                                    "processors": []}
    first = FakeOwner(spool, "proc-a", tools=[
        {"name": "echo", "execution_mode": "fast", "execution_timeout": 10.0,
         "category": "query", "max_attempts": 3, "description": "says it back",
         "params_schema": {"properties": {"message": {"type": "string"}}}},
        {"name": 7}])
    second = FakeOwner(spool, "proc-b", tools=[{"name": "echo", "max_attempts": 1},
                                               {"name": "sleep", "mode": "compute"}])
    try:
        doc = request(server.base, "GET", "/api/v1/tools").json()
    finally:
        first.close()
        second.close()
    assert doc["processors"] == ["proc-a", "proc-b"]
    assert doc["tools"] == [
        {"name": "echo", "mode": "fast", "timeout": 10.0, "category": "query",
         "max_attempts": 3, "description": "says it back",
         "params_schema": {"properties": {"message": {"type": "string"}}}},
        {"name": "sleep", "mode": "compute", "timeout": None, "category": None,
         "max_attempts": None, "description": "", "params_schema": {}},
    ]
    assert request(server.base, "GET", "/api/v1/tools").json()["tools"] == []  # locks gone


def test_a_catalogues_values_of_the_wrong_type_are_given_as_absent(
        server: ServerThread, spool: Spool) -> None:
    """A status file another writer left (or one edited) whose tool entries hold values of
    the wrong type: GET /api/v1/tools passed them on as they were (a string limit, a
    schema that was a list), against its own document, to clients that take its types as
    given.  Each such value is given as absent; the entry stays."""
    owner = FakeOwner(spool, "proc-odd", tools=[
        {"name": "echo", "execution_mode": 3, "execution_timeout": "10",
         "category": ["query"], "max_attempts": "3", "description": None,
         "params_schema": ["message"]},
        {"name": "sleep", "execution_timeout": True, "max_attempts": 2.5},
        {"name": "wait", "execution_timeout": -1, "max_attempts": 0}])
    try:
        doc = request(server.base, "GET", "/api/v1/tools").json()
    finally:
        owner.close()
    absent = {"mode": None, "timeout": None, "category": None, "max_attempts": None,
              "description": "", "params_schema": {}}
    assert doc["tools"] == [{"name": name, **absent} for name in ("echo", "sleep", "wait")]
    ToolCatalogue.model_validate(doc)


def test_stats_partial_takes_0_or_1(server: ServerThread) -> None:
    """``partial`` (the dashboard's counts while the processors' state is unknown: see
    test_statusd_processors_unknown.py) refuses what it does not know, as ``view`` does."""
    for value in ("0", "1", ""):
        reply = request(server.base, "GET", f"/api/v1/stats?partial={value}")
        assert reply.status == 200 and "processor" in reply.json(), (value, reply.body)
    bad = request(server.base, "GET", "/api/v1/stats?partial=yes")
    assert bad.status == 400, bad.body
    assert bad.json()["error"] == {"type": "bad_request", "message": "partial must be 0 or 1"}


def test_stats_count_the_jobs_that_left_the_spool(server: ServerThread, spool: Spool) -> None:
    """A purge announces nothing on the events stream, and one that came with as many new
    drops leaves every count as it was: statusd.removed says jobs left (the dashboard
    reloads its list on it).  A move is no removal."""
    def stats() -> Any:
        return request(server.base, "GET", "/api/v1/stats").json()

    assert stats()["statusd"]["removed"] == 0
    for job_id in ("old-1", "old-2"):
        run_job(spool, job_id)
    submit(spool, "moving")
    wait_for(lambda: stats()["counts"]["done"] == 2, what="the jobs indexed")
    finish(spool, claim(spool, "moving"))
    wait_for(lambda: stats()["counts"]["done"] == 3, what="the move indexed")
    assert stats()["statusd"]["removed"] == 0
    Client.from_settings(server.settings).purge(0.0, [JobState.DONE])
    wait_for(lambda: stats()["statusd"]["removed"] == 3, what="the purge counted")
    assert stats()["total"] == 0


def test_stats_throughput_is_the_records_of_the_last_minute(spool: Spool) -> None:
    """done_last_60s and failed_last_60s were the live processors' own tallies: 0 while
    none ran (or just after a restart), whatever the last minute wrote.  They count the
    records written in the last 60 s, as ``spoolq stats`` does; a record whose file
    changes is counted by its new time (the old one is taken out).  A changed time
    alone is seen by a rescan: SPOOL_SCAN_S=0.2, not the kit's 5 s waited out."""
    server = ServerThread(settings_for(spool.layout.root, scan_s=0.2)).start()
    try:
        run_job(spool, "a")
        run_job(spool, "old")
        run_job(spool, "bad", error=(ErrorType.TIMEOUT, "too slow"))
        wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["throughput"]
                 == {"done_last_60s": 2, "failed_last_60s": 1}, what="the three counted")
        two_minutes_ago = time.time() - 120
        os.utime(spool.layout.job(JobState.DONE, "old"), (two_minutes_ago, two_minutes_ago))
        stats = wait_for(lambda: (s := request(server.base, "GET", "/api/v1/stats").json())
                         ["throughput"]["done_last_60s"] == 1 and s, what="the old one out")
        assert stats["processor"]["count"] == 0 and stats["counts"]["done"] == 2
        assert stats["throughput"] == SpoolReader(spool.layout).stats()["throughput"]
    finally:
        server.stop()


def _plant_unfinished_drops(pending: Path, idle_s: float) -> None:
    """Three in-progress drops, the stalest changed ``idle_s`` before the others, beside
    what counts as none: spoolq's own kept name, a Mac's metadata, a symlink and a
    directory under such names; one with a copy's old mtime, which is no idle time."""
    (pending / "report.json.filepart").write_bytes(b'{"tool": "ec')
    time.sleep(idle_s)
    for name in (".job.json.swp", "UPLOAD.TMP", ".x.json.kept-invalid-1", ".DS_Store"):
        (pending / name).write_bytes(b'{"tool": "ec')
    (pending / "link.part").symlink_to("/etc/passwd")
    (pending / "dir.tmp").mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(pending / "UPLOAD.TMP", (two_hours_ago, two_hours_ago))


def test_stats_count_the_uploads_left_under_an_in_progress_name(spool: Spool) -> None:
    """A ``.filepart`` whose upload was cut off stays in pending/, ignored, and its job
    never arrives: nothing failed, so nothing told of it (h388).  The stats count such
    files and how long the stalest has gone unwritten; the metrics gauge both; a rename
    into a job takes it out."""
    pending = spool.layout.folder(JobState.PENDING)
    _plant_unfinished_drops(pending, 1.5)
    server = ServerThread(settings_for(spool.layout.root, scan_s=0.2)).start()
    try:
        asked = time.time()  # the idle_s below is of a moment after this one
        drops = request(server.base, "GET", "/api/v1/stats").json()["in_progress_drops"]
        assert drops["count"] == 3, drops
        assert 1.5 <= drops["idle_s"] < 60, drops
        metrics = request(server.base, "GET", "/metrics").body.decode()
        assert "spoolq_pending_in_progress_files 3.0" in metrics, metrics
        idle = re.search(r"^spoolq_pending_in_progress_idle_seconds (\S+)$", metrics, re.M)
        assert idle is not None and 1.5 <= float(idle.group(1)) < 60, idle
        # The stalest renamed into its job: the next scan counts the other two, changed
        # 1.5 s after it.
        (pending / "report.json.filepart").rename(pending / "report.json")
        later = wait_for(lambda: (d := request(server.base, "GET", "/api/v1/stats").json()
                                  ["in_progress_drops"])["count"] == 2 and d,
                         what="the renamed upload out of the count")
        stalest_now = drops["idle_s"] + time.time() - asked  # or a little more
        assert later["idle_s"] <= stalest_now - 1.4, (later, stalest_now)
    finally:
        server.stop()
    assert SpoolReader(spool.layout).stats()["in_progress_drops"]["count"] == 2


def test_stats_oldest_due_pending_age_leaves_out_not_before(server: ServerThread,
                                                             spool: Spool) -> None:
    """A job scheduled for tomorrow is the oldest pending job all day, so an alert on
    oldest_pending_age_s fired all day; oldest_due_pending_age_s (and its gauge) counts
    the wait of jobs that could run."""
    submit(spool, "tomorrow", not_before=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    stats = wait_for(lambda: (s := request(server.base, "GET", "/api/v1/stats").json())
                     ["counts"]["pending"] == 1 and s, what="the scheduled job counted")
    assert stats["oldest_pending_age_s"] is not None
    assert stats["oldest_due_pending_age_s"] is None
    assert "spoolq_oldest_due_pending_age_seconds 0.0" in \
        request(server.base, "GET", "/metrics").body.decode()
    submit(spool, "now")
    stats = wait_for(lambda: (s := request(server.base, "GET", "/api/v1/stats").json())
                     ["counts"]["pending"] == 2 and s, what="the second job counted")
    assert 0 <= stats["oldest_due_pending_age_s"] <= stats["oldest_pending_age_s"] < 60
    assert SpoolReader(spool.layout).stats()["oldest_due_pending_age_s"] is not None


def test_health_openapi_and_dashboard_are_served(server: ServerThread) -> None:
    health = request(server.base, "GET", "/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    doc = request(server.base, "GET", "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "Record" in doc["components"]["schemas"]
    page = request(server.base, "GET", "/")
    assert page.status == 200 and b'src="static/app.js"' in page.body
    for asset in ("app.js", "chart.js", "app.css"):
        assert request(server.base, "GET", f"/static/{asset}").status == 200
    assert request(server.base, "GET", "/static/../app.py").status == 404


@pytest.mark.parametrize(("path", "content_type", "cache"), [
    ("/", "text/html", "no-cache"), ("/static/app.js", "application/javascript", "no-cache"),
    ("/static/app.css", "text/css", "no-cache")])
def test_the_page_files_keep_their_type_and_validators(server: ServerThread, path: str,
                                                       content_type: str, cache: str) -> None:
    """Served from the bytes statusd read (QA, h319: a second open by aiohttp's file
    server could fail), the page's files keep what that server gave them: their type,
    Cache-Control, and an ETag and Last-Modified that a conditional GET is answered 304
    by (a reload revalidates them: test_a_reload_checks_the_page_scripts_with_the_server)."""
    page = request(server.base, "GET", path)
    assert page.status == 200 and page.body, page
    # Python's own table (3.12 and later say text/javascript).
    assert page.headers["content-type"] in (content_type, content_type.replace(
        "application/javascript", "text/javascript"))
    assert page.headers["cache-control"] == cache
    etag, modified = page.headers["etag"], page.headers["last-modified"]
    for ask in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'},
                {"If-None-Match": "*"}, {"If-Modified-Since": modified}):
        same = request(server.base, "GET", path, headers=ask)
        assert (same.status, same.body) == (304, b""), (ask, same)
        assert (same.headers["etag"], same.headers["cache-control"]) == (etag, cache)
    for ask in ({"If-None-Match": '"other"'},
                {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
                {"If-None-Match": '"other"', "If-Modified-Since": modified}):
        again = request(server.base, "GET", path, headers=ask)
        assert (again.status, again.body) == (200, page.body), ask
    head = request(server.base, "HEAD", path)
    assert (head.status, head.headers["content-length"]) == (200, str(len(page.body)))


def test_changes_made_behind_statusd_reach_the_index(server: ServerThread,
                                                     spool: Spool) -> None:
    submit(spool, "cli-drop")  # as `spoolq submit` would, not through HTTP
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks").json()["tasks"],
             what="drop listed")
    running = claim(spool, "cli-drop")
    wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["counts"]["running"]
             == 1, what="running counted")
    finish(spool, running, {"ok": True})
    wait_for(lambda: request(server.base, "GET", "/api/v1/stats").json()["counts"]["done"]
             == 1, what="done counted")
    (spool.layout.folder(_state("done")) / "cli-drop.json").unlink()  # a purge
    wait_for(lambda: request(server.base, "GET", "/api/v1/tasks/cli-drop").status == 404,
             what="purged record gone")


class _DeafFeed:
    """A change feed that never reports anything (a dropped inotify queue)."""

    unwatched: frozenset[Path] = frozenset()
    shortage: OSError | None = None  # as PolledFeed's: no inotify limit met

    def __init__(self, folders: object, on_change: object) -> None:
        pass

    @staticmethod
    def available() -> bool:  # as PolledFeed: not pollable, so the ChangeFeed (this) is used
        return False

    def start(self) -> None:
        pass

    def rewatch(self) -> bool:
        return False

    def stop(self) -> None:
        pass


def test_a_failing_rescan_is_retried_once_a_scan_interval_not_in_a_busy_loop(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable spool (say, a network mount gone) is retried every SPOOL_SCAN_S."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=0.2)).start()
    calls: list[float] = []

    def failing_scan(behind: dict[str, Any] | None = None,
                     unreadable: set[str] | None = None) -> dict[str, Any]:
        calls.append(time.monotonic())
        raise OSError(5, "Input/output error")

    try:
        started = time.monotonic()
        monkeypatch.setattr(srv.services.tracker.loader, "scan", failing_scan)
        time.sleep(1.5)
        wait_for(lambda: len(calls) >= 2, 5.0, "the failed rescan tried again")
        # Counted against the time that really went by: a stall of this thread made the
        # 1.5 s longer, and 17 rescans at the proper pace failed "at most 10 in 1.5 s".
        rescans, elapsed = len(calls), time.monotonic() - started
        assert rescans <= elapsed / 0.2 + 3, \
            f"{rescans} rescans in {elapsed:.1f} s at SPOOL_SCAN_S=0.2"
    finally:
        monkeypatch.undo()
        srv.stop()


def test_the_periodic_rescan_covers_lost_events(spool: Spool, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statusd.hints, "ChangeFeed", _DeafFeed)
    monkeypatch.setattr(statusd.hints, "PolledFeed", _DeafFeed)
    srv = ServerThread(settings_for(spool.layout.root, scan_s=0.2)).start()
    try:
        run_job(spool, "unannounced", {"ok": 1})
        wait_for(lambda: request(srv.base, "GET", "/api/v1/stats").json()["counts"]["done"]
                 == 1, what="rescan found the record")
        assert request(srv.base, "GET", "/api/v1/tasks").json()["tasks"][0]["id"] == \
            "unannounced"
    finally:
        srv.stop()


def test_the_stats_list_of_tools_is_bounded(server: ServerThread, spool: Spool) -> None:
    """3,000 jobs naming made-up tools (failed unknown_tool) made the stats list 3,008
    names, 361 KB read every 5 s by each open dashboard (QA): names no processor offers
    are listed up to 256, the rest counted."""
    owner = FakeOwner(spool)  # offers echo and sleep
    try:
        for n in range(300):
            run_job(spool, f"made-up-{n}", tool=f"made_up_{n:03d}")
        stats = wait_for(lambda: (s := _stats(server)) and s.get("tools_omitted") == 44 and s,
                         what="every made-up name indexed")
    finally:
        owner.close()
    made_up = [t for t in stats["tools"] if t.startswith("made_up_")]
    assert made_up == [f"made_up_{n:03d}" for n in range(256)], made_up[-3:]
    assert {"echo", "sleep"} <= set(stats["tools"]) and len(stats["tools"]) == 258
    # Counted per tool listed, those offered that no job names too; none of those cut.
    assert set(stats["counts_by_tool"]) == set(stats["tools"])
    assert stats["counts_by_tool"]["echo"] == {"pending": 0, "running": 0, "done": 0,
                                               "failed": 0}
    assert stats["counts_by_tool"]["made_up_255"]["done"] == 1


def test_the_cut_list_of_tools_keeps_those_that_ran_before_made_up_names(
        server: ServerThread, spool: Spool) -> None:
    """The list was cut alphabetically: with no processor up to name its tools, a real
    tool sorting after 256 made-up names (each one failed job) fell out of the list and
    of the dashboard's filter (QA). Tools that ran come first, then the most used."""
    for n in range(300):
        run_job(spool, f"made-up-{n}", tool=f"aa_made_up_{n:03d}",
                error=(ErrorType.UNKNOWN_TOOL, "no such tool"))
    for n in range(3):
        run_job(spool, f"used-{n}", tool="aa_used_but_unknown",
                error=(ErrorType.UNKNOWN_TOOL, "no such tool"))
    run_job(spool, "real", tool="zz_real_tool")
    stats = wait_for(lambda: (s := _stats(server)) and s.get("tools_omitted") == 46 and s,
                     what="every name indexed")
    assert "zz_real_tool" in stats["tools"] and "aa_used_but_unknown" in stats["tools"]
    assert stats["tools"] == sorted(stats["tools"]) and len(stats["tools"]) == 256


def test_a_name_no_tool_can_have_is_not_listed(server: ServerThread, spool: Spool) -> None:
    """A record an older version quarantined keeps a "tool" of any length: 20 of 1 MiB
    made the stats 20.3 MB, read every 5 s by each open dashboard (QA)."""
    long_name = "t" * 129
    submit(spool, "long", "echo")
    now = datetime.now(UTC)
    spool.fail(claim(spool, "long"), Record.model_validate({
        "id": "long", "state": "failed", "tool": long_name, "submitted_at": now,
        "finished_at": now, "attempts": 1,
        "error": {"type": "invalid_job", "message": "tool: at most 128 characters"}}))
    run_job(spool, "fine", tool="x" * 128, error=(ErrorType.UNKNOWN_TOOL, "no such tool"))
    stats = wait_for(lambda: (s := _stats(server)) and "x" * 128 in s["tools"] and s,
                     what="the records indexed")
    assert long_name not in stats["tools"] and stats["tools_omitted"] == 0, stats["tools"]


def _stats(server: ServerThread) -> dict[str, Any]:
    reply = request(server.base, "GET", "/api/v1/stats")
    assert reply.status == 200, reply.body
    stats: dict[str, Any] = orjson.loads(reply.body)
    return stats


def test_a_cancel_or_retry_404_names_what_stands_in_pending_once(
        server: ServerThread, spool: Spool) -> None:
    """The client's "no job X" already says what stands in ``pending/``: statusd's 404 of
    a cancel or a retry said it twice (h391)."""
    os.mkfifo(spool.layout.job(JobState.PENDING, "fifo"))
    said = ("no job fifo: pending/fifo.json is a fifo, not a job file; a processor "
            "quarantines it in failed/ when it looks at it")
    for action in ("cancel", "retry"):
        reply = request(server.base, "POST", f"/api/v1/tasks/fifo/{action}", token=TOKEN)
        if reply.status == 404:
            assert _error(reply.json())["message"] == said, (action, reply.body)
