"""``spoolq retry``, ``cancel``, ``submit`` and ``purge`` on a failing disk (strace fails one call).

* A retry whose read of the failed record failed (EIO, ENOMEM) said a bare ``spoolq:
  error: Input/output error``, naming no file (statusd answered 500); one whose look at
  the record it had just taken failed left it in ``stage/``, the job in no folder,
  invisible to ``show`` and ``ls`` until a processor's recovery (QA).
* A cancel or retry that had made its change (the ``cancelled`` record renamed into
  ``failed/``, the retried job into ``pending/``) and then failed a step after it
  (removing what it staged, a folder's sync) exited 1 with that step's error: a script
  took the job for not cancelled, not retried (QA).  As for a submit, the change
  stands: exit 0, its usual output, and a warning saying that a processor's recovery
  removes what was left (which the tests check by running one).
* A purge one of whose removals failed exited 1 naming that record, and left every
  record it had staged by then in ``stage/``, invisible to ``show`` and ``ls`` until a
  processor's recovery put them back (QA).  Each goes back to its folder, and the
  purge goes on with the others.

Each fault is found first in a traced run of the same command on a copy of the spool
(the Nth call of the syscall, by the CLI's own process, that names a path), so no test
counts the calls Python's start makes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from spoolkit import (
    REPO,
    a_grace_later,
    age,
    make_spool,
    read_json,
    run_to_end,
    strace_path,
    submit,
)

from spool.recovery import Recovery
from spool.states import JobState

_LINE = re.compile(r"^(\d+)\s+(\w+)\(")


def _strace() -> str:
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    return strace


def _nth_call(strace: str, env: dict[str, str], root: Path, args: list[str], *,
              syscall: str, where: str, nth: int) -> int:
    """Which call of ``syscall`` (by the process that makes it) is the ``nth`` to name
    ``root/where...``, in a traced run of ``spoolq args`` on a copy of the spool
    ``root``."""
    copy = root.with_name(root.name + "-traced")
    shutil.copytree(root, copy, symlinks=True)
    trace = root.with_name("trace.txt")
    subprocess.run([strace, "-f", "-y", "-qq", "-o", str(trace), "-e", f"trace={syscall}",
                    *_cli(args)], check=False, capture_output=True, timeout=60,
                   env={**env, "SPOOL_DIR": str(copy)}, cwd=REPO)
    counts: dict[str, int] = {}
    seen = 0
    for line in trace.read_text(errors="replace").splitlines():
        if (match := _LINE.match(line)) is None:
            continue
        pid = match.group(1)
        counts[pid] = counts.get(pid, 0) + 1
        if f"{copy}/{where}" in line:
            seen += 1
            if seen == nth:
                return counts[pid]
    raise AssertionError(f"no {syscall} of {where} in {trace}")


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "spool.cli.main", *args]


def _failing(env: dict[str, str], root: Path, args: list[str], *, syscall: str,
             where: str, error: str = "EIO", nth: int = 1) -> subprocess.CompletedProcess[str]:
    """``spoolq args`` on ``root`` with the ``nth`` call of ``syscall`` that names
    ``root/where...`` failed with ``error``."""
    strace = _strace()
    when = _nth_call(strace, env, root, args, syscall=syscall, where=where, nth=nth)
    return subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:error={error}:when={when}", *_cli(args)],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def _in_folders(root: Path) -> dict[str, list[str]]:
    return {folder: sorted(os.listdir(root / folder))
            for folder in ("pending", "running", "done", "failed", "stage", "tmp")}


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # The traced run and the one failed make the same calls: no bytecode written by the
    # first for the second to find.
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def _failed_job(env: dict[str, str]) -> Path:
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    submit(spool, "j")
    run_to_end(spool, "j", JobState.FAILED)
    return root


# -- 1. retry: the failed record's read ----------------------------------------------------


@pytest.mark.parametrize("error", ["EIO", "ENOMEM", "EMFILE"])
def test_a_retry_whose_read_of_the_record_fails_names_the_record(
        env: dict[str, str], error: str) -> None:
    root = _failed_job(env)
    proc = _failing(env, root, ["retry", "j"], syscall="read", where="failed/j.json",
                    error=error)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    [line] = proc.stderr.strip().splitlines()
    reason = os.strerror(getattr(errno, error))
    assert line == f"spoolq: error: cannot read failed/j.json: {reason}", line
    assert _in_folders(root)["failed"] == ["j.json"]
    assert _in_folders(root)["stage"] == []


def test_a_retry_whose_look_at_the_taken_record_fails_puts_it_back(
        env: dict[str, str]) -> None:
    """The fstat of the record once taken into ``stage/`` failing: it goes back to
    ``failed/``, where ``show`` finds it, and the error names it."""
    root = _failed_job(env)
    # The first names it by path (the take's lstat, which gives the file back itself);
    # the second is the fstat of its descriptor.
    proc = _failing(env, root, ["retry", "j"], syscall="newfstatat", where="stage/retry-j",
                    nth=2)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    [line] = proc.stderr.strip().splitlines()
    assert "cannot read failed/j.json: Input/output error" in line, line
    folders = _in_folders(root)
    assert (folders["failed"], folders["pending"], folders["stage"]) == (["j.json"], [], [])
    assert read_json(root / "failed" / "j.json")["state"] == "failed"


# -- 2. cancel and retry past their commit point -------------------------------------------


def _pending_job(env: dict[str, str]) -> Path:
    root = Path(env["SPOOL_DIR"])
    submit(make_spool(root), "j")
    return root


def _warned(proc: subprocess.CompletedProcess[str], done: str, *words: str) -> None:
    """Exit 0 and one warning line: ``done`` made, and each of ``words``."""
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"spoolq: warning: {done}, but then "), line
    assert all(word in line for word in words), line
    assert "recovery" in line, line


def _recovered(root: Path) -> dict[str, list[str]]:
    """The spool's folders once a processor's recovery has been through it."""
    Recovery(a_grace_later(root)).scan()
    return _in_folders(root)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_cancel_whose_staged_file_cannot_be_removed_is_a_cancel(
        env: dict[str, str], as_json: bool) -> None:
    root = _pending_job(env)
    proc = _failing(env, root, ["cancel", "j", *(["--json"] if as_json else [])],
                    syscall="unlink", where="stage/cancel-j")
    _warned(proc, "job j cancelled", "cannot remove cancel-j", "Input/output error")
    if as_json:
        assert orjson.loads(proc.stdout)["state"] == "failed", proc.stdout
    else:
        assert "cancelled" in proc.stdout, proc.stdout
    record = read_json(root / "failed" / "j.json")
    assert record["error"]["type"] == "cancelled", record
    folders = _recovered(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == ([], ["j.json"], [])
    assert read_json(root / "failed" / "j.json")["error"]["type"] == "cancelled"


def test_a_cancel_whose_sync_of_failed_fails_is_a_cancel(env: dict[str, str]) -> None:
    """Under ``always``: the record is in ``failed/``, its entry not synced.  The job's
    staged file stays for recovery, which removes it once it finds the record."""
    root = _pending_job(env)
    env = {**env, "SPOOL_FSYNC": "always"}
    proc = _failing(env, root, ["cancel", "j"], syscall="fsync", where="failed>")
    _warned(proc, "job j cancelled", "cannot sync failed/", "Input/output error")
    assert read_json(root / "failed" / "j.json")["error"]["type"] == "cancelled"
    folders = _recovered(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == ([], ["j.json"], [])


def test_a_cancel_whose_look_for_a_superseded_record_fails_is_a_cancel(
        env: dict[str, str]) -> None:
    """The lookup of ``done/j.json`` (a record the new one would supersede) failing
    after the record landed: a bare OSError, exit 1, for a job cancelled."""
    root = _pending_job(env)
    proc = _failing(env, root, ["cancel", "j"], syscall="newfstatat", where="done/j.json")
    _warned(proc, "job j cancelled", "Input/output error", "done/j.json")
    folders = _recovered(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == ([], ["j.json"], [])


def test_a_cancel_whose_look_before_its_record_fails_leaves_the_job_pending(
        env: dict[str, str]) -> None:
    """The lookup of ``failed/j.json`` before the record is written failing: no cancel
    (exit 1), and the job back in ``pending/``, where it was left staged, in no folder."""
    root = _pending_job(env)
    proc = _failing(env, root, ["cancel", "j"], syscall="newfstatat", where="failed/j.json")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("spoolq: error:") and "Input/output error" in line, line
    folders = _in_folders(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == (["j.json"], [], [])


def test_a_retry_whose_sync_of_pending_fails_is_a_retry(env: dict[str, str]) -> None:
    """Under ``always``: the job is in ``pending/``, its entry not synced; the record
    stays staged for recovery (which would restore it had a crash lost the entry), and
    recovery removes it, the job being pending."""
    root = _failed_job(env)
    env = {**env, "SPOOL_FSYNC": "always"}
    proc = _failing(env, root, ["retry", "j", "--json"], syscall="fsync", where="pending>")
    _warned(proc, "job j retried", "cannot sync pending/", "Input/output error")
    assert orjson.loads(proc.stdout)["state"] == "pending", proc.stdout
    assert read_json(root / "pending" / "j.json")["attempts"] == 0
    folders = _recovered(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == (["j.json"], [], [])


def test_a_retry_whose_staged_record_cannot_be_removed_is_a_retry(
        env: dict[str, str]) -> None:
    root = _failed_job(env)
    proc = _failing(env, root, ["retry", "j"], syscall="unlink", where="stage/retry-j")
    _warned(proc, "job j retried", "cannot remove retry-j", "Input/output error")
    assert "pending" in proc.stdout, proc.stdout
    folders = _recovered(root)
    assert (folders["pending"], folders["failed"], folders["stage"]) == (["j.json"], [], [])


def test_a_submit_whose_sync_fails_says_so_on_stderr(env: dict[str, str]) -> None:
    """Its id and exit 0, as before (the job is in), and now a warning, as a cancel's."""
    root = Path(env["SPOOL_DIR"])
    make_spool(root)
    env = {**env, "SPOOL_FSYNC": "always"}
    proc = _failing(env, root, ["submit", "echo", "--id", "j"], syscall="fsync",
                    where="pending>")
    _warned(proc, "job j submitted", "cannot sync pending/")
    assert proc.stdout.strip() == "j"
    assert _in_folders(root)["pending"] == ["j.json"]


