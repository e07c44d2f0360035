"""A retry refused after it took the failed record (the id pending again, or running)
while a newer record of the id took ``failed/<id>.json``: the record it took could not
go back, and the refused retry left it in ``stage/`` (QA h332: a 5-minute stress of
cancel, retry and submit of one id from three clients left one there).  A long-lived
client (statusd) holds it for its life, as recovery leaves a live process's staging
alone.  The old record is superseded by the newer one, and goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import listing, make_spool, submit

from spool import submission
from spool.errors import ConflictError
from spool.models import Job
from spool.states import JobState

pytestmark = [pytest.mark.timeout(60)]


def _first(between: list[Callable[[], None]], call: Callable[..., Any]) -> Callable[..., Any]:
    """``call``, which runs what ``between`` holds first, the first time."""

    def hooked(*args: Any, **kwargs: Any) -> Any:
        while between:
            between.pop(0)()
        return call(*args, **kwargs)

    return hooked


@pytest.mark.parametrize("then", ["pending", "running"])
def test_a_refused_retry_leaves_nothing_staged(tmp_path: Path, then: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool")
    other = make_spool(tmp_path / "spool")
    layout = spool.layout
    submit(spool, "x", params={"message": 1})
    assert spool.cancel_pending("x") is not None  # failed/x.json, cancelled

    def newer() -> None:  # another client, while the retry holds the old record
        other.submit(Job(tool="echo", params={"message": 2}), "x")
        assert other.cancel_pending("x") is not None  # a newer failed/x.json
        other.submit(Job(tool="echo", params={"message": 3}), "x")
        if then == "running":
            assert other.claim("x") is not None

    if then == "pending":
        monkeypatch.setattr(spool.mover, "publish", _first([newer], spool.mover.publish))
    else:
        monkeypatch.setattr(submission, "_running", _first([newer], submission._running))
    with pytest.raises(ConflictError):
        spool.retry("x")
    assert listing(layout.stage) == [] and listing(layout.tmp) == []
    assert listing(layout.folder(JobState.FAILED)) == ["x.json"]
    assert orjson.loads(layout.job(JobState.FAILED, "x").read_bytes())["params"] == {
        "message": 2}  # the newer record stands
