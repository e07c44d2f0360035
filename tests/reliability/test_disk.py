"""Disk trouble on real filesystems: ENOSPC and EACCES during each kind of transition.

* ENOSPC: the spool lives on a 4 MiB tmpfs this test mounts (it needs root,
  which the suite has; elsewhere it is skipped) and a filler file takes the
  last byte.  On tmpfs a rename needs no space, so claims still work; what
  fails is every write: records (complete, fail), requeue copies, quarantine
  records, the status and progress files.
* EACCES: the processor runs as root without ``CAP_DAC_OVERRIDE`` (``setpriv
  --bounding-set``), so a folder made ``0555`` refuses it as it would refuse
  any user: ``running/`` (claim), ``done/`` (complete), ``failed/`` (fail and
  quarantine), ``tmp/`` (every publish), ``pending/`` (a requeue mid-run).

In each case: nothing is lost or half-written (every job in exactly one
folder, every record parses, no staging file left), the daemon pauses with a
"spool I/O trouble; pausing claims" line and backs off, and when the trouble
ends every job finishes as it would have.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from relkit import (
    NO_DAC,
    Daemon,
    drop,
    locations,
    make_spool,
    most_backed_off_tries,
    quick_pause,
    record,
    tmpfs,
    wait_for,
    wait_record,
)

from spool.fsops import SPARE_TAG
from spool.layout import Layout
from spool.reader import SpoolReader

StartDaemon = Callable[..., Daemon]
MALFORMED = b'{"tool": '
JOBS: dict[str, dict[str, Any]] = {
    "fast-ok": {"tool": "r_fast", "params": {"marker": "fast"}},
    "compute-ok": {"tool": "sleep", "params": {"seconds": 0.2}},
    "bad-params": {"tool": "echo", "params": {"nope": 1}},
    "retried": {"tool": "sleep", "params": {"seconds": 30}, "timeout": 0.3, "max_attempts": 2},
}
EXPECTED = {"fast-ok": ("done", None), "compute-ok": ("done", None),
            "bad-params": ("failed", "invalid_params"), "retried": ("failed", "timeout"),
            "malformed": ("failed", "invalid_job")}
TROUBLE = "spool I/O trouble; pausing claims"
HELD = "spool I/O trouble; pausing quarantines"
"""A refused quarantine's line: that drop waits, and claims go on."""
QUICK_PAUSE_S = 0.2
"""The first pause after I/O trouble in the EACCES tests (0.5 s shipped), doubled at
each try as shipped: they see the same backed-off tries in half the time."""
QUICK_PAUSE = quick_pause(QUICK_PAUSE_S)
CLEARS_S = 20
"""The status file's io_trouble clears once no write has been refused for a scan interval
(5 s) and two heartbeats after the pause: well within this."""


def _drop_all(root: Path) -> None:
    for job_id, job in JOBS.items():
        drop(root, job_id, job)
    (root / "pending" / "malformed.json").write_bytes(MALFORMED)


def _staging(root: Path, *, spares: bool = True) -> list[str]:
    """Staging files left in tmp/ (clients', the staged actions') or stage/ (the
    processor's own); ``spares=False``: not the spare inodes and status buffer a
    running processor keeps (``+spare.*``, gone at its stop)."""
    return [n for folder in ("tmp", "stage") for n in os.listdir(root / folder)
            if n.endswith(".tmp") and (spares or not n.startswith(SPARE_TAG + "."))]


def _assert_consistent(root: Path) -> None:
    """No id in two folders, no half-written record, no staging file left behind."""
    where = locations(root)
    assert all(len(states) == 1 for states in where.values()), where
    for state in ("done", "failed"):
        for path in (root / state).glob("*.json"):
            orjson.loads(path.read_bytes())  # parses: never half-written


