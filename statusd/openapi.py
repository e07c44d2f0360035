"""The OpenAPI 3.1 document of statusd, generated from the pydantic models.

Schemas come from ``model_json_schema`` (via ``models_json_schema`` with a
``#/components/schemas/{model}`` ref template), so the document cannot drift
from the models the spool validates with.  Paths are listed here by hand: one
table, next to the routes in :mod:`statusd.app`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from spool.ids import ID_PATTERN
from spool.models import Job, Record
from spool.reader import MAX_PAGE
from spool.states import JobState
from statusd.api_models import (
    ErrorResponse,
    Health,
    PartialStats,
    Stats,
    Submitted,
    TaskPage,
    ToolCatalogue,
)

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [Job, Record, TaskPage, Submitted, Health, Stats, PartialStats,
                                  ToolCatalogue, ErrorResponse]

_ID_PARAM = {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": ID_PATTERN, "maxLength": 128},
             "description": "the job id (file name without .json)"}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid id or request", 401: "missing or wrong bearer token",
            403: "writes are off (no STATUSD_TOKEN)", 404: "no such job",
            408: "the body did not arrive in time (the connection is closed)",
            409: "the job's state does not allow this", 413: "request body too large",
            415: "body is not application/json", 426: "WebSocket upgrade required",
            503: "the spool cannot be written, or the job's file read (a disk error, a "
                 "file statusd may not read); or " + INDEXING}
    return {str(c): _json(ErrorResponse, text[c]) for c in codes}


def _indexing(job_file: bool = False) -> dict[str, Any]:
    """The 503 of a route that answers from the index, while statusd loads it; with
    ``job_file``, also when the job's file cannot be read."""
    text = ("the job's file cannot be read (a disk error, a file statusd may not read); "
            "or " + INDEXING) if job_file else INDEXING
    return {"503": {**_json(ErrorResponse, text), "headers": _RETRY_AFTER}}


SCANNING = ("type indexing: statusd has just started and scans the spool (its figures "
            "come once that scan is done, before the whole index); try again after "
            "Retry-After seconds")
STATS_UNKNOWN = ("type processors_unknown: whether a processor is alive cannot be told "
                 "(owners/ or a status file not read: a disk error, a file statusd may not "
                 "read); the message names it.  Or " + SCANNING)
INDEXING = ("type indexing: statusd is loading its index at start (a request waits up to "
            "4 s for it); the message says how far it is; try again after Retry-After "
            "seconds")
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}}}
REFUSED = ("type forbidden: statusd, bound to a loopback address, answers only a Host that "
           "names one or the host of an origin in STATUSD_ALLOWED_ORIGINS; and a WebSocket "
           "handshake's Origin must be statusd's own or one named there (statusd.origins): "
           "the message says what to set")


def _refusable(responses: dict[str, Any]) -> None:
    """Add the 403 any operation may answer (:data:`REFUSED`) to ``responses``, beside a
    write's own 403 where it has one: a client generated from the document knew of
    neither refusal on the reads (h365)."""
    if "403" in responses:
        responses["403"]["description"] += "; or " + REFUSED
    else:
        responses["403"] = _json(ErrorResponse, REFUSED)


def _record_get(summary: str, op_id: str) -> dict[str, Any]:
    replaced = {**_json(ErrorResponse, "a large record replaced faster than it could be "
                        "sent, or its job's file held in tmp/ by a retry or a cancel; try "
                        "again after Retry-After seconds.  Without Retry-After: its job's "
                        "file cannot be read (a disk error, a file statusd may not read). "
                        "Or " + INDEXING),
                "headers": _RETRY_AFTER}
    return {"get": {"summary": summary, "operationId": op_id, "parameters": [_ID_PARAM],
                    "responses": {"200": _json(Record, "the record"), **_errors(400, 404),
                                  "503": replaced}}}


def _websocket(summary: str, op_id: str, with_id: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "operationId": op_id,
        "description": "WebSocket (GET with Upgrade). Messages are JSON objects with event "
                       "(snapshot, transition, progress), id, state, and progress or record. "
                       "A record over 32 KiB comes as its list summary (no result, "
                       "result_omitted: true) with record_url, the path of the full record. "
                       "A transition too fast for statusd to see (a state held for less "
                       "than its look at the folders), which the state it then saw implies, "
                       "comes first with inferred: true and no record. "
                       "Close codes: 1000 after a task's terminal state, 1008 when the task "
                       "is not (or no longer) in the spool, 1013 for a client that fell "
                       "behind, 1001 when statusd stops; a client that answers no ping "
                       "within 10 s (its reading lags by more) is cut off without one.",
        "responses": {"101": {"description": "switching to WebSocket"},
                      **_errors(*((400, 404, 426) if with_id else (400, 426))),
                      **_indexing(with_id)},
    }
    if with_id:
        op["parameters"] = [_ID_PARAM]
    else:
        op["parameters"] = [{"name": "progress", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["0", "1"]},
                             "description": "1: also send progress events"},
                            {"name": "view", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["full", "brief"],
                                        "default": "full"},
                             "description": "brief: each record as its row of GET "
                                            "/api/v1/tasks?view=brief (a record over 4 KiB "
                                            "without params, meta and result, and with "
                                            "record_url)"}]
    return {"get": op}


