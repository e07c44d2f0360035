"""The real daemon (``python -m processor``) with ``SPOOL_EXECUTOR=dask://...``.

Jobs are dropped into a real spool and judged by their records, the way a
user would; the Dask cluster is a real ``LocalCluster`` with worker processes
(or, for the scheduler-loss test, one in a process of its own that the test
SIGKILLs).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("distributed")

from scalekit import (
    HERE,
    TOOLS_PATH,
    Daemon,
    alive,
    drop,
    free_port,
    locations,
    make_spool,
    read_line,
    record,
    wait_for,
    wait_record,
    wait_replaced,
)

StartDaemon = Callable[..., Daemon]


def _dask_env(address: str) -> dict[str, str]:
    return {"SPOOL_EXECUTOR": address.replace("tcp://", "dask://"), "JOB_NUM": "2"}


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _assert_stopped_growing(*paths: Path) -> None:
    """None of the heartbeat files grows over 0.6 s (12 beats), watched together."""
    sizes = [path.stat().st_size for path in paths]
    time.sleep(0.6)
    for path, size in zip(paths, sizes, strict=True):
        assert path.stat().st_size == size, f"{path.name} still grows: the work was not stopped"


def test_jobs_run_on_the_cluster_with_progress(spool_root: Path, daemon: StartDaemon,
                                               dask_cluster: Any) -> None:
    d = daemon(**_dask_env(dask_cluster.scheduler_address))
    status = d.status()
    assert status["executor"] == "dask" and status["job_num"] == 2
    drop(spool_root, "prog", {"tool": "d_progress", "params": {"seconds": 2}})
    drop(spool_root, "burst", {"tool": "d_progress_burst", "params": {"seconds": 4}})
    drop(spool_root, "fails", {"tool": "d_fail"})
    drop(spool_root, "raises", {"tool": "d_raise"})
    drop(spool_root, "fast", {"tool": "echo", "params": {"message": "local"}})
    progress = spool_root / "progress" / "prog.json"
    burst = spool_root / "progress" / "burst.json"

    def burst_shows_half() -> bool:  # the report right after another is held, not dropped
        with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
            return bool(orjson.loads(burst.read_bytes()).get("fraction") == 0.5)
        return False

    seen: set[float | None] = set()  # None: where it runs, before a report
    # The burst is watched beside prog, not after it: each starts a forkserver on a fresh
    # worker, 2.9 s apart once under load, and burst's 4 s of work had ended (its record
    # written) before prog's 2 s did.  A first run there took 20 s: a generous deadline.
    burst_half = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (record(spool_root, "prog") is None or not (
            burst_half or record(spool_root, "burst"))):
        with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
            seen.add(orjson.loads(progress.read_bytes()).get("fraction"))
        burst_half = burst_half or (burst_shows_half() and record(spool_root, "burst") is None)
        time.sleep(0.02)
    rec = wait_record(spool_root, "prog", 5)
    assert rec["state"] == "done" and rec["result"] == {"steps": 10}
    assert rec["attempts"] == 1 and rec["pid"] == d.pid, "the record names this processor"
    steps = [f for f in seen if f is not None and 0 < f < 1]
    assert len(steps) >= 3, f"progress reached the spool: {seen}"
    wait_for(lambda: not progress.exists(), 5, "the progress file gone with the run")
    assert burst_half, "the burst's second report while it works on"
    rec = wait_record(spool_root, "fails")
    assert rec["error"]["type"] == "tool_error" and rec["error"]["message"] == "failed on purpose"
    rec = wait_record(spool_root, "raises")
    assert rec["error"]["type"] == "tool_error" and "Traceback" in rec["error"]["traceback"]
    assert wait_record(spool_root, "fast")["result"] == {"message": "local"}
    assert d.stop() == 0


def test_timeout_and_cancel_really_stop_the_work(spool_root: Path, daemon: StartDaemon,
                                                 dask_cluster: Any, tmp_path: Path) -> None:
    daemon(**_dask_env(dask_cluster.scheduler_address))
    slow, victim = tmp_path / "slow.beats", tmp_path / "victim.beats"
    drop(spool_root, "slow", {"tool": "d_heartbeat", "timeout": 1,
                              "params": {"path": str(slow), "seconds": 60}})
    drop(spool_root, "victim", {"tool": "d_heartbeat",
                                "params": {"path": str(victim), "seconds": 60}})
    wait_for(lambda: len(_lines(victim)) >= 3, 20, "the victim running")
    (spool_root / "cancel" / "victim").write_bytes(b"{}")
    rec = wait_record(spool_root, "victim", 10)
    assert rec["error"]["type"] == "cancelled"
    _assert_stopped_growing(victim)
    rec = wait_record(spool_root, "slow", 20)
    assert rec["error"]["type"] == "timeout" and rec["attempts"] == 1
    assert len(_lines(slow)) >= 5
    _assert_stopped_growing(slow)


def _forkserver_of(spool_root: Path, job_id: str, tmp_path: Path, fields: dict[str, Any]
                   ) -> Any:
    """Drop a heartbeat job (with ``fields``), and once it beats, the forkserver its job
    process came from on its Dask worker (a ``psutil.Process``)."""
    psutil = pytest.importorskip("psutil")
    beats = tmp_path / f"{job_id}.beats"
    drop(spool_root, job_id, {"tool": "d_heartbeat", **fields,
                              "params": {"path": str(beats), "seconds": 60}})
    first = wait_for(lambda: _lines(beats), 20, f"{job_id} running")[0]
    return psutil.Process(int(first.split()[1])).parent()  # the job process's


def test_a_stopped_forkserver_on_a_dask_worker_is_resumed(spool_root: Path,
                                                          daemon: StartDaemon,
                                                          dask_cluster: Any,
                                                          tmp_path: Path) -> None:
    """A Dask worker's forkserver stopped from outside (SIGSTOP) tells no killed job
    process's end and starts none: a job past its timeout was recorded only at the
    processor's backstop, and the jobs behind it waited until something resumed it (QA:
    held for good).  The worker resumes it, as the local pool does, and says so."""
    psutil = pytest.importorskip("psutil")
    daemon(**_dask_env(dask_cluster.scheduler_address))
    server = _forkserver_of(spool_root, "slow", tmp_path, {"timeout": 2})
    server.suspend()
    try:
        assert wait_record(spool_root, "slow", 30)["error"]["type"] == "timeout"
        wait_for(lambda: server.status() != psutil.STATUS_STOPPED, 10,
                 "the worker to resume its forkserver")
        drop(spool_root, "after", {"tool": "d_heartbeat",
                                   "params": {"path": str(tmp_path / "after.beats"),
                                              "seconds": 0}})
        assert wait_record(spool_root, "after", 30)["state"] == "done"
    finally:
        with contextlib.suppress(psutil.Error):
            server.resume()


def test_a_killed_forkserver_on_a_dask_worker_is_named_not_status_255(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, tmp_path: Path) -> None:
    """A Dask worker's forkserver killed takes its job processes along: the job failed
    "exited with status 255", multiprocessing's word for none told (QA), where the local
    pool names its forkserver."""
    daemon(**_dask_env(dask_cluster.scheduler_address))
    server = _forkserver_of(spool_root, "orphaned", tmp_path, {"max_attempts": 1})
    server.kill()
    rec = wait_record(spool_root, "orphaned", 30)
    assert rec["error"]["type"] == "worker_crashed", rec
    assert rec["error"]["message"].endswith(
        f"ended with its forkserver (pid {server.pid}), which died"), rec["error"]
    drop(spool_root, "next", {"tool": "d_heartbeat",
                              "params": {"path": str(tmp_path / "next.beats"), "seconds": 0}})
    assert wait_record(spool_root, "next", 30)["state"] == "done"


def test_crashes_fail_worker_crashed_without_silent_retries(spool_root: Path,
                                                            daemon: StartDaemon,
                                                            dask_cluster: Any,
                                                            dask_client: Any,
                                                            tmp_path: Path) -> None:
    daemon(**_dask_env(dask_cluster.scheduler_address))
    exits = tmp_path / "exits.log"
    drop(spool_root, "exits", {"tool": "d_exit", "max_attempts": 2,
                               "params": {"path": str(exits)}})
    beats = tmp_path / "victim.beats"
    drop(spool_root, "victim", {"tool": "d_heartbeat",
                                "params": {"path": str(beats), "seconds": 60}})
    # Bounds of a hang, not of the behaviour (checked in the records): a worker start,
    # its death noticed and a nanny's restart each take seconds on a loaded host (the
    # test failed once beside a full run and two CPU burners, its output not kept).
    wait_for(lambda: len(_lines(beats)) >= 3, 60, "the victim running")
    worker = next(addr for addr, keys in dask_client.processing().items()
                  if any("victim" in str(k) for k in keys))
    os.kill(dask_client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
    rec = wait_record(spool_root, "victim", 60)
    assert rec["error"]["type"] == "worker_crashed" and rec["attempts"] == 1
    # Named, not Dask's 400 characters of advice (cut mid-word in the log line: QA): by
    # the future's KilledWorker, or by the health probe that finds the worker gone first
    # (a loaded host: once in a full run).
    assert rec["error"]["message"] in (
        f"the Dask worker {worker} running the job died (KilledWorker)",
        f"the Dask worker {worker} died or left while running the job"), rec["error"]
    _assert_stopped_growing(beats)
    assert len({line.split()[1] for line in _lines(beats)}) == 1, "never re-run by Dask"
    rec = wait_record(spool_root, "exits", 90)
    assert rec["error"]["type"] == "worker_crashed" and rec["attempts"] == 2
    assert len(_lines(exits)) == 2, "one run per attempt, no more"
    wait_replaced(dask_client, worker)  # by its nanny, for the next tests



def test_sigterm_stops_the_work_on_the_cluster_and_requeues(spool_root: Path,
                                                            daemon: StartDaemon,
                                                            dask_cluster: Any,
                                                            tmp_path: Path) -> None:
    d = daemon(SPOOL_GRACE_S="1", **_dask_env(dask_cluster.scheduler_address))
    beats = tmp_path / "long.beats"
    drop(spool_root, "long", {"tool": "d_heartbeat",
                              "params": {"path": str(beats), "seconds": 60}})
    wait_for(lambda: len(_lines(beats)) >= 3, 20, "the job running")
    assert d.stop() == 0
    assert locations(spool_root)["long"] == ["pending"], "requeued by the shutdown"
    job = orjson.loads((spool_root / "pending" / "long.json").read_bytes())
    assert job.get("attempts", 0) == 0, "a run cut short by shutdown does not count"
    _assert_stopped_growing(beats)


def test_a_killed_processor_leaves_no_work_running_on_the_cluster(spool_root: Path,
                                                                  daemon: StartDaemon,
                                                                  dask_cluster: Any,
                                                                  tmp_path: Path) -> None:
    """SIGKILL: the scheduler drops the dead client's task and the child on the worker dies."""
    d = daemon(**_dask_env(dask_cluster.scheduler_address))
    beats = tmp_path / "orphan.beats"
    drop(spool_root, "orphan", {"tool": "d_heartbeat",
                                "params": {"path": str(beats), "seconds": 60}})
    wait_for(lambda: len(_lines(beats)) >= 3, 20, "the job running")
    left = _job_processes()  # its job's, and the one it had started idle on the other worker
    assert int(_lines(beats)[0].split()[1]) in left
    d.kill()
    time.sleep(0.5)
    _assert_stopped_growing(beats)
    assert locations(spool_root)["orphan"] == ["running"], "left for the recovery scan"
    # The next processor to connect has the workers kill what the dead one left idle,
    # where it stayed for good (the dead one could not say it was over).
    other = tmp_path / "other"
    make_spool(other)
    daemon(root=other, **_dask_env(dask_cluster.scheduler_address))
    wait_for(lambda: not any(alive(pid) for pid in left), 15,
             f"the killed processor's job processes gone ({left})")