def _assert_finished(root: Path) -> None:
    where = locations(root)
    for job_id, (state, error) in EXPECTED.items():
        assert where.get(job_id) == [state], (job_id, where.get(job_id))
        rec = record(root, job_id)
        assert rec is not None and rec["state"] == state
        assert (rec.get("error") or {}).get("type") == error, (job_id, rec.get("error"))
    assert record(root, "fast-ok")["result"] == {"marker": "fast"}  # type: ignore[index]
    assert (root / "failed" / "malformed.orig").read_bytes() == MALFORMED
    assert _staging(root) == []
    _assert_consistent(root)


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _trouble(d: Daemon, msg: str = TROUBLE) -> list[dict[str, Any]]:
    return [e for e in d.events() if e.get("msg") == msg]


def _assert_quiet(d: Daemon, since: int, first_pause_s: float = 0.5) -> None:
    """Backed-off retries, and each advisory warning once.  The span is the trouble lines'
    own (their timestamps): the test's clock, read late under load, could skew it."""
    events = d.events()[since:]
    noise = [e["msg"] for e in events if e.get("level") in ("warning", "error")]
    for msg in (TROUBLE, HELD):  # claims and quarantines, each tried again after its pause
        lines = [e for e in events if e.get("msg") == msg]
        assert len(lines) <= most_backed_off_tries(lines, first_pause_s), (msg, lines, noise)
    assert all(noise.count(m) <= 1 for m in set(noise) - {TROUBLE, HELD}), noise