# -- 3. purge: a removal that fails ------------------------------------------------------


def _old_records(env: dict[str, str], *done: str, failed: tuple[str, ...] = ()) -> Path:
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    for job_id in (*done, *failed):
        submit(spool, job_id)
        run_to_end(spool, job_id, JobState.FAILED if job_id in failed else JobState.DONE)
        age(spool.layout.job(JobState.FAILED if job_id in failed else JobState.DONE,
                             job_id))
    return root


def _purge_failing(env: dict[str, str], *only: str) -> subprocess.CompletedProcess[str]:
    """``spoolq purge --older-than 1h`` with every unlink failed (of ``only``, if given)."""
    paths = [arg for path in only for arg in ("-P", path)]
    return subprocess.run(
        [_strace(), "-f", "-qq", "-o", "/dev/null", *paths, "-e", "trace=unlink",
         "-e", "inject=unlink:error=EIO:when=1+", *_cli(["purge", "--older-than", "1h"])],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def test_a_purge_whose_removals_fail_puts_every_record_back(env: dict[str, str]) -> None:
    root = _old_records(env, "d1", "d2", failed=("f1",))
    proc = _purge_failing(env)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout.startswith("removed 0 record(s)") and "kept 3" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    for name in ("done/d1.json", "done/d2.json", "failed/f1.json"):
        assert any(name in line and "Input/output error" in line for line in lines), lines
    folders = _in_folders(root)
    assert (folders["done"], folders["failed"], folders["stage"]) == (
        ["d1.json", "d2.json"], ["f1.json"], [])


def test_a_purge_goes_on_past_a_record_it_cannot_remove(env: dict[str, str]) -> None:
    """The quarantined original of ``bad`` cannot be removed: its record stays with it,
    the other record goes."""
    root = _old_records(env, "d1", failed=("bad",))
    original = root / "failed" / "bad.orig"
    original.write_bytes(b"{the bad drop")
    proc = _purge_failing(env, str(original))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout.startswith("removed 1 record(s)") and "kept 1" in proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert "failed/bad.json is kept" in line and "Input/output error" in line, line
    folders = _in_folders(root)
    assert (folders["done"], folders["failed"], folders["stage"]) == (
        [], ["bad.json", "bad.orig"], [])
