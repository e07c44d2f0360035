"""A failing disk under a running processor: an I/O error (EIO) in a record's write, a
claim's folder sync, a read of a pending job, a batch's ``syncfs``.  Each is spool trouble,
the I/O pause of section 3 of docs/reliability.md: no crash, no job failed for it, every
job recorded once the error has passed.

The error is injected by strace, attached to the running processor (``-p``) and failing
one call on one path (``-P``, ``inject=...:error=EIO:when=1``), then detached.

Before, each of these was an OSError nothing expected (only EACCES, ENOSPC, EROFS,
EDQUOT and out of descriptors were trouble): the processor crashed with a traceback,
exit 1, and the next start failed the run it held ``abandoned`` (at ``max_attempts`` 1),
a job done in all but its record.  A claim whose folder sync failed after its move was
left in ``running/`` without its lease, and the processor's own periodic scan failed it
``abandoned`` under it.  Under ``batch`` a failed ``syncfs`` was not looked at.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from relkit import Daemon, drop, locations, record, strace_usable, wait_for

from spool.fsops import BATCH_INTERVAL_S
from spool.layout import pid_space

TROUBLE = "spool I/O trouble; pausing claims"
UNREADABLE = "cannot read a pending file; trying it again at each scan"
CANNOT_SCAN = "cannot scan pending/; said again only if the error changes"
LEFT = "recovery cannot read a file; left there, tried at each pass"
FLUSH_FAILED = ("cannot make the spool's last writes durable at the stop; they are made, "
                "as under SPOOL_FSYNC=never")
SCAN_S = "0.3"
"""The scan interval of the tests that wait for scans and passes: the next one once the
disk reads again, or those that would repeat a line (the shipped 5 s, and 1 s, proved
the same more slowly)."""
_SPACE = pid_space() or ""
"""This pid space, in the staging names of dead processes the tests make: their pids
tell (a name of no space is kept a grace, as an older spoolq's may be another
container's)."""
PASSES_S = 4 * float(SCAN_S)
"""Long enough for more passes (and scans) to come, each of which could say a line
again."""


@pytest.fixture
def attach(tmp_path: Path) -> Iterator[Callable[..., Callable[[], None]]]:
    """Attach strace to a pid, failing the first ``syscall`` on ``path`` of each of its
    threads (strace counts ``when`` per thread) with EIO; the callable it returns
    detaches it."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    procs: list[subprocess.Popen[bytes]] = []

    def start(pid: int, syscall: str, path: Path | None, error: str = "EIO",
              when: str = "1") -> Callable[[], None]:
        err = tmp_path / f"strace-{len(procs)}.err"
        only = [] if path is None else ["-P", str(path)]
        with open(err, "wb") as out:
            procs.append(subprocess.Popen(
                [strace, "-f", "-o", "/dev/null", "-p", str(pid), *only,
                 "-e", f"trace={syscall}", "-e", f"inject={syscall}:error={error}:when={when}"],
                stdout=subprocess.DEVNULL, stderr=out))
        wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
        return functools.partial(_detach, procs[-1])

    yield start
    for proc in procs:
        _detach(proc)


def _detach(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # detaches: the processor runs on
    proc.wait(20)


def _troubled(d: Daemon, msg: str = TROUBLE) -> list[str]:
    return [e.get("error", "") for e in d.events() if e.get("msg") == msg]


CASES = {
    # A record's rename into done/.
    "record": ("always", "renameat2", "done/{id}.json", "EIO"),
    # A claim's folder sync, after its move into running/ landed.
    "claim-sync": ("always", "fsync", "running", "EIO"),
    # The read of a pending job at intake.
    "intake-read": ("always", "read", "pending/{id}.json", "EIO"),
    # The record's folder sync, after its rename landed.
    "record-sync": ("always", "fsync", "done", "EIO"),
    # A batch's syncfs (its failure was never looked at).
    "batch-syncfs": ("batch", "syncfs", None, "EIO"),
    # A claim's rename cut short (EINTR: a FUSE or network filesystem; Python does not
    # retry a rename, and the claim's renameat2 is called through ctypes).
    "claim-eintr": ("always", "renameat2", "running/{id}.json", "EINTR"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_io_error_pauses_the_processor_and_loses_nothing(
        case: str, spool_root: Path, tmp_path: Path,
        attach: Callable[..., Callable[[], None]]) -> None:
    fsync, syscall, where, error = CASES[case]
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC=fsync, SPOOL_SCAN_S="1")
    try:
        d.start()
        path = None if where is None else spool_root / where.format(id="j1")
        detach = attach(d.pid, syscall, path, error)
        if fsync == "batch":  # the claim's sync is a syncfs, not one left to the batch
            time.sleep(2 * BATCH_INTERVAL_S)  # (see the batch stop-sync test below)
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "sleep", "params": {"seconds": 0.01}})

        _wait_recorded(d, spool_root, "both records")
        for job_id in ("j1", "j2"):
            rec = record(spool_root, job_id)
            assert rec is not None and (rec["state"], rec["attempts"]) == ("done", 1), rec
        # One file's failed read is that file's, not a pause: said, and tried again.
        troubles = _troubled(d, UNREADABLE if case == "intake-read" else TROUBLE)
        said = os.strerror(getattr(errno, error))
        assert troubles and all(said in t for t in troubles), d.logs()[-3000:]
        wait_for(lambda: locations(spool_root) == {"j1": ["done"], "j2": ["done"]}, 10,
                 "each job in done/ alone")
        detach()  # the disk is well again: the stop's own writes go through
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_requeue_whose_folder_sync_failed_is_not_also_failed(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """The requeue of a timed-out run lands in ``pending/``, then the sync of ``stage/``
    (the folder it came from) fails.  Tried again after the pause, the requeue found its
    own file in ``pending/``, took it for a newer drop and failed the run as well: a
    ``failed`` record beside the pending retry, one timeout logged and counted twice."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always")
    try:
        d.start()
        detach = attach(d.pid, "fsync", spool_root / "stage")
        drop(spool_root, "j1", {"tool": "sleep", "params": {"seconds": 5.0}, "timeout": 0.5,
                                "max_attempts": 2})

        def recorded() -> bool:
            assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
            return record(spool_root, "j1") is not None and not (
                spool_root / "pending" / "j1.json").exists() and not (
                spool_root / "running" / "j1.json").exists()

        def ends() -> list[tuple[str, int]]:
            return [(e["msg"], e["attempt"]) for e in d.events()
                    if e.get("id") == "j1" and e.get("msg") in ("requeued", "failed")]

        wait_for(recorded, 30, "the second attempt's record")
        rec = record(spool_root, "j1")
        assert rec is not None and (rec["state"], rec["attempts"]) == ("failed", 2), rec
        wait_for(lambda: ("failed", 2) in ends(), 10, "the record's line")  # logged after
        assert ends() == [("requeued", 1), ("failed", 2)], ends()
        assert _troubled(d), d.logs()[-3000:]
        detach()
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_record_that_landed_before_its_sync_failed_is_not_requeued_at_the_stop(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """A run's record lands in ``done/``, then the folder's sync fails (EIO, every try),
    and the processor is stopped during the pause.  The stop's last try raised as well,
    and the run was requeued as cut short: the job at rest in ``pending/`` beside its
    record in ``done/``, and run again after the restart (under ``batch``, a ``syncfs``
    failing so, it was seen in ``running/`` too).  The record stands: the run is over,
    its running file left for the next start's recovery (the record's entry not known
    durable, the file is not removed by a processor that cannot sync), which drops it
    and runs nothing again."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        attach(d.pid, "fsync", spool_root / "done", when="1+")  # until the processor exits
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        wait_for(lambda: record(spool_root, "j1") is not None and bool(_troubled(d)), 20,
                 "the record, then its failed sync")
        assert d.stop() == 0, d.logs()[-3000:]
        assert sorted(locations(spool_root)["j1"]) == ["done", "running"], d.logs()[-3000:]
        assert not [e for e in d.events() if e.get("id") == "j1"
                    and e.get("msg") == "requeued"], d.logs()[-3000:]
    finally:
        d.abort()
    again = Daemon(spool_root, tmp_path / "p2.log", SPOOL_FSYNC="always",
                   SPOOL_SCAN_S=SCAN_S)
    try:
        again.start()
        time.sleep(PASSES_S)
        ran = [e for e in again.events() if e.get("id") == "j1" and e.get("event")]
        assert not ran, again.logs()[-3000:]  # neither claimed nor requeued nor failed
        assert locations(spool_root) == {"j1": ["done"]}
        rec = record(spool_root, "j1")
        assert rec is not None and (rec["state"], rec["attempts"]) == ("done", 1), rec
        assert again.stop() == 0
    finally:
        again.abort()


def test_a_batch_sync_failing_at_the_stop_is_said_and_the_stop_ends(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """Under ``batch`` the stop syncs what the last group left; every ``syncfs`` failing
    (EIO) by then, the stop's own flush raised: the processor printed the error and
    exited 75 without its "stopped" line, its status file and lock left in ``owners/``
    (a ``systemctl stop`` that left the unit failed).  The writes were made, only not
    known durable: said in a warning, and the stop goes on."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="batch", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        attach(d.pid, "syncfs", None, when="1+")  # until the processor exits
        # The batch's interval past since its last sync that went through (none after the
        # attach): the claim's move syncs at once, and is the one to fail.  Dropped sooner
        # (38 ms from "started" to the claim on an idle machine), the claim's sync waited
        # for the batch, and the run's record's sync, its running file's removal's, or a
        # scan's failed first, each its own outcome (CI saw the second).
        time.sleep(2 * BATCH_INTERVAL_S)
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        # A claim's sync failed: the group is still to be made durable at the stop.
        wait_for(lambda: bool(_troubled(d)), 20, "the claim's failed sync")
        assert d.stop() == 0, d.logs()[-3000:]
        msgs = [e.get("msg") for e in d.events()]
        assert "stopped" in msgs, d.logs()[-3000:]
        assert not [n for n in os.listdir(spool_root / "owners") if f"-{d.pid}-" in n]
        said = [e["msg"] for e in d.events() if e.get("level") == "warning"
                and "Input/output error" in e.get("error", "")]
        assert said == [FLUSH_FAILED], d.logs()[-3000:]
        assert locations(spool_root) == {"j1": ["pending"]}  # given back by its claim
    finally:
        d.abort()


@pytest.mark.parametrize("folder", ["pending", "running"])
def test_one_unreadable_job_file_does_not_stop_the_others(
        folder: str, spool_root: Path, tmp_path: Path,
        attach: Callable[..., Callable[[], None]]) -> None:
    """Every read of one job file fails (a bad sector): at intake (``pending/``), or at
    its claim (``running/``, the page intake read evicted since).  Taken for the I/O
    pause, it paused every claim for good: each try of that file the pause's next step
    (0.5 s up to 30 s), the jobs dropped after it left in ``pending/``.  It is that file's
    trouble: said once, the file (given back by its claim) tried again at each scan, and
    the others run."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S="1")
    try:
        d.start()
        bad = spool_root / "pending" / "bad.json"
        detach = attach(d.pid, "read", spool_root / folder / "bad.json", when="1+")
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 0}})
        wait_for(lambda: _troubled(d, UNREADABLE) or _troubled(d), 20, "the bad file read")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})

        _wait_recorded(d, spool_root, "the other jobs' records")
        assert not _troubled(d), d.logs()[-3000:]
        assert len(_troubled(d, UNREADABLE)) == 1, d.logs()[-3000:]  # not once a scan
        # Between its tries (one a scan) it waits in pending/; a try holds it in running/
        # for an instant, longer under strace (this run's full suite caught one).
        wait_for(lambda: bad.exists() and locations(spool_root).get("bad") == ["pending"],
                 10, "the unreadable file back in pending/ between its tries")
        # Given back by its claim, its arrival in pending/ is no cue to try it again at
        # once: that looped (claim, read error, give-back, claim), a core's worth of CPU.
        spent = _cpu_s(d.pid)
        time.sleep(3)  # three scans (SPOOL_SCAN_S=1), the file tried once at each
        assert _cpu_s(d.pid) - spent < 0.3, "the processor spun on the unreadable file"
        detach()  # readable again: judged at the next scan, and run
        wait_for(lambda: record(spool_root, "bad") is not None, 30, "the bad file's record")
        rec = record(spool_root, "bad")
        assert rec is not None and rec["state"] == "done", rec
        assert d.stop() == 0
    finally:
        d.abort()


def test_an_orphan_the_disk_cannot_read_is_left_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """Every read of one orphan in ``running/`` fails (a bad sector).  Recovery raised:
    each periodic pass paused claims (an ERROR line and the status file's ``io_trouble``
    every ``SPOOL_SCAN_S``), the orphans after it in the folder never settled, and at
    start-up the processor exited 75, restarted for ever with no job run.  It is that
    file's trouble: left in ``running/``, said once, tried again at each pass."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        bad = spool_root / "running" / "bad.json"
        detach = attach(d.pid, "read", bad, when="1+")
        bad.write_text('{"tool": "echo", "params": {"message": 0}}')
        (spool_root / "running" / "orph.json").write_text(
            '{"tool": "echo", "params": {"message": 1}}')
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 2}})
        def settled() -> bool:
            assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
            return (record(spool_root, "j1") is not None and record(spool_root, "orph")
                    is not None and len(_troubled(d, LEFT) + _troubled(d)) > 0)

        wait_for(settled, 30, "the other jobs settled, the bad orphan read")
        time.sleep(PASSES_S)  # more passes: said once, not once a pass
        assert not _troubled(d), d.logs()[-3000:]
        assert len(_troubled(d, LEFT)) == 1, d.logs()[-3000:]  # not once a pass
        assert locations(spool_root)["bad"] == ["running"]
        detach()
        assert d.stop() == 0
    finally:
        d.abort()