# -- ENOSPC -------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small") as mnt:
        yield mnt


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # and the last crumbs
        with open(filler, "ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_enospc_pauses_then_everything_finishes(small_fs: Path, daemon: StartDaemon) -> None:
    root = small_fs / "spool"
    make_spool(root)
    _drop_all(root)
    filler = _fill(small_fs)
    d = daemon(wait_ready=False, root=root, JOB_NUM="1", SPOOL_SETTLE_S="0.2")
    d.wait_started()
    wait_for(lambda: _trouble(d), 10, "the I/O trouble line")
    cpu_before = _cpu_s(d.pid)
    # Full for about 3 s, longer than r_fast's 1 s timeout: a finished run must stay
    # finished.  The space comes back within the third pause (2 s, the tries at about
    # 0, 0.5, 1.5 and 3.5 s), not in the fourth (4 s), which the test waited out.
    wait_for(lambda: len(_trouble(d)) >= 3, 10, "the third try")
    time.sleep(1.5)
    tries = _trouble(d)[:3]
    pauses = [e["pause_s"] for e in tries]
    assert pauses[0] < pauses[1] < pauses[2], f"the pauses grow: {pauses}"
    at = [datetime.fromisoformat(e["ts"]).timestamp() for e in tries]
    # The lines' times, not the tries': a line written late under load (a full run beside
    # helpers: 0.9 s after one that said 1 s) shortens the next gap.
    assert all(at[n + 1] - at[n] > pauses[n] * 0.8 for n in (0, 1)), (at, pauses)
    assert _cpu_s(d.pid) - cpu_before < 1.0, "the daemon waits; it does not spin"
    assert "No space left on device" in _trouble(d)[0]["error"]
    _assert_consistent(root)
    assert not any(record(root, i) for i in EXPECTED), "no record can be written yet"
    _assert_quiet(d, 0)
    filler.unlink()
    wait_for(lambda: all(record(root, i) for i in EXPECTED)
             and not _staging(root, spares=False), 30,
             "every job to finish once space is back")
    assert d.stop() == 0
    _assert_finished(root)


def test_enospc_at_start_up_exits_with_one_line_and_loses_nothing(small_fs: Path,
                                                                  daemon: StartDaemon) -> None:
    """A full disk at start-up is one line and exit status 75 (EX_TEMPFAIL), which the
    unit restarts after; it was 2, the configuration error the unit does not restart
    (RestartPreventExitStatus=2), so a disk full at boot left the processor down."""
    root = small_fs / "spool"
    make_spool(root)
    orphan = {"tool": "sleep", "params": {"seconds": 0.1}, "max_attempts": 3}
    (root / "running" / "orphan.json").write_bytes(orjson.dumps(orphan))
    filler = _fill(small_fs)
    d = daemon(wait_ready=False, root=root)
    assert d.proc is not None
    assert d.proc.wait(60) == 75, d.logs()
    lines = d.logs().strip().splitlines()
    assert lines[-1].startswith("spool-processor: error: "), lines
    assert [line for line in lines if "No space left" in line] == lines[-1:], lines
    assert os.listdir(root / "running") == ["orphan.json"], "the orphan is still there"
    assert _staging(root) == []
    filler.unlink()
    again = daemon(root=root)
    rec = wait_for(lambda: record(root, "orphan"), 20, "the orphan to run")
    assert rec["state"] == "done" and rec["attempts"] == 2
    assert again.stop() == 0


def test_enospc_at_shutdown_requeues_without_counting_the_attempt(small_fs: Path,
                                                                  daemon: StartDaemon) -> None:
    """A run cut short by a stop went back to pending/ as a newly written job file; with
    the disk full that write failed, the processor exited 2 with the job left in
    running/, and the next start counted the run as an attempt (a job of max_attempts 1
    was abandoned because of a stop, not a failure).  Now the running file itself goes
    back by rename: the bytes claimed, with the attempts they had."""
    root = small_fs / "spool"
    make_spool(root)
    job = {"tool": "sleep", "params": {"seconds": 60}, "max_attempts": 1}
    d = daemon(root=root, SPOOL_GRACE_S="0.5")
    drop(root, "long", job)
    claimed = orjson.dumps(job)
    wait_for(lambda: os.listdir(root / "running"), 10, "the job to run")
    filler = _fill(small_fs)
    assert d.stop() == 0, d.logs()
    assert os.listdir(root / "running") == []
    assert (root / "pending" / "long.json").read_bytes() == claimed, "attempts as they were"
    assert [e["event"] for e in d.events() if e.get("id") == "long"] == ["claimed", "requeued"]
    assert _staging(root) == []
    filler.unlink()
    again = daemon(root=root, SPOOL_GRACE_S="0.5")
    lines = wait_for(lambda: [e for e in again.events() if e.get("id") == "long"], 20,
                     "the job to be claimed again")
    assert [(e["event"], e.get("attempt")) for e in lines] == [("claimed", 1)], lines
    assert record(root, "long") is None, "not abandoned"
    assert again.stop() == 0


def test_enospc_during_a_cancel_leaves_the_job_pending(small_fs: Path) -> None:
    """``spoolq cancel`` of a pending job moves it to tmp/ (a rename, which needs no
    space) and then writes its record: with the disk full that write failed and the job
    stayed staged in tmp/ until a processor's recovery scan put it back, out of the
    queue meanwhile.  It goes back to pending/ before the one-line error, and cancels
    once there is space."""
    root = small_fs / "spool"
    make_spool(root)
    job = {"tool": "echo", "params": {"message": "hello"}}
    drop(root, "victim", job)
    filler = _fill(small_fs)
    env = {**os.environ, "SPOOL_DIR": str(root)}
    cmd = [sys.executable, "-m", "spool.cli.main", "cancel", "victim"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1, done
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert "No space left" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (root / "pending" / "victim.json").read_bytes() == orjson.dumps(job)
    assert _staging(root) == [] and os.listdir(root / "failed") == []
    filler.unlink()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert again.returncode == 0, again
    assert record(root, "victim")["error"]["type"] == "cancelled"  # type: ignore[index]
    assert os.listdir(root / "pending") == [] and _staging(root) == []


# -- EACCES -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["running", "done", "failed", "tmp", "stage", "pending"])
def test_eacces_pauses_then_everything_finishes(spool_root: Path, daemon: StartDaemon,
                                                folder: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    _drop_all(spool_root)
    locked = spool_root / folder
    # stage/ unwritable at the start leaves the processor staging in tmp/ (see
    # tests/spool/test_stage.py); pending/ and stage/ are locked mid-run.
    mid_run = folder in ("pending", "stage")
    if not mid_run:
        locked.chmod(0o555)
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               SPOOL_SETTLE_S="0.2", module="quick_processor", **QUICK_PAUSE)
    try:
        d.start(wait_ready=False)
        d.wait_started()
        if mid_run:  # a requeue mid-run: lock it once the timeout job runs
            wait_for((spool_root / "running" / "retried.json").exists, 20, "a claim")
            locked.chmod(0o555)
        if folder == "tmp":
            # The processor's moves and records stage in stage/: it needs nothing of the
            # clients' tmp/, and every job finishes with tmp/ locked.
            wait_for(lambda: all(record(spool_root, i) for i in EXPECTED), 30,
                     "every job to finish with tmp/ locked")
            assert _trouble(d) == []
            assert d.stop() == 0
            return
        wait_for(lambda: _trouble(d), 10, "the I/O trouble line")
        # The outage's first refusal (with failed/ locked, the malformed drop's
        # quarantine may come before the claims' trouble) pauses for the first pause.
        first = next(e for e in d.events() if e.get("msg") in (TROUBLE, HELD))
        assert "Permission denied" in first["error"]
        assert first["pause_s"] == QUICK_PAUSE_S
        # Monitoring sees the pause too: the status file, and the stats read from it (but
        # for stage/, where the status file's own buffer is: it goes stale instead).
        paused = None if folder == "stage" else wait_for(
            lambda: d.status()["io_trouble"], 5, "the status file's io_trouble")
        if paused is not None:
            assert "Permission denied" in paused["error"]
            assert paused["since"] <= paused["retry_at"]
            assert SpoolReader(Layout(spool_root)).stats()["processor"]["io_trouble"] == 1
            said = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir",
                                   str(spool_root), "stats"], capture_output=True, text=True,
                                  check=True).stdout
            assert "last refusal: " in said and "Permission denied" in said, said
        time.sleep(1)  # tries at about 0, 0.2, 0.6 and 1.4 s, then 3 s
        _assert_consistent(spool_root)
        _assert_quiet(d, 0, QUICK_PAUSE_S)
        if paused is not None:
            assert d.status()["io_trouble"]["since"] == paused["since"], "one outage"
        locked.chmod(0o750)
        wait_for(lambda: all(record(spool_root, i) for i in EXPECTED), 30,
                 "every job to finish once the folder is writable")
        wait_for(lambda: d.status()["io_trouble"] is None, CLEARS_S, "io_trouble to clear")
        assert SpoolReader(Layout(spool_root)).stats()["processor"]["io_trouble"] == 0
        wait_for(lambda: not _staging(spool_root, spares=False), 10,
                 "tmp/ and stage/ to be clean")
        assert d.stop() == 0
        assert _staging(spool_root) == [], "a clean stop leaves no spare"
    finally:
        locked.chmod(0o750)
        d.abort()
    _assert_finished(spool_root)


