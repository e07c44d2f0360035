"""The CLI on a failing disk (strace fails a call with EIO).

``spoolq show``, ``wait``, ``cancel`` and ``retry`` of a job whose record read failed
with EIO said ``no job <id>``: a script took the job for purged, or never submitted, and
submitted it again.  They name the error now (exit 1, one line, no traceback).

``spoolq submit`` whose drop landed in ``pending/`` before the folder's sync failed
(``always``: the fsync of ``pending/``; ``batch``: the syncfs after it) said it failed
(exit 1), and the script that asked submitted the job twice.  The job is in: its id and
exit 0, as for any drop.  So is one a processor claimed while the sync took its time (a
failing disk's can take seconds): it was looked for in ``pending/`` alone, and exit 1
had the script submit a job that was running, or done, a second time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from spoolkit import (
    REPO,
    make_spool,
    read_json,
    run_to_end,
    start_processor,
    stop_processor,
    strace_path,
    submit,
)

from spool.states import JobState


@pytest.mark.parametrize("command", [["show", "j"], ["retry", "j"], ["cancel", "j"],
                                     ["wait", "j", "--timeout", "1"]])
def test_a_record_the_disk_cannot_read_is_named_not_called_missing(
        env: dict[str, str], command: list[str]) -> None:
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    submit(spool, "j")
    run_to_end(spool, "j", JobState.FAILED)
    record = root / "failed" / "j.json"
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(record), "-e", "trace=openat",
         "-e", "inject=openat:error=EIO:when=1+", sys.executable, "-m", "spool.cli.main",
         *command], check=False, capture_output=True, text=True, timeout=60, env=env,
        cwd=REPO)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Input/output error" in lines[0], proc.stderr
    assert "no job" not in proc.stderr
    assert record.is_file()  # nothing moved


@pytest.mark.parametrize(("fsync", "syscall", "path"), [("always", "fsync", "pending"),
                                                         ("batch", "syncfs", None)])
def test_a_submit_whose_folder_sync_fails_after_the_drop_is_a_submit(
        env: dict[str, str], fsync: str, syscall: str, path: str | None) -> None:
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    make_spool(root)
    only = [] if path is None else ["-P", str(root / path)]
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", *only, "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:error=EIO:when=1", sys.executable, "-m",
         "spool.cli.main", "submit", "echo", "-p", "message=hi"], check=False,
        capture_output=True, text=True, timeout=60, env={**env, "SPOOL_FSYNC": fsync},
        cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(root / "pending")) == [f"{proc.stdout.strip()}.json"]


def _strace_and_processor(env: dict[str, str], tmp_path: Path
                          ) -> tuple[str, Path, subprocess.Popen[bytes]]:
    """strace (or a skip), the spool, and a processor on it under ``always``."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    make_spool(root)
    return strace, root, start_processor(root, env, tmp_path / "p.log", SPOOL_FSYNC="always")


@pytest.mark.parametrize(("tool", "params"), [("echo", ["message=hi"]),
                                             ("sleep", ["seconds=3"])])
