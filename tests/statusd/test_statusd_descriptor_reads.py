"""statusd out of descriptors: a job whose file it cannot open is not a job gone.

A tracker that could not open the file of a job that moved (EMFILE: statusd at its
RLIMIT_NOFILE, its WebSocket clients holding the descriptors) took the failed read for
a file that vanished: the id was "moving", and once the vanish grace passed it was
removed from the index, its task streams ended and a GET answered 404, for a job
still in the spool.  One open is made to fail, as a real limit cannot aim at it.

So for the other errors that are not the file's (an NFS handle gone stale, ESTALE),
made to fail so for the same reason, beside a record the disk fails (EIO).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import orjson
import pytest
from statusdkit import TOKEN, ServerThread, claim, finish, request, submit

from spool import entries as spool_entries
from spool import large as spool_large
from spool.errors import SpoolIOError
from spool.states import JobState
from spool.transitions import Spool
from statusd.hub import Hub
from statusd.index import Index
from statusd.metrics import Metrics
from statusd.tracker import Tracker


def _out_of_descriptors(path: str | os.PathLike[str]) -> int:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(path))


def test_a_job_it_cannot_open_for_lack_of_descriptors_stays_indexed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    submit(spool, "busy")
    running = claim(spool, "busy")
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)
    tracker.applier.vanish_grace_s = 0.05

    async def scenario() -> tuple[JobState | None, JobState | None]:
        await tracker.start()
        assert tracker.index.get("busy") is not None
        async with tracker.running():
            with monkeypatch.context() as faults:
                for module in (spool_entries, spool_large):
                    faults.setattr(module, "open_nofollow", _out_of_descriptors)
                finish(spool, running)  # its file moves to done/, unreadable to statusd
                tracker.hints.on_event(JobState.DONE.value, "busy.json")
                for _ in range(20):  # well past the vanish grace
                    await asyncio.sleep(0.02)
                during = tracker.index.get("busy")
            tracker.hints.ask_rescan()  # descriptors back: the next rescan reads it
            for _ in range(250):
                item = tracker.index.get("busy")
                if item is not None and item.state is JobState.DONE:
                    break
                await asyncio.sleep(0.02)
            after = tracker.index.get("busy")
            return (during.state if during else None), (after.state if after else None)

    during, after = asyncio.run(scenario())
    assert during is JobState.RUNNING, "the job was dropped from the index"
    assert after is JobState.DONE
    assert "Too many open files" in caplog.text
    assert "updating the index failed" not in caplog.text  # a warning, no traceback



def test_a_submit_done_while_statusd_is_short_of_descriptors_is_answered_202(
        server: ServerThread, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job is in ``pending/`` once the client's submit returns; the index's look at
    it after is no part of the write.  Answered 503 for that look, a client that retried
    dropped the job twice."""
    for module in (spool_entries, spool_large):
        monkeypatch.setattr(module, "open_nofollow", _out_of_descriptors)
    reply = request(server.base, "POST", "/api/v1/tasks", {"tool": "echo"}, token=TOKEN)
    assert reply.status == 202, reply.body[:300]
    task_id = orjson.loads(reply.body)["task_id"]
    assert spool.layout.job(JobState.PENDING, task_id).is_file()


def test_statusd_starts_short_of_descriptors_and_indexes_the_rest_later(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose file start-up cannot open is left out until the first rescan reads it,
    as before the loader raised for it: its SpoolIOError ended the start-up (exit 1)."""
    submit(spool, "early")
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)

    async def scenario() -> tuple[bool, bool]:
        try:
            with monkeypatch.context() as faults:
                for module in (spool_entries, spool_large):
                    faults.setattr(module, "open_nofollow", _out_of_descriptors)
                await tracker.start()
                at_start = tracker.index.get("early") is not None
            await tracker.rescan()
            return at_start, tracker.index.get("early") is not None
        finally:
            tracker.stop()

    assert asyncio.run(scenario()) == (False, True)


def test_reads_failing_for_lack_of_descriptors_log_a_line_not_one_a_hint(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every hint batch's read fails while statusd is out of descriptors: a busy spool's
    hints come every few milliseconds, and each logged its warning."""
    for n in range(30):
        submit(spool, f"j-{n}")
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)

    async def scenario() -> None:
        await tracker.start()
        async with tracker.running():
            with monkeypatch.context() as faults:
                for module in (spool_entries, spool_large):
                    faults.setattr(module, "open_nofollow", _out_of_descriptors)
                for n in range(30):  # each claimed: a hint batch of its own
                    claim(spool, f"j-{n}").close()
                    tracker.hints.on_event(JobState.RUNNING.value, f"j-{n}.json")
                    await asyncio.sleep(0.005)

    asyncio.run(scenario())
    failed = [r for r in caplog.records if "reading the spool failed" in r.getMessage()]
    assert len(failed) == 1, len(failed)


def test_a_rescan_failing_on_one_id_still_says_the_files_the_disk_failed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rescan's refresh leaves out the records the disk fails (EIO) and says them once,
    and raises another id's error (ESTALE: an NFS handle gone stale; ENOMEM) once the rest
    are applied.  That raise skipped the line: the EIO records went unsaid for as long as
    the other error lasted."""
    tracker = Tracker(spool.layout, Index(), Hub(), Metrics(dict), scan_s=3600.0)
    real_open = spool_large.open_nofollow
    failing = {"bad.json": errno.EIO, "stale.json": errno.ESTALE}

    def disk(path: str | os.PathLike[str]) -> int:
        code = failing.get(os.path.basename(path))
        if code is not None:
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path)

    async def scenario() -> None:
        await tracker.start()  # no run(): only the rescan below reads what follows
        try:
            for job_id in ("bad", "stale", "fine"):
                submit(spool, job_id)
                finish(spool, claim(spool, job_id), {"ok": True})
            with monkeypatch.context() as faults:
                for module in (spool_entries, spool_large):
                    faults.setattr(module, "open_nofollow", disk)
                with pytest.raises(SpoolIOError, match="Stale"):
                    await tracker.rescan()
        finally:
            tracker.stop()

    with caplog.at_level(logging.INFO, logger="spoolq.statusd"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "could not be looked at" in
            r.getMessage()]
    assert len(said) == 1 and "bad" in said[0] and "stale" not in said[0], said
    assert tracker.index.get("fine") is not None  # the rest applied