def test_eacces_under_a_spool_path_not_utf8_pauses_and_says_so(tmp_path: Path) -> None:
    """A spool whose path holds a byte that is not UTF-8 (a directory named in Latin-1)
    gives I/O trouble a message with a lone surrogate in it (the path, as ``os`` decodes
    it).  The status file's ``io_trouble`` carried it as it was, orjson refused the whole
    status file, and the processor crashed at its next heartbeat with a job claimed.  The
    message is escaped as the log line's is, and the processor waits out the trouble."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    root = tmp_path / os.fsdecode(b"sp\xffool")
    make_spool(root)
    drop(root, "echoed", {"tool": "echo", "params": {"message": "hi"}})
    locked = root / "done"
    locked.chmod(0o555)
    d = Daemon(root, tmp_path / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               module="quick_processor", **QUICK_PAUSE)
    try:
        d.start()

        def trouble() -> Any:
            try:
                return d.status()["io_trouble"]
            except StopIteration:  # its status file removed on its way out
                assert d.proc is not None
                d.proc.wait(10)
                return {"error": "the processor exited"}

        paused = wait_for(trouble, 10, "the status file's io_trouble")
        assert d.running(), d.logs()
        assert "sp\\xffool" in paused["error"] and "Permission denied" in paused["error"]
        locked.chmod(0o750)
        rec = wait_for(lambda: record(root, "echoed"), 30, "the job to finish")
        assert rec["state"] == "done" and rec["result"] == {"message": "hi"}
        wait_for(lambda: d.status()["io_trouble"] is None, CLEARS_S, "io_trouble to clear")
        assert d.stop() == 0
    finally:
        locked.chmod(0o750)
        d.abort()


def _refused_quarantine(spool_root: Path, *, settle_s: str) -> tuple[Daemon, Path]:
    """A processor (not started) without CAP_DAC_OVERRIDE whose one drop, malformed, is to
    be quarantined in a ``failed/`` it may not write; and that folder."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    locked = spool_root / "failed"
    locked.chmod(0o555)
    (spool_root / "pending" / "malformed.json").write_bytes(MALFORMED)
    return Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
                  SPOOL_SETTLE_S=settle_s, module="quick_processor", **QUICK_PAUSE), locked


