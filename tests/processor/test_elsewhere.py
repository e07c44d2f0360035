"""Which tools the other live processors offer (:mod:`processor.elsewhere`): a job of
a tool this processor does not load is left to them only while one of them, alive and
claiming, offers it (h394)."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from daemonkit import drop
from test_ready_forgotten import discovery_of, look

from processor import elsewhere
from processor import queues as queues_module
from processor.daemon import HEARTBEAT_S, Processor
from processor.discovery import Discovery
from processor.elsewhere import OtherCatalogues
from processor.inbox import Inbox
from processor.queues import Queues
from processor.registry import Registry
from processor.tools import ExecutionMode
from spool.cli import lookout
from spool.fsops import Mover
from spool.intake import Candidate
from spool.layout import Layout
from spool.lease import HEARTBEAT_STALE_S, STARTING_S, OwnerLease
from spool.models import Job, OwnerStatus
from spool.offer_marks import OfferMarks, offered_within
from spool.settings import FsyncMode, Settings
from spool.stats import (
    catalogue_refusal,
    left_to_others,
    pending_wait,
    starting_processors,
)


def _publish(layout: Layout, owner: str, tool: str, **fields: object) -> OwnerLease:
    now = datetime.now(UTC)
    status = OwnerStatus(owner=owner, pid=os.getpid(), host="test", version="0",
                         started_at=now, heartbeat_at=now,
                         tools=[{"name": tool, "execution_mode": "compute"}])
    status = status.model_copy(update=fields)
    lease = OwnerLease(layout.owner_lock(owner))
    Mover(layout, FsyncMode.NEVER).publish(layout.owner_status(owner),
                                           status.model_dump_json().encode())
    return lease


class _Clock:
    """The clocks of :mod:`processor.elsewhere`, moved by the test alone: with the real
    ones, a stall of a loaded host over the 1 s grace between two looks failed the look
    "within the grace" (left by the sixty-ninth session)."""

    def __init__(self) -> None:
        self.now, self.wall = time.monotonic(), time.time()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def sync(self) -> None:
        """The wall clock at the real one's now: after the status files' heartbeats."""
        self.wall = time.time()

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(elsewhere, "time", fake)
    return fake


def test_only_a_live_claiming_other_processor_counts(spool_root: Path) -> None:
    layout = Layout(spool_root)
    stale = datetime.now(UTC) - timedelta(seconds=HEARTBEAT_STALE_S + 5)
    leases = [_publish(layout, "me", "mine"),
              _publish(layout, "other", "theirs"),
              _publish(layout, "leaving", "going", stopping=True),
              _publish(layout, "hung", "stuck", heartbeat_at=stale)]
    try:
        others = OtherCatalogues(layout, "me", recheck_s=0.0)
        assert others.offered_by("theirs") == "other"
        assert others.offered_by("mine") is None, "this processor's own catalogue"
        assert others.offered_by("going") is None, "a stopping processor claims nothing"
        assert others.offered_by("stuck") is None, "a hung one may never claim it"
        assert others.offered_by("nobody") is None
    finally:
        for lease in leases:
            lease.release()
    for path in (layout.owner_status("other"), layout.owner_lock("other")):
        path.unlink()  # a clean stop: its lock let go, its files removed
    assert OtherCatalogues(layout, "me", recheck_s=0.0).offered_by("theirs") is None, \
        "stopped: gone"


def test_a_tool_stays_offered_for_the_grace_of_a_restart(spool_root: Path,
                                                         clock: _Clock) -> None:
    """The only processor offering a tool restarted (``systemctl restart``): the others
    failed every waiting job of it ``unknown_tool`` 5.5 s after its stop (h398).  What
    another processor offered stays offered for ``grace_s`` after it last was."""
    layout = Layout(spool_root)
    lease = _publish(layout, "other", "theirs")
    clock.sync()
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=1.0)
    assert others.offered_by("theirs") == "other"
    lease.release()  # stopped: its lock let go
    assert others.offered_by("theirs") == "other", "within the grace of a restart"
    clock.sleep(1.1)
    assert others.offered_by("theirs") is None, "past it: failed unknown_tool here"
    again = _publish(layout, "other2", "theirs")  # back, under its new owner name
    try:
        assert others.offered_by("theirs") == "other2"
    finally:
        again.release()


def test_a_processor_started_since_another_died_recalls_its_tools(spool_root: Path) -> None:
    """What a processor that died offered counts from its last heartbeat, by the status
    file its crash left, also for one started since: started while it was down, the
    other failed its tool's jobs ``unknown_tool`` at once (h402)."""
    layout = Layout(spool_root)
    beat = datetime.now(UTC) - timedelta(seconds=5)
    _publish(layout, "died", "theirs", heartbeat_at=beat, tools=[
        {"name": "theirs", "max_attempts": 3}]).release()  # SIGKILLed: no lock
    _publish(layout, "long-gone", "old", heartbeat_at=beat - timedelta(seconds=20)
             ).release()
    _publish(layout, "me", "mine", heartbeat_at=beat).release()  # this one's own name
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
    assert (spool_root / "owners" / "died.json").exists()
    assert others.offered_by("theirs") == "died", "within the grace since its heartbeat"
    assert others.max_attempts("theirs") == 3
    assert others.offered_by("old") is None, "past the grace"
    assert others.offered_by("mine") is None, "its own name"
    assert OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=4.0
                           ).offered_by("theirs") is None, "5 s ago, past a grace of 4"


