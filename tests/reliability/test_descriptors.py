"""The processor out of descriptors (RLIMIT_NOFILE, a FAST tool that leaks them, a full
file table): claims and records wait in the I/O pause, and go on once descriptors are
free again; no crash, no job failed ``abandoned`` for it.

Before, an EMFILE in a record's write (or a listing, or a walk of ``/proc``) was an
OSError nothing expected: the processor crashed, and the next start failed every run
it had held (their work done, some of them) as ``abandoned``.  Under a limit just above
what start-up takes, the claims in flight held the last descriptors: no record could
be written, no lease given back, and the pause went on for good.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from relkit import Daemon, drop, locations, wait_for, wait_record

STATES = ("pending", "running", "done", "failed")


def _limited(root: Path, log: Path, nofile: int, **env: str) -> Daemon:
    return Daemon(root, log, prefix=["prlimit", f"--nofile={nofile}:{nofile}", "--"], **env)


def _all_recorded(d: Daemon, root: Path, ids: list[str], timeout: float
                  ) -> dict[str, list[str]]:
    def recorded() -> bool:
        assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
        where = locations(root)
        return all(where.get(i) in (["done"], ["failed"]) for i in ids)

    wait_for(recorded, timeout, f"a record of each of {len(ids)} jobs")
    return locations(root)


def _failed(root: Path, ids: list[str]) -> list[str]:
    return [i for i in ids if os.path.exists(root / "failed" / f"{i}.json")]


def test_a_fast_tool_taking_every_descriptor_pauses_the_processor(
        spool_root: Path, tmp_path: Path) -> None:
    d = _limited(spool_root, tmp_path / "p.log", 256, SPOOL_FSYNC="always")
    try:
        d.start()
        ids = []
        for i in range(2):
            drop(spool_root, f"c{i}", {"tool": "sleep", "params": {"seconds": 1.0}})
            ids.append(f"c{i}")
        time.sleep(0.3)
        drop(spool_root, "hog", {"tool": "r_hold_fds", "params": {"seconds": 3.0}})
        ids.append("hog")
        wait_for(lambda: not os.path.exists(spool_root / "pending" / "hog.json"), 10,
                 "the hog claimed")
        time.sleep(0.5)  # everything below arrives while no descriptor is left
        for i in range(10):
            drop(spool_root, f"f{i}", {"tool": "echo", "params": {"message": i}})
            drop(spool_root, f"g{i}", {"tool": "sleep", "params": {"seconds": 0.01}})
            ids += [f"f{i}", f"g{i}"]
        _all_recorded(d, spool_root, ids, 60)
        assert d.running(), d.logs()[-3000:]
        assert _failed(spool_root, ids) == []
        assert wait_record(spool_root, "hog")["result"]["held"] > 100
        trouble = [e for e in d.events() if e.get("msg") == "spool I/O trouble; pausing claims"]
        assert trouble and "Too many open files" in trouble[0]["error"]
        assert d.stop() == 0
    finally:
        d.abort()


def _startup_descriptors(root: Path, log: Path) -> int:
    d = Daemon(root, log)
    try:
        d.start()
        return len(os.listdir(f"/proc/{d.pid}/fd"))
    finally:
        d.stop()


def test_a_limit_just_above_start_up_still_runs_every_job(
        spool_root: Path, tmp_path: Path) -> None:
    # Room for a few claims beyond start-up, fewer than the FAST lane's 8 and the 2
    # workers would take together.
    nofile = _startup_descriptors(spool_root, tmp_path / "probe.log") + 10
    d = _limited(spool_root, tmp_path / "p.log", nofile, SPOOL_FSYNC="always")
    try:
        d.start()
        ids = []
        for i in range(80):
            drop(spool_root, f"f{i}", {"tool": "echo", "params": {"message": i}})
            ids.append(f"f{i}")
        for i in range(10):
            drop(spool_root, f"c{i}", {"tool": "sleep", "params": {"seconds": 0.05}})
            ids.append(f"c{i}")
        _all_recorded(d, spool_root, ids, 90)
        assert d.running(), d.logs()[-3000:]
        assert _failed(spool_root, ids) == []
        assert d.stop() == 0
    finally:
        d.abort()


def _lower_nofile(daemon: Daemon, limit: int) -> None:
    """Lower a running statusd's open files limit to ``limit``: its connection cap is
    reckoned from the limit it started with (statusd.protocol.connection_cap), so clients
    alone no longer use up its descriptors (QA h396); they run out for other causes all
    the same (a limit lowered, large records streamed, other files), which is what these
    tests are about."""
    assert daemon.proc is not None
    subprocess.run(["prlimit", f"--pid={daemon.proc.pid}", f"--nofile={limit}:{limit}"],
                   check=True, timeout=30)


def test_statusd_out_of_descriptors_logs_a_line_not_a_flood(
        spool_root: Path, tmp_path: Path) -> None:
    """More WebSocket clients than a low hard limit allows: those open are served, the
    rest wait, the log has a line every 10 s (asyncio's own logged each failed accept
    with a traceback, some 128 times a try: a million lines in 90 s), and once the
    clients go new ones are served."""
    import asyncio  # noqa: PLC0415 - only this test

    import aiohttp  # noqa: PLC0415
    from relkit import statusd_port  # noqa: PLC0415

    d = Daemon(spool_root, tmp_path / "statusd.log", module="statusd",
               prefix=["prlimit", "--nofile=1024:1024", "--"],
               STATUSD_HOST="127.0.0.1", STATUSD_PORT="0")
    try:
        d.start(wait_ready=False)
        base = f"http://127.0.0.1:{statusd_port(d)}"
        _lower_nofile(d, 64)

        async def clients() -> tuple[int, int]:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                async def one() -> aiohttp.ClientWebSocketResponse | None:
                    try:
                        return await asyncio.wait_for(
                            session.ws_connect(base + "/api/v1/ws/events"), 3)
                    except (TimeoutError, aiohttp.ClientError):
                        return None

                opened = [ws for ws in await asyncio.gather(*(one() for _ in range(120)))
                          if ws is not None]
                await asyncio.sleep(2)  # what asyncio's accept retries log meanwhile
                for ws in opened:
                    await ws.close()
                await asyncio.sleep(1.5)  # an accept retry comes within a second
                async with session.get(base + "/healthz",
                                       timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    status = resp.status
            return len(opened), status

        opened, status = asyncio.run(clients())
        assert 20 < opened < 120  # some served; the limit left the rest waiting
        assert status == 200
        assert d.running()
        lines = d.logs().splitlines()
        accept_lines = [line for line in lines if "accept" in line]
        assert 1 <= len(accept_lines) <= 5, (len(lines), accept_lines[:5])
        assert "Too many open files" in accept_lines[0]
        assert d.stop() == 0
    finally:
        d.abort()


def test_jobs_met_out_of_descriptors_wait_out_the_pause_not_the_next_scan(
        spool_root: Path, tmp_path: Path) -> None:
    """A leak holds every descriptor the processor frees for 6 s: jobs judged before it
    and due during it cannot be opened to be claimed, nor can drops made during it be
    read to be judged.  Both are spool trouble, said in the log and waited out in the I/O
    pause: they run within seconds of the leak's end.  Both were taken for files gone
    (a claim lost to another processor, a drop replaced), said nothing, and the jobs
    waited for the next periodic scan (``SPOOL_SCAN_S``, here 60 s)."""
    d = _limited(spool_root, tmp_path / "p.log", 256, SPOOL_SCAN_S="60")
    try:
        d.start()
        due = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
        early = [f"e{i}" for i in range(4)]
        for job_id in early:  # judged now, due once the leak holds every descriptor
            drop(spool_root, job_id, {"tool": "echo", "params": {"message": job_id},
                                      "not_before": due})
        time.sleep(0.5)
        drop(spool_root, "hog", {"tool": "r_leak_fds", "params": {"seconds": 6.0}})
        wait_for((spool_root / "done" / "hog.json").exists, 10, "the hog's record")
        leak_ends = time.monotonic() + 6.0
        late = [f"l{i}" for i in range(4)]
        for job_id in late:  # dropped while the leak lasts
            drop(spool_root, job_id, {"tool": "echo", "params": {"message": job_id}})
        _all_recorded(d, spool_root, early + late, leak_ends + 20.0 - time.monotonic())
        assert _failed(spool_root, early + late) == []
        errors = [e["error"] for e in d.events()
                  if e.get("msg") == "spool I/O trouble; pausing claims"]
        assert errors and all("Too many open files" in e for e in errors), errors
        assert d.stop() == 0
    finally:
        d.abort()


def test_statusd_out_of_descriptors_does_not_call_a_live_processor_down(
        spool_root: Path, tmp_path: Path) -> None:
    """Out of descriptors, statusd cannot list ``owners/`` nor test a processor's owner
    lock: its stats answer 503 ``processors_unknown`` and say why, its metrics leave the
    processors' gauges out (``spoolq_statusd_processors_ok 0``).  They answered
    500 with a traceback at ERROR (the listing's OSError); with a descriptor left for the
    listing but none for the lock, the lock read as not held and they said no processor
    was running, an alert for the wrong daemon."""
    import asyncio  # noqa: PLC0415 - only this test

    import aiohttp  # noqa: PLC0415
    from relkit import statusd_port  # noqa: PLC0415

    processor = Daemon(spool_root, tmp_path / "p.log")
    statusd = Daemon(spool_root, tmp_path / "statusd.log", module="statusd",
                     prefix=["prlimit", "--nofile=1024:1024", "--"],
                     STATUSD_HOST="127.0.0.1", STATUSD_PORT="0")
    try:
        processor.start()
        statusd.start(wait_ready=False)
        base = f"http://127.0.0.1:{statusd_port(statusd)}"
        _lower_nofile(statusd, 64)

        async def ask() -> list[tuple[int, bytes]]:
            # One connection kept for the questions, opened before the others take
            # every descriptor statusd has.
            asker = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            crowd = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            async with asker, crowd:
                async with asker.get(base + "/healthz") as resp:
                    assert resp.status == 200

                async def one() -> aiohttp.ClientWebSocketResponse | None:
                    try:
                        return await asyncio.wait_for(
                            crowd.ws_connect(base + "/api/v1/ws/events"), 3)
                    except (TimeoutError, aiohttp.ClientError):
                        return None

                opened = [ws for ws in await asyncio.gather(*(one() for _ in range(80)))
                          if ws is not None]
                answers = []
                for path in ("/api/v1/stats", "/metrics"):
                    async with asker.get(base + path) as resp:
                        answers.append((resp.status, await resp.read()))
                for ws in opened:
                    await ws.close()
            return answers

        (stats_status, stats_body), (metrics_status, metrics_body) = asyncio.run(ask())
        assert stats_status == 503, stats_body[:300]
        assert b"Too many open files" in stats_body
        assert b'"processors_unknown"' in stats_body, stats_body[:300]
        # The scrape says what it knows, and that the processors' state is not known:
        # no spoolq_processor_up 0 for a processor that runs.
        assert metrics_status == 200, metrics_body[:300]
        assert b"\nspoolq_statusd_processors_ok 0.0\n" in metrics_body, metrics_body
        assert b"\nspoolq_processor_up" not in metrics_body, metrics_body
        assert statusd.stop() == 0
        assert processor.stop() == 0
    finally:
        statusd.abort()
        processor.abort()