def test_a_refused_quarantine_keeps_io_trouble_set_until_it_lands(spool_root: Path) -> None:
    """With only a quarantine refused (failed/ not writable, a malformed drop), the status
    file's io_trouble was set at each try and cleared at the next heartbeat, its
    ``since`` new each time: ``/metrics`` showed the gauge at 1 in one sample of 12, and
    an alert with ``for: 2m`` never fired.  It stays set, one outage, until the
    quarantine lands."""
    d, locked = _refused_quarantine(spool_root, settle_s="1.5")
    try:
        d.start()
        first = wait_for(lambda: d.status()["io_trouble"], 10, "the status file's io_trouble")
        seen = []
        # Tried again once the file has settled (1.5 s) after each pause: heartbeats (1 s)
        # fall between the tries, as with the shipped 2 s.  Watched for 4.5 s and until
        # the second try (60 s at most): a loaded host's second try came after a fixed
        # window's end, and the window saw no try again.
        least, deadline = time.monotonic() + 4.5, time.monotonic() + 60
        while time.monotonic() < least or len(_trouble(d, HELD)) < 2:
            assert time.monotonic() < deadline, "the quarantine was not tried again"
            seen.append(d.status()["io_trouble"])
            time.sleep(0.05)
        assert None not in seen, "io_trouble cleared while every try was refused"
        assert {t["since"] for t in seen} == {first["since"]}, "one outage"
        locked.chmod(0o750)
        wait_for(lambda: record(spool_root, "malformed"), 10, "the quarantine to land")
        wait_for(lambda: d.status()["io_trouble"] is None, CLEARS_S, "io_trouble to clear")
        assert d.stop() == 0
    finally:
        locked.chmod(0o750)
        d.abort()


def test_a_refused_quarantine_tried_again_backs_off(spool_root: Path) -> None:
    """A quarantine refused (failed/ not writable) goes back to pending/ and is tried again
    once it has settled after the pause; the pass in between dispatched nothing, raised
    nothing, and that reset the backoff: every try paused for the first pause again, and
    the refused write was tried at that pace for as long as the trouble lasted (eight
    trouble lines in 4 s under load).  The pauses grow through the one outage."""
    d, locked = _refused_quarantine(spool_root, settle_s="0.2")
    try:
        d.start()
        tries = wait_for(lambda: _trouble(d, HELD)[3:] and _trouble(d, HELD), 30,
                         "four tries")[:4]
        pauses = [e["pause_s"] for e in tries]
        assert pauses == [QUICK_PAUSE_S * 2 ** n for n in range(4)], pauses
        # The daemon's own timestamps: a loaded test reading the log late cannot skew them.
        at = [datetime.fromisoformat(e["ts"]).timestamp() for e in tries]
        assert all(at[n + 1] - at[n] > pauses[n] - 0.05 for n in range(3)), (at, pauses)
        locked.chmod(0o750)
        wait_for(lambda: record(spool_root, "malformed"), 30, "the quarantine to land")
        assert d.stop() == 0
    finally:
        locked.chmod(0o750)
        d.abort()