def test_an_orphan_whose_record_the_disk_cannot_read_is_left_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """An orphan whose run was recorded (its processor died between the record and the
    running file's removal), every read of that record failing (a bad sector).  Recovery
    reads it to tell the orphan's run: the error got out of the pass, which paused claims
    at each pass (as ee2e91c saw of the orphan's own read) and exited 75 at each start.
    It is that orphan's trouble: left in ``running/``, said once, settled once it reads."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        done = spool_root / "done" / "bad.json"
        detach = attach(d.pid, "read", done, when="1+")
        # The record first, of a tick later than the orphan's claim (its file's ctime).
        done.write_text('{"id": "bad", "state": "done", "tool": "echo"}')
        later = time.time() + 3600
        os.utime(done, (later, later))
        staged = spool_root / "tmp" / "orphan-bad"
        staged.write_text('{"tool": "echo", "params": {"message": 0}}')
        os.rename(staged, spool_root / "running" / "bad.json")
        _left_once(d, spool_root, "the other jobs run, the bad record read")
        assert locations(spool_root)["bad"] == ["running", "done"]
        detach()  # readable again: the orphan's run was recorded, its file goes
        wait_for(lambda: not (spool_root / "running" / "bad.json").exists(), 20,
                 "the orphan settled")
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_cut_short_cancel_the_disk_cannot_read_is_left_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """A cancel cut short (its canceller gone) left the job staged in ``stage/``, a newer
    drop of the id is pending, and every read of the staged file fails (a bad sector).
    Recovery leases and reads it to finish the cancel: the read's error got out of the
    pass, which paused claims at each pass (an ERROR line every ``SPOOL_SCAN_S``) and
    would exit 75 at each start.  It is that file's trouble: left, said once."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        # A newer drop of the id, due in an hour (it waits, pending, all along).
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 1},
                                 "not_before": "2099-01-01T00:00:00Z"})
        canceller = subprocess.Popen(["true"])  # gone: its pid is the staging name's
        canceller.wait()
        staged = spool_root / "stage" / f"cancel-bad.{canceller.pid}.{_SPACE}0123456789ab.tmp"
        detach = attach(d.pid, "read", staged, when="1+")
        written = spool_root / "tmp" / "staged-bad"
        written.write_text('{"tool": "echo", "params": {"message": 0}}')
        os.rename(written, staged)
        _left_once(d, spool_root, "the other jobs run, the staged cancel read")
        assert staged.exists()
        detach()
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize("error", ["EIO", "ENOTCONN", "ECONNABORTED"])
def test_a_recovery_pass_that_cannot_list_running_is_a_pause_not_a_crash(
        error: str, spool_root: Path, tmp_path: Path,
        attach: Callable[..., Callable[[], None]]) -> None:
    """The periodic recovery pass cannot open ``running/`` (EIO; ENOTCONN, a FUSE mount
    whose daemon died, ended the processor with a traceback: QA; ECONNABORTED, one request
    in flight as it died, in a full run): spool trouble, the I/O
    pause, not an OSError that ends the processor; once the disk reads again, jobs run."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="never", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        detach = attach(d.pid, "openat", spool_root / "running", error=error, when="1+")

        def said() -> bool:
            assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
            return any(os.strerror(getattr(errno, error)) in t for t in _troubled(d))

        wait_for(said, 30, "the pass's trouble said")
        detach()
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        wait_for(lambda: record(spool_root, "j1") is not None, 30, "j1's record")
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize("syscalls", ["newfstatat", "openat"])
@pytest.mark.parametrize("action", ["retry", "quarantine"])
def test_a_cut_short_move_the_disk_cannot_look_up_is_left_not_a_pause(
        action: str, syscalls: str, spool_root: Path, tmp_path: Path,
        attach: Callable[..., Callable[[], None]]) -> None:
    """A retry or quarantine cut short (its mover gone) left its file staged in
    ``stage/``, and every lstat of it fails (a bad sector under its inode).  Recovery's
    look at it raised out of the pass, which paused claims at each pass (an ERROR line
    every ``SPOOL_SCAN_S``).  It is that file's trouble: left, said once, settled once
    it can be looked at.  So too when its open fails (``openat``: recovery opens it to
    test its lock, whether a live mover holds it)."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        mover = subprocess.Popen(["true"])  # gone: its pid is the staging name's
        mover.wait()
        staged = spool_root / "stage" / f"{action}-bad.{mover.pid}.{_SPACE}0123456789ab.tmp"
        detach = attach(d.pid, syscalls, staged, when="1+")
        written = spool_root / "tmp" / "staged-bad"
        written.write_text('{"id": "bad", "state": "failed", "tool": "echo", '
                           '"error": {"type": "timeout", "message": "m"}}')
        os.rename(written, staged)
        _left_once(d, spool_root, "the other jobs run, the staged file looked at")
        assert os.path.lexists(staged)
        detach()  # looked at again: back into failed/ (a retry's) or quarantined
        wait_for(lambda: not os.path.lexists(staged) and record(spool_root, "bad"), 20,
                 "the staged file settled, its record out")
        assert d.stop() == 0
    finally:
        d.abort()