def _write(summary: str, op_id: str, ok: dict[str, Any], codes: tuple[int, ...],
           body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": op_id,
                          "security": [{"bearer": []}],
                          "responses": {**ok, **_errors(*codes)}}
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(Job)}}}
        op["parameters"] = [{"name": "any_tool", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["0", "1"],
                                        "default": "0"},
                             "description": "1: submit a job whose tool the running "
                                            "processors do not offer (it fails "
                                            "unknown_tool unless a processor that offers "
                                            "it claims it), or params that tool's "
                                            "catalogue entry says it lacks or does not "
                                            "take; without it such a job is refused, "
                                            "400 unknown_tool or invalid_params"}]
    else:
        op["parameters"] = [_ID_PARAM]
    return {"post": op}


def _list_op() -> dict[str, Any]:
    params = [
        {"name": "state", "in": "query", "required": False,
         "schema": {"type": "string", "enum": [s.value for s in JobState]}},
        {"name": "tool", "in": "query", "required": False,
         "schema": {"type": "string", "maxLength": 128}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "view", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["full", "brief"], "default": "full"},
         "description": "brief: rows of records over 4 KiB leave out params, meta, "
                        "result and earlier_errors (params_omitted, meta_omitted, "
                        "result_omitted, earlier_errors_omitted: true) and "
                        "keep of an error its type and the first 1,000 characters of its "
                        "message (error_cut: true); GET /api/v1/tasks/{id} has the record"},
    ]
    return {"summary": "list records, newest first, paginated", "operationId": "listTasks",
            "parameters": params,
            "responses": {"200": _json(TaskPage, "a page of records"), **_errors(400),
                          **_indexing()}}


def _stats_op() -> dict[str, Any]:
    partial = {"name": "partial", "in": "query", "required": False,
               "schema": {"type": "string", "enum": ["0", "1"], "default": "0"},
               "description": "1: while the processors' state cannot be read, 200 with "
                              "the spool's figures and processors_unknown (the cause), "
                              "without job_num, busy_workers, fast_running, processor and "
                              "processors, instead of the 503"}
    ok = {"description": "spool statistics; with partial=1, PartialStats while the "
                         "processors' state cannot be read",
          "content": {"application/json": {"schema": {
              "anyOf": [_ref(Stats), _ref(PartialStats)]}}}}
    return {"summary": "counts, ages, processor liveness", "operationId": "stats",
            "parameters": [partial],
            "responses": {"200": ok,
                          "503": {**_json(ErrorResponse, STATS_UNKNOWN),
                                  "headers": _RETRY_AFTER},
                          **_errors(400)}}


def build_openapi() -> dict[str, Any]:
    """The whole document (built once per app)."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    submit_ok = {"202": _json(Submitted, "queued")}
    record_ok = {"200": _json(Record, "the record")}
    paths = {
        "/healthz": {"get": {"summary": "liveness", "operationId": "health",
                             "responses": {"200": _json(Health, "alive"), "503": _json(
                                 Health, "alive, but the spool's folders are missing "
                                 "(status spool_missing) or the disk fails to show or "
                                 "list them (spool_unreadable); the index is kept as it "
                                 "was.  Or statusd has just started and loads its index "
                                 "(status indexing; indexing says how far): lists, tasks, "
                                 "streams and writes wait for it")}}},
        "/api/v1/tasks": {
            "get": _list_op(),
            **_write("submit a job", "submitTask", submit_ok,
                     (400, 401, 403, 408, 409, 413, 415, 503), body=True),
        },
        "/api/v1/tasks/{id}": _record_get("one record", "getTask"),
        "/api/v1/backtest/tasks/{id}": _record_get("one record (legacy path)", "getBacktest"),
        "/api/v1/tasks/{id}/cancel": _write(
            "cancel a pending or running job", "cancelTask",
            {"200": _json(Record, "the record after the cancel: a pending job's failed "
                          "cancelled; a running job's once its processor has killed it "
                          "(up to 5 s), or still running when it has not (its processor "
                          "hung or gone: the request stays, and the processor that takes "
                          "the job over fails it cancelled)")},
            (400, 401, 403, 404, 409, 503)),
        "/api/v1/tasks/{id}/retry": _write("move a failed job back to pending", "retryTask",
                                           record_ok, (400, 401, 403, 404, 409, 503)),
        "/api/v1/stats": {"get": _stats_op()},
        "/api/v1/tools": {"get": {
            "summary": "the tools the live processors offer", "operationId": "tools",
            "responses": {"200": _json(ToolCatalogue, "each tool's mode, timeout, attempt "
                                       "limit and params schema"),
                          "503": {**_json(ErrorResponse, "type processors_unknown: the "
                                          "processors' status files cannot be read (a disk "
                                          "error, a file statusd may not read); the "
                                          "message names it"),
                                  "headers": _RETRY_AFTER}}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "operationId": "metrics",
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {}}}}}},
        "/api/v1/ws/tasks/{id}": _websocket("one job's live updates", "wsTask", True),
        "/api/v1/ws/backtest/{id}": _websocket("one job's live updates (legacy path)",
                                               "wsBacktest", True),
        "/api/v1/ws/events": _websocket("every transition in the spool", "wsEvents", False),
    }
    for operations in paths.values():
        for op in operations.values():
            _refusable(op["responses"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "spoolq statusd", "version": "1",
                 "description": "REST and WebSocket views of a spoolq spool."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
