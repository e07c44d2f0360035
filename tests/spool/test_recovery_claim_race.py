"""Recovery keeps the cancel request of a job claimed as it looked for it.

The sidecar pass removes a cancel request whose job is in neither ``running/`` nor
``pending/``, looking in ``running/`` first: a claim (another processor's) that moved
the job from ``pending/`` to ``running/`` between the two lookups made it seen in
neither, and the request was removed, the user's cancel lost and the job run to its
end.  A requeue (``running/`` back to ``pending/``) is caught by the first lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spoolkit import make_spool, submit

from spool.claim import Claim
from spool.fsops import StrPath
from spool.recovery import Recovery
from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_cancel_request_of_a_job_claimed_mid_pass_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool")
    submit(spool, "c1")
    request = spool.layout.cancel_request("c1")
    request.write_bytes(b"{}")
    running = spool.layout.job_str(JobState.RUNNING, "c1")
    real_lstat = os.lstat
    claimed: list[Claim | None] = []

    def lstat_claiming(path: StrPath, *args: object, **kw: object) -> os.stat_result:
        if os.fspath(path) != running or claimed:
            return real_lstat(path, *args, **kw)  # type: ignore[arg-type]
        try:
            return real_lstat(path)  # not there yet
        finally:
            claimed.append(None)
            claimed[0] = spool.claim("c1")  # another processor's claim, just after

    monkeypatch.setattr(os, "lstat", lstat_claiming)
    try:
        Recovery(spool).scan()
    finally:
        monkeypatch.undo()
        if claimed and claimed[0] is not None:
            claimed[0].close()
    assert claimed and claimed[0] is not None, "the claim did not come mid-pass"
    assert request.exists(), "the cancel request of the job now running was removed"