def _cpu_s(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_pending_file_the_disk_cannot_look_up_is_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """A pending job (due in an hour) every lstat of which fails since it was judged (a
    bad sector under its inode).  The periodic scan of ``pending/`` stopped at it
    ("cannot scan pending/"), and no drop the feed missed was found again.  It is that
    file's trouble: said once, the scan goes on past it."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        _a_bad_job_due_later(spool_root)
        detach = attach(d.pid, "newfstatat", spool_root / "pending" / "bad.json", when="1+")
        wait_for(lambda: _troubled(d, UNREADABLE) or _troubled(d, CANNOT_SCAN), 20,
                 "the scan's look at it")
        time.sleep(PASSES_S)  # more scans: said once, not once a scan
        assert not _troubled(d, CANNOT_SCAN), d.logs()[-3000:]
        # The line names the file and the disk's error: "Input/output error" is the cause.
        assert _troubled(d, UNREADABLE) == ["cannot look up bad.json: Input/output error"], \
            d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["pending"]
        detach()
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize(("syscalls", "when"), [
    ("newfstatat", "1+"),  # intake's lstat: out of the loop, a crash (exit 1)
    ("openat", "1+"),  # intake's open: a pause at each try, every claim held up
    ("openat,newfstatat,read", "1+"),  # its inode unreadable: the crash
    ("openat", "2+"),  # the claim's open, once intake read it: a pause at each try
])
def test_a_drop_the_disk_cannot_open_is_its_trouble(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]],
        syscalls: str, when: str) -> None:
    """A drop that arrives (the feed's event) already failing: intake's lstat of it, or
    its open, or the claim's open once intake read it (a bad sector under its inode).
    The lstat's EIO got out of the loop (a traceback, exit 1); an open's was taken for
    the spool's trouble, the name tried again at each pause's end, and no job was
    claimed while it lasted.  It is that file's trouble: said, the others run."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        detach = attach(d.pid, syscalls, spool_root / "pending" / "bad.json", when=when)
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 0}})
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})
        _wait_recorded(d, spool_root, "the other jobs' records")
        assert _troubled(d, UNREADABLE), d.logs()[-3000:]
        assert not _troubled(d), d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["pending"]
        detach()  # readable again: run at a next scan
        wait_for(lambda: record(spool_root, "bad") is not None, 20, "bad's record")
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize("syscalls", ["newfstatat", "openat", "openat,newfstatat"])
def test_an_orphan_the_disk_cannot_look_up_is_left_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]],
        syscalls: str) -> None:
    """An orphan in ``running/`` (its processor gone) every lstat of which fails (a bad
    sector under its inode).  Recovery leases it, then lstats it to check the lease is
    of the file at its name: that error got out of the pass, which paused claims at each
    pass and would exit 75 at each start.  It is that orphan's trouble, as its read's:
    left in ``running/``, said once, settled once it can be looked at.

    Its open failing too (``openat``: the inode unreadable): the lease took it for one
    held by a live processor, and the lstat that tells a file from what is none got out
    of the pass as above; only its open failing, it stayed in ``running/`` unsaid."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        orphan = spool_root / "running" / "bad.json"
        detach = attach(d.pid, syscalls, orphan, when="1+")
        staged = spool_root / "tmp" / "orphan-bad"
        staged.write_text('{"tool": "echo", "params": {"message": 0}}')
        os.rename(staged, orphan)
        _left_once(d, spool_root, "the other jobs run, the orphan looked at")
        assert locations(spool_root)["bad"] == ["running"]
        detach()  # looked at again: requeued (an orphan's first attempt)
        wait_for(lambda: record(spool_root, "bad") is not None, 20, "the orphan run")
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_quarantined_original_the_disk_cannot_look_up_is_not_an_exit_at_start(
        spool_root: Path, tmp_path: Path) -> None:
    """A quarantine's original (``failed/<id>.orig``) every lstat of which fails (a bad
    sector under its inode).  The pass at start checks every name of ``failed/``: the
    error got out of it, and the processor exited at each start ("cannot use the
    spool"), restarted for ever.  It is that file's trouble: said once, the jobs run."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    (spool_root / "failed" / "bad.orig").write_bytes(b"not a job")
    (spool_root / "failed" / "bad.json").write_text(
        '{"id": "bad", "state": "failed", "error": {"type": "invalid_job", "message": "m"}}')
    original = spool_root / "failed" / "bad.orig"
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S="1", prefix=[
        strace, "-f", "-o", "/dev/null", "-P", str(original), "-e", "trace=newfstatat",
        "-e", "inject=newfstatat:error=EIO:when=1+"])
    try:
        d.start(wait_ready=False)
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})
        _wait_recorded(d, spool_root, "the jobs' records")
        assert len(_troubled(d, LEFT)) == 1, d.logs()[-3000:]
        assert original.exists()
        # SIGTERM to the processor itself: strace does not pass it on, and exits with it.
        (processor,) = psutil.Process(d.pid).children()
        processor.terminate()
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_pending_file_the_disk_fails_again_is_said_again(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """The same bad sector under a pending job's inode, twice, the file read in between.
    The first outage's warning stood for good: the second one (a sector going bad for
    good, say) was not said."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        _a_bad_job_due_later(spool_root)
        path = spool_root / "pending" / "bad.json"
        detach = attach(d.pid, "newfstatat", path, when="1+")
        wait_for(lambda: _troubled(d, UNREADABLE), 20, "the first outage said")
        detach()
        time.sleep(PASSES_S)  # scans that look it up again: none to see
        detach = attach(d.pid, "newfstatat", path, when="1+")
        wait_for(lambda: len(_troubled(d, UNREADABLE)) == 2, 20, "the second outage said")
        detach()
        assert locations(spool_root)["bad"] == ["pending"]
        assert d.stop() == 0
    finally:
        d.abort()


def _left_once(d: Daemon, spool_root: Path, what: str) -> None:
    """Drop j1 and j2, and wait until both have records and the file recovery left was
    said; after more passes (:data:`PASSES_S`) it was said once, not once a pass,
    and no pass was the spool's trouble."""
    drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
    drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})

    def settled() -> bool:
        assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
        return (all(record(spool_root, job_id) for job_id in ("j1", "j2"))
                and len(_troubled(d, LEFT) + _troubled(d)) > 0)

    wait_for(settled, 30, what)
    time.sleep(PASSES_S)  # more passes: said once, not once a pass
    assert not _troubled(d), d.logs()[-3000:]
    assert len(_troubled(d, LEFT)) == 1, d.logs()[-3000:]