def test_an_outage_of_many_tries_pauses_at_the_longest_and_does_not_crash(
        spool_root: Path) -> None:
    """The backoff's count of tries is reset only once the outage is over, so a long one
    (a full disk over a night: a try every 30 s at the longest pause) counts on; at the
    1025th try the pause's ``2 ** 1024`` was no float (OverflowError), the processor
    crashed (a traceback, exit 1), and the run whose record it had waited to write was
    counted by the next start's recovery: failed ``abandoned`` though it had finished.
    With the pauses cut short, those tries come in seconds."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    drop(spool_root, "echoed", {"tool": "echo", "params": {"message": "hi"}})
    locked = spool_root / "done"
    locked.chmod(0o555)
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               module="quick_processor", **{**QUICK_PAUSE, "QUICK_IO_PAUSE_S": "0.0001",
                                            "QUICK_IO_PAUSE_MAX_S": "0.001"})
    try:
        d.start()
        wait_for(lambda: len(_trouble(d)) > 1100 or not d.running(), 120, "1100 tries")
        assert d.running(), d.logs()[-3000:]
        assert _trouble(d)[-1]["pause_s"] == 0.001
        locked.chmod(0o750)
        rec = wait_for(lambda: record(spool_root, "echoed"), 30, "the record to land")
        assert rec["state"] == "done" and rec["result"] == {"message": "hi"}
        assert d.stop() == 0
    finally:
        locked.chmod(0o750)
        d.abort()


@pytest.mark.parametrize("folder", ["pending", "tmp", "progress", "cancel", "owners"])
def test_a_folder_made_unlistable_mid_run_pauses_and_never_ends_the_processor(
        spool_root: Path, folder: str) -> None:
    """``chmod 000`` (no listing, no look-up) on a folder mid-run: a ``pending/`` entry's
    lstat, or recovery's listing of ``tmp/``, ``progress/`` or ``cancel/``, raised
    PermissionError out of the loop (a traceback, exit 1; the run in flight failed
    ``abandoned`` at the next start), and a stop with ``owners/`` locked exited 2 on its
    own status file, its runs all done (QA).  Now: a pause, then every job finishes."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    locked = spool_root / folder
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               SPOOL_SCAN_S="0.2", module="quick_processor", **QUICK_PAUSE)
    try:
        d.start(wait_ready=False)
        d.wait_started()
        drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 1.5}})
        wait_for((spool_root / "running" / "long.json").exists, 20, "a claim")
        locked.chmod(0)
        drop(spool_root, "later", {"tool": "echo", "params": {"message": "x"}})
        time.sleep(1.0)  # intake, recovery passes and heartbeats meet the locked folder
        assert d.running(), d.logs()[-3000:]
        if folder == "owners":
            assert d.stop() == 0, d.logs()[-3000:]  # its runs done: nothing left to do
            locked.chmod(0o750)
            assert wait_record(spool_root, "long")["state"] == "done"
        else:
            locked.chmod(0o750)
            for job_id in ("long", "later"):
                assert wait_record(spool_root, job_id)["state"] == "done"
            assert d.stop() == 0
        assert not [e for e in d.events() if e.get("msg") == "crashed"], d.logs()[-3000:]
    finally:
        locked.chmod(0o750)
        d.abort()


def test_a_stop_records_a_run_that_ended_during_a_pause_not_requeues_it(
        spool_root: Path) -> None:
    """A run that ended while done/ refused its record waits out the pause, its outcome
    known.  At a stop, it held the grace period as a run still going, then was requeued
    as cut short (attempt not counted): the finished job ran again after the restart,
    though the disk took writes again by then (a review: chattr +i done/).  Its record is
    tried once more at the stop; and such a run holds no grace period."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    drop(spool_root, "ended", {"tool": "sleep", "params": {"seconds": 0.2}})
    (spool_root / "done").chmod(0o555)
    d = Daemon(spool_root, spool_root.parent / "daemon.log", prefix=NO_DAC, JOB_NUM="1",
               SPOOL_GRACE_S="2")
    try:
        d.start(wait_ready=False)
        d.wait_started()
        # Refused at about 0, 0.5, 1.5 and 3.5 s: the next try is 4 s away.
        wait_for(lambda: len(_trouble(d)) >= 4, 30, "four refusals of the record")
        (spool_root / "done").chmod(0o755)
        assert d.stop() == 0  # its grace (2 s) over before the next try (4 s)
    finally:
        (spool_root / "done").chmod(0o755)
        d.abort()
    assert locations(spool_root) == {"ended": ["done"]}, locations(spool_root)
    assert record(spool_root, "ended")["state"] == "done"  # type: ignore[index]
    assert not [e for e in d.events() if e.get("event") == "requeued"]
