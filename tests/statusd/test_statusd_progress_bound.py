"""A progress file written by hand (anyone who can write to ``progress/``) is served as
the processor's are: its message cut to PROGRESS_MESSAGE_CHARS, and a file past
MAX_PROGRESS_BYTES taken for no report.  A real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orjson
from statusdkit import ServerThread, claim, report, request, submit, wait_for

from spool.models import MAX_PROGRESS_BYTES, PROGRESS_MESSAGE_CHARS
from spool.transitions import Spool


def _running(server: ServerThread, job_id: str) -> dict[str, Any]:
    tasks = request(server.base, "GET", "/api/v1/tasks?state=running").json()["tasks"]
    return next((t for t in tasks if t["id"] == job_id), {})


def _write_progress(spool: Spool, job_id: str, fields: dict[str, Any]) -> None:
    spool.mover.publish(spool.layout.progress_file(job_id), orjson.dumps(fields),
                        durable=False)


@contextlib.contextmanager
def _running_with_a_report(server: ServerThread, spool: Spool, job_id: str
                           ) -> Iterator[None]:
    """``job_id`` claimed, its first report written and served; its lease closed after."""
    submit(spool, job_id, "sleep")
    run = claim(spool, job_id)
    try:
        report(spool, run, 0.25, "starting")
        wait_for(lambda: _running(server, job_id).get("progress"), what="the first report")
        yield
    finally:
        run.close()


def test_a_long_progress_message_is_served_cut(server: ServerThread, spool: Spool) -> None:
    with _running_with_a_report(server, spool, "long"):
        _write_progress(spool, "long", {"fraction": 0.5, "message": "M" * 20_000})

        def cut() -> bool:
            progress = _running(server, "long").get("progress") or {}
            return progress.get("fraction") == 0.5
        wait_for(cut, what="the hand-written report")
        progress = _running(server, "long")["progress"]
        assert progress["message"] == "M" * PROGRESS_MESSAGE_CHARS
        one = request(server.base, "GET", "/api/v1/tasks/long")
        assert len(one.body) < 64 << 10, "the job's view carried the whole message"
        assert one.json()["progress"]["message"] == "M" * PROGRESS_MESSAGE_CHARS


def test_a_progress_file_past_the_bound_is_no_report(server: ServerThread,
                                                     spool: Spool) -> None:
    with _running_with_a_report(server, spool, "big"):
        padding = "x" * MAX_PROGRESS_BYTES
        _write_progress(spool, "big", {"fraction": 0.75, "message": "ok", "padding": padding})
        # The report that replaced the first is past the bound: no progress, no 64 KiB read.
        wait_for(lambda: not _running(server, "big").get("progress"),
                 what="the oversized report taken for none")
        assert request(server.base, "GET", "/api/v1/tasks/big").json().get("progress") is None


def test_a_report_published_in_the_tick_of_the_one_before_is_read(
        server: ServerThread, spool: Spool) -> None:
    """statusd told reports apart by their mtime alone, which moves by the kernel's tick:
    a report published within the tick of the one before was never read (failed once in
    a full run).  This one is renamed over the first with the first's times."""
    with _running_with_a_report(server, spool, "tick"):
        path = spool.layout.progress_file("tick")
        first = os.stat(path)
        staged = path.with_name(".next-report")
        staged.write_bytes(orjson.dumps({"fraction": 0.5, "message": "the same tick"}))
        os.utime(staged, ns=(first.st_atime_ns, first.st_mtime_ns))
        os.rename(staged, path)

        def read() -> bool:
            progress = _running(server, "tick").get("progress") or {}
            return progress.get("message") == "the same tick"
        wait_for(read, what="the report of the same tick")
