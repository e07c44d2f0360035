"""WebSockets: snapshots, transitions and progress as they happen, dropped stalled
clients, heartbeats and a clean close on shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import pytest
from statusdkit import (
    ServerThread,
    claim,
    finish,
    report,
    request,
    run_job,
    settings_for,
    stalled_ws_client,
    submit,
    wait_for,
)

from spool.feed import inotify_c
from spool.models import Job
from spool.states import JobState
from spool.transitions import Spool
from statusd import ws as ws_module
from statusd.hub import Hub, Message
from statusd.index import Index
from statusd.loader import Loader
from statusd.metrics import Metrics
from statusd.tracker import Tracker


async def _next(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = msg.json()
    return data


@pytest.mark.parametrize("prefix", ["/api/v1/ws/tasks", "/api/v1/ws/backtest"])
def test_task_stream_snapshot_progress_transitions_then_close(
        server: ServerThread, spool: Spool, prefix: str) -> None:
    submit(spool, "job-1")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}{prefix}/job-1") as ws:
            snap = await _next(ws)
            assert snap["event"] == "snapshot" and snap["id"] == "job-1"
            assert snap["state"] == "pending" and snap["record"]["tool"] == "echo"
            running = claim(spool, "job-1")
            moved = await _next(ws)
            assert (moved["event"], moved["state"], moved["previous"]) == \
                ("transition", "running", "pending")
            report(spool, running, 0.5, "half way")
            progress = await _next(ws)
            assert progress["event"] == "progress" and progress["state"] == "running"
            assert progress["progress"] == {"fraction": 0.5, "message": "half way"}
            finish(spool, running, {"message": "job-1"})
            done = await _next(ws)
            assert (done["event"], done["state"]) == ("transition", "done")
            assert done["record"]["result"] == {"message": "job-1"}
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1000

    asyncio.run(scenario())


def test_a_finished_task_gets_its_snapshot_and_a_close(server: ServerThread,
                                                       spool: Spool) -> None:
    run_job(spool, "over", {"message": "over"})

    # The index's own state, not a GET's: a GET made while the index applies a batch
    # reads the record from disk, and the stream then starts from the index (running)
    # with the move to done as a transition (a CI run did so).
    wait_for(lambda: server.indexed_state("over") is JobState.DONE,
             what="statusd's index to hold the job done")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/tasks/over") as ws:
            snap = await _next(ws)
            assert (snap["event"], snap["state"]) == ("snapshot", "done")
            assert snap["record"]["result"] == {"message": "over"}
            await ws.receive(timeout=5)
            assert ws.close_code == 1000

    asyncio.run(scenario())


def test_task_stream_refuses_unknown_and_invalid_ids(server: ServerThread) -> None:
    async def status_of(path: str) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"{server.base}{path}"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(status_of("/api/v1/ws/tasks/nobody")) == 404
    assert asyncio.run(status_of("/api/v1/ws/tasks/..%2fetc")) == 400
    plain = request(server.base, "GET", "/api/v1/ws/events")
    assert plain.status == 426 and plain.json()["error"]["type"] == "upgrade_required"


def test_a_run_cut_short_and_claimed_again_unseen_is_told(server: ServerThread,
                                                          spool: Spool) -> None:
    """A running job requeued (its processor's stop) and claimed again before statusd
    looks: its task stream is told of the new run (a ``running`` transition), not left on
    the old one's start and progress with no word (announce's ``reclaimed``; unguarded
    until h339's mutation audit).  Should statusd see the pending file in between, the
    transitions through it say the same."""
    submit(spool, "again")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/tasks/again") as ws:
            assert (await _next(ws))["state"] == "pending"
            first = claim(spool, "again")
            assert (await _next(ws))["state"] == "running"
            report(spool, first, 0.4, "first run")
            assert (await _next(ws))["event"] == "progress"
            assert spool.requeue(first, Job.model_validate_json(first.data))
            second = claim(spool, "again")
            try:
                told = await _next(ws)
                if told["state"] == "pending":  # seen in between: the ordinary path
                    told = await _next(ws)
                # Not a bare progress event (the new run's empty progress) alone.
                assert (told["event"], told["state"]) == ("transition", "running"), told
            except BaseException:
                second.close()  # its lock is no leaked descriptor
                raise
            finish(spool, second, {"ok": 1})
            assert (await _next(ws))["state"] == "done"

    asyncio.run(scenario())


def test_events_stream_sends_every_transition(server: ServerThread, spool: Spool) -> None:
    async def scenario() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/events") as ws:
            for n in range(3):
                job_id = f"ev-{n}"
                submit(spool, job_id)
                seen.append(_pair(await _next(ws)))
                running = claim(spool, job_id)
                seen.append(_pair(await _next(ws)))
                report(spool, running, 0.5, "not sent without ?progress=1")
                finish(spool, running, {"n": n})
                seen.append(_pair(await _next(ws)))
        return seen

    expected = [(f"ev-{n}", s) for n in range(3) for s in ("pending", "running", "done")]
    assert asyncio.run(scenario()) == expected


def test_transitions_too_fast_to_see_are_told_inferred(server: ServerThread,
                                                       spool: Spool) -> None:
    """Jobs dropped, claimed and finished faster than statusd looks at the folders: each
    still comes out as pending, running, done, in order, each event's ``previous`` the
    state before; a move statusd did not see carries ``"inferred": true`` and no record,
    one it saw its record.  (17 of 30 such echo jobs went from nothing to running, and
    one from pending to done, before.)  A pending job cancelled goes to failed without
    a run in between."""
    jobs = [f"fast-{n:02d}" for n in range(30)]

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        seen: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in [*jobs, "gone"]}
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/events") as ws:
            for job_id in jobs:
                submit(spool, job_id)
                finish(spool, claim(spool, job_id), {"ok": True})
            submit(spool, "gone")
            spool.cancel_pending("gone")
            while any(not events or events[-1]["state"] not in ("done", "failed")
                      for events in seen.values()):
                msg = await _next(ws)
                seen[msg["id"]].append(msg)
        return seen

    seen = asyncio.run(scenario())
    for job_id in jobs:
        states = [(m["previous"], m["state"]) for m in seen[job_id]]
        assert states == [(None, "pending"), ("pending", "running"), ("running", "done")], \
            (job_id, states)
        for msg in seen[job_id]:
            assert ("record" in msg) is not msg.get("inferred", False), msg
    assert [(m["previous"], m["state"]) for m in seen["gone"]] == [
        (None, "pending"), ("pending", "failed")]


def _pair(msg: dict[str, Any]) -> tuple[str, str]:
    assert msg["event"] == "transition" and msg["record"]["id"] == msg["id"]
    return msg["id"], msg["state"]


def test_a_stalled_client_is_dropped_and_never_slows_the_others(spool: Spool) -> None:
    srv = ServerThread(settings_for(spool.layout.root), queue_max=128).start()
    stalled = stalled_ws_client(srv.port, "/api/v1/ws/events")
    jobs = 500
    try:
        wait_for(lambda: srv.ws_clients() == 1)

        def produce() -> None:  # 16 KiB a message, 8 MiB in all: more than every buffer
            for n in range(jobs):
                spool.submit(Job(tool="echo", params={"pad": "x" * 16384}), f"pad-{n}")
                if n % 10 == 9:
                    time.sleep(0.005)  # bursts stay well under the healthy client's queue

        async def scenario() -> int:
            got = 0
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"{srv.base}/api/v1/ws/events") as ws:
                producing = asyncio.get_running_loop().run_in_executor(None, produce)
                while got < jobs:
                    msg = await _next(ws)
                    got += msg["event"] == "transition"
                await producing
            return got

        assert asyncio.run(scenario()) == jobs
        assert wait_for(lambda: srv.in_loop(lambda: srv.services.hub.dropped_total) == 1,
                        what="the stalled client dropped")
        metrics = request(srv.base, "GET", "/metrics").body.decode()
        assert "spoolq_statusd_websocket_dropped_total 1.0" in metrics
    finally:
        stalled.close()
        srv.stop()


def test_a_task_client_dropped_while_its_snapshot_is_sent_is_closed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue overflowed before the pump started: the socket closes 1013, not never."""
    srv = ServerThread(settings_for(spool.layout.root), queue_max=1).start()
    made = ws_module.snapshot_of

    async def slow_snapshot_of(item: Any) -> bytes:
        # The snapshot is still being made when the two transitions below overflow the
        # queue of one, however slow the host (a fixed 1.5 s delay was over first when
        # the transitions took 1 s longer).
        deadline = time.monotonic() + 30
        while srv.services.hub.dropped_total < 1:
            assert time.monotonic() < deadline, "the client was never dropped"
            await asyncio.sleep(0.01)
        return await made(item)

    monkeypatch.setattr(ws_module, "snapshot_of", slow_snapshot_of)
    submit(spool, "big", meta={"pad": "x" * 40_000})
    running: list[Any] = []

    async def scenario() -> tuple[dict[str, Any], aiohttp.WSMessage]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/tasks/big") as ws:

            def transitions() -> None:  # two messages for a queue of one
                wait_for(lambda: srv.ws_clients() == 1,
                         what="the task client subscribed")
                running.append(claim(spool, "big"))
                wait_for(lambda: srv.indexed_state("big") is JobState.RUNNING,
                         what="the claim published")  # not one pending-to-done change
                finish(spool, running[0], {"message": "big"})

            await asyncio.get_running_loop().run_in_executor(None, transitions)
            snapshot = await _next(ws, timeout=30)
            return snapshot, await ws.receive(timeout=10)

    try:
        snapshot, closing = asyncio.run(scenario())
        assert snapshot["event"] == "snapshot"
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1013, closing
        assert srv.in_loop(lambda: srv.services.hub.dropped_total) == 1
    finally:
        for taken in running:
            taken.close()
        srv.stop()


def test_a_burst_larger_than_a_clients_queue_reaches_a_client_that_keeps_up(
        spool: Spool) -> None:
    """One rescan applying 600 changes to a queue of 64: the publisher lets the client
    read between chunks, so a client that keeps up is never dropped."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0), queue_max=64).start()
    jobs = 600

    async def scenario() -> int:
        got = 0
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events") as ws:
            wait_for(lambda: srv.ws_clients() == 1)
            # nothing reaches the index until the one big rescan below
            srv.in_loop(srv.services.tracker.stop_feed)
            for n in range(jobs):
                submit(spool, f"b-{n:04d}")
            rescan = asyncio.run_coroutine_threadsafe(srv.services.tracker.rescan(),
                                                      srv.loop)  # type: ignore[arg-type]
            while got < jobs:
                got += (await _next(ws))["event"] == "transition"
            rescan.result(timeout=30)
        return got

    try:
        assert asyncio.run(scenario()) == jobs
        assert srv.in_loop(lambda: srv.services.hub.dropped_total) == 0
    finally:
        srv.stop()


def test_a_record_whose_metadata_changes_is_no_second_transition(
        server: ServerThread, spool: Spool) -> None:
    """A chmod or a backup's hard link moves a record's ctime only: no event, no count."""
    submit(spool, "x")
    finish(spool, claim(spool, "x"), {"message": "x"})
    wait_for(lambda: server.indexed_state("x") is JobState.DONE, what="x indexed as done")

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{server.base}/api/v1/ws/events") as ws:
            done = spool.layout.job(JobState.DONE, "x")
            os.chmod(done, 0o600)
            os.link(done, spool.layout.root / "backup-of-x.json")
            # No event reports a chmod: the periodic rescan sees the new ctime.
            asyncio.run_coroutine_threadsafe(server.services.tracker.rescan(),
                                             server.loop).result(10)  # type: ignore[arg-type]
            submit(spool, "y")
            return await _next(ws)

    event = asyncio.run(scenario())
    assert (event["id"], event["state"]) == ("y", "pending"), event
    metrics = request(server.base, "GET", "/metrics").body.decode()
    assert 'spoolq_transitions_total{outcome="done",tool="echo"} 1.0' in metrics


def test_lost_events_make_the_index_rescan_at_once(spool: Spool) -> None:
    """The feed's "events were lost" signal (an inotify overflow, a replaced folder)
    rescans now, not at the next periodic scan (an hour away here)."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    try:
        tracker = srv.services.tracker
        srv.in_loop(tracker.stop_feed)  # as if its events had been lost; stopping reports nothing
        time.sleep(0.5)  # what was on its way is applied before the job below exists
        submit(spool, "unseen")
        time.sleep(0.3)
        assert srv.in_loop(lambda: srv.services.index.get("unseen")) is None
        tracker.hints.on_change("", "")  # what the feed reports on a lost event or watch
        wait_for(lambda: srv.in_loop(lambda: srv.services.index.get("unseen")) is not None,
                 what="the rescan to index the job")
    finally:
        srv.stop()


def _ids_sent(srv: ServerThread, make: Callable[[], None], count: int) -> list[str]:
    """The ids of the first ``count`` events an events client gets once ``make`` ran."""
    async def scenario() -> list[str]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events") as ws:
            wait_for(lambda: srv.ws_clients() == 1)
            make()
            return [(await _next(ws))["id"] for _ in range(count)]

    return asyncio.run(scenario())


def test_a_bursts_transitions_go_out_in_the_order_they_happened(spool: Spool) -> None:
    """The ids a pass of hints applies were a set, sent in its order: a client that
    waited for a burst's last job saw it before a hundred earlier ones (the CI failure
    of test_1000_websockets_one_stalled)."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    ids = [f"o-{n:03d}" for n in range(300)]
    try:
        assert _ids_sent(srv, lambda: [submit(spool, job_id) for job_id in ids],
                         len(ids)) == ids
    finally:
        srv.stop()


def _submit_ticks_apart(spool: Spool, ids: list[str]) -> None:
    """Submit ``ids`` one by one, each stamped a tick of the kernel's coarse file times
    after the one before.  A fixed sleep was not that: on a loaded host the coarse clock
    stood still for over 20 ms, and two drops 20 ms apart had the same ctime (r-16 and
    r-17, sent in the listing's order: h400)."""
    probe = spool.layout.root.parent / "tick-probe"
    for job_id in ids:
        submit(spool, job_id)
        stamped = os.stat(spool.layout.job(JobState.PENDING, job_id)).st_ctime_ns
        deadline = time.monotonic() + 10
        while True:
            probe.write_bytes(b"t")  # a file changed now: its ctime is the clock's
            if os.stat(probe).st_ctime_ns > stamped:
                break
            assert time.monotonic() < deadline, "the filesystem's clock never ticked"
            time.sleep(0.002)


def test_a_rescan_sends_what_it_finds_in_the_order_it_happened(spool: Spool) -> None:
    """What a rescan finds went out in the folders' listing order; it goes in the order
    the files last changed, so a client after lost events sees them as they came."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    ids = [f"r-{n:02d}" for n in range(20)]

    def lost_events() -> None:
        srv.in_loop(srv.services.tracker.stop_feed)
        _submit_ticks_apart(spool, ids)
        srv.services.tracker.hints.on_change("", "")  # the feed's "events were lost"

    try:
        assert _ids_sent(srv, lost_events, len(ids)) == ids
    finally:
        srv.stop()


def test_hints_after_lost_events_do_not_overtake_them(spool: Spool) -> None:
    """Hints went first and the rescan for lost events after them: a job dropped after
    an inotify overflow went out before the jobs the overflow hid."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    lost = [f"l-{n:02d}" for n in range(10)]

    def lost_then_one_hinted() -> None:
        srv.in_loop(srv.services.tracker.stop_feed)
        _submit_ticks_apart(spool, [*lost, "after"])
        hints = srv.services.tracker.hints
        srv.in_loop(lambda: (hints.on_event("", ""), hints.on_event("pending", "after.json")))

    try:
        assert _ids_sent(srv, lost_then_one_hinted, len(lost) + 1) == [*lost, "after"]
    finally:
        srv.stop()


@pytest.mark.skipif(getattr(inotify_c, "inotify_init", None) is None, reason="no inotify")
def test_the_feed_is_read_on_the_loop_by_no_thread_of_its_own(spool: Spool) -> None:
    """A feed thread cost every hint a thread wake, a GIL hand-off and a self-pipe write
    before the loop's own wake (h67: 84 of ~480 us of CPU per event when events came
    one by one).  Where inotify can be polled, the loop reads it itself."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    try:
        submit(spool, "seen")
        wait_for(lambda: srv.in_loop(lambda: srv.services.index.get("seen")) is not None,
                 what="the drop indexed from its event")
        feeds = [t for t in threading.enumerate() if isinstance(t, inotify_c.InotifyFD)]
        assert feeds == [], feeds
    finally:
        srv.stop()


@pytest.mark.parametrize("how", ["removed", "moved away", "removed, back later"])
def test_a_replaced_folder_is_watched_again(spool: Spool, how: str) -> None:
    """``mv pending pending.old && mkdir pending`` (or ``rm -r`` and ``mkdir``): the
    feed's watch went with the old folder.  Drops into the new one reach the REST view
    within moments, not at the periodic rescan (an hour away here)."""
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    pending = spool.layout.folder(JobState.PENDING)

    def listed(job_id: str) -> bool:  # the list is the index (one task falls back to disk)
        tasks = request(srv.base, "GET", "/api/v1/tasks").json()["tasks"]
        return any(task["id"] == job_id for task in tasks)

    try:
        submit(spool, "before")
        wait_for(partial(listed, "before"), what="the first drop listed")
        if how == "moved away":
            pending.rename(pending.with_name("pending.old"))
        else:
            shutil.rmtree(pending)
        if how != "removed, back later":
            pending.mkdir()
        wait_for(lambda: not listed("before"), what="the rescan after the watch went")
        if how == "removed, back later":
            pending.mkdir()
        # The first drop could be found by that rescan; the others only by a new watch.
        for job_id in ("after-0", "after-1", "after-2"):
            submit(spool, job_id)
            wait_for(partial(listed, job_id), timeout=5.0, what=f"{job_id} listed")
    finally:
        srv.stop()


def test_a_folder_put_back_is_no_burst_of_finishes(spool: Spool) -> None:
    """``mv done done.real && mkdir done``, then back: the records that came back were
    counted as new finishes (3,016 on /metrics, an alert's worth) and each streamed as
    three made-up transitions (QA).  They are what the spool held, not moves."""
    for n in range(3):
        run_job(spool, f"old-{n}")
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()
    done = spool.layout.folder(JobState.DONE)

    def counted(state: str) -> int:
        count: int = request(srv.base, "GET", "/api/v1/stats").json()["counts"][state]
        return count

    def finishes() -> str:
        return request(srv.base, "GET", "/metrics").body.decode()

    try:
        wait_for(lambda: counted("done") == 3, what="the records indexed")
        done.rename(done.with_name("done.real"))
        done.mkdir()
        wait_for(lambda: counted("done") == 0, what="the records gone with their folder")
        done.rmdir()
        done.with_name("done.real").rename(done)
        wait_for(lambda: counted("done") == 3, what="the records back")
        assert 'spoolq_transitions_total{outcome="done"' not in finishes()
        run_job(spool, "new")  # a new finish is counted as ever
        wait_for(lambda: counted("done") == 4, what="the new record")
        assert 'spoolq_transitions_total{outcome="done",tool="echo"} 1.0' in finishes()
    finally:
        srv.stop()


def test_a_folder_away_while_statusd_starts_is_no_burst_of_finishes_when_back(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanned at start, gone when read (``done/`` moved away as statusd indexed 30,000
    records), then put back: 13,616 counted as new finishes (QA)."""
    for n in range(3):
        run_job(spool, f"old-{n}")
    done = spool.layout.folder(JobState.DONE)
    away = done.with_name("done.away")
    read_all = Loader.load_all

    def racing(self: Loader, *args: Any, **kwargs: Any) -> Any:
        if not away.exists():
            done.rename(away)
            done.mkdir()
        return read_all(self, *args, **kwargs)

    monkeypatch.setattr(Loader, "load_all", racing)
    srv = ServerThread(settings_for(spool.layout.root, scan_s=3600.0)).start()

    def counted() -> int:
        count: int = request(srv.base, "GET", "/api/v1/stats").json()["counts"]["done"]
        return count

    try:
        wait_for(lambda: counted() == 0, what="the index loaded without them")
        done.rmdir()
        away.rename(done)
        wait_for(lambda: counted() == 3, what="the records back")
        metrics = request(srv.base, "GET", "/metrics").body.decode()
        assert 'spoolq_transitions_total{outcome="done"' not in metrics
    finally:
        srv.stop()


def test_heartbeats_keep_live_clients_and_drop_silent_ones(
        spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    # A client that does not answer a ping within heartbeat_s / 2 is dropped, live or
    # not: 0.3 s (0.15 s to answer) dropped the live client after a 0.4 s stall of the
    # test's loop, which answers its pings.  1 s gives it 0.5 s; it must outlive two
    # pings, the silent one is gone after the first.  It is counted as dropped and
    # logged: a client whose reading lags by more than the pong's wait is cut off so,
    # and ws_dropped stayed 0 for it (QA).
    caplog.set_level(logging.INFO, logger="spoolq.statusd")
    srv = ServerThread(settings_for(spool.layout.root), heartbeat_s=1.0).start()

    async def scenario() -> tuple[bool, int | None]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events") as live, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events", autoping=False) as silent:
            async def keep_reading() -> None:  # reading is what answers the pings
                with contextlib.suppress(TimeoutError):
                    await live.receive(timeout=30)

            reader = asyncio.create_task(keep_reading())
            pings = 0
            async with asyncio.timeout(10):
                while not silent.closed:
                    msg = await silent.receive()
                    pings += msg.type is aiohttp.WSMsgType.PING
            assert pings >= 1
            await asyncio.sleep(1.2)  # the live client's next ping and its answer's deadline
            assert not reader.done()
            reader.cancel()
            return live.closed, silent.close_code

    try:
        live_closed, silent_code = asyncio.run(scenario())
        assert not live_closed
        assert silent_code is not None and silent_code != 1000
        assert srv.in_loop(lambda: srv.services.hub.dropped_total) == 1
        said = [r.getMessage() for r in caplog.records if "no pong within 0.5 s" in
                r.getMessage()]
        assert len(said) == 1 and "/api/v1/ws/events" in said[0], caplog.text
    finally:
        srv.stop()


def test_shutdown_closes_every_socket_going_away(spool: Spool) -> None:
    submit(spool, "forever")
    srv = ServerThread(settings_for(spool.layout.root)).start()
    stopped = False

    async def closing(ws: aiohttp.ClientWebSocketResponse) -> int | None:
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        return ws.close_code

    async def scenario() -> list[int | None]:
        nonlocal stopped
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events") as events, \
                session.ws_connect(f"{srv.base}/api/v1/ws/tasks/forever") as task:
            assert (await _next(task))["event"] == "snapshot"
            stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop)
            codes = await asyncio.gather(closing(events), closing(task))
            await stopping
            stopped = True
            return codes

    try:
        assert asyncio.run(scenario()) == [1001, 1001]
    finally:
        if not stopped:
            srv.stop()


def test_a_hint_that_changes_nothing_costs_no_thread_hop(spool: Spool) -> None:
    """A completion is several hints a folder fsync apart: the record lands in done/,
    then the running file and the progress file go.  Each woke the worker thread for a
    re-read that found the record already indexed (h67: a hop costs more CPU than the
    four lstat calls that tell so).  A few dirty ids are looked at on the loop first."""
    for n in range(20):
        run_job(spool, f"j-{n}", {"ok": n})
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)
    refreshed: list[list[str]] = []

    async def scenario() -> None:
        await tracker.start()
        real = tracker.loader.refresh

        def counting(job_ids: list[str], known: dict[str, Any], *failed: Any) -> Any:
            refreshed.append(sorted(job_ids))
            return real(job_ids, known, *failed)

        tracker.loader.refresh = counting  # type: ignore[method-assign,assignment]
        async with tracker.running():
            for n in range(20):  # what a finished job's running/ unlink reports
                tracker.hints.on_event("running", f"j-{n}.json")
                await asyncio.sleep(0.005)
            submit(spool, "new")  # a real change is still re-read
            for _ in range(500):
                if tracker.index.get("new") is not None:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert tracker.index.get("new") is not None
    assert refreshed and all(ids == ["new"] for ids in refreshed), refreshed


@pytest.mark.parametrize("steps", range(5))
def test_a_stop_that_comes_with_a_wake_stops_the_tracker(
        spool: Spool, steps: int, caplog: pytest.LogCaptureFixture) -> None:
    """Shutdown cancels the tracker loop, then closes its worker thread.  A cancel that
    came in the loop steps where a feed hint woke it was lost (Python 3.11's wait_for
    returns what it waited for instead), so the loop ran on: shutdown hung, and once the
    thread was closed every rescan logged 'cannot schedule new futures after shutdown'."""
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)

    async def scenario() -> bool:
        await tracker.start()
        loop_task = asyncio.create_task(tracker.run())
        try:
            await asyncio.sleep(0.05)  # waiting for a hint
            tracker.hints.wake.set()  # a hint arrives (what on_event's _mark does) ...
            for _ in range(steps):
                await asyncio.sleep(0)
            loop_task.cancel()  # ... in the loop steps where shutdown cancels the loop
            done, _ = await asyncio.wait({loop_task}, timeout=5.0)
            return bool(done)
        finally:
            tracker.stop()
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task

    assert asyncio.run(scenario()), "the tracker loop outlived its cancel"
    assert "updating the index failed" not in caplog.text