def test_a_processor_alive_at_the_start_and_dead_at_the_first_look_is_recalled(
        spool_root: Path) -> None:
    """Alive when this processor started, SIGKILLed before its first look: in a soak of
    two processors killed and restarted, the one that did not load the tool failed its
    jobs ``unknown_tool`` 0.3 s after its start (h402's soak, again after the recall of
    dead processors at the start alone)."""
    layout = Layout(spool_root)
    lease = _publish(layout, "other", "theirs")
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
    lease.release()  # SIGKILLed: its status file stays until a recovery removes it
    assert others.offered_by("theirs") == "other", "dead: seen at its last heartbeat"
    again = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
    for path in (layout.owner_status("other"), layout.owner_lock("other")):
        path.unlink()  # a recovery removed its files before the first look
    assert again.offered_by("theirs") == "other", "read at the start"
    assert OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0
                           ).offered_by("theirs") is None, "gone before the start"


def test_the_limit_of_another_processors_tool_is_its_own(spool_root: Path,
                                                         clock: _Clock) -> None:
    """An orphan of a tool only another processor offers is settled with the
    ``max_attempts`` that one publishes, for the grace of a restart after it went; not
    known here: None, and the processor leaves the judging to the one that claims it
    (h402: a limit of 1 failed such an orphan ``abandoned``, its tool's 3 notwithstanding)."""
    layout = Layout(spool_root)
    lease = _publish(layout, "other", "theirs", tools=[
        {"name": "theirs", "execution_mode": "compute", "max_attempts": 3},
        {"name": "odd", "execution_mode": "compute", "max_attempts": "3"}])
    clock.sync()
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=1.0)
    assert others.max_attempts("theirs") == 3
    assert others.max_attempts("odd") is None, "not a limit"
    lease.release()  # died: its lock let go
    assert others.max_attempts("theirs") == 3, "within the grace of a restart"
    assert others.max_attempts("nobody") is None
    clock.sleep(1.1)
    assert others.max_attempts("theirs") is None


def test_a_processor_that_has_not_said_its_tools_yet_may_offer_any(
        spool_root: Path, clock: _Clock) -> None:
    """Its lock taken, its status file not written yet (its tools loading): a processor
    started beside it failed the jobs of its tools ``unknown_tool`` at once (the
    rolling-upgrade soak, seed 7: 18 of 825).  Any tool is left to it until it says
    which it offers, with no limit known; once it has, those alone."""
    layout = Layout(spool_root)
    lease = OwnerLease(layout.owner_lock("starting"))
    try:
        others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
        assert others.offered_by("theirs") == "starting"
        assert others.offered_by("anything") == "starting"
        assert others.max_attempts("theirs") is None, "not known: the claimer judges"
        Mover(layout, FsyncMode.NEVER).publish(
            layout.owner_status("starting"), _status(
                "p1", "theirs").model_copy(update={"owner": "starting"}
                                           ).model_dump_json().encode())
        assert others.offered_by("theirs") == "starting"
        assert others.offered_by("anything") is None, "said: its tools alone"
    finally:
        lease.release()


