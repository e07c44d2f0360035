"""Two finishers of one id at once, one record in each terminal folder.

A record replaces the id's record in the other terminal folder by removing it once its
own is out.  A run finishing while a client cancels the id's re-drop waiting behind it
(``spoolq cancel``, ``POST .../cancel``) publishes into ``done/`` as the cancel
publishes into ``failed/``: when both records were out before either removed the other,
each removed the other's, and the id was left with no record, the run's result lost and
the job in no folder.  A finisher must remove the other record only while its own
stands (:mod:`spool.superseded`), and recovery must settle what a finisher killed in
between holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from spoolkit import (
    done_record,
    kill_in_actor,
    listing,
    make_spool,
    read_json,
    run_to_end,
    strace_path,
    submit,
)

from spool import orphans
from spool.client import Client
from spool.errors import ConflictError
from spool.fsops import Mover
from spool.models import Record
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def _inside_window_of(monkeypatch: pytest.MonkeyPatch, first: Spool,
                      other_finisher: Callable[[], None]) -> None:
    """Run ``other_finisher`` whole once ``first`` has published its record and before it
    removes the other folder's: the other finisher publishes and removes in that window."""
    drop = Spool._drop_superseded
    pending = [other_finisher]

    def hooked(self: Spool, record: Record, *path: str) -> None:
        if self is first and pending:
            pending.pop()()
        drop(self, record, *path)

    monkeypatch.setattr(Spool, "_drop_superseded", hooked)


@pytest.mark.parametrize("first", ["cancel", "run"])
def test_a_run_and_a_cancel_of_its_waiting_redrop_finishing_at_once_leave_a_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    processor = make_spool(tmp_path / "spool")
    layout = processor.layout
    submit(processor, "daily")
    run_to_end(processor, "daily", result="yesterday")
    submit(processor, "daily")
    claim = processor.claim("daily")  # today's run
    assert claim is not None
    submit(processor, "daily")  # a re-drop, waiting for the run to end
    client = Client(layout, Mover(layout, FsyncMode.NEVER))

    def run_ends() -> None:
        processor.complete(claim, done_record(claim, "today"))

    def cancel() -> None:
        client.cancel("daily", wait_s=0)

    if first == "cancel":
        _inside_window_of(monkeypatch, client.spool, run_ends)
        cancel()
    else:
        # Inside the run's window its record is out and its running file held: the
        # cancel is refused now (800df41: its record would replace the run's, the only
        # sign the run ended), the re-drop kept; asked again once the run is over, it
        # goes on.  (Its owner is this thread: not waited for.)
        monkeypatch.setattr(orphans, "FINISHING_WAIT_S", 0.0)
        refused: list[ConflictError] = []

        def refused_cancel() -> None:
            with pytest.raises(ConflictError, match="daily not cancelled") as info:
                cancel()
            refused.append(info.value)

        _inside_window_of(monkeypatch, processor, refused_cancel)
        run_ends()
        assert len(refused) == 1
        assert listing(layout.folder(P)) == ["daily.json"]
        cancel()

    # The finisher that went second in the window removed the first one's record while
    # its own stood; the first then found its own gone and put the other back.
    done, failed = listing(layout.folder(D)), listing(layout.folder(F))
    if first == "cancel":
        assert (done, failed) == (["daily.json"], [])
        assert read_json(layout.job(D, "daily"))["result"] == "today"
    else:
        assert (done, failed) == ([], ["daily.json"])
        assert read_json(layout.job(F, "daily"))["error"]["type"] == "cancelled"
    assert listing(layout.folder(P)) == listing(layout.folder(R)) == []
    assert listing(layout.stage) == listing(layout.tmp) == []


def _kill_at_stat(root: Path, path: Path, nth: int, command: str, arg: str) -> None:
    """Run crash_actor.py's ``command arg`` on the spool at ``root`` (``always``),
    SIGKILLed on entering its ``nth`` stat (``os.lstat``) of ``path``."""
    if strace_path() is None:
        pytest.skip("needs strace, allowed to trace")
    kill_in_actor(root, command, arg, syscalls="%file", inject="%%stat", nth=nth, path=path)


@pytest.mark.parametrize("then", ["its record stands", "its record is gone"])
def test_a_finisher_killed_holding_the_record_it_supersedes_leaves_it_to_recovery(
        tmp_path: Path, then: str) -> None:
    """A cancel killed after moving the id's done record where moves stage (to remove it:
    its own failed record is out), before it looked at its own: recovery removes the held
    record while the failed one stands, and puts it back when none stands there (with
    the cancel undone: the job pending again)."""
    spool = make_spool(tmp_path / "spool", FsyncMode.ALWAYS)
    layout = spool.layout
    submit(spool, "daily")
    run_to_end(spool, "daily", result="yesterday")
    submit(spool, "daily")
    # It lstats failed/daily.json (what its record replaces), renames its record there,
    # moves done/daily.json aside, and only then lstats failed/daily.json again (to see
    # that its own record stands).
    _kill_at_stat(layout.root, layout.job(F, "daily"), 2, "cancel", "daily")
    assert sorted(n.split(".")[0] for n in listing(layout.stage)) == [
        "cancel-daily", "superseded-done-daily"]
    assert listing(layout.folder(D)) == []
    if then == "its record is gone":
        layout.job(F, "daily").unlink()  # as by a finisher racing it, killed as well

    report = Recovery(spool).scan()

    assert listing(layout.stage) == listing(layout.folder(R)) == []
    if then == "its record stands":
        assert listing(layout.folder(D)) == listing(layout.folder(P)) == []
        assert read_json(layout.job(F, "daily"))["error"]["type"] == "cancelled"
    else:
        assert "daily" in report.restored
        assert listing(layout.folder(F)) == []
        assert read_json(layout.job(D, "daily"))["result"] == "yesterday"
        assert listing(layout.folder(P)) == ["daily.json"]
    assert not Recovery(spool).scan().changed, "a second scan still had work"


def test_a_waiting_redrop_that_holds_no_job_is_not_cancelled_while_its_id_runs(
        tmp_path: Path) -> None:
    """Cancelled, its bytes went to ``failed/<id>.orig`` beside its record, and the run
    ahead of it then replaced that record with its own and removed the bytes as the
    superseded record's original: the client had been told they were kept.  The cancel
    is refused; the file stays pending, to be quarantined once the run ends."""
    processor = make_spool(tmp_path / "spool")
    layout = processor.layout
    submit(processor, "daily")
    claim = processor.claim("daily")
    assert claim is not None
    half = b'{"tool": "echo", "params": '
    (layout.folder(P) / "daily.json").write_bytes(half)
    client = Client(layout, Mover(layout, FsyncMode.NEVER))

    with pytest.raises(ConflictError, match="holds no job"):
        client.cancel("daily", wait_s=0)
    assert (layout.folder(P) / "daily.json").read_bytes() == half
    assert listing(layout.folder(F)) == []
    processor.complete(claim, done_record(claim, "the run"))
    assert read_json(layout.job(D, "daily"))["result"] == "the run"
    assert (layout.folder(P) / "daily.json").read_bytes() == half
    assert listing(layout.stage) == [] and listing(layout.tmp) == []