def test_messages_queued_together_come_whole_and_in_order(spool: Spool) -> None:
    """A pump writes what is queued in one write of many frames (one write a message was
    1.8 million system calls for 9,000 events to 200 clients, QA): each frame's length
    in its three sizes of header, the batches' bounds, a client asking for compression."""
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sizes = [0, 1, 125, 126, 65_535, 65_536, 70_000, *range(300, 900)]
    texts = [(f"{n:06d}" + "x" * size)[:size].encode() for n, size in enumerate(sizes)]

    async def scenario() -> list[bytes]:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{srv.base}/api/v1/ws/events", compress=15) as ws:
            wait_for(lambda: srv.ws_clients() == 1)

            def publish_all() -> None:  # one loop step: they queue together
                for text in texts:
                    srv.services.hub.publish("x", events=Message(text), task=None)

            srv.in_loop(publish_all)
            got = []
            async with asyncio.timeout(30):
                while len(got) < len(texts):
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, msg
                    got.append(msg.data.encode())
            return got

    def raw_frames() -> list[bytes]:
        """The messages as sent, their frames checked (:func:`_raw_messages`)."""
        sock = stalled_ws_client(srv.port, "/api/v1/ws/events")
        try:
            wait_for(lambda: srv.ws_clients() == 1)
            srv.in_loop(lambda: [srv.services.hub.publish("x", events=Message(text), task=None)
                                 for text in texts])
            return _raw_messages(sock, len(texts))
        finally:
            sock.close()

    try:
        assert asyncio.run(scenario()) == texts
        assert raw_frames() == texts
    finally:
        srv.stop()