def test_a_start_that_never_says_its_tools_counts_for_the_grace_alone(
        spool_root: Path) -> None:
    """A lock with no status file whose start is older than the grace (a start stuck in
    a tools module's import, a lock file a crash left) offers nothing: no job waits for
    ever."""
    layout = Layout(spool_root)
    lease = OwnerLease(layout.owner_lock("stuck"))
    try:
        long_ago = time.time() - 11.0
        os.utime(layout.owner_lock("stuck"), (long_ago, long_ago))
        assert OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0
                               ).offered_by("theirs") is None
        assert OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=12.0
                               ).offered_by("theirs") == "stuck"
    finally:
        lease.release()
    assert OtherCatalogues(layout, "stuck", recheck_s=0.0, grace_s=12.0
                           ).offered_by("theirs") is None, "its own lock"
    layout.owner_lock("stuck").unlink()
    layout.owner_lock("linked").symlink_to(spool_root / "pending")
    (layout.owners / "not an id.lock").touch()
    assert OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=12.0
                           ).offered_by("theirs") is None, "no processor's lock files"


def test_a_processor_killed_before_it_said_its_tools_is_recalled_for_the_grace(
        spool_root: Path, clock: _Clock) -> None:
    """SIGKILLed while its tools loaded: its lock file stays until a recovery removes
    it, and the other one failed its jobs ``unknown_tool`` (the rolling-upgrade soak,
    seed 3: 66 and 142 of 825).  Seen, it is remembered from its start for the grace of
    a restart, the file removed meanwhile."""
    layout = Layout(spool_root)
    OwnerLease(layout.owner_lock("died")).release()  # killed: its lock let go
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=1.0)
    layout.owner_lock("died").unlink()  # a recovery removed it
    assert others.offered_by("theirs") == "died"
    clock.sleep(1.1)
    assert others.offered_by("theirs") is None, "past the grace"


def test_a_tool_none_offers_is_looked_up_afresh_before_it_fails(
        spool_root: Path, clock: _Clock) -> None:
    """Read once a heartbeat, the catalogues a processor read before its own start
    judged its first jobs: another processor that took its lock since was not seen, and
    the jobs of its tools failed ``unknown_tool`` (the rolling-upgrade soak, seed 7).
    A tool none offers is looked up again once the last read is ``FRESH_S`` old."""
    layout = Layout(spool_root)
    others = OtherCatalogues(layout, "me", recheck_s=HEARTBEAT_S)
    assert others.offered_by("theirs") is None, "nobody offers it yet"
    lease = OwnerLease(layout.owner_lock("other"))
    try:
        assert others.offered_by("theirs") is None, "not read again at once"
        clock.sleep(elsewhere.FRESH_S + 0.01)
        assert others.offered_by("theirs") == "other", "read again before it fails"
    finally:
        lease.release()