def test_a_submit_claimed_while_its_folder_sync_failed_is_a_submit(
        env: dict[str, str], tmp_path: Path, tool: str, params: list[str]) -> None:
    strace, root, proc = _strace_and_processor(env, tmp_path)
    try:
        # The sync of pending/ takes 2 s, then fails: the processor claims the job meanwhile
        # (echo: done by the submit's look; sleep: most often running still).
        sub = subprocess.run(
            [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(root / "pending"),
             "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:delay_enter=2000000:when=1",
             sys.executable, "-m", "spool.cli.main", "submit", tool,
             *(arg for p in params for arg in ("-p", p)), "--id", "j1"],
            check=False, capture_output=True, text=True, timeout=60,
            env={**env, "SPOOL_FSYNC": "always"}, cwd=REPO)
        where = [s for s in ("pending", "running", "done") if (root / s / "j1.json").exists()]
        assert sub.returncode == 0, (sub.stderr, where)
        assert sub.stdout.strip() == "j1"
        # In, as said: wherever its one run has got to when this looks (a record in done/
        # and running/ both for a moment at completion).  The sleep's record is written
        # 3.05 s after its submitted_at, the submit (under strace) ended 2.7 to 2.9 s after
        # it with its core shared by six busy loops: "running" alone was a check of that
        # moment, and failed ("done") in a full run.  The submit's own look, right after
        # the failed sync at 2 s, most often still finds it running (and looks in done/).
        assert where in (["pending"], ["running"], ["running", "done"], ["done"]), where
        deadline = time.monotonic() + 30
        while not (root / "done" / "j1.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        rec = read_json(root / "done" / "j1.json")
        assert (rec["state"], rec["attempts"]) == ("done", 1), rec
    finally:
        stop_processor(proc)


def test_a_submit_requeued_while_its_folder_sync_failed_is_a_submit(
        env: dict[str, str], tmp_path: Path) -> None:
    """The drop is claimed while the sync of ``pending/`` takes its time, its run fails
    (a timeout) and is requeued with its attempt counted: ``pending/`` and ``running/``
    then hold the job with other bytes than the drop's, and no record is written yet.
    Looked for by its bytes, the submit said it failed (exit 1), and the script that
    asked submitted the job again, to run twice."""
    strace, root, proc = _strace_and_processor(env, tmp_path)
    try:
        sub = subprocess.run(
            [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(root / "pending"),
             "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:delay_enter=3000000:when=1",
             sys.executable, "-m", "spool.cli.main", "submit", "sleep", "-p", "seconds=5",
             "--timeout", "0.2", "--max-attempts", "20", "--id", "j1"],
            check=False, capture_output=True, text=True, timeout=60,
            env={**env, "SPOOL_FSYNC": "always"}, cwd=REPO)
        assert (sub.returncode, sub.stdout.strip()) == (0, "j1"), sub.stderr

        def attempts() -> list[int]:
            found = []
            for state in ("pending", "running"):
                try:
                    found.append(read_json(root / state / "j1.json")["attempts"])
                except FileNotFoundError:
                    continue
            return found

        deadline = time.monotonic() + 10  # (between two moves, in neither folder)
        while not (found := attempts()):
            assert time.monotonic() < deadline, "j1 is gone"
            time.sleep(0.02)
        assert found[0] >= 1, found  # in, as said, and requeued meanwhile
    finally:
        stop_processor(proc)


@pytest.mark.parametrize("json_out", [False, True])
def test_ls_lists_the_jobs_beside_a_record_the_disk_cannot_read(
        env: dict[str, str], json_out: bool) -> None:
    """One record whose read fails (EIO) refused the whole listing: ``spoolq ls`` printed
    no job at all (exit 1), every other job hidden by one bad sector, where statusd lists
    them.  The others are listed, that one as a row that cannot be read; the error is
    named and the exit is 1 (the listing is not whole)."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    for job_id in ("j1", "j2", "j3"):
        submit(spool, job_id)
        run_to_end(spool, job_id)
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(root / "done" / "j2.json"),
         "-e", "trace=openat", "-e", "inject=openat:error=EIO:when=1+", sys.executable, "-m",
         "spool.cli.main", "ls", *(["--json"] if json_out else [])], check=False,
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Input/output error" in proc.stderr, proc.stderr
    if json_out:
        tasks = {t["id"]: t for t in orjson.loads(proc.stdout)["tasks"]}
        assert sorted(tasks) == ["j1", "j2", "j3"], proc.stdout
        assert "Input/output error" in tasks["j2"]["unreadable"]
        assert tasks["j1"]["state"] == tasks["j3"]["state"] == "done"
    else:
        rows = proc.stdout.splitlines()
        assert all(any(job_id in row for row in rows) for job_id in ("j1", "j2", "j3")), rows


def test_ls_names_a_record_the_disk_cannot_read_on_its_own_page_alone(
        env: dict[str, str]) -> None:
    """A record whose read fails, older than a page: the first page, every row of it
    read, exited 1 and named that record's error (a script paging took the listing for
    broken); the page that lists the record as unreadable says it, and exits 1."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    for job_id in ("j1", "j2", "j3"):  # j1 the oldest: on the second page of two rows
        submit(spool, job_id)
        run_to_end(spool, job_id)

    def ls(*args: str) -> tuple[int, dict[str, Any], str]:
        proc = subprocess.run(
            [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(root / "done" / "j1.json"),
             "-e", "trace=openat", "-e", "inject=openat:error=EIO:when=1+", sys.executable,
             "-m", "spool.cli.main", "ls", "--json", "--limit", "2", *args], check=False,
            capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        return proc.returncode, orjson.loads(proc.stdout), proc.stderr

    status, first, said = ls()
    assert [t["id"] for t in first["tasks"]] == ["j3", "j2"], first
    assert (status, said) == (0, ""), said
    status, second, said = ls("--cursor", first["next_cursor"])
    assert [t["id"] for t in second["tasks"]] == ["j1"], second
    assert "Input/output error" in second["tasks"][0]["unreadable"]
    assert status == 1 and "Input/output error" in said, said


def test_purge_keeps_and_names_a_record_the_disk_cannot_read_and_purges_the_rest(
        env: dict[str, str]) -> None:
    """``spoolq purge`` reads the record of a kept entry (another user's directory spoolq
    renamed in its folder) to keep it while the entry is there.  One such read failing
    (EIO) failed the whole purge: exit 1, nothing removed, every day.  That record is kept
    (it may account for the entry) and named; the others go; exit 1 as the help says."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    root = Path(env["SPOOL_DIR"])
    spool = make_spool(root)
    (root / "done" / "w.json").mkdir()  # a directory under a record's name, kept
    assert spool.keep_in_place(str(root / "done" / "w.json"), name="done/w.json",
                               message="kept")
    [kept_record] = (root / "failed").glob("invalid-*.json")
    submit(spool, "old")
    run_to_end(spool, "old", JobState.DONE)
    day_ago = time.time() - 86400
    for path in (kept_record, root / "done" / "old.json"):
        os.utime(path, (day_ago, day_ago))
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-P", str(kept_record), "-e", "trace=read",
         "-e", "inject=read:error=EIO:when=1+", sys.executable, "-m", "spool.cli.main",
         "purge", "--older-than", "1h"], check=False, capture_output=True, text=True,
        timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.startswith("removed 1 record(s)"), proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert kept_record.name in line and "Input/output error" in line, proc.stderr
    assert not (root / "done" / "old.json").exists()
    assert kept_record.is_file()
