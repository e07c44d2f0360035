"""Worker abuse: tools that fork, hog memory, ignore SIGTERM or close their descriptors.

Each job ends with the error a user would expect, the pool goes on, and no
process the tool started survives (psutil, by the marker in its command line).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from relkit import Daemon, alive, drop, wait_for, wait_record, with_cmdline

StartDaemon = Callable[..., Daemon]


def _marker(name: str) -> str:
    return f"spoolq-abuse-{name}-{os.urandom(4).hex()}"


def _none_left(marker: str, timeout: float = 5.0) -> None:
    wait_for(lambda: not with_cmdline(marker), timeout, f"every '{marker}' process gone")


def test_a_job_that_forks_children_and_returns(spool_root: Path, daemon: StartDaemon) -> None:
    daemon(JOB_NUM="1")
    marker = _marker("fork")
    drop(spool_root, "forker", {"tool": "r_fork_return", "params": {"marker": marker}})
    rec = wait_record(spool_root, "forker")
    assert rec["state"] == "done", rec
    pids = rec["result"]["pids"]
    assert len(pids) == 4  # child, child in its own session, bare fork, double-forked daemon
    _none_left(marker)
    assert not any(alive(pid) for pid in pids)
    drop(spool_root, "after", {"tool": "r_pid"})
    assert wait_record(spool_root, "after")["state"] == "done"


def test_a_job_that_allocates_past_the_memory_limit(spool_root: Path,
                                                    daemon: StartDaemon) -> None:
    daemon(JOB_NUM="1", SPOOL_WORKER_MEMORY_MB="768")
    marker = _marker("hog")
    drop(spool_root, "py-hog", {"tool": "r_allocate", "params": {"mb": 4096}})
    drop(spool_root, "np-hog", {"tool": "r_allocate_numpy", "params": {"mb": 4096}})
    drop(spool_root, "child-hog", {"tool": "r_allocate_child",
                                   "params": {"mb": 4096, "marker": marker}})
    for job_id in ("py-hog", "np-hog"):
        rec = wait_record(spool_root, job_id, 60)
        assert rec["state"] == "failed" and rec["error"]["type"] == "tool_error", rec
        assert "out of memory" in rec["error"]["message"], rec["error"]
        assert rec["error"]["message"].endswith(
            "; this worker's address space is capped at 768 MB (SPOOL_WORKER_MEMORY_MB)")
    # numpy's own words, which were left to the traceback (QA).
    assert "Unable to allocate 4.00 GiB" in wait_record(spool_root, "np-hog")["error"]["message"]
    child = wait_record(spool_root, "child-hog", 60)
    assert child["error"]["type"] == "tool_error" and "MemoryError" in child["error"]["message"]
    _none_left(marker)
    # The limit was per worker and the memory came back: a modest job still runs.
    drop(spool_root, "modest", {"tool": "r_allocate", "params": {"mb": 128}})
    assert wait_record(spool_root, "modest", 60)["result"] == {"allocated_mb": 128}


def test_a_job_that_ran_out_of_memory_leaves_nothing_to_the_next(spool_root: Path,
                                                                daemon: StartDaemon) -> None:
    # What a job that hit SPOOL_WORKER_MEMORY_MB kept (a module-level cache, a fragmented
    # heap) went on holding its worker's address space: the next jobs of that worker
    # failed "out of memory" too, however little they asked for.
    daemon(JOB_NUM="1", SPOOL_WORKER_MEMORY_MB="768")
    drop(spool_root, "hoard", {"tool": "r_hoard", "params": {"mb": 4096}})
    rec = wait_record(spool_root, "hoard", 60)
    assert rec["error"]["type"] == "tool_error" and "out of memory" in rec["error"]["message"]
    drop(spool_root, "modest", {"tool": "r_allocate", "params": {"mb": 128}})
    modest = wait_record(spool_root, "modest", 60)
    assert modest["state"] == "done", modest["error"]
    assert modest["pid"] != rec["pid"]  # a fresh worker


@pytest.mark.preload_quant  # its bound counts the 318 MB numpy and pandas take in a worker
def test_a_worker_whose_jobs_keep_memory_is_replaced_before_it_fails_one(
        spool_root: Path, daemon: StartDaemon) -> None:
    # A tool that keeps 128 MiB a job in a module-level list, and never reaches the cap
    # itself: the third job of a worker under 700 MB (318 MB of it numpy and pandas)
    # failed "out of memory", and so did any job that needed memory after it.
    d = daemon(JOB_NUM="1", SPOOL_WORKER_MEMORY_MB="700")
    ids = [f"hoard-{n}" for n in range(5)]
    for job_id in ids:
        drop(spool_root, job_id, {"tool": "r_hoard", "params": {"mb": 128}})
    records = [wait_record(spool_root, job_id, 60) for job_id in ids]
    drop(spool_root, "modest", {"tool": "r_allocate", "params": {"mb": 128}})
    records.append(wait_record(spool_root, "modest", 60))
    assert [r["state"] for r in records] == ["done"] * 6, [r.get("error") for r in records]
    # Each worker kept at most 256 MiB (two jobs) before a fresh one took its place.
    assert max(r["result"]["hoarded_mb"] for r in records[:5]) <= 256
    assert len({r["pid"] for r in records}) >= 3
    retired = [orjson.loads(line) for line in d.logs().splitlines()
               if b'"worker retires' in line.encode()]
    assert len(retired) == 2, retired  # one line per worker retired, none more
    assert all(line["cap_mb"] == 700 and line["used_mb"] > 350 for line in retired)


def test_a_job_that_ignores_sigterm_times_out(spool_root: Path, daemon: StartDaemon) -> None:
    daemon(JOB_NUM="1")
    marker = _marker("term")
    # 3 s: the child must still be there when a scan of every process (slow on a loaded
    # host) finds it; with 1 s the timeout once killed it first.
    drop(spool_root, "deaf", {"tool": "r_ignore_term", "timeout": 3,
                              "params": {"seconds": 600, "marker": marker}})
    wait_for(lambda: with_cmdline(marker), 20, "the tool's child to start")
    rec = wait_record(spool_root, "deaf", 30)
    assert rec["state"] == "failed" and rec["error"]["type"] == "timeout", rec
    assert rec["duration_s"] < 10
    assert not alive(rec["pid"]), "the worker itself is gone"
    _none_left(marker)
    drop(spool_root, "after", {"tool": "r_pid"})
    assert wait_record(spool_root, "after")["result"]["pid"] != rec["pid"]


def test_a_job_that_ignores_sigterm_is_requeued_at_shutdown(spool_root: Path,
                                                            daemon: StartDaemon) -> None:
    d = daemon(JOB_NUM="1", SPOOL_GRACE_S="1")
    marker = _marker("shutdown")
    drop(spool_root, "deaf", {"tool": "r_ignore_term", "max_attempts": 1,
                              "params": {"seconds": 600, "marker": marker}})
    wait_for(lambda: with_cmdline(marker), 20, "the tool's child to start")
    began = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - began < 8, "grace is 1 s; SIGTERM is not waited for"
    _none_left(marker)
    job = orjson.loads((spool_root / "pending" / "deaf.json").read_bytes())
    assert job["attempts"] == 0, "a run cut short by shutdown does not count"
    assert os.listdir(spool_root / "running") == []


def test_a_job_that_closes_its_stdout(spool_root: Path, daemon: StartDaemon) -> None:
    daemon(JOB_NUM="1")
    drop(spool_root, "closer", {"tool": "r_close_stdout"})
    rec = wait_record(spool_root, "closer")
    assert rec["state"] == "done" and rec["result"] == {"closed": [1, 2]}, rec
    drop(spool_root, "after", {"tool": "r_pid"})
    assert wait_record(spool_root, "after")["state"] == "done"


def test_a_later_job_is_not_hurt_by_closed_stdio(spool_root: Path, daemon: StartDaemon,
                                                 tmp_path: Path) -> None:
    daemon(JOB_NUM="1")
    drop(spool_root, "closer", {"tool": "r_close_stdout"})
    assert wait_record(spool_root, "closer")["state"] == "done"
    out = tmp_path / "chatty.txt"
    drop(spool_root, "chatty", {"tool": "r_chatty", "params": {"path": str(out)}})
    chatty = wait_record(spool_root, "chatty")
    assert out.read_text() == "", "prints of a later job never land in its files"
    assert chatty["state"] == "done", chatty["error"]
    assert chatty["result"]["fd"] > 2


def test_a_job_that_closes_every_descriptor(spool_root: Path, daemon: StartDaemon) -> None:
    """Its pipe to the processor gone, the worker cannot report: it crashed, the pool goes on."""
    daemon(JOB_NUM="1")
    drop(spool_root, "blind", {"tool": "r_close_all"})
    rec = wait_record(spool_root, "blind")
    assert rec["state"] == "failed" and rec["error"]["type"] == "worker_crashed", rec
    drop(spool_root, "after", {"tool": "r_pid"})
    after = wait_record(spool_root, "after")
    assert after["state"] == "done" and after["result"]["pid"] != rec["pid"]


def test_a_busy_silent_worker_dies_with_its_processor(spool_root: Path, daemon: StartDaemon,
                                                       tmp_path: Path) -> None:
    d = daemon(JOB_NUM="1")
    pid_file = tmp_path / "silent.pid"
    drop(spool_root, "silent", {"tool": "r_silent", "max_attempts": 3,
                                "params": {"seconds": 30, "path": str(pid_file)}})
    worker = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "its pid"))
    d.kill()
    try:
        wait_for(lambda: not alive(worker), 3, "the worker to die with its processor")
    finally:
        if alive(worker):
            os.kill(worker, 9)


def test_a_tool_whose_failure_cannot_be_put_in_words(spool_root: Path,
                                                      daemon: StartDaemon) -> None:
    """A non-str ``ToolResult.error`` message, or an exception whose ``__str__`` raises,
    ended the processor (FAST) or its worker (COMPUTE, ``worker_crashed``)."""
    proc = daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        for case in ("int_message", "unprintable"):
            drop(spool_root, f"{lane}-{case}", {"tool": f"r_misreport_{lane}",
                                                "params": {"case": case}})
        rec = wait_record(spool_root, f"{lane}-int_message")
        assert rec["error"]["type"] == "tool_error", rec["error"]
        assert "ToolResult.error with a int for its message" in rec["error"]["message"]
        rec = wait_record(spool_root, f"{lane}-unprintable")
        assert rec["error"]["type"] == "tool_error", rec["error"]
        assert rec["error"]["message"] == "_Unprintable: <_Unprintable whose str() raised>"
        assert "raise _Unprintable()" in rec["error"]["traceback"]
    for lane in ("fast", "compute"):  # a failure without words was recorded as a success
        drop(spool_root, f"{lane}-none", {"tool": f"r_misreport_{lane}",
                                          "params": {"case": "error_none"}})
        rec = wait_record(spool_root, f"{lane}-none")
        assert rec["state"] == "failed" and rec["error"]["type"] == "tool_error", rec
        assert "ToolResult.error needs a message" in rec["error"]["message"]
    for lane in ("fast", "compute"):  # an empty message said nothing; a value went unsaid
        for case in ("error_empty", "error_and_value"):
            drop(spool_root, f"{lane}-{case}", {"tool": f"r_misreport_{lane}",
                                                "params": {"case": case}})
        rec = wait_record(spool_root, f"{lane}-error_empty")
        assert rec["error"]["message"] == "the tool failed with an empty error message"
        rec = wait_record(spool_root, f"{lane}-error_and_value")
        assert rec["error"]["message"] == ("half done (it also returned a value, which is not "
                                           "kept: a failed job has no result)")
    drop(spool_root, "after", {"tool": "r_fast"})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert proc.running()


def test_a_huge_exception_message_leaves_the_traceback_its_frames(spool_root: Path,
                                                                  daemon: StartDaemon) -> None:
    """The traceback is cut to 16,000 characters; it kept only its end, so a 1 MB message
    left nothing of where the exception was raised."""
    daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        drop(spool_root, lane, {"tool": f"r_misreport_{lane}",
                                "params": {"case": "huge_message"}})
        error = wait_record(spool_root, lane)["error"]
        # The message is cut too (MAX_MESSAGE_CHARS): a retry's job file carries it.
        assert error["type"] == "tool_error" and error["message"].startswith("ValueError: MMM")
        assert len(error["message"]) <= 4_000 and "characters cut" in error["message"]
        assert len(error["traceback"]) <= 16_000
        assert error["traceback"].startswith("Traceback (most recent call last):")
        assert 'raise ValueError("M" * 1_000_000)' in error["traceback"]
        assert error["traceback"].endswith("M\n")


def test_a_fast_tool_that_changes_directory_under_a_relative_spool_dir(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """``SPOOL_DIR=spool`` (relative: the processor runs where the spool's parent is) and
    a FAST tool that calls ``os.chdir``: the processor, whose paths were relative, crashed
    at its next step, the job left in ``running/``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = daemon(SPOOL_DIR=spool_root.name)
    drop(spool_root, "chdir", {"tool": "r_chdir", "params": {"path": str(elsewhere)}})
    assert wait_record(spool_root, "chdir")["result"] == str(elsewhere)
    drop(spool_root, "after", {"tool": "r_fast"})
    drop(spool_root, "compute", {"tool": "r_pid"})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert wait_record(spool_root, "compute")["state"] == "done"
    assert proc.running() and os.listdir(elsewhere) == []


def test_params_whose_validator_raises_something_else(spool_root: Path,
                                                      daemon: StartDaemon) -> None:
    """A Params validator that raised RuntimeError or SystemExit (pydantic passes on all
    but ValueError and AssertionError) ended the processor when it checked a COMPUTE
    job's params before starting it, the job left in ``running/``."""
    proc = daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        for case in ("runtime", "exit"):
            drop(spool_root, f"{lane}-{case}", {"tool": f"r_validator_{lane}",
                                                "params": {"case": case}})
    for lane in ("fast", "compute"):
        error = wait_record(spool_root, f"{lane}-runtime")["error"]
        assert error["type"] == "tool_error", error
        assert error["message"] == "RuntimeError: the validator's own bug"
        assert "in _check" in error["traceback"]
        error = wait_record(spool_root, f"{lane}-exit")["error"]
        assert (error["type"], error["message"]) == ("tool_error", "the tool called exit (4)")
    drop(spool_root, "after", {"tool": "r_validator_compute", "params": {"case": "fine"}})
    assert wait_record(spool_root, "after")["result"] == "fine"
    assert proc.running()


def test_a_forked_child_that_returns_from_the_tool_is_not_a_second_processor(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A tool that forked and whose child returned from ``execute`` (no ``os._exit``):
    from a FAST tool the child, a copy of the processor, wrote the job's record over the
    run's and went on as a second processor (its COMPUTE jobs then hung in ``running/``);
    from a COMPUTE tool the child's outcome was taken for the job's."""
    proc = daemon(JOB_NUM="2")
    for lane in ("fast", "compute"):
        for child_first in (False, True):
            job_id = f"{lane}-{'child' if child_first else 'parent'}-first"
            drop(spool_root, job_id, {"tool": f"r_fork_both_return_{lane}",
                                      "params": {"child_first": child_first}})
            rec = wait_record(spool_root, job_id)
            assert rec["state"] == "done", rec
            child = rec["result"]["child"]
            wait_for(lambda c=child: not alive(c), 5, "the child gone")
    time.sleep(0.7)  # the children would have written their records by now
    for job_id in ("fast-parent-first", "compute-child-first"):
        assert wait_record(spool_root, job_id)["state"] == "done"
    for lane in ("fast", "compute"):  # a child that ends itself with sys.exit keeps its status
        for status in (0, 3):
            drop(spool_root, f"{lane}-exits-{status}", {
                "tool": f"r_fork_both_return_{lane}", "params": {"child_exits": status}})
            assert wait_record(spool_root, f"{lane}-exits-{status}")["result"]["status"] == status
    for n in range(4):
        drop(spool_root, f"after-{n}", {"tool": "r_pid"})
    for n in range(4):
        assert wait_record(spool_root, f"after-{n}")["state"] == "done"
    assert proc.running()


@pytest.mark.parametrize("tool", ["r_where", "r_where_fast"])
def test_a_tool_that_changes_directory_or_umask_does_not_move_later_jobs(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path, tool: str) -> None:
    """A COMPUTE worker runs many jobs, and FAST tools all run in the processor: one that
    called ``os.chdir`` or ``os.umask`` moved every later job there, so a tool writing
    ``report.csv`` wrote it elsewhere, or unreadable, depending on which jobs ran before."""
    daemon(JOB_NUM="1")
    drop(spool_root, "before", {"tool": tool})
    before = wait_record(spool_root, "before")["result"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop(spool_root, "mover", {"tool": tool, "params": {"chdir": str(elsewhere),
                                                        "umask": 0o077}})
    assert wait_record(spool_root, "mover")["result"]["cwd"] == str(elsewhere)
    drop(spool_root, "after", {"tool": tool})
    after = wait_record(spool_root, "after")["result"]
    assert after["pid"] == before["pid"]  # the same worker (or the processor itself)
    assert (after["cwd"], after["umask"]) == (before["cwd"], before["umask"])


def test_numpy_arrays_that_are_views_are_results_like_any_array(spool_root: Path,
                                                               daemon: StartDaemon) -> None:
    """A result holding a column of a table (``a[:, 1]``), a slice with a step or a
    transpose failed ``tool_error`` "numpy array is not C contiguous", where the whole
    array was taken."""
    daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        drop(spool_root, lane, {"tool": f"r_misreport_{lane}",
                                "params": {"case": "numpy_views"}})
        rec = wait_record(spool_root, lane)
        assert rec["state"] == "done", rec.get("error")
        assert rec["result"] == {
            "column": [1, 5, 9], "every_other": [0, 2],
            "transposed": [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]],
            "whole": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]}


def test_a_result_nested_too_deep_says_so(spool_root: Path, daemon: StartDaemon) -> None:
    """It said "Recursion limit reached" (orjson's words), which reads as a recursion in
    the tool's own code."""
    daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        drop(spool_root, lane, {"tool": f"r_misreport_{lane}", "params": {"case": "too_deep"}})
        error = wait_record(spool_root, lane)["error"]
        assert (error["type"], error["message"]) == (
            "tool_error", "TypeError: the result is not JSON: it is nested more than 254 "
                          "levels deep, or holds itself")


def test_a_result_that_holds_itself_or_whose_keys_collide_says_so(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A dict holding itself was said "nested more than 254 levels deep" alone; one whose
    keys come to one JSON text (``{1: "a", "1": "b"}``) was written with "1" twice, and
    every reader kept one of the two values unsaid.  Keys that do not collide are
    written as their JSON text, as before."""
    daemon(JOB_NUM="1")
    for lane in ("fast", "compute"):
        cases = {case: f"{lane}-{case.replace('_', '-')}"
                 for case in ("holds_itself", "keys_collide", "int_keys")}
        for case, job_id in cases.items():
            drop(spool_root, job_id, {"tool": f"r_misreport_{lane}", "params": {"case": case}})
        error = wait_record(spool_root, cases["holds_itself"])["error"]
        assert error["message"].endswith("or holds itself"), error
        error = wait_record(spool_root, cases["keys_collide"])["error"]
        assert (error["type"], error["message"]) == (
            "tool_error", "TypeError: the result is not JSON: two keys of one object are "
                          "both '1' in JSON")
        done = wait_record(spool_root, cases["int_keys"])
        assert done["result"] == {"by_day": {"1": "mon", "2": "tue"}, "by_flag": {"null": 0}}


def test_a_slow_params_check_of_a_compute_tool_stalls_nothing_else(
        spool_root: Path, daemon: StartDaemon, tmp_path: Path) -> None:
    """A COMPUTE job's params were checked on the processor's loop before it started: a
    tool's validator that waited on something slow stopped every FAST job and every
    claim meanwhile (a 5 s check: a FAST echo took 4.7 s), and ran twice."""
    daemon()
    release = tmp_path / "release"
    drop(spool_root, "slow", {"tool": "r_slow_check", "params": {"release": str(release)}})
    wait_for((spool_root / "running" / "slow.json").exists, what="the slow job claimed")
    drop(spool_root, "quick", {"tool": "r_fast"})
    assert wait_record(spool_root, "quick", 20)["state"] == "done"  # the check waits 30 s
    assert not release.exists()  # the check still waits
    release.touch()
    assert wait_record(spool_root, "slow")["state"] == "done"
    drop(spool_root, "bad", {"tool": "r_slow_check", "params": {}})
    error = wait_record(spool_root, "bad")["error"]
    assert (error["type"], error["message"]) == ("invalid_params", "release: Field required")


def test_timers_a_tool_left_set_do_not_kill_the_next_job(spool_root: Path,
                                                         daemon: StartDaemon,
                                                         tmp_path: Path) -> None:
    """A COMPUTE tool that returned with ``signal.alarm`` set killed the next job of its
    worker a second later (``worker_crashed``, killed by SIGALRM), a job that had done
    nothing wrong."""
    daemon(JOB_NUM="1")
    drop(spool_root, "timers", {"tool": "r_leave_timers"})
    assert wait_record(spool_root, "timers")["state"] == "done"
    drop(spool_root, "next", {"tool": "r_silent",
                              "params": {"seconds": 2, "path": str(tmp_path / "pid")}})
    rec = wait_record(spool_root, "next")
    assert rec["state"] == "done", rec.get("error")


def test_signal_handlers_a_tool_left_set_do_not_reach_the_next_job(spool_root: Path,
                                                                   daemon: StartDaemon) -> None:
    """A COMPUTE tool that set SIGCHLD to SIG_IGN left it so for every later job of its
    worker: their children were reaped by the kernel, so ``subprocess.run(["false"])``
    answered 0, a wrong result with no error."""
    daemon(JOB_NUM="1")
    drop(spool_root, "before", {"tool": "r_child_status"})
    assert wait_record(spool_root, "before")["result"] == 1
    drop(spool_root, "ignorer", {"tool": "r_ignore_sigchld"})
    assert wait_record(spool_root, "ignorer")["state"] == "done"
    drop(spool_root, "after", {"tool": "r_child_status"})
    assert wait_record(spool_root, "after")["result"] == 1


def test_environment_a_tool_set_does_not_reach_the_next_job(spool_root: Path,
                                                            daemon: StartDaemon) -> None:
    """``os.environ`` set by one COMPUTE job (a proxy, credentials, ``TZ``) was the
    environment of every later job of its worker, and of the processes they start."""
    daemon(JOB_NUM="1")
    drop(spool_root, "setter", {"tool": "r_environ", "params": {"path": "set by a job"}})
    assert wait_record(spool_root, "setter")["result"] == "set by a job"
    drop(spool_root, "next", {"tool": "r_environ"})
    assert wait_record(spool_root, "next")["result"] is None


@pytest.mark.parametrize("preload", ["1", "0"], ids=["preloaded", "imported-by-the-job"])
def test_warnings_made_errors_by_one_job_do_not_fail_the_next(
        spool_root: Path, daemon: StartDaemon, preload: str) -> None:
    """``warnings.simplefilter("error")`` or ``np.seterr(all="raise")`` in one job (as
    strict numeric code does) stayed for every later job of its worker (and, from a FAST
    tool, of the processor): a later job that merely warned, or divided by zero, failed
    ``tool_error``.  Also where the strict job imported numpy itself
    (``SPOOL_PRELOAD_QUANT=0``): no state was read before it, so none was put back."""
    daemon(JOB_NUM="1", SPOOL_PRELOAD_QUANT=preload)
    for lane in ("compute", "fast"):
        drop(spool_root, f"{lane}-strict", {"tool": f"r_strict_{lane}",
                                            "params": {"strict": True}})
        assert wait_record(spool_root, f"{lane}-strict")["state"] == "done"
        drop(spool_root, f"{lane}-lenient", {"tool": f"r_strict_{lane}"})
        rec = wait_record(spool_root, f"{lane}-lenient")
        assert rec["state"] == "done", rec.get("error")
        assert rec["result"] is None  # infinity, written as null


def test_a_time_zone_a_tool_set_does_not_reach_the_next_job(spool_root: Path,
                                                            daemon: StartDaemon) -> None:
    """``TZ`` and ``time.tzset()`` in one job: the environment came back, but the C
    library kept the zone, so a later job's local times were another zone's."""
    daemon(JOB_NUM="1")
    drop(spool_root, "before", {"tool": "r_timezone"})
    before = wait_record(spool_root, "before")["result"]
    zone = "Asia/Kolkata" if before != -19800 else "America/Denver"
    drop(spool_root, "mover", {"tool": "r_timezone", "params": {"path": zone}})
    assert wait_record(spool_root, "mover")["result"] != before
    drop(spool_root, "after", {"tool": "r_timezone"})
    assert wait_record(spool_root, "after")["result"] == before


def test_a_memory_error_without_a_cap_says_what_it_said_and_names_no_cap(
        spool_root: Path, daemon: StartDaemon) -> None:
    """Without SPOOL_WORKER_MEMORY_MB (the default) a MemoryError said "see
    SPOOL_WORKER_MEMORY_MB", a setting that played no part, and not what it said (QA)."""
    daemon(JOB_NUM="1")
    drop(spool_root, "huge", {"tool": "r_allocate_numpy", "params": {"mb": 1 << 30}})
    message = wait_record(spool_root, "huge", 60)["error"]["message"]
    assert message.startswith("out of memory (MemoryError: Unable to allocate"), message
    assert "SPOOL_WORKER_MEMORY_MB" not in message
