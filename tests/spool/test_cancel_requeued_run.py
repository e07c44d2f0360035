"""A cancel asked of a running job whose run then goes back to ``pending/`` before its
processor acts on the request: a stop's requeue as the grace ends (the stop looked for
a request just before it was written), or a retry's backoff (the run failed retryably
as the request came).

The request names the run that ended, so no processor acts on it for the job that is
pending now (test_cancel_request_runs.py): `spoolq cancel` said "the cancel request
stays in cancel/ for its processor to act on", and the job ran again.  The client sees
the same job (its submission time) back in ``pending/`` while it waits and cancels it
there; claimed again meanwhile, it names the new run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from spoolkit import listing, make_spool, submit

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType
from spool.jobfile import parse_job
from spool.models import ErrorInfo
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

P, R, F = JobState.PENDING, JobState.RUNNING, JobState.FAILED


def _when_asked(spool: Spool, then: Callable[[], None]) -> threading.Thread:
    """A thread that runs ``then`` once ``cancel/x`` is written (the processor's side)."""
    def watch() -> None:
        deadline = time.monotonic() + 10
        while not spool.layout.cancel_request("x").exists():
            assert time.monotonic() < deadline, "no cancel request was written"
            time.sleep(0.001)
        then()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def _requeue(spool: Spool, claim: Claim, client: Client, how: str) -> Callable[[], None]:
    """Send the run back as the processor does (the submission time pinned)."""
    submitted = client.reader.get("x").submitted_at

    def requeue() -> None:
        job = parse_job(claim.data)
        if how == "stop":  # lifecycle._stop_run: not counted
            back = job.model_copy(update={"not_before": None, "submitted_at": submitted})
            assert spool.requeue_cut_short(claim, back)
        else:  # Finisher.retry: counted, its backoff ahead
            back = job.model_copy(update={
                "attempts": 1, "submitted_at": submitted, "error": ErrorInfo(
                    type=ErrorType.TIMEOUT, message="timed out",
                    retry_at=client.clock.now() + timedelta(seconds=30))})
            assert spool.requeue(claim, back)
        claim.close()
    return requeue


@pytest.mark.parametrize("how", ["stop", "retry"])
def test_a_run_sent_back_to_pending_as_the_cancel_came_is_cancelled_there(
        tmp_path: Path, how: str) -> None:
    spool = make_spool(tmp_path / "spool")
    client = Client(spool.layout, spool.mover)
    submit(spool, "x")
    claim = spool.claim("x")
    assert claim is not None
    thread = _when_asked(spool, _requeue(spool, claim, client, how))
    try:
        started = time.monotonic()
        record = client.cancel("x", wait_s=20)
    finally:
        thread.join()
    assert record.state is F and record.error is not None, record
    assert record.error.type is ErrorType.CANCELLED
    assert time.monotonic() - started < 10, "seen back in pending/, not at the wait's end"
    assert (listing(spool.layout.folder(P)), listing(spool.layout.folder(R))) == ([], [])
    assert listing(spool.layout.cancel) == [], "the request for the ended run is removed"


def test_a_run_sent_back_and_claimed_again_gets_a_request_naming_the_new_run(
        tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    client = Client(spool.layout, spool.mover)
    submit(spool, "x")
    first = spool.claim("x")
    assert first is not None
    claims: list[Claim] = []
    requeue = _requeue(spool, first, client, "stop")

    def requeue_and_claim_again() -> None:
        requeue()
        second = spool.claim("x")  # another processor, at once
        assert second is not None
        claims.append(second)

    thread = _when_asked(spool, requeue_and_claim_again)
    try:
        record = client.cancel("x", wait_s=1)
    finally:
        thread.join()
        for claim in claims:
            claim.close()
    assert record.state is R, record
    request = orjson.loads(spool.layout.cancel_request("x").read_bytes())
    assert request == {"run_inode": os.lstat(spool.layout.job(R, "x")).st_ino}