def _bad_cancelled(spool_root: Path, what: str) -> None:
    """Wait for ``bad``'s record (``what``), and it says the job was cancelled."""
    wait_for(lambda: record(spool_root, "bad") is not None, 20, what)
    rec = record(spool_root, "bad")
    assert rec is not None and (rec["state"], rec["error"]["type"]) == (
        "failed", "cancelled"), rec


def _a_bad_job_due_later(spool_root: Path) -> None:
    """Drop ``bad`` (due in 2099: it waits in ``pending/``, looked at each scan) and j0,
    and wait for j0's record (``bad`` judged with it at the latest: each pass judges every
    dirty name first)."""
    drop(spool_root, "bad", {"tool": "echo", "params": {"message": 0},
                             "not_before": "2099-01-01T00:00:00Z"})
    drop(spool_root, "j0", {"tool": "echo", "params": {"message": 0}})
    wait_for(lambda: record(spool_root, "j0") is not None, 20, "j0's record")


def _wait_recorded(d: Daemon, spool_root: Path, what: str) -> None:
    """Until j1 and j2 have records, the processor running all along."""
    def recorded() -> bool:
        assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
        return all(record(spool_root, job_id) for job_id in ("j1", "j2"))

    wait_for(recorded, 30, what)


def test_a_cancel_request_the_disk_cannot_read_is_not_a_pause(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """A cancel request (``cancel/<id>``) of a ready job (due in an hour) every read of
    which fails (a bad sector under it).  Its read was taken for spool trouble: the
    request asked again at each pause's end and failing again, every claim paused for as
    long as it lasted (the jobs dropped after it left in ``pending/``).  It is that
    request's trouble: said once, the jobs run, the cancel done once it reads."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        _a_bad_job_due_later(spool_root)
        request = spool_root / "cancel" / "bad"
        detach = attach(d.pid, "read", request, when="1+")
        staged = spool_root / "tmp" / "cancel-bad"
        staged.write_bytes(b"{}")
        os.rename(staged, request)
        said = "cannot read a cancel request; asked again at each scan"
        wait_for(lambda: _troubled(d, said) or _troubled(d), 20, "the request's read")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})
        _wait_recorded(d, spool_root, "the other jobs' records")
        time.sleep(PASSES_S)  # more scans: said once, not once a scan
        assert not _troubled(d), d.logs()[-3000:]
        assert len(_troubled(d, said)) == 1, d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["pending"]
        detach()  # readable again: asked at the next scan, and cancelled
        _bad_cancelled(spool_root, "the cancel's record")
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_cancel_of_a_ready_job_the_disk_cannot_read_is_not_a_pause(
        spool_root: Path, tmp_path: Path) -> None:
    """A job judged ready (due in an hour), its sector bad since, and a cancel request
    for it (``cancel/<id>``, naming no run).  The cancel's read failed and was taken for
    spool trouble: the request tried again at each pause's end, and failed again, every
    claim paused for good (the jobs dropped after it left in ``pending/``).  It is that
    file's trouble: said once, the jobs run, and the cancel is done once it reads."""
    flag = tmp_path / "sector-bad"
    d = Daemon(spool_root, tmp_path / "p.log", module="bad_sector_processor",
               BAD_SECTOR_NAME="bad.", BAD_SECTOR_FLAG=str(flag), SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        _a_bad_job_due_later(spool_root)
        flag.touch()
        (spool_root / "cancel" / "bad").write_bytes(b"{}")
        wait_for(lambda: _troubled(d, UNREADABLE) or _troubled(d), 20, "the cancel's read")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})

        _wait_recorded(d, spool_root, "the other jobs' records")
        assert not _troubled(d), d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["pending"]
        flag.unlink()  # readable again: judged at the next scan, and cancelled
        _bad_cancelled(spool_root, "the cancel's record")
        assert len(_troubled(d, UNREADABLE)) == 1, d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_newer_drop_the_disk_cannot_read_at_its_claim_is_not_a_crash(
        spool_root: Path, tmp_path: Path) -> None:
    """A claim whose file was replaced by a newer drop between its open and its move
    leases and reads the newer one in ``running/``; that read's EIO got out raw: the
    processor crashed (exit 1), the newer drop left in ``running/`` an orphan, never run.
    It is that file's trouble, as the claim's own read: given back, said once, the
    others run, and it runs once it reads."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    flag = tmp_path / "sector-bad"
    flag.touch()  # the reads of running/bad.json fail: the claim's, not intake's
    d = Daemon(spool_root, tmp_path / "p.log", module="bad_sector_processor",
               BAD_SECTOR_NAME="running/bad.", BAD_SECTOR_FLAG=str(flag), SPOOL_SCAN_S=SCAN_S)
    trace, err = tmp_path / "flock.trace", tmp_path / "flock.err"
    tracer: subprocess.Popen[bytes] | None = None
    try:
        d.start()
        # The claim's lock of pending/bad.json takes 2 s: the newer drop comes meanwhile.
        with open(err, "wb") as out:
            tracer = subprocess.Popen(
                [strace, "-f", "-o", str(trace), "-p", str(d.pid), "-P",
                 str(spool_root / "pending" / "bad.json"), "-e", "trace=flock",
                 "-e", "inject=flock:delay_exit=2000000:when=1"],
                stdout=subprocess.DEVNULL, stderr=out)
        wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 0}})
        wait_for(lambda: trace.exists() and b"flock(" in trace.read_bytes(), 20,
                 "the claim's lock")
        drop(spool_root, "bad", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})

        _wait_recorded(d, spool_root, "the other jobs' records")
        wait_for(lambda: _troubled(d, UNREADABLE), 20, "the newer drop's read")
        assert not _troubled(d), d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["pending"]
        flag.unlink()  # readable again: judged at the next scan, and run
        wait_for(lambda: record(spool_root, "bad") is not None, 20, "the newer drop's record")
        rec = record(spool_root, "bad")
        assert rec is not None and (rec["state"], rec["params"]) == ("done", {"message": 1})
        assert len(_troubled(d, UNREADABLE)) == 1, d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        if tracer is not None:
            _detach(tracer)
        d.abort()


def test_a_cancel_of_an_orphan_the_disk_cannot_look_up_is_kept(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """An orphan in ``running/`` every lstat of which fails (a bad sector under its
    inode), and a cancel request for it.  Recovery asked whether the job was still there
    with ``os.path.lexists``, whose False for the EIO took it for gone: the request was
    removed as a leftover, and once the disk read again the orphan was requeued and run,
    the user's cancel lost.  The request stays while the job cannot be looked up."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        orphan = spool_root / "running" / "bad.json"
        detach = attach(d.pid, "newfstatat", orphan, when="1+")
        staged = spool_root / "tmp" / "orphan-bad"
        staged.write_text('{"tool": "echo", "params": {"message": 0}}')
        os.rename(staged, orphan)
        request = spool_root / "cancel" / "bad"
        staged = spool_root / "tmp" / "cancel-bad"
        staged.write_bytes(b"{}")
        os.rename(staged, request)
        _left_once(d, spool_root, "the other jobs run, the orphan looked at")
        assert request.exists(), d.logs()[-3000:]
        assert locations(spool_root)["bad"] == ["running"]
        detach()  # looked at again: the orphan is cancelled, not run
        _bad_cancelled(spool_root, "the orphan's record")
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize(("call", "folder"), [("newfstatat", "running"), ("flock", "pending")],
                         ids=["lookup-after-move", "lease"])
