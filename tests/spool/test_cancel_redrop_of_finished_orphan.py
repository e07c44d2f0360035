"""A cancel of a re-drop waiting behind a run that has its record, its processor dead.

Completion publishes the record and then removes ``running/<id>.json`` (DESIGN section
9); a processor SIGKILLed between the two leaves the running file of a finished run,
and recovery tells it finished by that run's record.  A client that re-drops the id
meanwhile (it is in ``done/``) and cancels that re-drop while it waits in ``pending/``
replaces the run's record with its own ``cancelled`` one: the next recovery scan found
no record of the run, requeued the finished run as an orphan (``abandoned``), ran it a
second time and its ``done`` record replaced the cancel the client had been answered
(chaos soak ``--meddle --meddlers 3``, seed 15: ``cancel not kept`` 1, h366).
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stuck_owner
from spoolkit import (
    done_record,
    listing,
    make_spool,
    read_json,
    refused_bytes,
    spoolq_bytes,
    submit,
)

from spool.client import Client
from spool.errors import ConflictError, SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.recovery import Recovery
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

P, R, D, F = JobState.PENDING, JobState.RUNNING, JobState.DONE, JobState.FAILED


def _refused(path: object, **_: object) -> bool:
    """A removal the disk refuses (no write access to ``running/``), as a Mover's
    ``unlink_durable``."""
    raise PermissionError(13, "Permission denied", str(path))


def _finished_orphan(root: Path, max_attempts: int = 25) -> Spool:
    """A spool whose job ``daily`` has its run's record out and its running file left:
    its processor died between the two steps of its completion."""
    processor = make_spool(root)
    submit(processor, "daily", max_attempts=max_attempts)
    claim = processor.claim("daily")
    assert claim is not None
    processor.publish_terminal(done_record(claim, "first"))
    claim.close()
    return processor


@pytest.mark.parametrize("max_attempts", [1, 25])
def test_a_cancelled_redrop_of_a_finished_orphan_keeps_its_cancel(
        tmp_path: Path, max_attempts: int) -> None:
    """Before: with attempts left the run was requeued (and ran again); without, it was
    failed ``abandoned`` over the cancel."""
    processor = _finished_orphan(tmp_path / "spool", max_attempts)
    layout = processor.layout
    assert listing(layout.folder(R)) == listing(layout.folder(D)) == ["daily.json"]

    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    submit(client.spool, "daily")  # a re-drop of the id seen done
    cancelled = client.cancel("daily", wait_s=0)
    assert cancelled.state is F and cancelled.error is not None
    assert cancelled.error.type == "cancelled"

    report = Recovery(processor).scan()

    assert report.requeued == report.abandoned == [], "the finished run was settled again"
    assert listing(layout.folder(P)) == listing(layout.folder(R)) == []
    assert listing(layout.folder(D)) == []
    assert read_json(layout.job(F, "daily"))["error"]["type"] == "cancelled"


def test_a_purged_record_of_a_finished_orphan_is_not_run_again(tmp_path: Path) -> None:
    """The same with ``spoolq purge``: the run's record purged before any recovery pass
    settled its running file, the next pass requeued the run and it ran again."""
    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    time.sleep(0.3)  # (not aged by its mtime: the record must stay newer than the claim)

    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    assert client.purge(0.2).removed == 1

    report = Recovery(processor).scan()

    assert report.requeued == report.abandoned == [], "the finished run was settled again"
    assert [listing(layout.folder(s)) for s in (P, R, D, F)] == [[], [], [], []]


@contextlib.contextmanager
def _stuck_owner(root: Path) -> Iterator[subprocess.Popen[str]]:
    """A processor (stuck_owner.py) that claimed ``daily`` at ``root``, published its
    run's record and stays before the running file's removal, as one stuck there; killed
    (SIGKILL) on leaving, if not before."""
    owner = subprocess.Popen([sys.executable, str(stuck_owner.SCRIPT), str(root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "recorded"
        yield owner
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_a_cancel_while_the_runs_owner_is_between_record_and_removal_waits_for_it(
        tmp_path: Path) -> None:
    """The run's processor alive, its record out and its running file not yet removed,
    at the cancel of the re-drop, then killed before the removal: the cancel found the
    file held and went on, its record replaced the run's, and recovery requeued the
    finished run (it ran again over the cancel).  The owner's lock is waited for (it
    is gone in a moment: removed, or its owner dead)."""
    root = tmp_path / "spool"
    processor = make_spool(root)
    layout = processor.layout
    submit(processor, "daily", max_attempts=25)
    with _stuck_owner(root) as owner:
        client = Client(layout, Mover(layout, FsyncMode.NEVER))
        submit(client.spool, "daily")
        killer = threading.Timer(0.3, owner.kill)  # SIGKILL, in the window, mid-cancel
        killer.start()
        cancelled = client.cancel("daily", wait_s=0)
        killer.join()
    assert cancelled.error is not None and cancelled.error.type == "cancelled"

    report = Recovery(processor).scan()

    assert report.requeued == report.abandoned == [], "the finished run was settled again"
    assert [listing(layout.folder(s)) for s in (P, R, D)] == [[], [], []]
    assert read_json(layout.job(F, "daily"))["error"]["type"] == "cancelled"


def test_purge_reads_no_running_file_whose_id_has_no_record_as_new(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Purge settles finished runs' running files first: each was leased and read whole
    (up to MAX_ACTIVE_BYTES) even when its id has no record newer than its claim, the
    case of every run of a live or dead fleet (1,000 running files of 500 kB: 0 s
    before, 4.7 s with it).  Looked at by lstat first."""
    import spool.orphans  # noqa: PLC0415

    processor = make_spool(tmp_path / "spool")
    for n in range(3):
        submit(processor, f"j{n}")
        claim = processor.claim(f"j{n}")
        assert claim is not None
        claim.close()  # dead, no record
    leased: list[str] = []
    real = spool.orphans.lease
    monkeypatch.setattr(spool.orphans, "lease",
                        lambda path, job_id: leased.append(job_id) or real(path, job_id))
    client = Client(processor.layout, Mover(processor.layout, FsyncMode.NEVER))

    assert client.purge(0).removed == 0

    assert leased == []
    assert listing(processor.layout.folder(R)) == ["j0.json", "j1.json", "j2.json"]