def test_a_tool_offered_lately_by_its_mark_alone_is_left_for_the_grace(
        spool_root: Path, clock: _Clock, caplog: pytest.LogCaptureFixture) -> None:
    """A processor that offered a tool and stopped cleanly (or was killed) before this
    one first read the catalogues left nothing in ``owners/``: its jobs failed
    ``unknown_tool`` at once (left by the seventy-first session).  Its mark in
    ``offers/`` leaves them for the grace, said once in the log; a tool with no mark, one
    past the grace and a symlink in its place count for nothing."""
    layout = Layout(spool_root)
    OfferMarks(Mover(layout, FsyncMode.NEVER), ["theirs", "old"]).touch()
    long_ago = time.time() - 1.5
    os.utime(layout.offer_str("old"), (long_ago, long_ago))
    os.symlink(layout.offer_str("theirs"), layout.offer_str("linked"))
    clock.sync()
    others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=1.0)
    with caplog.at_level("INFO", logger="spoolq.processor"):
        for _ in range(3):  # the catalogues read again at each look (recheck_s 0)
            assert others.offered_by("theirs") == elsewhere.MARKED
    said = [r for r in caplog.records if "for a restart's grace" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert others.max_attempts("theirs") is None, "not known: judged by its claimer"
    assert others.offered_by("old") is None, "marked past the grace"
    assert others.offered_by("linked") is None, "a symlink is no mark"
    assert others.offered_by("nobody") is None
    clock.sleep(1.1)
    assert others.offered_by("theirs") is None, "past the grace: failed unknown_tool here"


def test_marks_are_made_with_their_folder_and_never_follow_a_symlink(
        spool_root: Path) -> None:
    """A spool made before ``offers/`` has none: the processor makes it, with
    ``owners/``'s mode; a symlink at a mark's name is touched itself, never its target."""
    layout = Layout(spool_root)
    layout.offers.rmdir()
    os.chmod(layout.owners, 0o711)
    target = spool_root.parent / "target"
    target.touch()
    long_ago = time.time() - 1000
    os.utime(target, (long_ago, long_ago))
    OfferMarks(Mover(layout, FsyncMode.NEVER), ["a/tool", "\udcff"]).touch()
    assert stat.S_IMODE(layout.offers.stat().st_mode) == 0o711
    # Mode 0640 as every file spoolq writes, whatever the umask (made 0644: QA h417).
    assert {stat.S_IMODE(os.lstat(layout.offer_str(tool)).st_mode)
            for tool in ("a/tool", "\udcff")} == {0o640}
    assert sorted(os.listdir(layout.offers)) == sorted(
        os.path.basename(layout.offer_str(tool)) for tool in ("a/tool", "\udcff"))
    os.symlink(target, layout.offer_str("linked"))
    OfferMarks(Mover(layout, FsyncMode.NEVER), ["linked"]).touch()
    assert abs(target.stat().st_mtime - long_ago) < 1, "the target untouched"
    assert offered_within(layout, "linked", 10.0, time.time()) is None
    assert offered_within(layout, "a/tool", 10.0, time.time()) is not None


def test_a_mark_of_another_users_is_replaced_by_one_of_the_processors_own(
        spool_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root's processor run on the spool once left marks the spool user may not date
    (utime of another user's 0640 file: EACCES): each stayed as old as that run, and
    the tools' jobs failed ``unknown_tool`` at once after a clean stop of the processor
    offering them, its warning said again at each start (QA h417).  The spool user owns
    ``offers/``: the mark is replaced by one of its own."""
    layout = Layout(spool_root)
    mark = layout.offer_str("theirs")
    marks = OfferMarks(Mover(layout, FsyncMode.NEVER), ["theirs"])
    marks.touch()
    theirs = os.lstat(mark).st_ino  # taken for another user's file from here on
    real_utime = os.utime

    def utime(path: str, *args: object, **kwargs: object) -> None:
        if path == mark and os.lstat(path).st_ino == theirs:
            raise PermissionError(13, "Permission denied", path)  # as for another's file
        real_utime(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "utime", utime)
    lately = time.time() - 5
    real_utime(mark, (lately, lately))  # their processor dates it: left as it is
    marks.touch()
    assert os.lstat(mark).st_ino == theirs, "replaced though another processor dates it"
    long_ago = time.time() - 1000
    real_utime(mark, (long_ago, long_ago))  # theirs, dated no more
    marks.touch()
    assert os.lstat(mark).st_ino != theirs, "not replaced"
    st = os.lstat(mark)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert offered_within(layout, "theirs", 10.0, time.time()) is not None
    assert os.listdir(layout.offers) == [os.path.basename(mark)], "no temporary left"


def test_a_processor_whose_status_file_goes_before_its_lock_file_is_no_start(
        spool_root: Path, clock: _Clock) -> None:
    """A clean stop removes the status file, then the lock file, and a recovery a dead
    one's in the same order: read between the two, a processor seen running was taken
    for one starting, and the jobs of every tool none offers were left to it for the
    grace from its start instead of failing ``unknown_tool``."""
    layout = Layout(spool_root)
    lease = _publish(layout, "other", "theirs")
    try:
        others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
        assert others.offered_by("theirs") == "other"
        assert others.offered_by("anything") is None
        layout.owner_status("other").unlink()  # its stop: the status file first
        assert others.offered_by("anything") is None, "stopping, not starting"
        assert others.offered_by("theirs") == "other", "remembered for the grace"
    finally:
        lease.release()
    layout.owner_lock("other").unlink()
    assert others.offered_by("anything") is None


def test_a_start_killed_while_this_one_loaded_its_tools_is_read_before_the_recovery(
        spool_root: Path, clock: _Clock) -> None:
    """Read first as the lease is taken (before the tools load), the catalogues are read
    again as the processor is made, before its recovery: a processor killed while it
    started meanwhile, its lock file left, is remembered though its file is removed next
    (h414), within ``recheck_s`` of the first read or not."""
    layout = Layout(spool_root)
    others = OtherCatalogues(layout, "me", recheck_s=HEARTBEAT_S, grace_s=10.0)
    OwnerLease(layout.owner_lock("died")).release()  # killed starting, its lock left
    others.read_now()
    layout.owner_lock("died").unlink()  # this one's recovery removed it
    clock.sleep(elsewhere.FRESH_S + 0.01)
    assert others.offered_by("theirs") == "died"



def test_a_start_seen_that_says_its_tools_only_as_it_stops_is_remembered(
        spool_root: Path, clock: _Clock) -> None:
    """Seen starting (its lock, no status file: it may offer any tool), then its status
    file says ``stopping`` (a stop sent while it started: its first status is a stopping
    one), then its files go: it was forgotten at the read that found it stopping, and
    the jobs of its tools failed ``unknown_tool`` until its restart took its lock (h414:
    the rolling-upgrade soak, seed 23, 53 of 825).  What it publishes is remembered as
    offered then, for the grace of a restart."""
    layout = Layout(spool_root)
    lease = OwnerLease(layout.owner_lock("p7"))
    try:
        others = OtherCatalogues(layout, "me", recheck_s=0.0, grace_s=10.0)
        assert others.offered_by("theirs") == "p7", "starting: may offer any"
        Mover(layout, FsyncMode.NEVER).publish(
            layout.owner_status("p7"),
            _status("p7", "theirs", stopping=True).model_dump_json().encode())
        assert others.offered_by("theirs") == "p7", "stopping: what it said, remembered"
        assert others.offered_by("anything") is None, "said: its tools alone"
    finally:
        lease.release()
    for path in (layout.owner_status("p7"), layout.owner_lock("p7")):
        path.unlink()  # stopped: its files removed
    clock.sleep(5.0)
    assert others.offered_by("theirs") == "p7", "within the grace"
    clock.sleep(5.1)
    assert others.offered_by("theirs") is None, "past it"


class _Starts:
    """The starter of :func:`_processor`: the ids it was asked to claim."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def start(self, cand: Candidate) -> None:
        self.ids.append(cand.job_id)


def _processor(settings: Settings, inbox: Inbox, starts: _Starts) -> tuple[Processor, Discovery]:
    """What ``Processor._dispatch`` uses of a processor that loads no tool, the rest left
    out: its queues fed by a real discovery, the other processors' catalogues read from
    the spool, a starter that only counts."""
    proc = object.__new__(Processor)
    proc.registry = Registry()
    proc.queues = Queues(proc._mode_of)
    proc.others = OtherCatalogues(Layout(settings.spool_dir), "me", HEARTBEAT_S, grace_s=0.0)
    proc.starter = starts  # type: ignore[assignment]
    proc.runs, proc.fast = {}, SimpleNamespace(stuck={}, has_room=lambda: True)  # type: ignore[assignment]
    proc.reserve = SimpleNamespace(full=True)  # type: ignore[assignment]
    discovery = discovery_of(settings, inbox, proc.queues)
    proc.discovery = discovery
    return proc, discovery


def test_jobs_left_to_another_processor_are_not_looked_at_again_while_it_offers_them(
        settings: Settings, inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job of a tool only another processor offers was taken from the queues, read
    again (past LEAN_ABOVE: shed) and put back, every heartbeat: 12,000 of them took half
    a core of the 2-CPU machine in the processor that only left them (h398).  They are
    set aside by tool, and queued again (to fail ``unknown_tool`` here) only once no
    other processor offers it."""
    monkeypatch.setattr(queues_module, "LEAN_ABOVE", 10)
    layout = Layout(settings.spool_dir)
    starts = _Starts()
    proc, discovery = _processor(settings, inbox, starts)
    other = _publish(layout, "other", "theirs")
    try:
        for i in range(40):
            drop(settings.spool_dir, f"j{i:03d}", {"tool": "theirs", "priority": i % 3})
        look(discovery)
        proc._dispatch()
        assert starts.ids == [], "left to the processor that offers the tool"
        assert not proc.queues.lanes[ExecutionMode.FAST]
        assert proc.queues.next_due() is None, "nothing to look at again while it is offered"
        reads = []
        monkeypatch.setattr(Candidate, "job", property(
            lambda c: reads.append(c.job_id) or Job.model_validate(orjson.loads(c.data))))
        time.sleep(HEARTBEAT_S + 0.1)
        proc._dispatch()
        assert reads == [] and starts.ids == []
        os.unlink(settings.spool_dir / "pending" / "j000.json")  # claimed by the other one
        look(discovery)
    finally:
        other.release()
    time.sleep(HEARTBEAT_S + 0.1)  # the catalogues read again: none offers it now
    proc._dispatch()
    for _ in range(100):  # a pass starts for DISPATCH_BUDGET_S at most (a loaded host)
        if not proc.queues.lanes[ExecutionMode.FAST]:
            break
        proc._dispatch()
    assert sorted(starts.ids) == [f"j{i:03d}" for i in range(1, 40)], \
        "queued again once none offers it, to fail unknown_tool here; the claimed one gone"


def _status(owner: str, *tools: str, **fields: object) -> OwnerStatus:
    now = datetime.now(UTC)
    return OwnerStatus(owner=owner, pid=int(owner[1:]), host="h", version="0", started_at=now,
                       heartbeat_at=now, tools=[{"name": t} for t in tools]
                       ).model_copy(update=fields)


def test_why_a_pending_job_waits_is_told_from_the_catalogues() -> None:
    """``spoolq show``'s note on a pending job: shown "pending" alone, a job left to the
    processor that offers its tool looked stuck (left by the sixty-eighth session)."""
    now = time.time()
    both, lacks = _status("p1", "echo", "nap"), _status("p2", "echo")
    assert pending_wait([both, lacks], "echo", now) is None, "every one offers it"
    assert pending_wait(None, "nap", now) is None, "not readable: nothing told"
    assert pending_wait([both, _status("p3")], "nap", now) is None, "p3: no catalogue"
    assert pending_wait([], "nap", now) == ("no live processor on this spool (spoolq stats "
                                            "says why): it is claimed once one runs")
    stale = datetime.now(UTC) - timedelta(seconds=HEARTBEAT_STALE_S + 5)
    assert pending_wait([_status("p1", "nap", heartbeat_at=stale)], "nap", now
                        ) is not None and "no live processor" in str(
        pending_wait([_status("p1", "nap", heartbeat_at=stale)], "nap", now))
    assert pending_wait([both, lacks], "nap", now) == (
        "left to the processors that offer tool 'nap' (pid 1 on h); pid 2 on h does not "
        "load it")
    stopping = _status("p1", "echo", "nap", stopping=True)
    said = pending_wait([stopping, lacks], "nap", now)
    assert said is not None and said.startswith(
        "tool 'nap' is offered only by pid 1 on h, which is stopping: pid 2 on h fails it "
        "unknown_tool unless"), said
    said = pending_wait([lacks], "nap", now)
    assert said is not None and said.startswith("unknown tool 'nap': ") and (
        "the first to claim it fails it unknown_tool" in said), said
    hung = _status("p1", "echo", "nap", heartbeat_at=stale)
    said = pending_wait([hung, lacks], "nap", now)  # named, not "unknown tool" (h403)
    assert said is not None and said.startswith(
        "tool 'nap' is offered only by pid 1 on h, whose heartbeat is stale (hung?): pid 2 "
        "on h fails it unknown_tool unless"), said
    said = pending_wait([both, lacks, _status("p3", "echo")], "nap", now)
    assert said == ("left to the processors that offer tool 'nap' (pid 1 on h); pid 2 on "
                    "h, pid 3 on h do not load it"), said


def test_a_processor_starting_may_offer_any_tool_to_the_clients_too() -> None:
    """Refused while the processor that adds a tool in a rolling upgrade loaded its
    tools (``spoolq submit`` exit 2, statusd's 400), and shown bound to fail
    ``unknown_tool``, a job of it is taken while a processor starts, and ``show`` says
    why it waits."""
    live, job = [_status("p2", "echo")], Job(tool="nap", params={})
    refusal = catalogue_refusal(live, job)
    assert refusal is not None and refusal.type.value == "unknown_tool"
    assert catalogue_refusal(live, job, lambda: []) == refusal
    assert catalogue_refusal(live, job, lambda: ["box-7-0123456789ab"]) is None
    asked: list[bool] = []
    assert catalogue_refusal(live, Job(tool="echo", params={}),
                             lambda: asked.append(True) or []) is None
    assert asked == [], "asked only of a job the catalogues refuse"
    now = time.time()
    said = pending_wait(live, "nap", now, lambda: ["box-7-0123456789ab", "odd"])
    assert said == ("no live processor offers tool 'nap', but the tools of pid 7 on box, "
                    "processor odd (starting) are not known yet: the job is left until "
                    "they are (docs/scaling.md)"), said
    said = pending_wait(live, "nap", now, lambda: [])
    assert said is not None and said.startswith("unknown tool 'nap': "), said


def test_a_tool_offered_lately_is_taken_by_the_clients_too() -> None:
    """Refused by ``spoolq submit`` (exit 2) and statusd (400), and shown bound to fail
    ``unknown_tool``, a job of a tool the processors leave for a restart's grace by its
    mark (:mod:`spool.offer_marks`) is taken, and ``show`` says why it waits; its params are
    still judged by the processors that offer it."""
    live, job = [_status("p2", "echo")], Job(tool="nap", params={})
    refusal = catalogue_refusal(live, job, lambda: [], lambda tool: None)
    assert refusal is not None and refusal.type.value == "unknown_tool"
    assert catalogue_refusal(live, job, lambda: [], {"nap": 12.3}.get) is None
    said = pending_wait(live, "nap", time.time(), lambda: [], {"nap": 12.34}.get)
    assert said == ("no live processor offers tool 'nap', but one did 12.3 s ago: the job "
                    "is left for its return (a restart) for SPOOL_GRACE_S plus 60 s past "
                    "that, then fails unknown_tool (docs/scaling.md)"), said
    said = pending_wait(live, "nap", time.time(), lambda: [], {}.get)
    assert said is not None and said.startswith("unknown tool 'nap': "), said


def test_a_start_stuck_past_the_grace_is_no_start_to_the_clients(spool_root: Path) -> None:
    """A start stuck in its tools' import (its lock held, no status file) is left jobs by
    the processors for their grace alone: taken for one starting for ever, ``spoolq
    submit`` took a tool none offers (a typo, exit 0), failed ``unknown_tool`` at once."""
    layout = Layout(spool_root)
    lease = OwnerLease(layout.owner_lock("box-7-0123456789ab"))
    try:
        assert starting_processors(layout) == ["box-7-0123456789ab"]
        long_ago = time.time() - STARTING_S - 1
        os.utime(layout.owner_lock("box-7-0123456789ab"), (long_ago, long_ago))
        assert starting_processors(layout) == []
        assert lookout.STARTING_S == STARTING_S
    finally:
        lease.release()


def test_left_jobs_are_counted_by_tool_once_each() -> None:
    """The status file's ``left_to_others``: the parked jobs still ready, by tool; the
    stats the most one processor leaves (each leaves the same jobs)."""
    queues = Queues(lambda tool: ExecutionMode.COMPUTE)
    job = Job(tool="nap", params={})
    for i in range(3):
        queues.park(Candidate(f"j{i}", job, 20, 0, (1, i), 0, None), "nap")
    assert queues.left_counts() == {"nap": 3}
    queues.withdraw(["j0"])  # claimed by the processor it was left to
    assert queues.left_counts() == {"nap": 2}
    queues.unpark("nap")
    assert queues.left_counts() == {}
    assert left_to_others([_status("p1", left_to_others={"nap": 2, "b": 1}),
                           _status("p2", left_to_others={"nap": 3})]) == {"b": 1, "nap": 3}


def test_the_jobs_left_are_no_more_than_those_pending() -> None:
    """A processor learns that the jobs it left were claimed only at its next rescan:
    the stats said 28 left beside 0 pending for seconds (h403)."""
    live = [_status("p1", left_to_others={"nap": 28, "b": 3})]
    assert left_to_others(live, 5) == {"b": 3, "nap": 5}
    assert left_to_others(live, 0) == {}
    assert left_to_others(live) == {"b": 3, "nap": 28}, "pending not known: as told"
