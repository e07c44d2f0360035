"""Ids between two folders, and ids that leave the spool.

A cancel of a pending job, a retry and a quarantine move the job file into
``tmp/`` first and publish its next file after a write and its fsync: for that
long the id is in no state folder.  statusd must go on showing the job as it
was (listed, counted, found) and report the move as a transition from the
state it left.  An id that is gone and not in ``tmp/`` (a purge, a drop withdrawn
with ``rm``) leaves the list at once and ends the task streams that watch it,
instead of leaving them open for good.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from statusdkit import (
    TOKEN,
    ServerThread,
    claim,
    finish,
    request,
    run_job,
    settings_for,
    submit,
    wait_for,
)

from spool.errors import ErrorType, SpoolIOError
from spool.models import Record
from spool.states import JobState
from spool.transitions import Spool
from statusd.items import Item, Stamp
from statusd.loader import Absent, Loader

HOLD_S = 10.0
"""The longest the test waits for statusd to see a held job leave its folder (its
tracker's ``moving``); it kept the job in tmp/ a fixed 1 s for that before."""


@pytest.fixture
def patient(spool: Spool) -> Iterator[ServerThread]:
    """statusd that shows a missing id as it was for 30 s, so a stalled host cannot
    turn the test's hold into a removal."""
    srv = ServerThread(settings_for(spool.layout.root)).start()
    srv.in_loop(lambda: setattr(srv.services.tracker.applier, "vanish_grace_s", 30.0))
    try:
        yield srv
    finally:
        srv.stop()


class _Held:
    """Runs ``action`` in a thread with one of its writes held up until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, write: Callable[..., Any], when: Callable[..., bool]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            if when(*args, **kwargs):
                self.reached.set()
                self.release.wait(30)
            return write(*args, **kwargs)
        return held

    def run(self, action: Callable[[], Any]) -> threading.Thread:
        thread = threading.Thread(target=action, name="held-action")
        thread.start()
        assert self.reached.wait(10), "the held write was never reached"
        return thread


def _listed(server: ServerThread, job_id: str) -> str | None:
    tasks = request(server.base, "GET", "/api/v1/tasks").json()["tasks"]
    return next((t["state"] for t in tasks if t["id"] == job_id), None)


async def _transition(ws: aiohttp.ClientWebSocketResponse, job_id: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = msg.json()
        if data["id"] == job_id and data["event"] == "transition":
            return data


def _while_held(server: ServerThread, held: _Held, action: Callable[[], Any],
                job_id: str, state: str) -> dict[str, Any]:
    """Start ``action``, check the job while its write is held, release it; the
    transition the events stream then reports."""

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/events") as ws:
            thread = held.run(action)
            try:
                # Seen gone from its folder, and shown as it was (not merely not seen yet).
                wait_for(lambda: server.in_loop(lambda: server.services.tracker.moving(job_id)),
                         HOLD_S, f"statusd to see {job_id} leave {state}/")
                assert _listed(server, job_id) == state, "the job left the list"
                stats = request(server.base, "GET", "/api/v1/stats").json()
                assert stats["counts"][state] == 1, stats["counts"]
                one = request(server.base, "GET", f"/api/v1/tasks/{job_id}")
                assert (one.status, one.json()["state"]) == (200, state)
            finally:
                held.release.set()
                thread.join(30)
            return await _transition(ws, job_id)

    return asyncio.run(scenario())


def test_a_cancel_in_progress_keeps_the_job_and_reports_where_it_came_from(
        patient: ServerThread, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "to-cancel")
    wait_for(lambda: _listed(patient, "to-cancel") == "pending", what="job listed")
    held = _Held()
    monkeypatch.setattr(spool, "publish_terminal",
                        held.wrap(spool.publish_terminal, lambda record, **_: True))
    event = _while_held(patient, held, lambda: spool.cancel_pending("to-cancel"),
                        "to-cancel", "pending")
    assert (event["state"], event["previous"]) == ("failed", "pending")
    assert event["record"]["error"]["type"] == "cancelled"


def test_a_retry_in_progress_keeps_the_job_and_reports_where_it_came_from(
        patient: ServerThread, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submit(spool, "to-retry")
    finish(spool, claim(spool, "to-retry"), error=(ErrorType.TOOL_ERROR, "flaky"))
    wait_for(lambda: _listed(patient, "to-retry") == "failed", what="failure listed")
    held = _Held()
    pending = spool.layout.folder(JobState.PENDING)
    monkeypatch.setattr(spool.mover, "publish", held.wrap(
        spool.mover.publish, lambda path, *_, **__: Path(path).parent == pending))
    retried: list[Record] = []
    event = _while_held(patient, held, lambda: retried.append(spool.retry("to-retry")),
                        "to-retry", "failed")
    assert retried and retried[0].state is JobState.PENDING
    assert (event["state"], event["previous"]) == ("pending", "failed")


def test_a_quarantine_in_progress_keeps_the_job(patient: ServerThread, spool: Spool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Between its move to ``failed/<id>.orig`` and its record, a quarantined drop is in
    no state folder and not in ``tmp/``: the original beside the record-to-be says it
    is moving, not removed."""
    drop = spool.layout.job(JobState.PENDING, "bad-drop")
    drop.write_bytes(b"{not json")
    wait_for(lambda: _listed(patient, "bad-drop") == "pending", what="drop listed")
    held = _Held()
    monkeypatch.setattr(spool, "publish_terminal",
                        held.wrap(spool.publish_terminal, lambda record, **_: True))
    st = drop.stat()

    def quarantine() -> None:
        spool.quarantine("bad-drop.json", "malformed JSON", kind="file", size=st.st_size,
                         mtime_ns=st.st_mtime_ns, inode=(st.st_ino, st.st_dev))

    event = _while_held(patient, held, quarantine, "bad-drop", "pending")
    assert (event["state"], event["previous"]) == ("failed", "pending")
    assert event["record"]["error"]["type"] == "invalid_job"


def test_a_task_stream_ends_when_its_job_leaves_the_spool(server: ServerThread,
                                                          spool: Spool) -> None:
    """A drop withdrawn before it ran (``rm pending/<id>.json``): its watchers are
    told the task is gone (1008, as for an id removed during the handshake) instead of
    waiting for good; the task is then unknown."""
    submit(spool, "withdrawn")
    wait_for(lambda: _listed(server, "withdrawn") == "pending", what="job listed")

    async def scenario() -> tuple[str, int | None]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/tasks/withdrawn") as ws:
            first = await ws.receive(timeout=10)
            spool.layout.job(JobState.PENDING, "withdrawn").unlink()
            closing = await ws.receive(timeout=15)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
            return first.json()["event"], ws.close_code

    assert asyncio.run(scenario()) == ("snapshot", 1008)
    assert request(server.base, "GET", "/api/v1/tasks/withdrawn").status == 404
    assert _listed(server, "withdrawn") is None


def test_a_purged_large_record_is_not_found_while_statusd_still_shows_it(
        patient: ServerThread, spool: Spool) -> None:
    """A record over 32 KiB is streamed from its file: once purged, a GET in the
    grace is a 404 (not the 503 'being replaced, try again' of a record in flux)."""
    submit(spool, "big")
    finish(spool, claim(spool, "big"), {"blob": "x" * 100_000})
    wait_for(lambda: _listed(patient, "big") == "done", what="record listed")
    assert len(request(patient.base, "GET", "/api/v1/tasks/big").body) > 100_000
    spool.layout.job(JobState.DONE, "big").unlink()
    reply = request(patient.base, "GET", "/api/v1/tasks/big")
    assert reply.status == 404, reply
    assert reply.json()["error"]["type"] == "not_found"


def test_a_cancel_or_retry_of_a_job_just_purged_is_not_found(patient: ServerThread,
                                                             spool: Spool) -> None:
    """Still shown for the grace, but gone from disk: a write to it is a 404 (it was
    a 409 saying only failed tasks can be retried, for the cancel of a failed task)."""
    submit(spool, "purged")
    finish(spool, claim(spool, "purged"), error=(ErrorType.TOOL_ERROR, "broke"))
    wait_for(lambda: _listed(patient, "purged") == "failed", what="failure listed")
    spool.layout.job(JobState.FAILED, "purged").unlink()
    for action in ("retry", "cancel"):
        reply = request(patient.base, "POST", f"/api/v1/tasks/purged/{action}",
                        token=TOKEN)
        assert (reply.status, reply.json()["error"]["type"]) == (404, "not_found"), \
            (action, reply.body)
    submit(spool, "ran")
    finish(spool, claim(spool, "ran"), {"ok": True})
    wait_for(lambda: _listed(patient, "ran") == "done", what="record listed")
    reply = request(patient.base, "POST", "/api/v1/tasks/ran/retry", token=TOKEN)
    assert reply.status == 409 and "only failed jobs" in reply.json()["error"]["message"]


def test_a_purged_or_withdrawn_job_leaves_the_list_at_once(patient: ServerThread,
                                                           spool: Spool) -> None:
    """A file removed for good is not in ``tmp/``: no move will bring it back, so the
    job goes from the list, the counts and its streams at once (it stayed listed for
    the whole grace, 2 s by default; 30 s here)."""
    run_job(spool, "purged", {"ok": True})
    submit(spool, "withdrawn")
    wait_for(lambda: _listed(patient, "purged") == "done", what="record listed")
    wait_for(lambda: _listed(patient, "withdrawn") == "pending", what="job listed")
    spool.layout.job(JobState.DONE, "purged").unlink()
    spool.layout.job(JobState.PENDING, "withdrawn").unlink()
    wait_for(lambda: _listed(patient, "purged") is None and
             _listed(patient, "withdrawn") is None, timeout=5.0, what="both unlisted")
    counts = request(patient.base, "GET", "/api/v1/stats").json()["counts"]
    assert counts == {"pending": 0, "running": 0, "done": 0, "failed": 0}


def test_a_large_record_in_a_retry_in_progress_is_not_called_not_found(
        patient: ServerThread, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record over 32 KiB is not kept in the index; a retry or a cancel holds its file
    in tmp/ for a moment, and a GET then answered 404 (191 of 2,710 GETs while a failed
    job with a 100 KB error was retried and cancelled 200 times), though the job was
    listed and counted.  It is a 503 'try again' now, as for a large record being
    replaced."""
    submit(spool, "big-retry")
    finish(spool, claim(spool, "big-retry"), error=(ErrorType.TOOL_ERROR, "x" * 100_000))
    wait_for(lambda: _listed(patient, "big-retry") == "failed", what="failure listed")
    held = _Held()
    pending = spool.layout.folder(JobState.PENDING)
    monkeypatch.setattr(spool.mover, "publish", held.wrap(
        spool.mover.publish, lambda path, *_, **__: Path(path).parent == pending))
    thread = held.run(lambda: spool.retry("big-retry"))
    try:
        reply = request(patient.base, "GET", "/api/v1/tasks/big-retry")
        assert reply.status == 503, reply
        assert reply.headers["retry-after"] == "1"
        assert _listed(patient, "big-retry") == "failed"
    finally:
        held.release.set()
        thread.join(30)
    wait_for(lambda: _listed(patient, "big-retry") == "pending", what="the retry listed")
    # The pending job carries the error it is retried from: as large, and held in tmp/
    # by a cancel the same way.
    cancel = _Held()
    monkeypatch.setattr(spool, "publish_terminal",
                        cancel.wrap(spool.publish_terminal, lambda record, **_: True))
    thread = cancel.run(lambda: spool.cancel_pending("big-retry"))
    try:
        assert request(patient.base, "GET", "/api/v1/tasks/big-retry").status == 503
        assert _listed(patient, "big-retry") == "pending"
    finally:
        cancel.release.set()
        thread.join(30)


def test_a_large_job_that_moves_between_the_check_and_the_read_is_not_called_not_found(
        patient: ServerThread, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large pending job is read from its file after the GET found the index current: a
    cancel taking it into tmp/ between the two made the GET answer 404 (25 of 1,603 GETs
    while such a job was retried and cancelled 100 times).  The id is refreshed before a
    404 is said: it is moving, so 503 'try again'."""
    submit(spool, "big-pending", params={"message": "x" * 100_000})
    wait_for(lambda: _listed(patient, "big-pending") == "pending", what="job listed")
    held = _Held()
    monkeypatch.setattr(spool, "publish_terminal",
                        held.wrap(spool.publish_terminal, lambda record, **_: True))
    loader = patient.services.tracker.loader
    threads: list[threading.Thread] = []

    def full_body(job_id: str) -> bytes | None:  # the cancel comes first, then the read
        if not threads:
            threads.append(held.run(lambda: spool.cancel_pending("big-pending")))
        return type(loader).full_body(loader, job_id)

    monkeypatch.setattr(loader, "full_body", full_body)
    try:
        reply = request(patient.base, "GET", "/api/v1/tasks/big-pending")
        assert reply.status == 503, reply
        assert _listed(patient, "big-pending") == "pending"
    finally:
        held.release.set()
        for thread in threads:
            thread.join(30)


def test_a_job_moved_twice_while_it_is_looked_for_is_moving_not_gone(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Loader._absent`` looks for an id in no state folder in ``tmp/`` and then once more
    in the folders: a retry ending and a cancel starting in between (the file in pending/
    at the listing, in tmp/ again at the second look) made a job that never left the spool
    'gone': dropped from the list, its task streams ended (1 in 200 retry-and-cancel
    rounds with a probe on a real spool-statusd).  A second listing of tmp/ finds it."""
    submit(spool, "chased")
    finish(spool, claim(spool, "chased"), error=(ErrorType.TOOL_ERROR, "flaky"))
    loader = Loader(spool.layout)
    known = loader.scan()
    failed = spool.layout.job(JobState.FAILED, "chased")
    pending = spool.layout.job(JobState.PENDING, "chased")
    retrying = spool.layout.staging("retry-chased")
    cancelling = spool.layout.staging("cancel-chased")
    os.rename(failed, retrying)  # a retry holds it: in no state folder
    staged_ids, current = loader._staged_ids, loader.current
    looks: list[str] = []

    def listing() -> set[str] | None:
        if not looks:
            os.rename(retrying, pending)  # the retry ends before tmp/ is listed
        looks.append("tmp")
        return staged_ids()

    def look(job_id: str) -> Stamp | None:
        if looks == ["tmp"]:
            os.rename(pending, cancelling)  # a cancel takes it before the second look
        looks.append("folders")
        return current(job_id)

    monkeypatch.setattr(loader, "_staged_ids", listing)
    monkeypatch.setattr(loader, "current", look)
    try:
        assert loader._absent(["chased"]) == [("chased", Absent.MOVING)]
    finally:
        loader.close()
    assert known["chased"].state is JobState.FAILED


def test_an_id_whose_second_look_the_disk_fails_is_left_out_not_the_whole_batch(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id found in no state folder is looked for once more (``Loader._absent``); a
    move that ended meanwhile is found in its new folder, and read.  The disk failing that
    read (EIO: a bad sector under the record) failed the refresh of every id in the batch,
    where a failing first read leaves only that id out (``failed``)."""
    for job_id in ("removed", "landed"):
        submit(spool, job_id)
        finish(spool, claim(spool, job_id), {"ok": True})
    loader = Loader(spool.layout)
    known = loader.scan()
    record = spool.layout.job(JobState.DONE, "landed")
    away = tmp_path / "landed.json"
    os.rename(record, away)  # on a move: in no state folder at the first look
    os.unlink(spool.layout.job(JobState.DONE, "removed"))
    staged_ids, load = loader._staged_ids, loader.load

    def listing() -> set[str] | None:
        if away.exists():
            os.rename(away, record)  # the move ends before the second look
        return staged_ids()

    def bad_sector(job_id: str, stamp: Stamp) -> Item | None:
        if job_id == "landed":  # the disk fails its read
            raise SpoolIOError("cannot read landed: Input/output error") from OSError(
                errno.EIO, "Input/output error")
        return load(job_id, stamp)

    monkeypatch.setattr(loader, "_staged_ids", listing)
    monkeypatch.setattr(loader, "load", bad_sector)
    failed: dict[str, SpoolIOError] = {}
    try:
        changes = loader.refresh(["removed", "landed"], known, failed)
    finally:
        loader.close()
    assert changes == [("removed", Absent.GONE)]
    assert list(failed) == ["landed"]


def test_records_removed_one_by_one_list_tmp_once_not_twice_each(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id found in no state folder is looked for in ``tmp/`` (a move) before it is
    gone.  A purge of records one by one listed ``tmp/`` twice per record (h67: most of
    21,435 getdents64 for 10,000 removals); ``tmp/``'s names are followed by inotify
    instead, and still tell a move that begins after the first removal."""
    for n in range(20):
        submit(spool, f"r-{n}")
        finish(spool, claim(spool, f"r-{n}"), {"n": n})
    loader = Loader(spool.layout)
    known = loader.scan()
    tmp = os.fspath(spool.layout.tmp)
    listings: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def listdir(path: Any = ".") -> Any:
        listings.extend([tmp] if os.fspath(path) == tmp else [])
        return real_listdir(path)

    def scandir(path: Any = ".") -> Any:
        listings.extend([tmp] if os.fspath(path) == tmp else [])
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    try:
        for n in range(19):
            os.unlink(spool.layout.job(JobState.DONE, f"r-{n}"))
            assert loader.refresh([f"r-{n}"], known) == [(f"r-{n}", Absent.GONE)]
        os.rename(spool.layout.job(JobState.DONE, "r-19"), spool.layout.staging("retry-r-19"))
        assert loader.refresh(["r-19"], known) == [("r-19", Absent.MOVING)]
    finally:
        loader.close()
    assert len(listings) <= 1, f"{len(listings)} listings of tmp/ for 20 ids"


def test_looking_up_removed_records_builds_no_path_and_stats_their_own_file_first(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hint is looked into on the loop (Loader.unchanged), then re-read in the
    worker (Loader.current, twice for an id in no folder).  The lookups built a Path
    for every state folder (half the worker's Python time in a purge one by one, h67),
    and unchanged stat'ed the folders in order before the id's own: three lstat calls
    on the loop to learn that a done record is gone, where one tells."""
    for n in range(10):
        submit(spool, f"p-{n}")
        finish(spool, claim(spool, f"p-{n}"), {"n": n})
    loader = Loader(spool.layout)
    known = loader.scan()
    for n in range(10):
        os.unlink(spool.layout.job(JobState.DONE, f"p-{n}"))
    paths: list[str] = []
    lstats: list[str] = []
    real_job, real_lstat = type(spool.layout).job, os.lstat

    def job(layout: Any, state: JobState, job_id: str) -> Path:
        paths.append(job_id)
        return real_job(layout, state, job_id)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        lstats.append(os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(type(spool.layout), "job", job)
    monkeypatch.setattr(os, "lstat", lstat)
    try:
        assert not any(loader.unchanged(f"p-{n}", known[f"p-{n}"]) for n in range(10))
        on_the_loop = len(lstats)
        ids = [f"p-{n}" for n in range(10)]
        assert loader.refresh(ids, known) == [(i, Absent.GONE) for i in ids]
    finally:
        loader.close()
    assert on_the_loop == 10, f"{on_the_loop} lstat calls to find 10 removed records gone"
    assert paths == [], f"{len(paths)} paths built to find 10 ids in no folder"
