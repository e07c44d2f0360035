"""The Python client API as an integration uses it, beside a real processor.

DESIGN section 1 names the client API: submit, get, list, cancel, retry, purge.
``Client`` had no ``list`` (nor ``stats``): a script reached into ``client.reader``.
Here ``Client.list`` pages through a spool, filtered, while a real processor
(``python -m processor``, started and stopped by pid) moves the jobs, and no job is
skipped or repeated across pages; ``Client.stats`` gives statusd's stats document.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from spoolkit import SleepsClock, stop_processor

import spool.client as client_module
from spool.client import Client
from spool.errors import ConflictError, ErrorType, NotFoundError, SpoolError
from spool.models import ErrorInfo, Job, Record
from spool.states import JobState


@pytest.fixture
def processor(client: Client, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "SPOOL_DIR": str(client.layout.root), "SPOOL_FSYNC": "never",
           "JOB_NUM": "2", "SPOOL_SCAN_S": "1", "SPOOL_GRACE_S": "1"}  # a stop cuts sleeps short
    with open(tmp_path / "processor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env, cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_processor(proc)


def test_list_pages_every_job_once_while_a_processor_moves_them(
        client: Client, processor: subprocess.Popen[bytes]) -> None:
    ids = [client.submit(Job(tool="sleep" if n % 4 == 0 else "echo",
                             params={"seconds": 0.02} if n % 4 == 0 else {"message": n},
                             meta={"n": n}))
           for n in range(120)]
    seen: list[str] = []
    states: set[JobState] = set()
    cursor: str | None = None
    while True:
        page = client.list(limit=7, cursor=cursor)
        seen += [record.id for record in page.records]
        states.update(record.state for record in page.records)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        time.sleep(0.01)  # let the jobs move between pages
    assert sorted(seen) == sorted(ids)  # none skipped, none repeated
    for job_id in ids:
        client.wait(job_id, timeout=60)
    sleeps = client.list(tool="sleep", state=JobState.DONE, limit=1000)
    assert sorted(r.id for r in sleeps.records) == sorted(ids[::4])
    assert sleeps.next_cursor is None
    stats = client.stats()
    assert stats["counts"] == {"pending": 0, "running": 0, "done": 120, "failed": 0}
    assert stats["processor"]["alive"] is True
    with pytest.raises(ValueError, match="invalid cursor"):
        client.list(cursor="not-a-cursor")


@pytest.mark.parametrize("key", [b'[true,"x"]', b'["1","x"]', b'[1.5,"x"]', b'[1,2]',
                                 b'[1]', b'{"a":1}', b'null'])
def test_a_cursor_that_is_no_sort_key_is_refused(client: Client, key: bytes) -> None:
    """``[true, "x"]`` (JSON's true passes for an int) was taken, for an empty page."""
    submit_id = client.submit(Job(tool="echo"), "listed")
    assert [r.id for r in client.list().records] == [submit_id]
    cursor = base64.urlsafe_b64encode(key).decode().rstrip("=")
    with pytest.raises(ValueError, match="invalid cursor"):
        client.list(cursor=cursor)


def test_submit_refuses_an_empty_id_given_explicitly(client: Client) -> None:
    """Before: ``submit(job, "")`` took the empty string for no id and made one up, so a
    caller's empty variable submitted a job under an id it never knew."""
    with pytest.raises(ValueError, match="invalid id"):
        client.submit(Job(tool="echo"), "")
    assert list(client.layout.folder(JobState.PENDING).iterdir()) == []


@pytest.mark.parametrize("call", ["get", "cancel", "retry", "submit"])
def test_an_invalid_id_is_a_spool_error(client: Client, call: str) -> None:
    """spool.errors says everything spoolq raises on purpose is a SpoolError; an id that
    cannot be one was a bare ValueError from every Client method, so an integration's
    ``except SpoolError`` let it through.  It is both now."""
    with pytest.raises(SpoolError, match="invalid id") as raised:
        if call == "submit":
            client.submit(Job(tool="echo"), "../etc/passwd")
        else:
            getattr(client, call)("../etc/passwd")
    assert isinstance(raised.value, ValueError)


def test_a_retry_of_a_job_that_did_not_fail_is_a_conflict(client: Client) -> None:
    """spool.errors: ConflictError is "the job is not in a state that allows this",
    NotFoundError "no job with that id"; Client.retry of a pending job raised
    NotFoundError, and the CLI and statusd each worked around it."""
    client.submit(Job(tool="echo"), "waiting")
    with pytest.raises(ConflictError, match="waiting is pending; only failed jobs"):
        client.retry("waiting")
    with pytest.raises(NotFoundError):
        client.retry("nobody")
    assert client.get("waiting").state is JobState.PENDING


def test_wait_all_waits_for_every_job_within_one_timeout(
        client: Client, processor: subprocess.Popen[bytes]) -> None:
    """A batch waited for job by job gave each job the whole timeout: 20 jobs, 20 times
    it.  wait_all shares one timeout and answers each job's last record."""
    ids = [client.submit(Job(tool="echo", params={"message": n})) for n in range(20)]
    # Done first, untimed: on a loaded host 20 echo jobs outlasted the 3 s below.
    assert {r.state for r in client.wait_all(ids, timeout=60).values()} == {JobState.DONE}
    slow = [client.submit(Job(tool="sleep", params={"seconds": 60})) for _ in range(3)]
    started = time.monotonic()
    records = client.wait_all([*ids, *slow], timeout=3.0)
    assert time.monotonic() - started < 7.0  # one timeout, not one each (9 s)
    assert list(records) == [*ids, *slow]
    assert [records[i].result for i in ids] == [{"message": n} for n in range(20)]
    assert {records[i].state for i in slow} <= {JobState.PENDING, JobState.RUNNING}


def test_a_short_wait_for_a_job_caught_between_folders_finds_it(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry or cancel stages the job outside the state folders for a moment: a wait
    whose timeout ran out before it looked again said "no job", which a script reads as
    an unknown id (exit 1)."""
    client.submit(Job(tool="echo"), "moving")
    pending = client.layout.job(JobState.PENDING, "moving")
    staged = client.layout.stage / "retry-moving.1.0123456789ab.tmp"
    os.rename(pending, staged)
    # Back in pending/ once the wait has slept 0.3 s, past its timeout (on its own clock:
    # a timer of 0.3 s that a loaded host ran late, past the wait's first second, failed
    # the test with "no job moving", as h359 saw once in 18 runs under load).
    moved = SleepsClock(at=(0.3, lambda: os.rename(staged, pending)))
    monkeypatch.setattr(client_module, "time", moved)
    record = client.wait("moving", timeout=0.05)
    assert (record.id, record.state) == ("moving", JobState.PENDING)
    assert moved.now >= 0.3 and not staged.exists()  # found once back, not before
    monkeypatch.undo()
    monkeypatch.setattr(client_module, "time", clock := SleepsClock())
    with pytest.raises(NotFoundError, match="no job nobody"):
        client.wait("nobody", timeout=0.05)
    # Looking on for an id never seen sleeps out the whole first second (1.0 s); the
    # timeout and three looks two pauses apart are 0.06 s.  Told by the client's own clock,
    # which moves only by its sleeps (a wall-clock bound of 0.9 s was a loaded host's to
    # break).
    assert clock.now < 0.5, clock.now


def test_a_wait_past_its_timeout_says_at_once_that_an_id_is_unknown(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """da5af3c had a wait whose timeout ran out look a whole second for an id it never
    saw: ``spoolq wait --timeout 0.1`` of five unknown ids took 5.3 s, not 0.5 (each past
    the one timeout).  It looks on only while a cancel or retry of the id holds it."""
    monkeypatch.setattr(client_module, "time", clock := SleepsClock())
    for job_id in ("a", "b", "c", "d", "e"):
        with pytest.raises(NotFoundError, match=f"no job {job_id}"):
            client.wait(job_id, timeout=0)
    # A second each is 5 s of sleeps; three looks two pauses apart are 0.01 s each.  Told by
    # the client's own clock, which moves only by its sleeps (a wall-clock bound of 2.5 s
    # was a loaded host's to break).
    assert clock.now < 1.0, clock.now


def test_a_retry_while_another_retry_moves_the_job_is_a_conflict(client: Client) -> None:
    """Another client's retry holds the job in ``stage/`` between ``failed/`` and
    ``pending/``: a retry then found it in no folder and said "no job" (statusd: 404)."""
    client.submit(Job(tool="echo"), "moving")
    claim = client.spool.claim("moving")
    assert claim is not None
    client.spool.fail(claim, client.spool.record_of_claim(claim, JobState.FAILED).model_copy(
        update={"error": ErrorInfo(type=ErrorType.TOOL_ERROR, message="failed")}))
    staged = client.layout.stage / "retry-moving.1.0123456789ab.tmp"
    os.rename(client.layout.job(JobState.FAILED, "moving"), staged)

    def other_retry_ends() -> None:
        client.spool.submit(Job(tool="echo"), "moving")
        os.unlink(staged)

    ends = threading.Timer(0.2, other_retry_ends)
    ends.start()
    try:
        with pytest.raises(ConflictError, match="moving is pending"):
            client.retry("moving")
    finally:
        ends.join()


def test_a_retry_that_races_another_retry_is_a_conflict(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client.retry looks again when the job was not failed at its first try but is at
    its look: it failed just now.  Another client retrying it before that second try left
    it pending, and the second try raised NotFoundError: statusd answered 404, "no such
    job", for a job there.  The two processes' turns are played in order here."""
    client.submit(Job(tool="echo"), "raced")
    claim = client.spool.claim("raced")
    assert claim is not None
    other = Client(client.layout, client.spool.mover)
    real_retry = client.spool.retry
    calls: list[str] = []

    def retry(job_id: str) -> Record:
        calls.append(job_id)
        if len(calls) == 2:  # another client's retry gets there first
            other.retry(job_id)
        try:
            return real_retry(job_id)  # running, then pending: NotFoundError both times
        finally:
            if len(calls) == 1:  # the run fails between the first try and the look
                client.spool.fail(claim, client.spool.record_of_claim(
                    claim, JobState.FAILED).model_copy(update={"error": ErrorInfo(
                        type=ErrorType.TOOL_ERROR, message="failed between the looks")}))

    monkeypatch.setattr(client.spool, "retry", retry)
    with pytest.raises(ConflictError, match="raced is pending; only failed jobs"):
        client.retry("raced")
    assert client.get("raced").state is JobState.PENDING


def test_a_client_used_after_a_fork_names_the_childs_pid(client: Client) -> None:
    """The spool took its pid once: a cancel made by a forked child said the parent's
    pid in its record (QA, h313)."""
    job_id = client.submit(Job(tool="echo"))
    pid = os.fork()
    if pid == 0:  # the child: a cancel, then out at once (no pytest teardown here)
        try:
            client.cancel(job_id)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    record = client.get(job_id)
    assert (record.state, record.pid) == (JobState.FAILED, pid), record