def test_purge_keeps_the_record_of_a_finished_orphan_it_could_not_settle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settling is best effort (no write access to running/, EIO): its record was
    purged all the same, and the next recovery pass requeued the finished run."""
    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    time.sleep(0.3)
    client = Client(layout, Mover(layout, FsyncMode.NEVER))

    monkeypatch.setattr(client.spool.mover, "unlink_durable", _refused)
    report = client.purge(0.2)
    assert (report.removed, report.kept) == (0, 1)

    scan = Recovery(processor).scan()

    assert scan.requeued == scan.abandoned == [], "the finished run was settled again"
    assert scan.finished == ["daily"]



def _redrop_beside(layout: Layout) -> tuple[Client, bytes, bytes]:
    """A client, having re-dropped ``daily`` behind its run's running file, and the
    bytes of that re-drop and of the run's record as they are now."""
    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    submit(client.spool, "daily", meta={"drop": 2})
    return (client, layout.job(P, "daily").read_bytes(), layout.job(D, "daily").read_bytes())


def test_a_cancel_that_cannot_settle_the_finished_run_is_refused_and_the_redrop_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its settling is best effort (no write access to running/, EIO): the cancel's
    record replaced the run's all the same, and the next recovery pass ran the finished
    run again over the cancel.  Refused now (ConflictError), the re-drop back in
    ``pending/`` as it was; asked again once the file is settled, it goes on."""
    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    client, redrop, record = _redrop_beside(layout)

    with monkeypatch.context() as patch:
        patch.setattr(client.spool.mover, "unlink_durable", _refused)
        with pytest.raises(ConflictError, match="daily not cancelled"):
            client.cancel("daily", wait_s=0)

    assert layout.job(P, "daily").read_bytes() == redrop
    assert layout.job(D, "daily").read_bytes() == record
    assert listing(layout.folder(F)) == []
    scan = Recovery(processor).scan()
    assert scan.requeued == scan.abandoned == [], "the finished run was settled again"
    assert scan.finished == ["daily"]
    cancelled = client.cancel("daily", wait_s=0)  # settled: it goes on
    assert cancelled.error is not None and cancelled.error.type == "cancelled"
    assert [listing(layout.folder(s)) for s in (P, R, D)] == [[], [], []]


def test_a_cancel_while_the_runs_owner_stays_between_record_and_removal_is_refused(
        env: dict[str, str], root: Path) -> None:
    """The run's processor alive and stuck between its record and its running file's
    removal (a stalled disk) past the cancel's wait: the cancel's record replaced the
    run's, and once that processor died, recovery ran the finished run again.  The
    ``spoolq cancel`` of the re-drop is refused in one line (exit 1), the re-drop kept."""
    processor = make_spool(root)
    submit(processor, "daily", max_attempts=25)
    with _stuck_owner(root):
        _, redrop, record = _redrop_beside(processor.layout)
        refused_bytes(spoolq_bytes(env, "cancel", "daily"), 1, "daily not cancelled", "try again")
    layout = processor.layout
    assert layout.job(P, "daily").read_bytes() == redrop
    assert layout.job(D, "daily").read_bytes() == record

    scan = Recovery(processor).scan()  # its owner dead: settled

    assert scan.requeued == scan.abandoned == [], "the finished run was settled again"
    assert scan.finished == ["daily"]
    assert listing(layout.folder(P)) == ["daily.json"]


_CANCEL_KILLED_AS_A_NEWER_DROP_LANDS = """
import sys
sys.path.insert(0, {kit!r})
import orjson, os, signal
from spool import orphans
from pathlib import Path
from spool.client import Client
from spool.errors import ConflictError, SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
root = Path({root!r})
real = orphans.drop_if_finished

