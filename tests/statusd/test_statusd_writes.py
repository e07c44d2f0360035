"""HTTP writes: bearer token, submit, cancel, retry, body limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from statusdkit import (
    TOKEN,
    FakeOwner,
    ServerThread,
    claim,
    finish,
    request,
    run_job,
    settings_for,
    submit,
)

from spool.errors import ErrorType
from spool.models import EARLIER_DROPPED_MAX, EARLIER_KEPT, EARLIER_MESSAGE_CHARS
from spool.states import JobState
from spool.transitions import Spool

WRITES = [("POST", "/api/v1/tasks", {"tool": "echo"}),
          ("POST", "/api/v1/tasks/some-id/cancel", None),
          ("POST", "/api/v1/tasks/some-id/retry", None)]


@pytest.fixture
def readonly(spool: Spool) -> Iterator[ServerThread]:
    srv = ServerThread(settings_for(spool.layout.root, statusd_token="")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_are_off_without_a_token(readonly: ServerThread, method: str, path: str,
                                        body: object) -> None:
    reply = request(readonly.base, method, path, body, token="anything")
    assert reply.status == 403
    assert reply.json()["error"]["type"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer",
                                    f"Bearer {TOKEN}x"])
def test_writes_need_the_right_bearer_token(server: ServerThread, method: str, path: str,
                                            body: object, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    reply = request(server.base, method, path, body, headers=headers)
    assert reply.status == 401
    assert reply.json()["error"]["type"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_submit_queues_a_job_that_get_finds_at_once(server: ServerThread,
                                                    spool: Spool) -> None:
    reply = request(server.base, "POST", "/api/v1/tasks",
                    {"tool": "echo", "params": {"message": "hi"}, "meta": {"by": "test"},
                     "priority": 3}, token=TOKEN)
    assert reply.status == 202
    task_id = reply.json()["task_id"]
    assert reply.headers["location"] == f"/api/v1/tasks/{task_id}"
    assert spool.layout.job(JobState.PENDING, task_id).exists()
    record = request(server.base, "GET", f"/api/v1/tasks/{task_id}").json()
    assert record["state"] == "pending" and record["params"] == {"message": "hi"}
    assert record["meta"] == {"by": "test"} and record["priority"] == 3
    again = request(server.base, "POST", "/api/v1/tasks", {"tool": "echo", "id": task_id},
                    token=TOKEN)
    assert again.status == 409 and again.json()["error"]["type"] == "conflict"


def test_a_job_body_with_a_byte_order_mark_is_queued_as_a_drop_of_it_is(
        server: ServerThread, spool: Spool) -> None:
    """A UTF-8 BOM first (PowerShell 5's ``Out-File -Encoding utf8``, Notepad): intake
    runs such a drop and ``spoolq submit --file`` takes it; this answered 400 "the body
    is not JSON" (QA h381)."""
    reply = request(server.base, "POST", "/api/v1/tasks",
                    raw=b'\xef\xbb\xbf{"tool": "echo", "params": {"message": "bom"}}',
                    token=TOKEN, headers={"Content-Type": "application/json"})
    assert reply.status == 202, reply.body
    task_id = reply.json()["task_id"]
    job = orjson.loads(spool.layout.job(JobState.PENDING, task_id).read_bytes())
    assert job["params"] == {"message": "bom"}
    bare = request(server.base, "POST", "/api/v1/tasks", raw=b"\xef\xbb\xbf", token=TOKEN,
                   headers={"Content-Type": "application/json"})
    assert bare.status == 400 and bare.json()["error"]["type"] == "invalid_job"


@pytest.mark.parametrize(("content_type", "said"), [
    ("application/json", ""),
    ("application/json; charset=latin-1",
     " (a job is UTF-8 JSON, whatever the charset=latin-1 its Content-Type names)"),
])
def test_a_body_that_is_not_utf8_is_refused_naming_the_byte(
        server: ServerThread, content_type: str, said: str) -> None:
    """A latin-1 body ("café" with its one byte E9) answered "the body is not JSON: str is
    not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)", orjson's words
    naming neither the byte nor where it is; intake says of such a drop where (QA h401)."""
    reply = request(server.base, "POST", "/api/v1/tasks",
                    raw=b'{"tool": "echo", "params": {"message": "caf\xe9"}}', token=TOKEN,
                    headers={"Content-Type": content_type})
    assert reply.status == 400, reply.body
    assert reply.json()["error"] == {
        "type": "invalid_job",
        "message": f"the body is not a job: not UTF-8: invalid byte at offset 43{said}"}


def test_a_body_with_a_bom_that_is_not_utf8_names_the_bodys_offset(
        server: ServerThread) -> None:
    """The offset is the body's as sent: past its byte order mark it was 3 short (h407)."""
    reply = request(server.base, "POST", "/api/v1/tasks",
                    raw=b'\xef\xbb\xbf{"tool": "echo", "params": {"message": "caf\xe9"}}',
                    token=TOKEN, headers={"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["message"] == (
        "the body is not a job: not UTF-8: invalid byte at offset 46")
    blank = request(server.base, "POST", "/api/v1/tasks", raw=b"\xef\xbb\xbf \n",
                    token=TOKEN, headers={"Content-Type": "application/json"})
    assert blank.json()["error"]["message"] == "the body is not a job: malformed JSON: " \
        "empty body", blank.body


@pytest.mark.parametrize(("raw", "content_type", "status"), [
    (b'{"params": {}}', "application/json", 400),              # no tool
    (b'{"tool": "echo", "surprise": 1}', "application/json", 400),
    (b'{"tool": "echo", "id": "../x"}', "application/json", 400),
    (b'{"tool": "echo", "not_before": "2026-01-01T00:00:00"}', "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    # attempts already at max_attempts: failed without a run as soon as claimed
    (b'{"tool": "echo", "attempts": 2, "max_attempts": 2}', "application/json", 400),
    (b"{not json", "application/json", 400),
    (b'{"tool": "echo"}', "text/plain", 415),
])
def test_bad_jobs_are_refused(server: ServerThread, raw: bytes, content_type: str,
                              status: int) -> None:
    reply = request(server.base, "POST", "/api/v1/tasks", raw=raw, token=TOKEN,
                    headers={"Content-Type": content_type})
    assert reply.status == status, reply.body
    assert set(reply.json()["error"]) == {"type", "message"}


def pending_ids(spool: Spool) -> list[str]:
    return sorted(p.stem for p in spool.layout.folder(JobState.PENDING).iterdir())


def test_a_tool_the_live_processors_do_not_offer_is_refused(server: ServerThread,
                                                            spool: Spool) -> None:
    """As ``spoolq submit`` refuses it: the job would fail ``unknown_tool`` once claimed,
    so a 202 would be a promise the spool cannot keep.  Before, it was taken."""
    owner = FakeOwner(spool)  # a held owner lock, a status file offering echo and sleep
    try:
        typo = request(server.base, "POST", "/api/v1/tasks", {"tool": "ehco", "id": "typo"},
                       token=TOKEN)
        assert typo.status == 400, typo.body
        error = typo.json()["error"]
        assert error["type"] == "unknown_tool"
        for words in ("unknown tool 'ehco'", "did you mean 'echo'?", "(proc-test)",
                      "offers echo, sleep", "any_tool=1"):
            assert words in error["message"], (words, error["message"])
        assert pending_ids(spool) == []
        known = request(server.base, "POST", "/api/v1/tasks", {"tool": "sleep", "id": "ok"},
                        token=TOKEN)
        anyway = request(server.base, "POST", "/api/v1/tasks?any_tool=1",
                         {"tool": "NOSUCHTOOL", "id": "anyway"}, token=TOKEN)
        assert (known.status, anyway.status) == (202, 202), (known.body, anyway.body)
        bad_flag = request(server.base, "POST", "/api/v1/tasks?any_tool=yes",
                           {"tool": "NOSUCHTOOL", "id": "flag"}, token=TOKEN)
        assert bad_flag.status == 400 and bad_flag.json()["error"]["type"] == "bad_request"
        assert pending_ids(spool) == ["anyway", "ok"]
    finally:
        owner.close()
    # The processor gone (its lock released): nothing to check against, and the job
    # waits for a processor that may offer its tool.
    later = request(server.base, "POST", "/api/v1/tasks", {"tool": "ehco", "id": "later"},
                    token=TOKEN)
    assert later.status == 202, later.body
    assert pending_ids(spool) == ["anyway", "later", "ok"]



def test_params_a_tool_lacks_or_does_not_take_are_refused(server: ServerThread,
                                                         spool: Spool) -> None:
    """By the catalogue's params schema, as ``spoolq submit`` (h331): a 202 for a job
    that fails ``invalid_params`` once claimed.  Values are the tool's to judge."""
    schema = {"type": "object", "additionalProperties": False, "required": ["seconds"],
              "properties": {"seconds": {"type": "number"}}}
    owner = FakeOwner(spool, tools=[{"name": "sleep", "params_schema": schema,
                                     "params_by_name": True}])
    try:
        typo = request(server.base, "POST", "/api/v1/tasks",
                       {"tool": "sleep", "id": "typo", "params": {"secnds": 1}}, token=TOKEN)
        assert typo.status == 400, typo.body
        error = typo.json()["error"]
        assert error["type"] == "invalid_params"
        for words in ("tool 'sleep' takes no param 'secnds' (did you mean 'seconds'?) and "
                      "needs 'seconds'", "its params are seconds", "any_tool=1"):
            assert words in error["message"], (words, error["message"])
        typed = request(server.base, "POST", "/api/v1/tasks",
                        {"tool": "sleep", "id": "typed", "params": {"seconds": "x"}},
                        token=TOKEN)
        anyway = request(server.base, "POST", "/api/v1/tasks?any_tool=1",
                         {"tool": "sleep", "id": "anyway", "params": {}}, token=TOKEN)
        assert (typed.status, anyway.status) == (202, 202), (typed.body, anyway.body)
        assert pending_ids(spool) == ["anyway", "typed"]
    finally:
        owner.close()


def test_bodies_over_the_limit_answer_413(spool: Spool) -> None:
    srv = ServerThread(settings_for(spool.layout.root, statusd_max_body_bytes=4096)).start()
    try:
        big = {"tool": "echo", "params": {"message": "x" * 10_000}}
        reply = request(srv.base, "POST", "/api/v1/tasks", big, token=TOKEN)
        assert reply.status == 413
        assert reply.json()["error"]["type"] == "payload_too_large"
        chunked = request(srv.base, "POST", "/api/v1/tasks", token=TOKEN,
                          chunks=[b'{"tool": "echo", "params": {"m": "', b"y" * 9000, b'"}}'],
                          headers={"Content-Type": "application/json"})
        assert reply.status == chunked.status == 413
        assert list(spool.layout.folder(JobState.PENDING).iterdir()) == []
    finally:
        srv.stop()


def test_a_job_over_the_spools_limit_once_written_answers_413(spool: Spool) -> None:
    """Under SPOOL_MAX_JOB_BYTES as sent, over it with the id and submission time the
    file gains: refused, rather than accepted and then quarantined as too large."""
    srv = ServerThread(settings_for(spool.layout.root, max_job_bytes=256)).start()
    try:
        job = {"tool": "echo", "params": {"message": "x" * 200}}
        assert len(orjson.dumps(job)) < 256
        reply = request(srv.base, "POST", "/api/v1/tasks", job, token=TOKEN)
        assert reply.status == 413, reply.body
        assert "SPOOL_MAX_JOB_BYTES=256" in reply.json()["error"]["message"]
        assert list(spool.layout.folder(JobState.PENDING).iterdir()) == []
        small = request(srv.base, "POST", "/api/v1/tasks", {"tool": "echo"}, token=TOKEN)
        assert small.status == 202
    finally:
        srv.stop()


def test_cancel_a_pending_job(server: ServerThread, spool: Spool) -> None:
    submit(spool, "to-cancel")
    reply = request(server.base, "POST", "/api/v1/tasks/to-cancel/cancel", token=TOKEN)
    assert reply.status == 200
    record = reply.json()
    assert record["state"] == "failed" and record["error"]["type"] == "cancelled"
    assert request(server.base, "GET", "/api/v1/tasks/to-cancel").json()["state"] == "failed"
    again = request(server.base, "POST", "/api/v1/tasks/to-cancel/cancel", token=TOKEN)
    assert again.status == 409
    missing = request(server.base, "POST", "/api/v1/tasks/nobody/cancel", token=TOKEN)
    assert missing.status == 404 and missing.json()["error"]["type"] == "not_found"


def test_cancel_a_running_job_waits_for_the_processor(server: ServerThread,
                                                      spool: Spool) -> None:
    submit(spool, "long")
    running = claim(spool, "long")
    request_file = spool.layout.cancel_request("long")

    def processor_stand_in() -> None:  # acts on the cancel request as the processor does
        deadline = time.monotonic() + 10
        while not request_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        finish(spool, running, error=(ErrorType.CANCELLED, "cancelled while running"))

    helper = threading.Thread(target=processor_stand_in)
    helper.start()
    try:
        reply = request(server.base, "POST", "/api/v1/tasks/long/cancel", token=TOKEN)
    finally:
        helper.join()
    assert reply.status == 200
    assert reply.json()["state"] == "failed"
    assert reply.json()["error"]["type"] == "cancelled"


def test_retry_moves_a_failed_job_back_to_pending(server: ServerThread, spool: Spool) -> None:
    run_job(spool, "flaky", error=(ErrorType.TIMEOUT, "too slow"))
    run_job(spool, "fine", {"ok": True})
    reply = request(server.base, "POST", "/api/v1/tasks/flaky/retry", token=TOKEN)
    assert reply.status == 200
    record = reply.json()
    assert record["state"] == "pending" and record["attempts"] == 0
    assert request(server.base, "GET", "/api/v1/tasks/flaky").json()["state"] == "pending"
    done = request(server.base, "POST", "/api/v1/tasks/fine/retry", token=TOKEN)
    assert done.status == 409 and done.json()["error"]["type"] == "conflict"
    missing = request(server.base, "POST", "/api/v1/tasks/nobody/retry", token=TOKEN)
    assert missing.status == 404


def test_a_submit_forging_a_history_is_queued_within_its_bound(server: ServerThread,
                                                                 spool: Spool) -> None:
    """A POSTed job may carry an error with earlier_errors (a job file's shape): it is
    queued held to the bound a requeue keeps.  A dropped count of 2**64-1 went into the
    pending file as sent, and the processor's first requeue of the job, raising it past
    orjson's 64 bits, stopped the processor at each start."""
    forged = [{"attempt": 1, "type": "tool_error", "message": "m" * 1000}] * 50
    reply = request(server.base, "POST", "/api/v1/tasks", {
        "tool": "echo", "attempts": 1, "max_attempts": 3, "error": {
            "type": "timeout", "message": "x", "earlier_errors": forged,
            "earlier_errors_dropped": 2**64 - 1}}, token=TOKEN)
    assert reply.status == 202, reply.json()
    task_id = reply.json()["task_id"]
    job = orjson.loads(spool.layout.job(JobState.PENDING, task_id).read_bytes())
    history = job["error"]["earlier_errors"]
    assert len(history) == EARLIER_KEPT
    assert {len(e["message"]) for e in history} == {EARLIER_MESSAGE_CHARS}
    assert job["error"]["earlier_errors_dropped"] == EARLIER_DROPPED_MAX
    record = request(server.base, "GET", f"/api/v1/tasks/{task_id}").json()
    assert len(record["earlier_errors"]) == EARLIER_KEPT
    assert record["earlier_errors_dropped"] == EARLIER_DROPPED_MAX