def test_a_claim_whose_file_fails_once_is_that_files_trouble(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]],
        call: str, folder: str) -> None:
    """A claim's call on its job's file fails with EIO once (a bad sector under its inode,
    read again later): the lstat of the job it just moved into ``running/``, or the flock
    of the pending job.  The error got out of the claim: the processor crashed (a
    traceback, exit 1), the first leaving the job in ``running/`` with no lease.  It is
    that file's trouble: the job is given back (or stays) in ``pending/`` and runs at a
    later scan, the processor on."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        attach(d.pid, call, spool_root / folder / "j1.json", when="1")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "echo", "params": {"message": 2}})

        _wait_recorded(d, spool_root, "both records")
        for job_id in ("j1", "j2"):
            rec = record(spool_root, job_id)
            assert rec is not None and (rec["state"], rec["attempts"]) == ("done", 1), rec
        assert _troubled(d, UNREADABLE), d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_claimed_file_still_unreadable_at_its_give_back_goes_back_all_the_same(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """The claim's lstat of the job it just moved into ``running/`` fails with EIO, and
    so does the give-back's own lstat of it (the sector still bad a moment later).  The
    give-back then did nothing: the job stayed in ``running/`` with its lease closed, an
    orphan under a live processor.  The file at ``running/`` is the one the claim moved
    there (its move never replaces), so it goes back to ``pending/`` unlooked-at, and
    runs once at a later scan, at one attempt."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        attach(d.pid, "newfstatat", spool_root / "running" / "j1.json", when="1..2")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})

        def recorded() -> bool:
            assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
            return record(spool_root, "j1") is not None

        wait_for(recorded, 30, "j1's record")
        rec = record(spool_root, "j1")
        assert rec is not None and (rec["state"], rec["attempts"]) == ("done", 1), rec
        assert _troubled(d, UNREADABLE), d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()