def _job_processes() -> set[int]:
    """The Dask job processes of the module's cluster: below its workers' forkservers
    (the workers are this process's children)."""
    psutil = pytest.importorskip("psutil")
    return {job.pid for worker in psutil.Process().children()
            for forkserver in worker.children() for job in forkserver.children()}

# -- a scheduler that goes away ------------------------------------------------------------


@contextlib.contextmanager
def _cluster_process(port: int, n_workers: int = 2, stderr: Path | None = None
                     ) -> Iterator[subprocess.Popen[str]]:
    """A LocalCluster in its own session; SIGKILL of its group takes it all down.
    ``stderr``: a file for the stderr of the scheduler and the workers."""
    with contextlib.ExitStack() as files:
        err = files.enter_context(stderr.open("wb")) if stderr else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, str(HERE / "cluster_proc.py"), str(port),
                                 str(n_workers)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True,
                                env={**os.environ, "PYTHONPATH": TOOLS_PATH})
    try:
        assert read_line(proc, 120).strip() == f"tcp://127.0.0.1:{port}"
        yield proc
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the cluster's group, and unlink the named semaphores its processes had:
    the kill takes multiprocessing's resource tracker with it, which would have."""
    semaphores = _group_semaphores(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    for name in semaphores:
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / name).unlink()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _group_semaphores(pgid: int) -> set[str]:
    """The names in /dev/shm of the named semaphores (``sem.mp-*``) that processes of
    group ``pgid`` map by name: a cluster's nannies hand each worker its own."""
    names: set[str] = set()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "maps").read_text().splitlines():
                path = line.split()[-1]
                if path.startswith("/dev/shm/sem.mp-"):
                    names.add(path.rsplit("/", 1)[1])
    return names