asked = []

def newer_drop_first(spool, job_id, *args):  # a cron's re-drop while the job is staged
    asked.append(job_id)
    if len(asked) == 1:  # asked before the take: the run not yet ended then
        return orphans.Settle.NOTHING
    (root / "tmp" / "d3").write_bytes(orjson.dumps({{"tool": "echo", "meta": {{"drop": 3}}}}))
    os.rename(root / "tmp" / "d3", root / "pending" / "daily.json")
    print("settled", real(spool, job_id, *args).name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the canceller dies, its re-drop staged

orphans.drop_if_finished = newer_drop_first
layout = Layout(root)
Client(layout, Mover(layout, FsyncMode.NEVER)).cancel("daily", wait_s=0)
"""


def test_a_cancel_killed_with_its_redrop_staged_never_replaces_the_runs_record(
        root: Path) -> None:
    """The cancel finds the run's owner between its record and the removal, a newer
    drop of the id lands while it holds the re-drop staged, and the canceller is killed
    there.  Recovery's Staged._restore_cancel, finding the newer drop pending, finished
    the cancel over the run's record (its owner still stuck), or ahead of the orphans'
    settling (its owner dead): the run's record was replaced by the cancel's, and the
    finished run was failed ``abandoned`` (or requeued and run again; h371).  It waits
    for that run to be settled."""
    processor = make_spool(root)
    layout = processor.layout
    submit(processor, "daily", max_attempts=25)
    with _stuck_owner(root):
        submit(processor, "daily", meta={"drop": 2})
        record = layout.job(D, "daily").read_bytes()
        killed = subprocess.run(
            [sys.executable, "-c", _CANCEL_KILLED_AS_A_NEWER_DROP_LANDS.format(
                kit=str(Path(__file__).parent), root=str(root))],
            capture_output=True, text=True, timeout=30, check=False)
        assert (killed.returncode, killed.stdout) == (-9, "settled LEFT\n"), killed
        assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 3}
        assert [n.startswith("cancel-daily.") for n in listing(layout.stage)] == [True]

        scan = Recovery(processor).scan()  # its owner still between the two steps

        assert layout.job(D, "daily").read_bytes() == record, "the run's record replaced"
        assert listing(layout.folder(F)) == []

    scan = Recovery(processor).scan()  # its owner dead: the run settled, then the cancel

    assert scan.requeued == scan.abandoned == [], "the finished run was settled again"
    assert listing(layout.folder(R)) == listing(layout.stage) == []
    assert read_json(layout.job(F, "daily"))["meta"] == {"drop": 2}
    assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 3}


def test_a_cancel_that_may_not_open_the_finished_runs_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running file the canceller may not open (EACCES: another user's drop, mode
    0600, claimed by a root processor) was taken for gone: the cancel went on, its
    record replaced the run's, and the next recovery pass requeued the finished run."""
    from spool import orphans  # noqa: PLC0415

    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    client, redrop, record = _redrop_beside(layout)
    real = orphans.open_nofollow

    def denied(path: object) -> int:
        if Path(str(path)).parent.name == "running":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(orphans, "open_nofollow", denied)
        with pytest.raises(ConflictError, match="daily not cancelled"):
            client.cancel("daily", wait_s=0)

    assert layout.job(P, "daily").read_bytes() == redrop
    assert layout.job(D, "daily").read_bytes() == record
    scan = Recovery(processor).scan()
    assert scan.requeued == scan.abandoned == [], "the finished run was settled again"


def _refused_as_a_newer_drop_lands(client: Client, layout: Layout
                                   ) -> pytest.ExceptionInfo[ConflictError]:
    """Cancel ``daily`` as the run ahead of its re-drop ends after the cancel asked and
    before it took the re-drop (its running file then cannot be settled), and a newer
    drop of the id lands in ``pending/`` while the refused cancel holds the re-drop
    staged: the refusal."""
    newer = Client(layout, Mover(layout, FsyncMode.NEVER))

    def refused(path: object, **_: object) -> bool:
        submit(newer.spool, "daily", meta={"drop": 3})  # while the re-drop is staged
        return _refused(path)

    from spool import orphans  # noqa: PLC0415
    real = orphans.drop_if_finished
    asked: list[str] = []

    def after_the_take(spool: Spool, job_id: str, *args: float) -> orphans.Settle:
        asked.append(job_id)  # asked before the take: the run settled, as far as told
        return orphans.Settle.NOTHING if len(asked) == 1 else real(spool, job_id, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(orphans, "drop_if_finished", after_the_take)
        patch.setattr(client.spool.mover, "unlink_durable", refused)
        with pytest.raises(ConflictError, match="daily not cancelled") as refusal:
            client.cancel("daily", wait_s=0)
    # Not "try again": that cancelled the newer drop, and recovery this one all the same.
    assert "try again" not in str(refusal.value)
    assert "a newer drop of daily is pending in its place (not cancelled)" in str(refusal.value)
    assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 3}
    return refusal


def _staged_cancels(layout: Layout) -> list[Path]:
    return [folder / name for folder in (layout.stage, layout.tmp)
            for name in listing(folder) if "cancel-" in name]


def test_a_refused_cancel_whose_redrop_cannot_go_back_records_it_under_an_id_of_its_own(
        tmp_path: Path) -> None:
    """The re-drop, which cannot go back, was dropped with no record (d2a9814: as a
    drop's rename would replace it, but a ``spoolq submit`` is refused while one is
    pending; h374); then it was kept staged for recovery, which, staged by a live
    statusd, quarantined it a day later saying its canceller had died (h375).  It is
    recorded ``cancelled`` at once under a fresh id of its own, which the refusal
    names: under ``daily`` its record would replace the run's it was refused for."""
    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    client, _, record = _redrop_beside(layout)

    refusal = _refused_as_a_newer_drop_lands(client, layout)

    said = str(refusal.value)
    assert "this drop will not run: it is recorded cancelled as job " in said
    aside = said.rpartition(" ")[2]
    assert listing(layout.folder(F)) == [f"{aside}.json"]
    held = read_json(layout.job(F, aside))
    assert (held["meta"], held["tool"], held["error"]["type"]) == ({"drop": 2}, "echo",
                                                                  "cancelled")
    assert held["error"]["message"].startswith("cancelled while pending as job daily, ")
    assert _staged_cancels(layout) == []
    assert layout.job(D, "daily").read_bytes() == record
    scan = Recovery(processor).scan()  # the run settled; nothing of the cancel is left
    assert scan.requeued == scan.abandoned == scan.restored == []
    assert listing(layout.folder(F)) == [f"{aside}.json"]
    assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 3}
    retried = client.retry(aside)  # run under its own id, as asked
    assert retried.id == aside and read_json(layout.job(P, aside))["meta"] == {"drop": 2}


