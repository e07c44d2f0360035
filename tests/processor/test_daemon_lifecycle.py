"""Life cycle and crash safety of the processor, with real signals."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, locations, record, wait_for, wait_record

from spool.lease import is_locked

StartDaemon = Callable[..., Daemon]


def test_sigterm_waits_for_short_jobs_then_requeues_the_rest(spool_root: Path,
                                                             daemon: StartDaemon) -> None:
    # The grace period is long and ended by a second signal once "short" is done: its
    # end is the test's, not the clock's (with 1.5 s of grace, "short" was killed and
    # requeued when its worker was stalled for 1.6 s after the SIGTERM).  Grace that
    # runs out by itself is test_the_shutdown_requeue_line_names_the_attempt_...'s.
    d = daemon(SPOOL_GRACE_S="60")
    # "short" runs until the processor says it is stopping, then 0.2 s more: it is in
    # flight at the SIGTERM, however slow the host (a 0.5 s sleep was over before the
    # test saw both running after a 0.5 s stall).
    drop(spool_root, "short", {"tool": "t_until_stopping", "params": {
        "seconds": 60, "owners": str(spool_root / "owners")}})
    # The drop is bracketed: a stall between a clock read and the drop moves neither
    # bound past it (a 1 s one failed "within 1 s of the read").  The file's mtime, from
    # the kernel's coarse clock, may lag the read before by a tick.
    before_drop = datetime.now(UTC) - timedelta(seconds=0.1)
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}, "max_attempts": 1})
    after_drop = datetime.now(UTC)
    wait_for(lambda: len(os.listdir(spool_root / "running")) == 2, 10, "both running")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert wait_record(spool_root, "short", 30)["state"] == "done"
    assert d.running() and (spool_root / "running" / "long.json").exists(), \
        "the grace period goes on while a run is left"
    assert d.stop() == 0  # a second signal: what is left is requeued now
    job = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert job["attempts"] == 0, "a run cut short by shutdown does not count"
    submitted = datetime.fromisoformat(job["submitted_at"])
    # The requeue came after the stop signal, itself after after_drop.
    assert before_drop <= submitted <= after_drop, "the drop's time, not the requeue's"
    assert os.listdir(spool_root / "running") == []
    assert os.listdir(spool_root / "owners") == []
    assert os.listdir(spool_root / "tmp") == []
    assert [e["event"] for e in d.events() if e.get("id") == "long"] == ["claimed", "requeued"]


def test_a_second_stop_signal_ends_the_grace_period_at_once(spool_root: Path,
                                                          daemon: StartDaemon) -> None:
    d = daemon(SPOOL_GRACE_S="60")
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}, "max_attempts": 1})
    wait_for(lambda: os.listdir(spool_root / "running") == ["long.json"], 10, "it runs")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any(e.get("msg") == "stopping" for e in d.events()), 10, "stopping")
    time.sleep(0.5)
    assert d.proc.poll() is None, "the first signal waits for the grace period"
    asked = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    # At once, not when the 60 s grace ends.  The exit once also waited for the
    # background import of numpy and pandas started when the processor came up (5.05 s
    # after the signal on a loaded host); it no longer does (startup.BackgroundImports.
    # exit_now_if_running), and the bound stays far from both all the same.
    assert d.proc.wait(30) == 0
    assert time.monotonic() - asked < 30
    job = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert job["attempts"] == 0, "a run cut short by shutdown does not count"
    assert os.listdir(spool_root / "running") == []


def test_sigkill_mid_job_requeues_or_abandons_at_restart(spool_root: Path,
                                                        daemon: StartDaemon) -> None:
    d = daemon()
    drop(spool_root, "again", {"tool": "sleep", "params": {"seconds": 30}, "max_attempts": 2})
    drop(spool_root, "once", {"tool": "sleep", "params": {"seconds": 30}})
    wait_for(lambda: len(os.listdir(spool_root / "running")) == 2, 10, "both running")
    d.kill()
    # The workers die with the processor (parent-death signal): nothing runs unowned.
    assert sorted(os.listdir(spool_root / "running")) == ["again.json", "once.json"]
    restarted = daemon()
    rec = wait_record(spool_root, "once", 30)
    assert rec["error"]["type"] == "abandoned" and rec["attempts"] == 1
    recovery = next(e for e in restarted.events() if e.get("msg") == "recovery")
    assert recovery["requeued"] == ["again"] and recovery["abandoned"] == ["once"]
    claim = wait_for(lambda: [e for e in restarted.events()
                              if e.get("event") == "claimed" and e.get("id") == "again"],
                     10, "the requeued job to run again")
    assert claim[0]["attempt"] == 2, "the killed run counted"


def test_crash_loop_every_job_done_exactly_once(spool_root: Path, daemon: StartDaemon,
                                               tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    rng = random.Random(7)
    total = 300
    for i in range(total):
        tool = "t_record" if i % 3 else "t_fast_record"
        drop(spool_root, f"c{i:03d}", {"tool": tool, "max_attempts": 10,
                                       "params": {"log": str(log),
                                                  "seconds": rng.choice([0, 0, 0.01, 0.05])}})
    for _ in range(5):
        d = daemon()
        time.sleep(rng.uniform(0.3, 1.2))
        d.kill()
    final = daemon(SPOOL_GRACE_S="5")
    wait_for(lambda: len(os.listdir(spool_root / "done")) == total, 120, "all done")
    assert final.stop() == 0
    # Killed daemons leave spare inodes in tmp/ (recycled job files): recovery
    # removes those of dead processes, and a clean stop removes its own.
    assert os.listdir(spool_root / "tmp") == []
    where = locations(spool_root)
    assert len(where) == total
    assert all(states == ["done"] for states in where.values()), \
        {k: v for k, v in where.items() if v != ["done"]}
    _assert_never_concurrent(log)


def _assert_never_concurrent(log: Path) -> None:
    running: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        kind, job_id = line.split()[:2]
        if kind == "start":
            running[job_id] += 1
            # A run killed with its worker never writes "end": forget it at the next start.
            running[job_id] = 1
        else:
            running[job_id] -= 1
        assert running[job_id] in (0, 1), f"{job_id} ran twice at once"


def test_two_processors_on_one_spool_never_run_a_job_twice(spool_root: Path,
                                                          daemon: StartDaemon,
                                                          tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    first, second = daemon(), daemon()
    total = 200
    for i in range(total):
        drop(spool_root, f"j{i:03d}", {"tool": "t_record" if i % 2 else "t_fast_record",
                                       "params": {"log": str(log), "seconds": 0.005}})
    wait_for(lambda: len(os.listdir(spool_root / "done")) == total, 60, "all done")
    starts = Counter(line.split()[1] for line in log.read_text().splitlines()
                     if line.startswith("start"))
    assert len(starts) == total and set(starts.values()) == {1}
    assert first.stop() == 0 and second.stop() == 0
    claims = [sum(e.get("event") == "claimed" for e in d.events()) for d in (first, second)]
    assert sum(claims) == total, claims


def test_a_claim_lost_to_another_processors_run_is_tried_again(spool_root: Path,
                                                                daemon: StartDaemon) -> None:
    """A drop of an id another processor is running cannot be claimed yet; once that run
    ends, the next rescan claims it (it was forgotten for good before)."""
    other = spool_root / "running" / "x.json"
    other.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": "first"}}))
    held = os.open(other, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # the other processor's claim lease
    try:
        d = daemon(SPOOL_SCAN_S="0.3")
        drop(spool_root, "x", {"tool": "echo", "params": {"message": "second"}})
        time.sleep(1.0)  # three rescans: each claim fails while the other run holds the id
        assert locations(spool_root) == {"x": ["pending", "running"]}
        assert d.running()
        (spool_root / "done" / "x.json").write_bytes(orjson.dumps(
            {"id": "x", "tool": "echo", "state": "done", "result": {"message": "first"}}))
        os.unlink(other)  # the other run is recorded and gone
    finally:
        os.close(held)
    rec = wait_for(lambda: (r := record(spool_root, "x")) and r["result"] == {"message":
                                                                             "second"} and r,
                   10, "the second drop to run")
    # Its running file goes just after its record is published.
    wait_for(lambda: not (spool_root / "running" / "x.json").exists(), 10,
             "x's running file gone after its record")
    assert rec["state"] == "done" and locations(spool_root) == {"x": ["done"]}


def test_drops_during_the_grace_period_do_not_spin_the_loop(spool_root: Path,
                                                           daemon: StartDaemon) -> None:
    d = daemon(SPOOL_GRACE_S="10")
    # A FAST job runs once the background import of numpy and pandas is done: that
    # import's CPU (0.1 to 0.3 s here alone, more under load: 0.53 s counted once in a
    # full run) is not the loop's.
    drop(spool_root, "warm", {"tool": "echo"})
    assert wait_record(spool_root, "warm", 60)["state"] == "done"
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the long job to run")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any(e.get("msg") == "stopping" for e in d.events()), 10, "stopping")
    drop(spool_root, "late", {"tool": "echo"})
    before = cpu_s(d.pid)
    time.sleep(1.5)
    used = cpu_s(d.pid) - before
    assert used < 0.5, f"the loop used {used:.2f} s of CPU in 1.5 s of grace"
    assert locations(spool_root)["late"] == ["pending"], "a stopping daemon claims nothing new"


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("how", ["removed", "moved away"])
def test_a_replaced_pending_folder_is_watched_again(spool_root: Path, daemon: StartDaemon,
                                                    how: str) -> None:
    """Its watch went with the old folder: the new one is watched within a heartbeat, not
    left to the periodic rescan (SPOOL_SCAN_S is a minute here)."""
    daemon(SPOOL_SCAN_S="60")
    drop(spool_root, "before", {"tool": "echo"})
    assert wait_record(spool_root, "before", 30)["state"] == "done"
    pending = spool_root / "pending"
    if how == "removed":
        pending.rmdir()
    else:
        pending.rename(spool_root / "pending.old")
    pending.mkdir()
    for n in range(3):
        drop(spool_root, f"after-{n}", {"tool": "echo"})
        assert wait_record(spool_root, f"after-{n}", 30)["state"] == "done"


def test_a_slow_writer_is_not_failed_early(spool_root: Path, daemon: StartDaemon) -> None:
    # The writer pauses 0.25 s, far from the 3 s settle time: a stall of the host
    # between two writes (with 0.4 s pauses and 1.5 s, one of 1.6 s failed it every
    # time) cannot make a pause look like a writer that is done.  The whole write
    # (about 5 s) still takes well over the settle time: it is counted from the last
    # change, not the first.
    settle_s = 3.0
    daemon(SPOOL_SETTLE_S=str(settle_s))
    body = orjson.dumps({"tool": "echo", "params": {"message": "x" * 2000}})
    path = spool_root / "pending" / "slow.json"
    with open(path, "wb") as fh:
        for start in range(0, len(body), 100):
            fh.write(body[start:start + 100])
            fh.flush()
            time.sleep(0.25)
    rec = wait_record(spool_root, "slow", 30)
    assert rec["state"] == "done" and rec["result"]["message"] == "x" * 2000


def test_a_writer_that_waits_before_its_first_byte_is_not_failed_early(
        spool_root: Path, daemon: StartDaemon) -> None:
    """``wget -O pending/x.json`` from a server that answers in 3 s, or ``{ sleep 3; cat
    job; } > pending/x.json``: the file stays empty past the settle time, open for
    writing, and the job was failed "empty file" while the writer went on writing into
    the quarantine (QA)."""
    daemon(SPOOL_SETTLE_S="0.5", SPOOL_SCAN_S="0.5")
    path = spool_root / "pending" / "late.json"
    with open(path, "wb") as fh:
        time.sleep(2.0)  # four settle times, four scans
        assert path.exists() and not (spool_root / "failed" / "late.json").exists()
        fh.write(orjson.dumps({"tool": "echo", "params": {"message": "at last"}}))
    rec = wait_record(spool_root, "late", 30)
    assert rec["state"] == "done" and rec["result"]["message"] == "at last"


def test_a_fifo_never_blocks_the_daemon(spool_root: Path, daemon: StartDaemon) -> None:
    daemon()
    os.mkfifo(spool_root / "pending" / "x.json")
    drop(spool_root, "behind", {"tool": "echo"})
    assert wait_record(spool_root, "behind", 30)["state"] == "done"
    rec = wait_record(spool_root, "x", 30)
    assert rec["error"]["type"] == "invalid_job" and "fifo" in rec["error"]["message"]
    assert (spool_root / "failed" / "x.orig").is_fifo()


def test_a_burst_of_20000_files_is_fully_processed(spool_root: Path, daemon: StartDaemon
                                                  ) -> None:
    total = 20_000
    d = daemon(JOB_NUM="1")
    stop = threading.Event()

    def writer(part: int) -> None:
        for i in range(part, total, 2):
            drop(spool_root, f"b{i:05d}", {"tool": "echo", "params": {"message": i}})

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    # A listing of 20,000 names costs ~7 ms of CPU: at wait_for's 20 ms pace the test
    # took a good part of a core from the daemon it waits for.
    deadline = time.monotonic() + 240
    while len(os.listdir(spool_root / "done")) != total:
        assert time.monotonic() < deadline, "timed out after 240 s waiting for 20,000 done"
        time.sleep(0.25)
    assert os.listdir(spool_root / "pending") == []
    assert record(spool_root, "b19999") is not None
    assert d.stop() == 0


def test_an_owner_lock_file_removed_under_a_processor_is_locked_again(
        spool_root: Path, daemon: StartDaemon) -> None:
    """``rm owners/*.lock`` under a running processor: readers called it down for good
    (its lock on a file nobody could open).  Its claims' locks still hold, so it takes
    the lease again at its next heartbeat and goes on."""
    d = daemon()
    (lock,) = (spool_root / "owners").glob("*.lock")
    lock.unlink()
    wait_for(lambda: is_locked(lock), 10, "the owner lock file made and locked again")
    # Said once the lock is taken: a loaded host can run this look in between.
    wait_for(lambda: "locked again" in d.logs(), 10, "the line that says so")
    drop(spool_root, "after", {"tool": "echo"})
    assert wait_record(spool_root, "after", 30)["state"] == "done"
    assert d.running()


def test_a_spool_root_moved_away_and_back_keeps_its_processor(
        spool_root: Path, daemon: StartDaemon) -> None:
    """No spool at its path for a moment (moved aside and back, or a mount point before
    its filesystem is mounted again) was taken for another spool: the processor exited
    75, and a restart in the gap found no spool, exited 2 and stayed down under the unit
    (the review).  It waits; the same spool back, it goes on."""
    d = daemon()
    aside = spool_root.with_name("spool.aside")
    spool_root.rename(aside)
    time.sleep(2.5)  # two heartbeats and more without a spool at the path
    assert d.running(), d.logs()[-3000:]
    aside.rename(spool_root)
    drop(spool_root, "after", {"tool": "echo"})
    assert wait_record(spool_root, "after", 30)["state"] == "done"
    assert d.running()
    assert "no longer the directory" not in d.logs()
