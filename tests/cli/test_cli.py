"""The ``spoolq`` CLI end to end, as scripts use it: real processes, exit codes, files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from spool.errors import ErrorType
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import ErrorInfo, Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool, record_from_job

SUBCOMMANDS = ["init", "submit", "ls", "show", "wait", "cancel", "retry", "purge", "stats",
               "schema", "tools", "data", "demo"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SPOOL_DIR": str(tmp_path / "spool"), "SPOOL_FSYNC": "never"}


def spoolq(env: dict[str, str], *args: str, timeout: float = 30
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spool.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ok(env: dict[str, str], *args: str) -> str:
    proc = spoolq(env, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def as_json(env: dict[str, str], *args: str) -> Any:
    return orjson.loads(ok(env, *args, "--json"))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def finish(root: Path, job_id: str, state: JobState) -> None:
    """Stand in for the processor: claim the job and finish it."""
    layout = Layout(root)
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    claim = spool.claim(job_id)
    assert claim is not None
    job = Job.model_validate_json(claim.data)
    record = record_from_job(job, job_id, state, claim.mtime_ns).model_copy(update={
        "attempts": 1, "result": {"echo": True} if state is JobState.DONE else None,
        "error": ErrorInfo(type=ErrorType.TOOL_ERROR, message="no")
        if state is JobState.FAILED else None})
    (spool.complete if state is JobState.DONE else spool.fail)(claim, record)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_has_help(env: dict[str, str], command: str) -> None:
    proc = spoolq(env, command, "--help")
    assert proc.returncode == 0 and "usage: spoolq" in proc.stdout


def test_init_creates_the_folders_and_is_idempotent(env: dict[str, str]) -> None:
    root = Path(env["SPOOL_DIR"])
    assert as_json(env, "init")["spool"] == str(root)
    ok(env, "init")
    assert {p.name for p in root.iterdir()} >= {"pending", "running", "done", "failed", "tmp"}


def test_submit_forms_and_show(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "init")
    job_id = as_json(env, "submit", "echo", "-p", "message=hi", "-p", "n=3",
                     "-p", 'list=["a"]', "--priority", "5", "--meta", '{"who": "ops"}',
                     "--id", "first")["id"]
    assert job_id == "first"
    job = orjson.loads((Path(env["SPOOL_DIR"]) / "pending" / "first.json").read_bytes())
    assert job["params"] == {"message": "hi", "n": 3, "list": ["a"]}
    assert job["priority"] == 5 and job["meta"] == {"who": "ops"}
    second = ok(env, "submit", "sleep", "--params", '{"seconds": 1}').strip()
    assert (Path(env["SPOOL_DIR"]) / "pending" / f"{second}.json").exists()
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": 1}}))
    third = as_json(env, "submit", "--file", str(job_file))["id"]
    shown = as_json(env, "show", third)
    assert shown["state"] == "pending" and shown["params"] == {"message": 1}
    assert "state       pending" in ok(env, "show", third)


def test_submit_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "init")
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"tool": "echo", "priority": "high"}))
    proc = spoolq(env, "submit", "--file", str(bad))
    assert proc.returncode == 1 and "priority" in proc.stderr
    one_line_error(proc)
    proc = spoolq(env, "submit", "echo", "-p", "novalue")
    assert proc.returncode == 2
    one_line_error(proc)
    ok(env, "submit", "echo", "--id", "dup")
    proc = spoolq(env, "submit", "echo", "--id", "dup")
    assert proc.returncode == 1 and "already pending" in proc.stderr
    proc = spoolq(env, "submit", "echo", "--id", "../escape")
    assert proc.returncode == 2
    one_line_error(proc)


def test_wait_exit_codes(env: dict[str, str]) -> None:
    ok(env, "init")
    root = Path(env["SPOOL_DIR"])
    for job_id in ("good", "bad", "slow"):
        ok(env, "submit", "echo", "--id", job_id)
    finish(root, "good", JobState.DONE)
    finish(root, "bad", JobState.FAILED)
    done = spoolq(env, "wait", "good", "--json")
    assert done.returncode == 0 and orjson.loads(done.stdout)["result"] == {"echo": True}
    assert spoolq(env, "wait", "bad").returncode == 1
    slow = spoolq(env, "wait", "slow", "--timeout", "0.3")
    assert slow.returncode == 3 and "still pending" in slow.stderr
    unknown = spoolq(env, "wait", "nobody")
    assert unknown.returncode == 1
    one_line_error(unknown)
    usage = spoolq(env, "wait", "good", "--timeout", "soon")
    assert usage.returncode == 2


def test_ls_filters_and_pages(env: dict[str, str]) -> None:
    ok(env, "init")
    for i in range(7):
        ok(env, "submit", "echo" if i % 2 else "sleep", "--id", f"j{i}")
    finish(Path(env["SPOOL_DIR"]), "j1", JobState.DONE)
    everything = as_json(env, "ls")["tasks"]
    assert [t["id"] for t in everything] == [f"j{i}" for i in range(6, -1, -1)]
    assert [t["id"] for t in as_json(env, "ls", "--state", "done")["tasks"]] == ["j1"]
    assert {t["id"] for t in as_json(env, "ls", "--tool", "sleep")["tasks"]} == \
        {"j0", "j2", "j4", "j6"}
    seen, cursor = [], None
    while True:
        page = as_json(env, "ls", "--limit", "3", *(["--cursor", cursor] if cursor else []))
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in everything]
    assert spoolq(env, "ls", "--cursor", "garbage").returncode == 2
    assert "j3" in ok(env, "ls")


def test_cancel_retry_and_purge(env: dict[str, str]) -> None:
    ok(env, "init")
    root = Path(env["SPOOL_DIR"])
    ok(env, "submit", "echo", "--id", "c1")
    cancelled = as_json(env, "cancel", "c1")
    assert cancelled["error"]["type"] == "cancelled"
    assert (root / "failed" / "c1.json").exists() and not (root / "pending" / "c1.json").exists()
    again = spoolq(env, "cancel", "c1")
    assert again.returncode == 1
    one_line_error(again)
    retried = as_json(env, "retry", "c1")
    assert retried["state"] == "pending" and retried["attempts"] == 0
    job = orjson.loads((root / "pending" / "c1.json").read_bytes())
    assert job["attempts"] == 0 and job["error"]["type"] == "cancelled"
    assert not (root / "failed" / "c1.json").exists()
    assert spoolq(env, "retry", "c1").returncode == 1
    finish(root, "c1", JobState.DONE)
    dry = as_json(env, "purge", "--older-than", "0s", "--dry-run")
    assert dry == {"removed": 1, "kept": 0, "dry_run": True}
    assert (root / "done" / "c1.json").exists()
    assert as_json(env, "purge", "--older-than", "1d")["removed"] == 0
    assert as_json(env, "purge", "--older-than", "0s", "--state", "done")["removed"] == 1
    assert not (root / "done" / "c1.json").exists()
    assert spoolq(env, "purge", "--older-than", "soon").returncode == 2


def test_stats_schema_and_tools(env: dict[str, str]) -> None:
    ok(env, "init")
    ok(env, "submit", "echo")
    stats = as_json(env, "stats")
    assert stats["counts"] == {"pending": 1, "running": 0, "done": 0, "failed": 0}
    assert stats["oldest_pending_age_s"] >= 0 and stats["processor"]["alive"] is False
    schema = as_json(env, "schema")
    assert schema["job"]["required"] == ["tool"] and "state" in schema["record"]["properties"]
    tools = {t["name"]: t for t in as_json(env, "tools")}
    assert tools["sleep"]["mode"] == "compute" and "seconds" in \
        tools["sleep"]["params_schema"]["properties"]


def test_data_synth_writes_csv(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "data"
    ok(env, "data", "synth", "--symbols", "3", "--bars", "50", "--seed", "1",
       "--data-dir", str(out))
    assert len(list(out.glob("*.csv"))) == 3


def test_commands_on_a_missing_spool_say_so(tmp_path: Path) -> None:
    env = {**os.environ, "SPOOL_DIR": str(tmp_path / "nothing")}
    proc = spoolq(env, "ls")
    assert proc.returncode == 1 and "spoolq init" in proc.stderr
    one_line_error(proc)