@pytest.mark.parametrize("error", [SpoolIOError("cannot write: No space left on device"),
                                   OSError(errno.ELOOP, "Too many levels of symbolic links")])
def test_a_refused_cancel_whose_redrop_can_neither_go_back_nor_be_recorded_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Its record under an id of its own not written (ENOSPC), the re-drop stays staged,
    its bytes kept, for recovery to settle once the run ahead of it is (as
    `test_a_cancel_killed_with_its_redrop_staged_...` shows).  A raw OSError of the
    write (an errno the mover does not take for the spool's trouble) got out as it was:
    statusd answered 503 "cannot cancel daily now", and the cancel asked again took the
    newer drop nobody had asked to cancel (QA h382)."""
    processor = _finished_orphan(tmp_path / "spool")
    layout = processor.layout
    client, redrop, record = _redrop_beside(layout)

    def full(*_: object, **__: object) -> bool:
        raise error

    monkeypatch.setattr(client.spool.mover, "publish", full)
    refusal = _refused_as_a_newer_drop_lands(client, layout)

    assert str(refusal.value).endswith(
        "this drop is held aside for recovery, which puts it back in pending/ should daily "
        "be free by then, else records it cancelled")
    assert [path.read_bytes() for path in _staged_cancels(layout)] == [redrop]
    assert layout.job(D, "daily").read_bytes() == record
    assert listing(layout.folder(F)) == []


def test_a_refused_cancel_never_frees_pending_for_a_submit_of_the_id(root: Path) -> None:
    """The cancel held the re-drop staged while it waited for the run's owner (2 s, and
    again at each scan of a processor putting the cancel off): ``pending/`` was free, a
    ``spoolq submit`` of the id (refused while a drop is pending) was accepted there, the
    give-back dropped the re-drop with no record, and the request left for it cancelled
    the newer drop, which nobody had asked to cancel (QA h374).  The run is asked first:
    the re-drop is not taken while that run cannot be settled."""
    processor = make_spool(root)
    layout = processor.layout
    submit(processor, "daily", max_attempts=25)
    accepted: list[float] = []
    done = threading.Event()

    def submitter() -> None:  # a cron's `spoolq submit --id daily`, again and again
        other = Client(layout, Mover(layout, FsyncMode.NEVER))
        while not done.is_set() and not accepted:
            try:
                submit(other.spool, "daily", meta={"drop": 3})
                accepted.append(time.monotonic())
            except ConflictError:
                time.sleep(0.001)

    with _stuck_owner(root):
        client, redrop, record = _redrop_beside(layout)
        thread = threading.Thread(target=submitter)
        thread.start()
        try:
            with pytest.raises(ConflictError, match="daily not cancelled"):
                client.cancel("daily", wait_s=0)
        finally:
            done.set()
            thread.join()
        assert accepted == [], "a submit of the id was accepted while the re-drop was staged"
        assert layout.job(P, "daily").read_bytes() == redrop
        assert layout.job(D, "daily").read_bytes() == record
        assert [n for n in listing(layout.stage) if n.startswith("cancel-")] == []


def test_a_cancel_refused_after_its_request_was_written_takes_the_request_back(
        root: Path) -> None:
    """The re-drop lands after the cancel found nothing pending and before it looked the
    id up: the request written for the job then seen pending stood after the refusal,
    and a processor cancelled the re-drop later all the same (QA h374)."""
    processor = make_spool(root)
    layout = processor.layout
    submit(processor, "daily", max_attempts=25)
    with _stuck_owner(root):
        client = Client(layout, Mover(layout, FsyncMode.NEVER))
        real = client.spool.cancel_pending
        calls: list[str] = []

        def redrop_lands_after_the_first(job_id: str, **kw: float | None) -> object:
            calls.append(job_id)
            got = real(job_id, **kw)
            if len(calls) == 1:
                submit(processor, "daily", meta={"drop": 2})  # a cron's re-drop, just now
            return got

        client.spool.cancel_pending = redrop_lands_after_the_first  # type: ignore[method-assign]
        with pytest.raises(ConflictError, match="daily not cancelled"):
            client.cancel("daily", wait_s=1)
        assert len(calls) == 2
        assert read_json(layout.job(P, "daily"))["meta"] == {"drop": 2}
        assert listing(layout.folder_named("cancel")) == [], "the refused cancel's request stands"


def test_a_cancel_waits_for_the_runs_owner_only_before_it_takes_the_redrop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ends between the cancel's first look and its take (its owner between
    its record and the removal) was waited for again with the re-drop staged: 2 s of a
    free ``pending/``, a submit of the id accepted there, and the re-drop then could not
    go back (h375).  The look after the take waits for nothing."""
    from spool import orphans  # noqa: PLC0415

    processor = _finished_orphan(tmp_path / "spool")
    client, _, _ = _redrop_beside(processor.layout)
    waits: list[float] = []

    def looked(spool: Spool, job_id: str, wait_s: float) -> orphans.Settle:
        waits.append(wait_s)
        return orphans.Settle.NOTHING if len(waits) == 1 else orphans.Settle.LEFT

    monkeypatch.setattr(orphans, "drop_if_finished", looked)
    with pytest.raises(ConflictError, match="daily not cancelled"):
        client.cancel("daily", wait_s=0)

    assert waits == [orphans.FINISHING_WAIT_S, 0]
    assert listing(processor.layout.folder(P)) == ["daily.json"]
