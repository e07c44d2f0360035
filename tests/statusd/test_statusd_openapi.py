"""The OpenAPI document, and a bounded schemathesis run against the real server.

Every operation of /api/v1/openapi.json gets generated requests (valid and
invalid, with the write token so submits really happen); no answer may be a
5xx, use an undocumented status or content type, or break its schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from statusdkit import TOKEN, ServerThread, finish, request, run_job, submit

from spool.errors import ErrorType
from spool.transitions import Spool

MAX_EXAMPLES = 25


@pytest.fixture
def live_api(server: ServerThread, spool: Spool) -> Iterator[schemathesis.BaseSchema]:
    """The served document, on a server whose spool has a job in every state."""
    run_job(spool, "done-1", {"message": "done-1"})
    run_job(spool, "failed-1", error=(ErrorType.TOOL_ERROR, "boom"))
    submit(spool, "pending-1")
    submit(spool, "running-1")
    running = spool.claim("running-1")
    assert running is not None
    try:
        yield schemathesis.openapi.from_url(f"{server.base}/api/v1/openapi.json")
    finally:
        finish(spool, running, {"message": "running-1"})


api = schemathesis.pytest.from_fixture("live_api")


@api.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_document(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )


def test_the_document_is_built_from_the_models(server: ServerThread) -> None:
    doc = request(server.base, "GET", "/api/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("Job", "Record", "TaskPage", "Stats", "ErrorResponse", "Submitted"):
        assert name in schemas, name
    page = schemas["TaskPage"]["properties"]["tasks"]
    assert page["items"] == {"$ref": "#/components/schemas/Record"}
    assert schemas["Job"]["required"] == ["tool"]
    paths = set(doc["paths"])
    assert {"/api/v1/tasks", "/api/v1/tasks/{id}", "/api/v1/backtest/tasks/{id}",
            "/api/v1/stats", "/api/v1/ws/events", "/api/v1/ws/tasks/{id}",
            "/api/v1/tasks/{id}/cancel", "/api/v1/tasks/{id}/retry", "/healthz",
            "/metrics"} <= paths


def test_every_operation_documents_the_hosts_and_origins_refusal(server: ServerThread) -> None:
    """Every route answers 403 to a Host statusd does not serve (DNS rebinding), and a
    WebSocket handshake to a foreign Origin: the document listed a 403 only for writes
    ("writes are off"), so a client generated from it knew of neither (h365)."""
    doc = request(server.base, "GET", "/api/v1/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            refused = op["responses"].get("403", {})
            assert "STATUSD_ALLOWED_ORIGINS" in refused.get("description", ""), (path, method)
    writes = doc["paths"]["/api/v1/tasks"]["post"]["responses"]["403"]["description"]
    assert writes.startswith("writes are off"), writes
    answer = request(server.base, "GET", "/api/v1/stats", headers={"Host": "evil.example"})
    assert answer.status == 403, answer
    assert answer.json()["error"]["type"] == "forbidden", answer.json()


def test_a_request_line_past_the_parsers_limit_is_answered_in_the_documents_shape(
        server: ServerThread) -> None:
    """schemathesis once sent a list query of 9,000 bytes: the server of these tests
    answered aiohttp's text/plain 400, where the daemon's runner answers JSON, so the
    generated run failed on what users never see.  The kit serves with the daemon's
    runner; this pins the answer."""
    answer = request(server.base, "GET", "/api/v1/tasks?limit=" + "9" * 9000)
    assert answer.status == 400, answer
    assert answer.json()["error"]["type"] == "bad_request", answer.json()
