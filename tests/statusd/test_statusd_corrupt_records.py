"""statusd on a corrupt file in ``done/`` or ``failed/``: the record is marked
``unreadable`` (the state is the folder's), never served as a clean done with a
null result, in the REST record, the list and the WebSocket snapshot; the same
view as ``spoolq show`` (tests/spool/test_cli_corrupt_records.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from statusdkit import ServerThread, request, run_job, settings_for, wait_for, ws_collect

from spool.states import JobState
from spool.transitions import Spool

CORRUPT = {
    "truncated": (JobState.DONE, b'{"id": "truncated", "state": "done", "result": {"a": [1'),
    "not-utf8": (JobState.DONE, b'{"id": "not-utf8", "state": "done", "result": "\xff"}'),
    "not-json": (JobState.FAILED, b"\x00\x00\x00"),
}


def _check(record: dict[str, object], job_id: str, state: JobState) -> None:
    assert record["id"] == job_id and record["state"] == state.value, record
    assert f"{state.value}/{job_id}.json" in str(record["unreadable"]), record
    assert "result" not in record and "error" not in record, record


def test_rest_and_ws_mark_unreadable_records(spool: Spool) -> None:
    for job_id, (state, raw) in CORRUPT.items():
        spool.layout.job(state, job_id).write_bytes(raw)
    run_job(spool, "fine", {"message": "ok"})
    states = {job_id: state for job_id, (state, _) in CORRUPT.items()}
    srv = ServerThread(settings_for(spool.layout.root)).start()
    try:
        # Indexed at start-up, and one more found by the feed afterwards.
        spool.layout.job(JobState.DONE, "later").write_bytes(b'{"id": "later", "st')
        states["later"] = JobState.DONE
        # In the list, which is the index's (a GET of one id reads the disk: 200 before
        # the index had it, and the list then lacked it, once in a full run).
        wait_for(lambda: "later" in {t["id"] for t in request(
                     srv.base, "GET", "/api/v1/tasks").json()["tasks"]},
                 what="the later corrupt record indexed")
        for job_id, state in states.items():
            reply = request(srv.base, "GET", f"/api/v1/tasks/{job_id}")
            assert reply.status == 200
            _check(reply.json(), job_id, state)
        tasks = {t["id"]: t for t in request(srv.base, "GET", "/api/v1/tasks").json()["tasks"]}
        for job_id, state in states.items():
            _check(tasks[job_id], job_id, state)
        assert tasks["fine"]["result"] == {"message": "ok"} and "unreadable" not in tasks["fine"]
        counts = request(srv.base, "GET", "/api/v1/stats").json()["counts"]
        assert counts == {"pending": 0, "running": 0, "done": 4, "failed": 1}
        ws = f"ws://127.0.0.1:{srv.port}/api/v1/ws/tasks/truncated"
        log = asyncio.run(ws_collect(ws))
        assert [m["event"] for m in log.messages] == ["snapshot"]
        _check(log.messages[0]["record"], "truncated", JobState.DONE)
    finally:
        srv.stop()


def test_a_drop_nested_past_what_orjson_writes_does_not_stop_statusd(spool: Spool) -> None:
    """A pending file nested 500 deep (orjson reads it, cannot write it back): statusd
    could not start ("TypeError: Recursion limit reached"), and while it ran, every
    index update that met the file failed.  Anyone who may drop a job could do it."""
    deep = b'{"tool": "echo", "params": {"x": ' + b"[" * 500 + b"]" * 500 + b"}}"
    spool.layout.job(JobState.PENDING, "deep").write_bytes(deep)
    srv = ServerThread(settings_for(spool.layout.root)).start()
    try:
        spool.layout.job(JobState.RUNNING, "deep-later").write_bytes(deep)
        run_job(spool, "fine", {"message": "ok"})
        # Both in the index: the list had "fine" done without "deep-later" in 2 of 30 runs
        # at load 6 (db31169 too; a GET of it, which reads the disk, answered 200).  The
        # index keeps no order between folders.
        def listed() -> dict[str, Any]:
            tasks = request(srv.base, "GET", "/api/v1/tasks").json()["tasks"]
            return {t["id"]: t for t in tasks}

        tasks = wait_for(lambda: (found := listed()).keys() >= {"fine", "deep-later"}
                         and found, what="a job done after the deep files, all listed")
        assert tasks["deep"]["state"] == "pending" and tasks["deep"]["params"] == {}
        assert tasks["deep-later"]["state"] == "running"
    finally:
        srv.stop()