def test_a_periodic_scan_that_cannot_list_cancel_is_said_not_a_crash(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """The periodic scan's listings of ``cancel/`` fail (EIO).  The scan let the error out of
    the loop (exit 1, its running jobs failed ``abandoned`` at the next start: QA) where
    one of ``pending/`` is said once; the same for ``cancel/`` now, and jobs run."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        # Each pass lists cancel/ twice: recovery's (two calls, the second at its end),
        # then the scan's (one, failed): the scan's of every pass fails.
        detach = attach(d.pid, "getdents64", spool_root / "cancel", when="3+3")
        said = "cannot scan cancel/; said again only if the error changes"
        wait_for(lambda: _troubled(d, said) or not d.running(), 20, "the scan's line")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "sleep", "params": {"seconds": 0.1}})
        _wait_recorded(d, spool_root, "the jobs' records")
        time.sleep(PASSES_S)
        assert _troubled(d, said) == ["[Errno 5] Input/output error: "
                                      f"'{spool_root / 'cancel'}'"], d.logs()[-3000:]
        detach()
        wait_for(lambda: any(e.get("msg") == "scanning cancel/ again" for e in d.events()),
                 20, "the scan's return said")
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize(("syscall", "when"), [("ioctl", "1+"), ("read", "1+")])
def test_a_failing_read_of_the_presence_feed_is_not_a_crash(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]],
        syscall: str, when: str) -> None:
    """The kernel fails the processor's reads of the inotify descriptor that follows the
    folders a record's finish looks in (its FIONREAD, its read).  Raised in the middle
    of a finish, it ended the processor (exit 1) and the next start failed the runs
    beside it ``abandoned`` (QA); so did a failed read of the change feed's.  That
    follower stops, the change feed is said once and started again once it reads; every
    job is recorded."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        # strace -P names a descriptor by what /proc says it is: both inotify ones (the
        # change feed's too, which says its trouble and rescans).
        detach = attach(d.pid, syscall, Path("anon_inode:inotify"), when=when)
        for i in range(20):
            drop(spool_root, f"j{i}", {"tool": "echo", "params": {"message": i}})
        for i in range(20):
            assert d.running(), f"the processor exited:\n{d.logs()[-3000:]}"
            wait_for(lambda i=i: record(spool_root, f"j{i}") is not None, 30, f"j{i}")
        for i in range(5):  # heartbeats pass: the feed started again, failing again
            drop(spool_root, f"k{i}", {"tool": "echo", "params": {"message": i}})
            time.sleep(0.6)
        wait_for(lambda: record(spool_root, "k4") is not None, 30, "k4")
        detach()
        failed = [e for e in d.events() if e.get("msg", "").startswith(
            "the change feed cannot be read")]
        assert len(failed) == (syscall == "read"), d.logs()[-3000:]
        if failed:  # said once for the 20 drops, and once a read went through again
            drops = iter(range(100))

            def read_again() -> bool:  # the feed is back at a heartbeat: a drop's event
                drop(spool_root, f"after{next(drops)}", {"tool": "echo"})
                time.sleep(0.2)
                return any(e.get("msg") == "change feed read again" for e in d.events())

            wait_for(read_again, 20, "the feed back")
            assert [e["msg"] for e in d.events() if "change feed" in e.get("msg", "")] == [
                failed[0]["msg"], "change feed read again"], d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()


@pytest.mark.parametrize("error", ["ENOMEM", "EIO"])
def test_a_proc_that_cannot_list_the_processors_threads_is_not_a_crash(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]],
        error: str) -> None:
    """``/proc`` fails the listing of the processor's threads (ENOMEM under memory
    pressure, EIO), which each periodic pass's reaper reads for the orphans of FAST
    tools' processes.  Only out of descriptors was "cannot tell now": the pass ended the
    processor (exit 1), its stop's kill of tools' processes raised again (QA)."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        detach = attach(d.pid, "openat", Path(f"/proc/{d.pid}/task"), error=error,
                        when="1+")
        time.sleep(PASSES_S)  # passes, each reading it
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "sleep", "params": {"seconds": 0.1}})
        _wait_recorded(d, spool_root, "the jobs' records")
        assert d.stop() == 0, d.logs()[-3000:]
        detach()
        assert "Traceback" not in d.logs(), d.logs()[-3000:]
    finally:
        d.abort()


def test_a_folder_whose_close_fails_after_its_sync_is_no_trouble(
        spool_root: Path, tmp_path: Path, attach: Callable[..., Callable[[], None]]) -> None:
    """Each close of a descriptor of ``done/`` fails (EIO) after its sync went through
    (``SPOOL_FSYNC=always``: a record's folder sync).  It ended the processor with a
    traceback (QA); nothing was left unsynced, and the descriptor is freed whatever the
    close says: every job is recorded, nothing said."""
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_FSYNC="always", SPOOL_SCAN_S=SCAN_S)
    try:
        d.start()
        detach = attach(d.pid, "close", spool_root / "done", when="1+")
        drop(spool_root, "j1", {"tool": "echo", "params": {"message": 1}})
        drop(spool_root, "j2", {"tool": "sleep", "params": {"seconds": 0.1}})
        _wait_recorded(d, spool_root, "the jobs' records")
        detach()
        assert not _troubled(d), d.logs()[-3000:]
        assert d.stop() == 0
    finally:
        d.abort()
