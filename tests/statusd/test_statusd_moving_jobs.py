"""DESIGN section 6 as an integrator meets it: ``GET /api/v1/tasks/{id}`` answers 404
only for an id the spool does not hold.

A job is in exactly one state folder at every moment (DESIGN section 2), so a GET
of a job just dropped, while a processor claims or completes it, has a record to
answer with.
"""

from __future__ import annotations

import os

import orjson
import pytest
from statusdkit import claim, finish, submit

from spool.states import JobState
from spool.transitions import Spool
from statusd.items import Stamp
from statusd.loader import Absent, Loader


def _moving_after_its_stat(spool: Spool, monkeypatch: pytest.MonkeyPatch, move: str
                           ) -> tuple[Loader, list[str]]:
    """A loader that, the first time it stats job ``moved`` (pending, or running for a
    ``completion``), has it claimed (pending/ -> running/) or finished (the record lands,
    running/ goes) right after the stat; the moves it made."""
    submit(spool, "moved")
    taken = claim(spool, "moved") if move == "completion" else None
    loader = Loader(spool.layout)
    current = loader.current
    moves: list[str] = []

    def looked(job_id: str) -> Stamp | None:
        stamp = current(job_id)
        if not moves:
            moves.append(move)
            if taken is None:
                claim(spool, "moved")
            else:
                finish(spool, taken, {"ok": True})
        return stamp

    monkeypatch.setattr(loader, "current", looked)
    return loader, moves


@pytest.mark.parametrize("move", ["claim", "completion"])
def test_a_job_moved_between_its_stat_and_its_read_is_read_where_it_went(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, move: str) -> None:
    """statusd reads a job the index has not seen yet from disk (Loader.full_body): it
    stat'ed ``pending/<id>.json`` and then read it, and a claim in between made the GET
    answer 404 "no task" for a job that was in ``running/`` (1 of 60 GETs sent right
    after a drop, against a real processor running echo jobs). The same at completion,
    which removes ``running/<id>.json`` right after the record lands. The file is looked
    for again, as ``spoolq show`` does."""
    loader, moves = _moving_after_its_stat(spool, monkeypatch, move)
    try:
        body = loader.full_body("moved")
    finally:
        loader.close()
    assert moves == [move]
    assert body is not None, "a job in the spool read as no job (GET: 404)"
    record = orjson.loads(body)
    assert record["id"] == "moved"
    expected = JobState.RUNNING if move == "claim" else JobState.DONE
    assert record["state"] == expected.value
    assert os.path.exists(spool.layout.job(expected, "moved"))


@pytest.mark.parametrize("move", ["claim", "completion"])
def test_an_unindexed_job_moved_between_its_stat_and_its_read_is_refreshed(
        spool: Spool, monkeypatch: pytest.MonkeyPatch, move: str) -> None:
    """The same race on the index's own read (Loader.refresh), which a task stream
    (``/api/v1/ws/tasks/{id}``) asks for an id the index has not seen yet before it
    answers 404: an id it did not know whose file moved between the stat and the read
    was left out of the refresh, as if it were in no folder."""
    loader, moves = _moving_after_its_stat(spool, monkeypatch, move)
    try:
        changes = loader.refresh(["moved"], {})
    finally:
        loader.close()
    assert moves == [move]
    assert [job_id for job_id, _ in changes] == ["moved"], "a job in the spool left unindexed"
    item = changes[0][1]
    expected = JobState.RUNNING if move == "claim" else JobState.DONE
    assert not isinstance(item, Absent) and item.state is expected
