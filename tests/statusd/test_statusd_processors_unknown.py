"""statusd when it cannot read the processors' state: 503 naming why, never ``alive: false``.

The real ``python -m statusd`` beside a live processor (a held owner lock and a fresh
status file); strace, attached to it, fails the opens of one path of that state, then
detaches.  ``processor.alive`` is a bool and monitoring acts on it, so while statusd
cannot tell it answers ``GET /api/v1/stats`` 503 ``unavailable`` with the cause (the
path's role and the errno's text, no traceback), and /metrics answers 200 with the
counts, without the processor gauges, and ``spoolq_statusd_processors_ok 0``.

Before: an ``owners/`` statusd may not list (EACCES) answered 500 with a traceback in
the log; a status file or owner lock it may not open (EACCES) left the live processor
out (``alive: false``, ``spoolq_processor_up 0``); and a statusd started while the disk
failed every folder served the processors of its last look that went through: none
(``alive: false``, for as long as the outage lasted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from statusd_daemonkit import failing, statusd_daemon, strace_or_skip
from statusdkit import FakeOwner, request, submit, wait_for

from spool.transitions import Spool

OWNER = "proc-test"  # FakeOwner's


def _gauges(base: str) -> dict[str, float]:
    """/metrics (answered 200) as ``{name{labels}: value}``."""
    reply = request(base, "GET", "/metrics")
    assert reply.status == 200, (reply.status, reply.body)
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in reply.body.decode().splitlines() if not line.startswith("#")}


def _alive(base: str) -> Any:
    reply = request(base, "GET", "/api/v1/stats")
    assert reply.status == 200, (reply.status, reply.body)
    partial = request(base, "GET", "/api/v1/stats?partial=1")
    assert partial.status == 200, (partial.status, partial.body)
    known = orjson.loads(partial.body)
    assert "processors_unknown" not in known, known  # known: the whole document
    alive = orjson.loads(reply.body)["processor"]["alive"]
    assert known["processor"]["alive"] == alive, known
    return alive


def _check_unknown(base: str, said: str, text: str) -> None:
    """What statusd answers while the processors' state cannot be read."""
    reply = request(base, "GET", "/api/v1/stats")
    assert reply.status == 503, (reply.status, reply.body)
    error = orjson.loads(reply.body)["error"]
    assert error["type"] == "processors_unknown", error
    assert said in error["message"] and text in error["message"], error
    assert "Traceback" not in error["message"], error
    tools = request(base, "GET", "/api/v1/tools")  # never a made-up "none offered"
    assert tools.status == 503 and orjson.loads(tools.body)["error"] == error, tools.body
    # partial=1 (the dashboard's ask): the spool's figures all the same, and the cause
    partial = request(base, "GET", "/api/v1/stats?partial=1")
    assert partial.status == 200, (partial.status, partial.body)
    doc = orjson.loads(partial.body)
    assert doc["counts"]["pending"] == 1 and doc["total"] == 1, doc
    assert said in doc["processors_unknown"] and text in doc["processors_unknown"], doc
    for unknown in ("processor", "processors", "job_num", "busy_workers", "fast_running"):
        assert unknown not in doc, doc  # left out: never a made-up alive: false
    gauges = _gauges(base)
    assert gauges["spoolq_statusd_processors_ok"] == 0, gauges
    assert gauges['spoolq_jobs{state="pending"}'] == 1, gauges  # the counts are known
    for unknown in ("spoolq_processor_up", "spoolq_processors", "spoolq_busy_workers",
                    "spoolq_job_num", "spoolq_processor_io_trouble"):
        assert unknown not in gauges, gauges  # left out: never a made-up 0


@pytest.mark.parametrize("case", [
    ("owners", "EACCES", "cannot list owners/", "Permission denied"),
    ("owners", "EIO", "cannot list owners/", "Input/output error"),
    ("status", "EACCES", f"cannot read processor {OWNER}'s status file", "Permission denied"),
    ("status", "EIO", f"cannot read processor {OWNER}'s status file", "Input/output error"),
    ("lock", "EACCES", f"cannot test processor {OWNER}'s owner lock", "Permission denied"),
])
def test_processors_statusd_cannot_read_are_unknown_not_down(
        spool: Spool, tmp_path: Path, case: tuple[str, str, str, str]) -> None:
    """``case``: what fails, its errno, and what the answer says of it."""
    target, error, said, text = case
    strace = strace_or_skip()
    layout = spool.layout
    path = {"owners": layout.owners, "status": layout.owner_status(OWNER),
            "lock": layout.owner_lock(OWNER)}[target]
    submit(spool, "j")
    owner = FakeOwner(spool)
    log: list[str] = []
    try:
        with statusd_daemon(layout.root, log=log) as (port, proc):
            base = f"http://127.0.0.1:{port}"
            assert _alive(base) is True
            with failing(strace, proc.pid, [path], ["openat"], tmp_path / "strace.err",
                         error=error):
                _check_unknown(base, said, text)
                _check_unknown(base, said, text)  # a dashboard's next poll: said again
            assert _alive(base) is True  # and known again once it reads
            gauges = _gauges(base)
            assert (gauges["spoolq_statusd_processors_ok"], gauges["spoolq_processor_up"]) \
                == (1, 1), gauges
    finally:
        owner.close()
    logged = "".join(log)
    assert "Traceback" not in logged, logged[-3000:]
    assert logged.count(said) == 1, logged[-3000:]  # once a run, not at each ask
    assert "the processors' state can be read again" in logged, logged[-3000:]


def test_a_statusd_whose_disk_fails_before_its_first_look_does_not_say_no_processor(
        spool: Spool, tmp_path: Path) -> None:
    """statusd starts, then the disk fails every folder's open (EIO) before anything has
    asked for the stats, a processor live: it said ``alive: false``, the processors of a
    last look it never had, for as long as the outage lasted."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    folders = [root / name for name in ("pending", "running", "done", "failed", "owners")]
    owner = FakeOwner(spool)
    log: list[str] = []
    try:
        with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, proc):
            base = f"http://127.0.0.1:{port}"
            with failing(strace, proc.pid, folders, ["openat"], tmp_path / "strace.err"):
                wait_for(lambda: request(base, "GET", "/healthz").status == 503, 20,
                         "the spool said unreadable")
                _check_unknown(base, "cannot list owners/", "Input/output error")
                assert _gauges(base)["spoolq_statusd_spool_ok"] == 0
            assert _alive(base) is True
    finally:
        owner.close()
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def test_a_spool_moved_away_under_a_live_processor_is_unknown_not_down(
        spool: Spool, tmp_path: Path) -> None:
    """The spool renamed away (or unmounted) while its processor runs on: there is no
    ``owners/`` to list, which read as no processor, ``spoolq_processor_up 0`` (QA)."""
    root = spool.layout.root
    away = root.with_name(root.name + ".away")
    submit(spool, "j")
    owner = FakeOwner(spool)
    log: list[str] = []
    try:
        with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, _):
            base = f"http://127.0.0.1:{port}"
            assert _alive(base) is True
            root.rename(away)
            try:
                wait_for(lambda: request(base, "GET", "/healthz").status == 503, 20,
                         "the spool said missing")
                _check_unknown(base, "cannot tell whether a processor is alive",
                               f"{root / 'owners'} is gone")
            finally:
                away.rename(root)
            wait_for(lambda: request(base, "GET", "/healthz").status == 200, 20,
                     "the spool back")
            assert _alive(base) is True
    finally:
        owner.close()
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]