def _raw_messages(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` messages read off ``sock``, each frame's header checked: text, unmasked,
    and its length in the fewest bytes (RFC 6455 5.2: a browser fails the connection
    otherwise); a text over FRAGMENT_BYTES in fragments of that size (h396), any other in
    one frame."""
    sock.settimeout(30)
    data, got, fragments = b"", list[bytes](), None
    while len(got) < count:
        data += sock.recv(1 << 20)
        while len(data) >= 2:
            first, length, at = data[0], data[1], 2
            # a whole text; a fragmented one's first fragment, a middle one, its last
            wanted = (0x81, 0x01) if fragments is None else (0x00, 0x80)
            assert first in wanted and length & 0x80 == 0, data[:2]
            if length in (126, 127):  # its length in the next 2 or 8 bytes
                at = 4 if length == 126 else 10
                if len(data) < at:  # a read can end within them (h361: a
                    break  # loaded host's read ended after one, read as 2)
                length = int.from_bytes(data[2:at])
                assert length >= (126 if at == 4 else 1 << 16), length
            if len(data) < at + length:
                break
            body, data = data[at:at + length], data[at + length:]
            if first == 0x81:
                assert length <= ws_module.FRAGMENT_BYTES, length
                got.append(body)
                continue
            if first & 0x80 == 0:  # not the last fragment: a full one
                assert length == ws_module.FRAGMENT_BYTES, length
            fragments = (fragments or b"") + body
            if first == 0x80:
                got.append(fragments)
                fragments = None
    return got


def test_a_client_that_asked_for_compression_gets_each_message_compressed(
        spool: Spool) -> None:
    """Batched writes go uncompressed; a browser asks for permessage-deflate, and its
    dashboard's events took ten times the bytes so (a review): it is sent as before."""
    srv = ServerThread(settings_for(spool.layout.root)).start()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /api/v1/ws/events HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert b"101" in head.split(b"\r\n")[0] and b"permessage-deflate" in head, head
        wait_for(lambda: srv.ws_clients() == 1)
        text = b'{"event": "transition", "pad": "' + b"x" * 4000 + b'"}'
        srv.in_loop(lambda: [srv.services.hub.publish("x", events=Message(text), task=None)
                             for _ in range(20)])
        data, frames = b"", 0
        while frames < 20:
            data += sock.recv(1 << 16)
            while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                assert data[0] == 0xC1, data[:2]  # FIN, RSV1 (compressed), text
                assert data[1] & 0x7F < 126, data[:4]  # 4 KiB of x deflates to bytes
                data, frames = data[2 + data[1]:], frames + 1
    finally:
        sock.close()
        srv.stop()