def test_a_killed_cluster_takes_only_its_own_semaphores_with_it() -> None:
    # The cleanup after the group's SIGKILL unlinked every sem.mp-* made meanwhile that no
    # process mapped by that name. A semaphore's maker maps it by a temporary name, so it
    # took those of this process and of other test runs on the machine: a LocalCluster
    # starting there failed ("Nanny failed to start worker process", FileNotFoundError in
    # SemLock._rebuild in the worker), as could a nanny's restart of a killed worker.
    with _cluster_process(free_port(), n_workers=1) as cluster:
        bystander = multiprocessing.get_context("spawn").Lock()  # made while it runs
        theirs = _group_semaphores(cluster.pid)
        assert theirs, "a cluster's nanny hands its worker named semaphores"
    mine = Path("/dev/shm") / f"sem.{bystander._semlock.name.lstrip('/')}"  # type: ignore[attr-defined]
    assert mine.exists(), "another process's semaphore was unlinked"
    assert not [name for name in theirs if (Path("/dev/shm") / name).exists()]


def test_scheduler_loss_requeues_or_fails_and_the_processor_reconnects(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    keep, once = tmp_path / "keep.beats", tmp_path / "once.beats"
    with _cluster_process(port) as first:
        d = daemon(**_dask_env(address))
        drop(spool_root, "keep", {"tool": "d_heartbeat", "max_attempts": 2,
                                  "params": {"path": str(keep), "seconds": 2}})
        drop(spool_root, "once", {"tool": "d_heartbeat", "max_attempts": 1,
                                  "params": {"path": str(once), "seconds": 60}})
        # The processor's start and connect, a forkserver on each Dask worker, three beats
        # of each job: 4.5 s here, past 30 s once on a host loaded to one core a worker.
        wait_for(lambda: len(_lines(keep)) >= 3 and len(_lines(once)) >= 3, 60,
                 "both jobs running on the cluster")
        _kill_group(first)
    rec = wait_record(spool_root, "once", 15)
    assert rec["error"]["type"] == "worker_crashed" and rec["attempts"] == 1
    assert "scheduler" in rec["error"]["message"]
    wait_for(lambda: locations(spool_root).get("keep") == ["pending"], 15, "keep requeued")
    # The jobs' processes die with their workers (the lifeline's end of file, the
    # forkserver's parent-death signal), in their own time after the SIGKILL: the
    # processor heard of the loss from the scheduler's socket and wrote both records
    # 0.6 s before once's last beat at load 13.  Nothing orders the two, and nothing
    # the processor does can (it reaches the workers through the scheduler only).
    runs = {int(line.split()[1]) for path in (keep, once) for line in _lines(path)}
    wait_for(lambda: not any(alive(pid) for pid in runs), 10,
             f"the jobs' processes ({runs}) gone with their workers")
    _assert_stopped_growing(keep, once)
    drop(spool_root, "later", {"tool": "d_heartbeat", "params": {"seconds": 0}})
    # Past keep's requeue backoff (0.5 to 1 s) and 1.5 s more, a rescan (1 s) and a
    # heartbeat after both jobs are due: still nothing may be claimed.  A fixed 2.5 s
    # from here was most of a second longer.
    due = datetime.fromisoformat(orjson.loads(
        (spool_root / "pending" / "keep.json").read_bytes())["error"]["retry_at"])
    time.sleep(max(0.0, due.timestamp() - time.time()) + 1.5)
    assert alive(d.pid) and d.ready(), "the processor stays up without a scheduler"
    where = locations(spool_root)
    assert where["keep"] == ["pending"] and where["later"] == ["pending"], where
    assert d.status()["busy_workers"] == 0
    # One worker is enough to run keep and then later (a second one only made the new
    # cluster slower to come up: a couple of seconds under load).
    with _cluster_process(port, n_workers=1):
        rec = wait_record(spool_root, "keep", 40)
        assert rec["state"] == "done" and rec["attempts"] == 2
        assert wait_record(spool_root, "later", 20)["state"] == "done"
        assert d.stop() == 0
    assert len({line.split()[1] for line in _lines(keep)}) == 2, "one run per attempt"
    # Ops read ERROR lines as alerts: the loss is one line that says what happened, not
    # also distributed's empty one for the reconnect it gave up when its client closed.
    errors = [(e["logger"], e["msg"]) for e in d.events() if e.get("level") == "error"]
    assert errors == [("spoolq.dask", "Dask scheduler lost; jobs in flight fail "
                       "worker_crashed; reconnecting")], errors
    # That line comes first and counts the jobs it fails: each job's end on the lost
    # connection used to be taken alone, so the line came after both and said 0.
    order = [(e.get("msg"), e.get("id"), e.get("in_flight")) for e in d.events()
             if e.get("level") == "error" or (e.get("event") in ("failed", "requeued")
                                              and e.get("id") in ("keep", "once"))]
    assert order[0] == ("Dask scheduler lost; jobs in flight fail worker_crashed; "
                        "reconnecting", None, 2), order
    assert sorted(order[1:]) == [("failed", "once", None), ("requeued", "keep", None)], order


def _logged_s(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def test_a_job_waiting_for_the_connection_is_claimed_as_it_connects(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any) -> None:
    # Dropped before the processor starts, the job is judged before the executor has
    # connected (no free slot yet); the connect must wake the loop, not leave the claim
    # to the next heartbeat (1 s: it came 0.97 s after "connected"), nor a rescan.
    drop(spool_root, "early", {"tool": "d_heartbeat", "params": {"seconds": 0}})
    d = daemon(SPOOL_SCAN_S="60", **_dask_env(dask_cluster.scheduler_address))
    assert wait_record(spool_root, "early", 20)["state"] == "done"
    events = d.events()
    connected = next(_logged_s(e) for e in events
                     if e.get("msg") == "connected to the Dask scheduler")
    claimed = next(_logged_s(e) for e in events
                   if e.get("event") == "claimed" and e.get("id") == "early")
    assert claimed - connected < 0.5, f"claimed {claimed - connected:.3f} s after connected"


def test_a_workers_port_for_the_schedulers_is_named_and_leaks_nothing(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, dask_client: Any) -> None:
    # SPOOL_EXECUTOR with a Dask worker's port in place of the scheduler's: each attempt
    # (every 0.5 to 2 s) failed after connecting, "Worker.identity() got an unexpected
    # keyword argument 'n_workers'", and left its half-made client open: two descriptors
    # an attempt, and 4 s each at the exit ("Exception ignored in Client.__del__ ...
    # TimeoutError"), so a stop after 40 s took 28 s.
    worker = next(iter(dask_client.scheduler_info()["workers"]))
    d = daemon(**_dask_env(worker))
    time.sleep(4.0)  # attempts at about 0, 0.5, 1.5 and 3.5 s
    started = time.monotonic()
    assert d.stop() == 0
    took = time.monotonic() - started
    # A hung stop's bound, not the leak's: each leaked client's __del__ waits 4 s at the
    # exit, all at once (4.2 s with the identity check removed): 1.2 s over a 3 s bound a
    # loaded host's exit can take alone (statusd's took 4.4 s).  The leak is told by the
    # "Exception ignored" its __del__ prints, checked below.
    assert took < 30, f"the stop took {took:.1f} s"
    warning = next(e for e in d.events() if e.get("msg", "").startswith("no Dask scheduler"))
    assert warning["error"] == (f"a Dask Worker listens at {worker}, not a scheduler; its "
                                f"scheduler is at {dask_cluster.scheduler_address}"), warning
    assert "Exception ignored" not in d.logs()


def _warm_up_warning(daemon: StartDaemon, tmp_path: Path, pythonpath: str,
                     says: str) -> dict[str, Any]:
    """The processor's warning that starts ``says``, of a lone worker whose
    ``PYTHONPATH`` is ``pythonpath``, on a cluster of its own."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with _cluster_process(port, n_workers=0), (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
             "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            d = daemon(**_dask_env(address))
            said: dict[str, Any] = wait_for(
                lambda: next((e for e in d.events() if e.get("msg", "").startswith(says)),
                             None), 90, "the warning naming the worker")
            assert said["worker"].startswith("tcp://127.0.0.1:"), said
            assert d.stop() == 0
            return said
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)


def test_a_dask_worker_without_spoolq_is_named(daemon: StartDaemon, tmp_path: Path) -> None:
    # QA (h383): a worker host where spoolq is not installed died on each job it was
    # given (its task could not be unpickled); the job was submitted again three times
    # and failed "the Dask worker ... running the job died (KilledWorker)", and the
    # processor's log never said why: "No module named 'processor'" was only in the
    # worker's own log.  Its warm-up fails the same way, at once: that names it.
    shim = tmp_path / "no-spoolq"
    (shim / "processor").mkdir(parents=True)
    (shim / "processor" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'processor'\", name='processor')\n")
    # (alone: ahead of the editable install's finder)
    said = _warm_up_warning(daemon, tmp_path, str(shim), "a Dask worker cannot load spoolq")
    assert "No module named 'processor'" in said["error"], said


def test_a_dask_worker_of_another_spoolq_version_is_named(daemon: StartDaemon,
                                                         tmp_path: Path) -> None:
    # QA (h383): scaling.md asks for one spoolq version on the processor and every
    # worker, and a worker of another ran its jobs with no word.  Here the worker's
    # installed spoolq says 9.9.9 (a dist-info ahead of the real one on its path).
    shim = tmp_path / "other-version"
    (shim / "spoolq-9.9.9.dist-info").mkdir(parents=True)
    (shim / "spoolq-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spoolq\nVersion: 9.9.9\n")
    said = _warm_up_warning(daemon, tmp_path, os.pathsep.join(
        filter(None, [str(shim), os.environ.get("PYTHONPATH")])),
        "a Dask worker runs another spoolq")
    assert said["worker_version"] == "9.9.9" and said["version"] != "9.9.9", said


def test_a_stop_does_not_wait_its_grace_for_a_job_dask_never_started(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, dask_client: Any,
        tmp_path: Path) -> None:
    # Every thread of the cluster taken by another client's tasks (a cluster shared
    # with other processors, which scaling.md allows): a job submitted meanwhile waits
    # inside Dask and has not started.  A stop waited the whole grace period for it
    # (SPOOL_GRACE_S, 30 s by default) before requeueing it; the local pool requeues
    # such a job at once.
    release = tmp_path / "release"

    def hold(path: str) -> None:
        while not os.path.exists(path):
            time.sleep(0.05)

    workers = list(dask_client.scheduler_info()["workers"])
    holds = [dask_client.submit(hold, str(release), workers=[w], pure=False) for w in workers]
    ran = tmp_path / "ran"
    try:
        wait_for(lambda: sum(map(len, dask_client.processing().values())) == len(workers),
                 20, "the other client's tasks on every thread")
        d = daemon(SPOOL_GRACE_S="60", **_dask_env(dask_cluster.scheduler_address))
        drop(spool_root, "queued", {"tool": "d_append", "params": {"path": str(ran)}})
        wait_for(lambda: locations(spool_root).get("queued") == ["running"], 20, "the claim")
        started = time.monotonic()
        assert d.stop(timeout=20) == 0
        took = time.monotonic() - started
        assert took < 10, f"the stop took {took:.1f} s"
    finally:
        release.touch()
        dask_client.gather(holds)
    assert locations(spool_root)["queued"] == ["pending"]
    assert orjson.loads((spool_root / "pending" / "queued.json").read_bytes()).get(
        "attempts", 0) == 0, "a run cut short by the stop is not counted"
    time.sleep(0.5)  # the threads are free now: a task left in Dask would run
    assert not ran.exists(), "the job ran after its processor stopped"


@pytest.mark.parametrize("where", ["port", "name"])
def test_why_no_scheduler_answers_is_named(spool_root: Path, daemon: StartDaemon,
                                           where: str) -> None:
    # A port where nothing listens and a host name that does not resolve (a typo in
    # SPOOL_EXECUTOR) both read "Timed out trying to connect to ... after 2 s", once a
    # minute: Dask retries both until its timeout, and the cause was not said.
    address = (f"tcp://127.0.0.1:{free_port()}" if where == "port"
               else "tcp://no-such-scheduler.invalid:8786")
    d = daemon(**_dask_env(address))

    def warning() -> dict[str, Any] | None:
        return next((e for e in d.events()
                     if e.get("msg", "").startswith("no Dask scheduler")), None)

    said = wait_for(warning, 15, "the warning")
    if where == "port":
        assert said["error"] == f"nothing listens at {address} (connection refused)", said
    else:  # the resolver's words follow ("Name or service not known", offline another)
        assert said["error"].startswith(
            "cannot resolve the host name 'no-such-scheduler.invalid': "), said
    assert d.stop() == 0


def test_an_http_port_for_the_schedulers_is_named(spool_root: Path, daemon: StartDaemon
                                                 ) -> None:
    # QA (h383): SPOOL_EXECUTOR with an HTTP port in place of the scheduler's (the
    # dashboard's 8787 for 8786, or statusd's) read "Unable to allocate 3.01 EiB for an
    # array with shape (3471766442030158920,) and data type uint8" (an HTTP answer read
    # as a Dask frame's length; statusd's port) or "no answer in 3 s" (the dashboard's).
    import http.server  # noqa: PLC0415 - this test's alone

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        d = daemon(**_dask_env(address))
        said = wait_for(lambda: next((e for e in d.events()
                                      if e.get("msg", "").startswith("no Dask scheduler")),
                                     None), 20, "the warning")
        assert said["error"] == (f"an HTTP server listens at {address}, not a Dask "
                                 "scheduler (a dashboard's port?)"), said
        assert d.stop() == 0
    finally:
        server.shutdown()
        server.server_close()


def test_no_scheduler_connected_shows_as_no_compute_room(spool_root: Path,
                                                         daemon: StartDaemon) -> None:
    """Monitoring saw "processor up, 0 busy of 2 (JOB_NUM)" while COMPUTE jobs aged with
    no scheduler to run them: the only sign was the processor's log (QA).  The status
    file, the stats, `spoolq stats` and /metrics say what room there is now."""
    d = daemon(**_dask_env(f"tcp://127.0.0.1:{free_port()}"))
    status = wait_for(lambda: (s := d.status()) and s.get("compute_room") == 0 and s, 15,
                      "a status file with no COMPUTE room")
    assert status["job_num"] == 2 and status["executor"] == "dask"
    shown = subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir",
                            str(spool_root), "stats"], capture_output=True, text=True,
                           check=False, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "room for 0 now: no Dask scheduler connected, or no worker" in shown.stdout
    assert d.stop() == 0


@pytest.mark.parametrize("frozen_s", [0.0, 1.5], ids=["at-once", "while-probing"])
def test_a_stop_while_the_scheduler_is_frozen_still_stops_the_work(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path, frozen_s: float) -> None:
    # The scheduler stopped (SIGSTOP), its workers still up: the processor's kills went
    # only through the scheduler, so the job ran on beside its requeued self until the
    # scheduler answered again or its timeout. They now also go straight to the worker.
    # And the stop waited on the scheduler: 5 s for the kills sent through it, or up to
    # 10 s for a health probe in flight (one starts within about a second of the freeze);
    # now a probe that comes or is running at a stop is given up 0.5 s after it.
    port = free_port()
    beats = tmp_path / "frozen.beats"
    with _cluster_process(port, n_workers=1) as cluster:
        d = daemon(SPOOL_GRACE_S="0.5", **_dask_env(f"tcp://127.0.0.1:{port}"))
        drop(spool_root, "frozen", {"tool": "d_heartbeat",
                                    "params": {"path": str(beats), "seconds": 60}})
        wait_for(lambda: len(_lines(beats)) >= 3, 30, "the job running")
        os.kill(cluster.pid, signal.SIGSTOP)  # the scheduler runs in this process
        try:
            time.sleep(frozen_s)
            started = time.monotonic()
            assert d.stop() == 0
            took = time.monotonic() - started
            assert took < 30, f"the stop took {took:.1f} s (grace 0.5 s)"  # hung
            # The wait on the scheduler is the processor's, between its "stopping" and
            # "stopped" lines (their own stamps), not the test's wall clock, which holds
            # the interpreter's exit too: seconds on a loaded host, against a 4 s bound
            # and a bug of 5 to 10 s (the kills through the scheduler, a probe).
            events = d.events()
            stopping, stopped = (next(_logged_s(e) for e in events if e.get("msg") == msg)
                                 for msg in ("stopping", "stopped"))
            assert stopped - stopping < 4, \
                f"the stop took {stopped - stopping:.1f} s to 'stopped' (grace 0.5 s)"
            assert locations(spool_root)["frozen"] == ["pending"], "requeued by the stop"
            _assert_stopped_growing(beats)
            # A stop asked for is no alert, and nothing reconnects after it.
            errors = [(e["logger"], e["msg"]) for e in d.events() if e.get("level") == "error"]
            assert errors == [], errors
        finally:
            os.kill(cluster.pid, signal.SIGCONT)


def test_a_processor_that_gave_up_a_frozen_scheduler_stops_promptly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # distributed.Client(address, timeout=2) waits for as long as a frozen (SIGSTOP)
    # scheduler stays frozen: the executor's monitor, reconnecting, hung in it, and a
    # stop waited 30 s for it (a systemd stop timeout of SPOOL_GRACE_S + 15 s then
    # SIGKILLs the processor).
    from processor import dask_link  # noqa: PLC0415
    from processor.dask_executor import DaskExecutor  # noqa: PLC0415
    from processor.executor import Task  # noqa: PLC0415
    from spool.settings import Settings  # noqa: PLC0415

    monkeypatch.setattr(dask_link, "PROBE_TIMEOUT_S", 1.0)  # gives it up sooner than 10 s
    port = free_port()
    lost: list[Any] = []

    class Sink:
        def progress(self, job_id: str, fraction: float, message: str) -> None:
            pass

        def finished(self, outcome: Any) -> None:
            lost.append(outcome)

        def slots_freed(self) -> None:
            pass

        def watch(self, fd: int, callback: Callable[[], object], *, bulk: bool = False
                  ) -> None:
            pass

        def unwatch(self, fd: int) -> None:
            pass

    with _cluster_process(port, n_workers=1) as cluster:
        executor = DaskExecutor(Settings(SPOOL_EXECUTOR=f"dask://127.0.0.1:{port}",
                                         JOB_NUM=1, SPOOL_TOOLS="dask_tools"))
        executor.start(Sink())
        try:
            wait_for(lambda: executor.free_slots() == 1, 20, "connected")
            beats = tmp_path / "f.beats"
            executor.submit(Task("f", "d_heartbeat", {"path": str(beats), "seconds": 60},
                                 60.0, "/nonexistent", 1))
            wait_for(lambda: len(_lines(beats)) >= 3, 20, "the job running")
            os.kill(cluster.pid, signal.SIGSTOP)
            wait_for(lambda: lost, 10, "the scheduler given up")
            assert lost[0].error_type.value == "worker_crashed"
            time.sleep(1.0)  # the monitor is trying to connect again
        finally:
            started = time.monotonic()
            executor.shutdown()
            took = time.monotonic() - started
            os.kill(cluster.pid, signal.SIGCONT)
        _assert_stopped_growing(beats)
    assert took < 8, f"the stop took {took:.1f} s"


def test_a_jobs_output_is_in_the_dask_workers_log(spool_root: Path, daemon: StartDaemon,
                                                  tmp_path: Path) -> None:
    """As docs/scaling.md says: JSON lines on the worker's stderr naming the job, what
    its C code and child processes write too, and text without a final newline even
    when a timeout kills the job (it used to be plain text, or lost)."""
    port = free_port()
    workers_log = tmp_path / "cluster.err"
    with _cluster_process(port, 1, stderr=workers_log):
        d = daemon(**_dask_env(f"tcp://127.0.0.1:{port}"))
        drop(spool_root, "talks", {"tool": "d_talk"})
        drop(spool_root, "cut", {"tool": "d_partial", "timeout": 1, "params": {"seconds": 60}})
        assert wait_record(spool_root, "talks", 30)["state"] == "done"
        assert wait_record(spool_root, "cut", 30)["error"]["type"] == "timeout"
        assert d.stop() == 0
    lines = workers_log.read_text().splitlines()

    def logged(text: str) -> dict[str, Any]:
        found = [orjson.loads(line) for line in lines if text in line]
        assert len(found) == 1, (text, found, lines[-30:])
        assert isinstance(found[0], dict), found[0]
        return found[0]

    for text, job, stream in (("printed by talks", "talks", "stdout"),
                              ("written by talks", "talks", "stderr"),
                              ("child of cut", "cut", "stdout"),
                              ("unfinished line of cut", "cut", "stdout")):
        line = logged(text)
        assert line["logger"] == "spoolq.output" and line["msg"] == text, line
        assert line["id"] == job and line["stream"] == stream, line
    assert logged("logged by talks")["level"] == "warning"
    assert "printed by talks" not in d.logs(), "the processor's log has its transitions only"


def test_a_dask_worker_stops_at_once_after_a_tool_that_ignores_sigterm(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A job's process stays for its processor's next job; one whose tool ignored SIGTERM
    held its Dask worker's exit (multiprocessing's exit handler sends SIGTERM, then
    waits) until the nanny killed the worker, or for good without a nanny."""
    port = free_port()
    cluster_log = tmp_path / "cluster.err"
    with _cluster_process(port, 1, stderr=cluster_log) as cluster:
        d = daemon(**_dask_env(f"tcp://127.0.0.1:{port}"))
        drop(spool_root, "stubborn", {"tool": "d_ignore_term"})
        pid = wait_record(spool_root, "stubborn", 30)["result"]["pid"]
        assert alive(pid), "kept for the next job"
        assert cluster.stdin is not None
        cluster.stdin.close()  # cluster_proc closes the cluster, as a stop of its unit does
        cluster.wait(30)
    assert d.stop() == 0
    text = cluster_log.read_text()
    assert "still alive after" not in text, "the nanny had to kill its worker"
    assert not alive(pid)


def _frozen_while_it_runs(spool_root: Path, dask_client: Any, job_id: str, beats: Path, *,
                          timeout: float) -> int:
    """Drop a heartbeat job of ``timeout``, and once it beats, freeze (SIGSTOP) the Dask
    worker running it: that worker's pid, for the caller to resume."""
    drop(spool_root, job_id, {"tool": "d_heartbeat", "timeout": timeout,
                              "params": {"path": str(beats), "seconds": 60}})
    wait_for(lambda: len(_lines(beats)) >= 3, 20, "the job running")
    worker = next(addr for addr, keys in dask_client.processing().items()
                  if any(job_id in str(k) for k in keys))
    pid: int = dask_client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_cancel_no_frozen_worker_confirms_is_recorded_once_the_job_is_surely_over(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, dask_client: Any,
        tmp_path: Path) -> None:
    # The job's Dask worker is frozen (SIGSTOP): the cancel's kill cannot reach the job's
    # process, which runs on until its own Deadman ends it (its timeout, plus a grace).
    # The cancel was recorded after the kill's grace all the same, its running file
    # gone: a retry then ran the id beside the first run (QA: 9.7 s).  Held until the
    # process is surely over, the record comes after its last beat.
    daemon(**_dask_env(dask_cluster.scheduler_address))
    beats = tmp_path / "frozen.beats"
    pid = _frozen_while_it_runs(spool_root, dask_client, "frozen", beats, timeout=7)
    try:
        (spool_root / "cancel" / "frozen").write_bytes(b"{}")
        rec = wait_record(spool_root, "frozen", 30)
        assert rec["error"]["type"] == "cancelled"
        _assert_stopped_growing(beats)  # its process was over before its record came
        assert locations(spool_root)["frozen"] == ["failed"]
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_stop_requeues_a_job_its_frozen_worker_runs_for_when_it_is_surely_over(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any, dask_client: Any,
        tmp_path: Path) -> None:
    """The stop's kill cannot reach a frozen worker (SIGSTOP), whose job's process runs
    on until its Deadman ends it: requeued due at once, the next start ran the job beside
    it (QA: 13.7 s).  It is requeued not before that process is surely over."""
    d = daemon(SPOOL_GRACE_S="1", **_dask_env(dask_cluster.scheduler_address))
    pid = _frozen_while_it_runs(spool_root, dask_client, "held", tmp_path / "held.beats",
                                timeout=30)
    try:
        stopped_at = datetime.now().astimezone()
        assert d.stop(timeout=60) == 0
        assert locations(spool_root)["held"] == ["pending"]
        job = orjson.loads((spool_root / "pending" / "held.json").read_bytes())
        not_before = datetime.fromisoformat(job["not_before"])
        assert not_before - stopped_at > timedelta(seconds=20), job  # its 30 s, and more
        assert [e for e in d.events() if str(e.get("msg", "")).startswith(
            "a killed job's worker does not answer: requeued")], d.logs()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_tool_module_slow_to_import_on_dask_does_not_time_its_jobs_out(
        spool_root: Path, daemon: StartDaemon, dask_cluster: Any) -> None:
    """On Dask the job's time started as its task reached the job process, which then
    imported the tools: a module slower to import than the tool's limit failed every
    COMPUTE job ``timeout``, each kill taking the import along (QA; the local pool's
    was fixed before).  Its time starts once they are loaded, and the job is said
    started again meanwhile, so the processor's backstop (the limit and 10 s) waits too.
    """
    d = daemon(tools="dask_tools,slow_import_dask", **_dask_env(dask_cluster.scheduler_address))
    drop(spool_root, "slow", {"tool": "d_after_slow_import"})
    drop(spool_root, "late", {"tool": "d_late_after_slow_import"})
    got = wait_record(spool_root, "slow", 60)
    assert got["state"] == "done", got.get("error")
    assert got["duration_s"] > 10.0  # the import, not the job's time, went by
    # Its limit, too, is timed from the import's end: killed 0.5 s after it.
    late = wait_record(spool_root, "late", 60)
    assert late["error"]["type"] == "timeout", late["error"]
    assert late["error"]["message"] == "killed after 500 ms (timeout)"
    assert d.stop() == 0


def _set_status(name: str, dask_worker: Any) -> None:
    """Run on a Dask worker: pause it as its memory monitor does (which is held off
    meanwhile: it resumes a worker below its threshold), or resume it."""
    from distributed.core import Status  # noqa: PLC0415 - the extra, on a worker

    manager = dask_worker.memory_manager
    if name == "paused":
        manager.qa_pause_fraction = manager.memory_pause_fraction
        manager.memory_pause_fraction = False
    else:
        manager.memory_pause_fraction = manager.qa_pause_fraction
    dask_worker.status = Status[name]


def test_paused_dask_workers_are_no_room_and_jobs_wait_in_pending(
        spool_root: Path, daemon: StartDaemon, dask_client: Any, tmp_path: Path) -> None:
    """A paused worker (past its memory's pause threshold) counted as room: a job was
    claimed for it and waited inside Dask, untimed, shown running, and a cancel recorded
    it "cancelled while running" (QA).  Paused workers are no room: jobs wait in
    pending/ until one runs again."""
    ran = tmp_path / "ran"
    d = daemon(**_dask_env(dask_client.scheduler.address))
    wait_for(lambda: (d.status() or {}).get("compute_room") == 2, 30, "room for two")
    dask_client.run(_set_status, "paused")
    try:
        wait_for(lambda: d.status().get("compute_room") == 0, 30, "no room while paused")
        drop(spool_root, "waits", {"tool": "d_append", "params": {"path": str(ran)}})
        time.sleep(1.5)
        assert locations(spool_root) == {"waits": ["pending"]}
    finally:
        dask_client.run(_set_status, "running")
    assert wait_record(spool_root, "waits", 30)["state"] == "done"
    assert _lines(ran) == ["waits"]
    assert d.stop() == 0
