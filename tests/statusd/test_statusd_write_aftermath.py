"""statusd's writes when the disk fails once the write is made (QA, h319).

The real ``python -m statusd``; strace, attached to it, fails one kind of call on one
path while a write is asked, then detaches.

A submit whose job was in ``pending/`` when the index's look-up of it failed with an
error the look-up does not classify (EACCES on the lstat of ``done/<id>.json``) answered
500 ``internal``: a client that retried the 500 submitted the job twice.  It answers 202
with the id, and the index shows the job once it can look (at the latest its rescan).

A cancel or a retry whose folder's sync failed (EIO) after its commit point (the
``cancelled`` record in ``failed/``, the retried job in ``pending/``) answered 503
"cannot publish": a change made, said to have failed.  It answers the record as it now
stands, and the client's warning in the log names what failed after it.  Before the
commit point (the job's take into ``stage/``) it is a 503 ``unavailable`` with the
reason (a folder's ``close()`` failing there answered 500 with a traceback: no error
since 7165d49).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from statusd_daemonkit import failing, statusd_daemon, strace_or_skip
from statusdkit import TOKEN, claim, finish, request, submit

from spool.errors import ErrorType
from spool.transitions import Spool


def test_a_submit_whose_look_up_fails_after_the_write_answers_its_id(
        spool: Spool, tmp_path: Path) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    log: list[str] = []
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        with failing(strace, proc.pid, [root / "done" / "DUPX.json"], ["newfstatat", "statx"],
                     tmp_path / "strace.err", error="EACCES"):
            reply = request(base, "POST", "/api/v1/tasks?any_tool=1",
                            {"tool": "echo", "id": "DUPX"}, token=TOKEN)
        assert (reply.status, reply.json()) == (202, {"task_id": "DUPX"}), reply
        assert (root / "pending" / "DUPX.json").is_file()
        got = request(base, "GET", "/api/v1/tasks/DUPX")
        assert (got.status, got.json()["state"]) == (200, "pending"), got
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
    assert "DUPX is written, but the index could not look at it now" in text, text[-3000:]


def test_a_cancel_and_a_retry_whose_clean_up_fails_answer_what_they_did(
        spool: Spool, tmp_path: Path) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "P1")
    submit(spool, "F1")
    finish(spool, claim(spool, "F1"), error=(ErrorType.TOOL_ERROR, "bad"))
    log: list[str] = []
    # Folders synced (SPOOL_FSYNC=always), so each write syncs a folder after its
    # rename: failed/ for the cancel's record, pending/ for the retried job.
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN, SPOOL_FSYNC="always",
                        SPOOL_SCAN_S="600") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        replies = {}
        for job_id, action, folder in (("P1", "cancel", "failed"), ("F1", "retry", "pending")):
            with failing(strace, proc.pid, [root / folder], ["fsync"],
                         tmp_path / f"strace-{action}.err"):
                replies[job_id] = request(base, "POST", f"/api/v1/tasks/{job_id}/{action}",
                                          token=TOKEN)
        cancelled, retried = replies["P1"], replies["F1"]
        assert cancelled.status == 200, cancelled
        assert (cancelled.json()["state"], cancelled.json()["error"]["type"]) == (
            "failed", "cancelled")
        assert (retried.status, retried.json()["state"]) == (200, "pending"), retried
        assert orjson.loads((root / "failed" / "P1.json").read_bytes())["error"]["type"] \
            == "cancelled"
        assert (root / "pending" / "F1.json").is_file()
        assert not (root / "failed" / "F1.json").exists()
        for job_id, state in (("P1", "failed"), ("F1", "pending")):
            got = request(base, "GET", f"/api/v1/tasks/{job_id}")
            assert (got.status, got.json()["state"]) == (200, state), got
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
    assert "job P1 cancelled, but then" in text, text[-3000:]
    assert "job F1 retried, but then" in text, text[-3000:]


def test_a_cancel_cut_short_before_its_record_is_unavailable_with_the_reason(
        spool: Spool, tmp_path: Path) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "P2")
    log: list[str] = []
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN, SPOOL_FSYNC="always",
                        SPOOL_SCAN_S="600") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        # The job's take into stage/ (before any record) syncs that folder first.
        with failing(strace, proc.pid, [root / "stage"], ["fsync"], tmp_path / "strace.err"):
            reply = request(base, "POST", "/api/v1/tasks/P2/cancel", token=TOKEN)
        assert reply.status == 503, reply
        error = reply.json()["error"]
        assert error["type"] == "unavailable", error
        assert error["message"] == "cannot sync stage/: Input/output error", error
        assert not (root / "failed" / "P2.json").exists()
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
