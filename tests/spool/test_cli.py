"""The ``spoolq`` CLI as scripts and people use it: real processes, exit codes, files on disk.

Every command runs as ``python -m spool.cli.main`` on a fresh spool
(``SPOOL_FSYNC=never``).  The test stands in for the processor where a job
must move: it claims with :class:`spool.transitions.Spool` and completes or
fails the claim.  Independent commands of one test run side by side to keep
the file fast; each check is on exit codes, JSON and the files in the spool.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError
from spoolkit import (
    CLI,
    NOBODY,
    Proc,
    load_spool,
    needs_root,
    open_pty,
    read_until,
    run_all,
    spoolq,
)

from spool.cli import parse
from spool.cli.main import main as spoolq_main
from spool.cli.progress import BAR_CELLS, bar_line, left_s
from spool.cli.render import cells
from spool.errors import ErrorType
from spool.fsops import Mover
from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import (
    EPOCH_END_S,
    EPOCH_FIRST_S,
    ErrorInfo,
    Job,
    OwnerStatus,
    Progress,
    Record,
)
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["init", "submit", "ls", "show", "wait", "cancel", "retry", "purge", "stats",
            "tools", "schema", "data", "demo"]


# -- helpers --------------------------------------------------------------------------------


def data(proc: Proc, code: int = 0) -> Any:
    assert proc.returncode == code, (proc.args, proc.stderr)
    return orjson.loads(proc.stdout)


def refused(proc: Proc, code: int, *words: str) -> None:
    """Exit ``code`` with one ``spoolq: error:`` line naming ``words``, and no traceback."""
    assert proc.returncode == code, (proc.args, proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def files(root: Path, state: str) -> set[str]:
    return {p.name for p in (root / state).iterdir()}


def spool_of(root: Path) -> Spool:
    layout = Layout(root)
    return Spool(layout, Mover(layout, FsyncMode.NEVER))


def drop(root: Path, job_id: str, tool: str = "echo", age_s: float = 0.0,
         **fields: Any) -> None:
    submitted = datetime.now(UTC) - timedelta(seconds=age_s)
    spool_of(root).submit(Job(tool=tool, submitted_at=submitted, **fields), job_id)


def finish(root: Path, job_id: str, state: JobState, result: Any = None) -> None:
    """Stand in for the processor: claim the job and complete or fail it."""
    spool = spool_of(root)
    claim = spool.claim(job_id)
    assert claim is not None
    record = spool.record_of_claim(claim, state).model_copy(update={
        "attempts": 1, "duration_s": 0.25, "result": result,
        "error": ErrorInfo(type=ErrorType.TOOL_ERROR, message="it broke")
        if state is JobState.FAILED else None})
    (spool.complete if state is JobState.DONE else spool.fail)(claim, record)


# -- help, errors ---------------------------------------------------------------------------


def test_every_command_has_help(env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("spoolq")  # the installed console script
    cli = [str(script)] if script.exists() else CLI
    procs = run_all(env, ["--help"], *([c, "--help"] for c in COMMANDS),
                    ["data", "synth", "--help"], cli=cli)
    for proc in procs:
        assert proc.returncode == 0, (proc.args, proc.stderr)
        assert proc.stdout.startswith("usage: spoolq"), proc.args
    top, retry = procs[0].stdout, procs[1 + COMMANDS.index("retry")].stdout
    assert all(c in top for c in COMMANDS)
    assert "attempts reset to 0" in " ".join(retry.split())


def test_each_command_says_its_version(env: dict[str, str]) -> None:
    """``--version`` of the three console scripts prints the installed distribution's
    version and exits 0, whatever the settings say (it reads none)."""
    import importlib.metadata  # noqa: PLC0415 - this test's alone

    expected = importlib.metadata.version("spoolq")
    broken = {**env, "SPOOL_FSYNC": "sometimes", "JOB_NUM": "many"}
    for name, module in (("spoolq", "spool.cli"), ("spool-processor", "processor"),
                         ("spool-statusd", "statusd")):
        script = Path(sys.executable).with_name(name)
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", module]
        proc = subprocess.run([*cmd, "--version"], env=broken, capture_output=True,
                              text=True, timeout=60, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{name} {expected}\n", "")


def test_usage_errors_and_a_missing_spool_are_one_line(env: dict[str, str]) -> None:
    none, bogus, bad_option, too_many, far, ls, show, stats = run_all(
        env, [], ["bogus"], ["ls", "--limit", "0"], ["ls", "--limit", "1001"],
        ["submit", "echo", "--not-before", "9999-12-31T23:59:59-01:00"],
        ["ls"], ["show", "x"], ["stats"])
    refused(none, 2, "required")
    refused(bogus, 2, "bogus")
    refused(bad_option, 2, "--limit")
    refused(too_many, 2, "--limit", "at most 1000")  # named the option nowhere
    refused(far, 2, "out of range")
    refused(spoolq({**env, "SPOOL_FSYNC": "sometimes"}, "ls"), 2, "SPOOL_FSYNC")
    for proc in (ls, show, stats):
        refused(proc, 1, "not an initialised spool", "spoolq init")
    assert not Path(env["SPOOL_DIR"]).exists()


# -- init -----------------------------------------------------------------------------------


def test_init_creates_the_folders_and_is_idempotent(env: dict[str, str]) -> None:
    root = Path(env["SPOOL_DIR"])
    first = data(spoolq(env, "init", "--json"))
    assert first["spool"] == str(root) and first["system"] is False
    assert {p.name for p in root.iterdir()} == set(first["folders"]) >= {
        "pending", "running", "done", "failed", "tmp"}
    (root / "pending" / "kept.json").write_bytes(b'{"tool": "echo"}')
    again, stray = run_all(env, ["init"], ["init", "--user", "someone"])
    assert again.returncode == 0 and "spool ready" in again.stdout
    assert (root / "pending" / "kept.json").read_bytes() == b'{"tool": "echo"}'
    refused(stray, 2, "--system")


def as_user(uid: int, gids: list[int], body: Callable[[], int]) -> tuple[int, str]:
    """Run ``body`` in a forked child with other credentials: (exit code, its stderr)."""
    load_spool()  # the child may not read this interpreter's install: see LOAD_SPOOL
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.dup2(write_end, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)  # pytest's capture replaced it
            os.setgroups(gids)
            os.setgid(gids[0])
            os.setuid(uid)
            code = body()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    said = bytearray()
    deadline = time.monotonic() + AS_USER_S
    try:
        while chunk := _read_by(read_end, deadline):
            said += chunk
    except TimeoutError:  # a command that never ends: killed, and the test says so
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"spoolq as uid {uid} did not end in {AS_USER_S:g} s: "
                             f"{bytes(said)!r}") from None
    finally:
        os.close(read_end)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said.decode()


AS_USER_S = 60.0
"""How long :func:`as_user`'s command may take; its stderr was read with no deadline, so
one that never ended held the test until pytest-timeout's alarm, the child left running."""


def _read_by(fd: int, deadline: float) -> bytes:
    """What ``fd`` has to read, b"" at its end; TimeoutError when nothing came by
    ``deadline`` (monotonic)."""
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise TimeoutError
    return os.read(fd, 65536)


@needs_root
def test_init_system_sets_postfix_style_modes(open_dir: Path, env: dict[str, str]) -> None:
    assert NOBODY is not None
    uid, gid = NOBODY
    root = open_dir / "spool"
    args = ["init", "--system", "--user", "nobody", "--group", "nogroup", "--spool-dir",
            str(root)]
    for _ in range(2):  # idempotent
        assert spoolq(env, *args).returncode == 0
    for name in ("pending", "tmp"):
        st = os.stat(root / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o3730, uid, gid)
    for name in ("running", "done", "failed", "owners"):
        st = os.stat(root / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, uid)

    def submit_and_peek() -> int:
        # A submitter: drops with --fsync always (it cannot open pending/ to fsync it),
        # and cannot list what others dropped.
        code = spoolq_main(["--spool-dir", str(root), "--fsync", "always", "submit", "echo",
                            "--id", "dropped"])
        try:
            os.listdir(root / "pending")
        except PermissionError:
            return code
        return 20

    code, stderr = as_user(54321, [gid], submit_and_peek)
    assert code == 0, stderr
    st = os.stat(root / "pending" / "dropped.json")
    assert (st.st_uid, st.st_gid) == (54321, gid)
    assert orjson.loads((root / "pending" / "dropped.json").read_bytes())["tool"] == "echo"


@needs_root
def test_a_submitter_who_cannot_read_results_is_told_so_not_that_the_job_failed(
        open_dir: Path, env: dict[str, str]) -> None:
    """A member of the submit group only (docs/operations.md, Permissions) cannot look into
    running/, done/, failed/: ``submit --wait`` and ``wait`` exit 2 (never wait's 1,
    "failed") with one line saying why, and ``submit --wait`` drops nothing."""
    assert NOBODY is not None
    gid = NOBODY[1]
    root = open_dir / "spool"
    assert spoolq(env, "init", "--system", "--user", "nobody", "--group", "nogroup",
                  "--spool-dir", str(root)).returncode == 0
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        # nobody's own group is nogroup here: give the spool user's folders a group of
        # their own, as a real `spoolq` user (group spoolq) has.
        os.chown(root / name, -1, 54322)
    base = ["--spool-dir", str(root), "--fsync", "always"]
    code, stderr = as_user(54321, [gid], lambda: spoolq_main(
        [*base, "submit", "echo", "--id", "waited", "--wait"]))
    assert code == 2 and "--wait" in stderr and "running/" in stderr, stderr
    assert "nothing was submitted" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (root / "pending" / "waited.json").exists()
    code, stderr = as_user(54321, [gid], lambda: spoolq_main(
        [*base, "submit", "echo", "--id", "dropped"]))
    assert code == 0, stderr
    code, stderr = as_user(54321, [gid], lambda: spoolq_main(
        [*base, "wait", "dropped", "--timeout", "1"]))
    assert code == 2 and "running/" in stderr and "Traceback" not in stderr, stderr
    assert (root / "pending" / "dropped.json").exists()
    # A member of the spool's group only reads records but cannot enter pending/.
    code, stderr = as_user(54321, [54322], lambda: spoolq_main(
        [*base, "wait", "dropped", "--timeout", "1"]))
    assert code == 2 and "pending/" in stderr and "running/" not in stderr, stderr


def spoolq_as(uid: int, gids: list[int], *argv: str) -> Proc:
    """``spoolq argv`` run by :func:`as_user`, with its stdout too, as :func:`spoolq` gives."""
    with tempfile.TemporaryFile() as out:
        def body() -> int:
            os.dup2(out.fileno(), 1)
            sys.stdout = os.fdopen(1, "w", closefd=False)
            try:
                return spoolq_main(list(argv))
            finally:
                sys.stdout.flush()

        code, stderr = as_user(uid, gids, body)
        out.seek(0)
        return Proc(list(argv), code, out.read().decode(), stderr)


@needs_root
def test_a_member_of_the_spool_group_only_sees_all_but_pending_and_is_told_so(
        open_dir: Path, env: dict[str, str]) -> None:
    """docs/operations.md, Permissions: a member of group ``spoolq`` only reads records
    but may not enter ``pending/``.  ``show`` finds a record in the other folders (and
    says a new drop in pending/ would not show), ``ls`` lists them and ``stats`` counts
    them, saying pending/ was left out; what needs pending/ alone is refused in one line.
    Before: each exited 1 with "Permission denied" on pending/.  A running job whose file
    this user may not read is named, not taken for one that does not exist."""
    root = open_dir / "spool"
    assert spoolq(env, "init", "--system", "--user", "nobody", "--group", "nogroup",
                  "--spool-dir", str(root)).returncode == 0
    for job_id in ("s1", "f1"):
        drop(root, job_id)
    finish(root, "s1", JobState.DONE, {"message": "hi"})
    finish(root, "f1", JobState.FAILED)
    drop(root, "s1")  # a re-drop of a finished id: this user cannot see it waiting
    drop(root, "p1")
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        os.chown(root / name, -1, 54322)  # the spool's group, as in the test above
    for record in [*(root / "done").iterdir(), *(root / "failed").iterdir()]:
        os.chown(record, -1, 54322)  # as the spool user's processor leaves them
    claimed = root / "running" / "r1.json"  # another submitter's drop, claimed: its group
    claimed.write_bytes(b'{"tool": "echo"}')  # stays the submit group's until its record
    os.chown(claimed, 54323, NOBODY[1] if NOBODY else 0)
    claimed.chmod(0o640)
    base = ["--spool-dir", str(root)]

    def run(*args: str) -> Proc:
        return spoolq_as(54321, [54322], *base, *args)

    show = run("show", "s1", "--json")
    assert data(show)["state"] == "done" and data(show)["result"] == {"message": "hi"}
    assert "pending/" in show.stderr and len(show.stderr.strip().splitlines()) == 1
    assert run("show", "f1").returncode == 0
    refused(run("show", "p1"), 1, "no job p1", "pending/", "not looked into")
    refused(run("show", "r1"), 1, "r1 is running", "may not read", "running/r1.json")
    listed = run("ls", "--json")
    assert {t["id"] for t in data(listed)["tasks"]} == {"s1", "f1"}
    assert "pending/ are not listed" in listed.stderr, listed.stderr
    assert "1 job(s) not listed" in listed.stderr and "(r1;" in listed.stderr
    refused(run("ls", "--state", "pending"), 1, "pending/")
    stats = data(run("stats", "--json"))
    assert stats["counts"] == {"pending": None, "running": 1, "done": 1, "failed": 1}
    assert stats["not_counted"] == ["pending"] and stats["total"] is None
    text = run("stats")
    assert text.returncode == 0 and "pending   ?" in text.stdout, text.stderr
    # A member of the submit group only may list none of the state folders.
    refused(spoolq_as(54321, [NOBODY[1] if NOBODY else 0], *base, "stats"), 1, "done/")


@needs_root
def test_init_system_never_hands_a_symlinks_target_to_the_spool_user(
        open_dir: Path, env: dict[str, str]) -> None:
    """The spool user owns the spool and could swap done/ for a link to a root-owned
    folder; the next init --system, run as root, must refuse rather than chown it."""
    root = open_dir / "spool"
    args = ["init", "--system", "--user", "nobody", "--group", "nogroup", "--spool-dir",
            str(root)]
    assert spoolq(env, *args).returncode == 0
    victim = open_dir / "victim"
    victim.mkdir(mode=0o700)
    os.rmdir(root / "done")
    os.symlink(victim, root / "done")
    refused(spoolq(env, *args), 1, "is not a directory", "symlink")
    st = os.stat(victim)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)


def test_init_system_refuses_clearly(open_dir: Path, env: dict[str, str]) -> None:
    root = str(open_dir / "spool")
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(os.getgid()).gr_name
    no_user, no_group = run_all(
        env, ["init", "--system", "--spool-dir", root, "--user", "no-such-user-x", "--group",
              my_group],
        ["init", "--system", "--spool-dir", root, "--user", me, "--group", "no-such-group-x"])
    refused(no_user, 1, "useradd")
    refused(no_group, 1, "groupadd")
    # Neither there: the group first, as the useradd to come names it (--groups).
    both = spoolq(env, "init", "--system", "--spool-dir", root, "--user", "no-such-user-x",
                  "--group", "no-such-group-x")
    refused(both, 1, "groupadd")
    if os.geteuid() != 0:
        not_root = spoolq(env, "init", "--system", "--spool-dir", root, "--user", me,
                          "--group", my_group)
        code, stderr = not_root.returncode, not_root.stderr
    elif NOBODY is not None:
        code, stderr = as_user(NOBODY[0], [NOBODY[1]], lambda: spoolq_main(
            ["init", "--system", "--spool-dir", root, "--user", "nobody", "--group",
             "nogroup"]))
    else:
        pytest.skip("no unprivileged user to try as")
    assert code == 1 and "as root" in stderr and "Traceback" not in stderr
    assert not Path(root).exists()


# -- submit ---------------------------------------------------------------------------------


def test_submit_builds_the_job_from_options_and_files(root: Path, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "sleep", "params": {"seconds": 2}}))
    options, plain, from_file, from_stdin = run_all(
        env,
        ["submit", "run_backtest", "-p", 'symbols=["AAA"]', "-p", "fast=10", "-p", "name=x",
         "--params", '{"fast": 5, "slow": 50}', "--id", "bt1", "--priority", "5",
         "--timeout", "5m", "--max-attempts", "3", "--not-before", "1800000000",
         "--meta", '{"who": "ops"}', "--json"],
        ["submit", "echo", "-p", "message=hi"],
        ["submit", "--file", str(job_file), "--id", "from-file"],
        ["submit", "--file", "-", "--json"],
        stdin='{"tool": "echo", "params": {"message": 1}}')
    assert data(options) == {"id": "bt1"}
    job = orjson.loads((root / "pending" / "bt1.json").read_bytes())
    assert job["params"] == {"symbols": ["AAA"], "fast": 10, "name": "x", "slow": 50}
    assert (job["tool"], job["priority"], job["timeout"], job["max_attempts"]) == \
        ("run_backtest", 5, 300.0, 3)
    assert job["not_before"] == "2027-01-15T08:00:00Z" and job["meta"] == {"who": "ops"}
    plain_id = plain.stdout.strip()
    assert orjson.loads((root / "pending" / f"{plain_id}.json").read_bytes())["params"] == \
        {"message": "hi"}
    assert from_file.stdout.strip() == "from-file"
    assert orjson.loads((root / "pending" / "from-file.json").read_bytes())["params"] == \
        {"seconds": 2}
    stdin_id = data(from_stdin)["id"]
    assert orjson.loads((root / "pending" / f"{stdin_id}.json").read_bytes())["params"] == \
        {"message": 1}


def test_submit_refuses_bad_jobs_without_dropping_them(root: Path, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    drop(root, "dup")
    (tmp_path / "bad.json").write_bytes(orjson.dumps({"tool": "echo", "priority": "high"}))
    (tmp_path / "junk.json").write_bytes(b"{not json")
    (tmp_path / "spent.json").write_bytes(orjson.dumps(
        {"tool": "echo", "attempts": 3, "max_attempts": 3}))
    (tmp_path / "one_left.json").write_bytes(orjson.dumps(
        {"tool": "echo", "attempts": 2, "max_attempts": 3}))
    spent, spent_wait, one_left = run_all(
        env, ["submit", "--file", str(tmp_path / "spent.json")],
        ["submit", "--file", str(tmp_path / "spent.json"), "--wait"],
        ["submit", "--file", str(tmp_path / "one_left.json"), "--id", "one_left"])
    refused(spent, 1, "attempts (3) already reach its max_attempts (3)")
    refused(spent_wait, 2, "attempts (3)")  # with --wait, exit 1 reads as "it failed"
    assert one_left.returncode == 0, one_left.stderr
    (root / "pending" / "one_left.json").unlink()
    bad, junk, missing, novalue, both, bad_id, dup, no_tool, attempts = run_all(
        env,
        ["submit", "--file", str(tmp_path / "bad.json")],
        ["submit", "--file", str(tmp_path / "junk.json")],
        ["submit", "--file", str(tmp_path / "missing.json")],
        ["submit", "echo", "-p", "novalue"],
        ["submit", "echo", "--file", str(tmp_path / "bad.json")],
        ["submit", "echo", "--id", "../escape"],
        ["submit", "echo", "--id", "dup"],
        ["submit"],
        ["submit", "echo", "--max-attempts", "0"])
    refused(bad, 1, "bad.json is not a valid job", "priority")
    refused(junk, 1, "junk.json is not a valid job")
    refused(missing, 1, "cannot read")
    refused(novalue, 2, "key=value")
    refused(both, 2, "--file takes the whole job")
    refused(bad_id, 2, "invalid id")
    refused(dup, 1, "already pending")
    refused(no_tool, 2, "TOOL")
    refused(attempts, 2, "argument --max-attempts")
    assert files(root, "pending") == {"dup.json"}
    assert files(root, "tmp") == set()


def test_a_spool_root_that_is_a_file_is_said_so_by_every_command(tmp_path: Path) -> None:
    """``init`` said "Not a directory (<root>/pending)", where ``ls`` named the root (QA)."""
    root = tmp_path / "afile"
    root.write_text("")
    env = {**os.environ, "SPOOL_DIR": str(root)}
    for proc in run_all(env, ["init"], ["ls"]):
        refused(proc, 1, f"{root} is not a directory: the spool root must be one")


def test_submit_file_refuses_nan_and_infinity_as_intake_does(
        root: Path, env: dict[str, str], tmp_path: Path) -> None:
    """pydantic's JSON parser took NaN and Infinity, and the job went out with null in
    their place, exit 0: dropped as a file, the same bytes are quarantined as malformed
    JSON, and --params and POST refuse them (QA)."""
    names = []
    for n, constant in enumerate(["NaN", "Infinity", "-Infinity"]):
        (tmp_path / f"c{n}.json").write_text(
            f'{{"tool": "echo", "params": {{"message": {constant}}}}}')
        names.append(["submit", "--file", str(tmp_path / f"c{n}.json")])
    for proc in run_all(env, *names):
        refused(proc, 1, "is not a valid job: malformed JSON")
    assert files(root, "pending") == set()


def test_submit_refuses_a_job_over_the_limit_as_it_would_be_written(
        root: Path, env: dict[str, str], tmp_path: Path) -> None:
    job = orjson.dumps({"tool": "echo", "params": {"message": "x" * 200}})
    assert len(job) < 256  # the id and submission time take it over
    (tmp_path / "big.json").write_bytes(job)
    big = spoolq({**env, "SPOOL_MAX_JOB_BYTES": "256"}, "submit", "--file",
                 str(tmp_path / "big.json"))
    refused(big, 1, "too large", "SPOOL_MAX_JOB_BYTES=256")
    assert files(root, "pending") == set() and files(root, "tmp") == set()


# -- show and wait --------------------------------------------------------------------------


def test_show_prints_the_record_as_stored(root: Path, env: dict[str, str]) -> None:
    drop(root, "j1", params={"message": "hi"}, meta={"who": "ops"})
    finish(root, "j1", JobState.DONE, result={"message": "hi"})
    as_json, text, unknown = run_all(env, ["show", "j1", "--json"], ["show", "j1"],
                                     ["show", "nobody"])
    assert data(as_json) == orjson.loads((root / "done" / "j1.json").read_bytes())
    assert data(as_json)["submitted_at"].endswith("Z")
    assert text.returncode == 0
    for line in ("state       done", "tool        echo", "meta        {\"who\":\"ops\"}",
                 "attempts    1", "result", '"message": "hi"'):
        assert line in text.stdout
    refused(unknown, 1, "no job nobody")


def test_show_names_what_stands_in_pending_under_the_id_that_is_no_job(
        root: Path, env: dict[str, str]) -> None:
    """A FIFO, a directory or a file too large for a job under a job's name in
    ``pending/``, not yet judged (no processor running): "no job" alone (h381)."""
    os.mkfifo(root / "pending" / "fifo.json")
    (root / "pending" / "dir.json").mkdir()
    with open(root / "pending" / "huge.json", "wb") as huge:
        huge.truncate(64 << 20)  # sparse
    fifo, folder, huge_file, absent = run_all(
        env, ["show", "fifo"], ["show", "dir"], ["show", "huge"], ["show", "absent"])
    for proc, job_id, what in ((fifo, "fifo", "a fifo"), (folder, "dir", "a directory"),
                               (huge_file, "huge", f"a file of {64 << 20} bytes")):
        refused(proc, 1, f"no job {job_id}: pending/{job_id}.json is {what}",
                "a processor quarantines it in failed/")
    assert absent.returncode == 1 and absent.stderr == "spoolq: error: no job absent\n"


def test_wait_exit_codes(root: Path, env: dict[str, str]) -> None:
    for job_id in ("good", "bad", "slow"):
        drop(root, job_id)
    finish(root, "good", JobState.DONE, result={"answer": 42})
    finish(root, "bad", JobState.FAILED)
    good, quiet, bad, slow, unknown, usage = run_all(
        env, ["wait", "good", "--json"], ["wait", "good", "--quiet"], ["wait", "bad"],
        ["wait", "slow", "--timeout", "0.3"], ["wait", "nobody"],
        ["wait", "good", "--timeout", "soon"])
    assert data(good)["result"] == {"answer": 42}
    assert quiet.returncode == 0 and quiet.stdout == quiet.stderr == ""
    assert bad.returncode == 1 and "tool_error: it broke" in bad.stdout
    assert slow.returncode == 3 and "still pending after 0.3 s" in slow.stderr
    assert "state       pending" in slow.stdout
    refused(unknown, 1, "no job nobody")
    refused(usage, 2, "--timeout")


def test_wait_for_several_jobs_at_once(root: Path, env: dict[str, str]) -> None:
    """A script waiting for a batch ran one ``spoolq wait`` (one Python start) per id, each
    with its own --timeout.  Several ids are waited for together, in one --timeout, one
    line each on stdout; the exit code is the worst of them (failed or unknown 1, then
    unfinished 3)."""
    for job_id in ("a1", "a2", "bad", "slow"):
        drop(root, job_id)
    for job_id in ("a1", "a2"):
        finish(root, job_id, JobState.DONE, result={"ok": job_id})
    finish(root, "bad", JobState.FAILED)
    done, some_failed, unfinished, lines, unknown, twice, twice_json = run_all(
        env, ["wait", "a1", "a2", "a1"], ["wait", "a1", "bad", "slow", "--timeout", "0.5"],
        ["wait", "a2", "slow", "--timeout", "0.3"], ["wait", "a1", "a2", "--json"],
        ["wait", "a1", "nobody"], ["wait", "a1", "a1"], ["wait", "a1", "a1", "--json"])
    # A line for each id given, in the order given, an id given twice too: a script pairs
    # its ids with the lines (the second a1 had none, and the lines were off by one, QA).
    assert (done.returncode, done.stdout) == (0, "a1 done\na2 done\na1 done\n")
    # One id given twice is several ids: the batch's lines, not the single id's record
    # (a script looping over its lines broke on a list holding a duplicate).
    assert (twice.returncode, twice.stdout) == (0, "a1 done\na1 done\n")
    assert len(twice_json.stdout.splitlines()) == 2
    assert [orjson.loads(line)["result"] for line in twice_json.stdout.splitlines()] == [
        {"ok": "a1"}, {"ok": "a1"}]
    assert some_failed.returncode == 1
    assert some_failed.stdout == "a1 done\nbad failed tool_error: it broke\nslow pending\n"
    assert (unfinished.returncode, unfinished.stdout) == (3, "a2 done\nslow pending\n")
    assert [orjson.loads(line)["result"] for line in lines.stdout.splitlines()] == [
        {"ok": "a1"}, {"ok": "a2"}]
    assert unknown.returncode == 1 and unknown.stdout == "a1 done\n"
    assert "no job nobody" in unknown.stderr


def test_the_bar_tells_what_is_left_at_the_runs_pace() -> None:
    """A quarter done in 30 s is 90 s from its end, counted down from its last report;
    too little said (under 2%, under a second in, no fraction, done, not running) is no
    estimate."""
    now = datetime.now(UTC)

    def running(fraction: float | None, spent_s: float,
                state: JobState = JobState.RUNNING) -> Record:
        started = now - timedelta(seconds=spent_s)
        return Record(id="bt", tool="run_backtest", state=state, started_at=started,
                      progress=Progress(fraction=fraction, message="loading",
                                        started_at=started, updated_at=now))

    assert left_s(running(0.25, 30), now) == pytest.approx(90)
    assert left_s(running(0.25, 30), now + timedelta(seconds=60)) == pytest.approx(30)
    assert left_s(running(0.25, 30), now + timedelta(seconds=200)) == pytest.approx(-110)
    for silent in (running(0.01, 30), running(0.5, 0.5), running(None, 30),
                   running(1.0, 30), running(0.5, 30, JobState.PENDING)):
        assert left_s(silent, now) is None
    line = bar_line(running(0.25, 30), 100)
    assert re.search(r"  25% 0:(29|3[0-5])<1:(2[4-9]|30) loading$", line), line
    assert "<" not in bar_line(running(0.01, 30), 100)


def test_a_held_pending_job_says_until_when() -> None:
    """A job held by its not_before (or a retry's backoff) showed "pending" alone on the
    bar for as long as it waited: until tomorrow, said nowhere (QA h401)."""
    now = datetime.now(UTC)
    later = now + timedelta(hours=20)
    held = Record(id="nightly", tool="run_backtest", state=JobState.PENDING,
                  not_before=later)
    line = bar_line(held, 100)
    assert line.endswith(f"held until {later.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"), line
    assert bar_line(held.model_copy(update={"not_before": now - timedelta(seconds=1)}),
                    100).endswith("-"), "due: nothing held"
    retrying = held.model_copy(update={"not_before": None, "error": ErrorInfo(
        type=ErrorType.TOOL_ERROR, message="boom", retry_at=later)})
    assert "held until" in bar_line(retrying, 100)


def test_a_running_bar_never_says_100_and_a_narrow_line_ends_in_no_space() -> None:
    """A run at 99.6% showed '100%' and a full bar while it went on (the fraction
    rounded); a running bar says at most 99%.  A line too narrow for a bar, its message
    cut after a space, ended in that space."""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=600)
    nearly = Record(id="bt", tool="run_backtest", state=JobState.RUNNING,
                    started_at=started,
                    progress=Progress(fraction=0.996, message="writing the results",
                                      started_at=started, updated_at=now))
    line = bar_line(nearly, 100)
    assert " 99% " in line and "100%" not in line and ".]" in line, line
    finished = nearly.model_copy(update={"state": JobState.DONE, "duration_s": 600.0})
    assert "100%" in bar_line(finished, 100)
    # Done, the bar is full beside its '100%' (it was a cell short); failed at 99.6%, the
    # run never reached its end: no '100%', and the bar agrees.
    assert f"[{'#' * BAR_CELLS}] 100%" in bar_line(finished, 100), bar_line(finished, 100)
    failed = nearly.model_copy(update={"state": JobState.FAILED, "duration_s": 600.0})
    line = bar_line(failed, 100)
    assert " 99% " in line and "100%" not in line and ".]" in line, line
    half = nearly.model_copy(update={"state": JobState.FAILED, "duration_s": 600.0,
                                     "progress": Progress(fraction=0.5, message="x")})
    assert f"[{'#' * (BAR_CELLS // 2)}{'.' * (BAR_CELLS // 2)}]  50%" in bar_line(half, 100)
    for columns in range(20, 40):
        narrow = bar_line(nearly, columns)
        assert narrow == narrow.rstrip() and cells(narrow) <= columns - 1, (columns, narrow)


def test_the_bar_leaves_out_what_is_left_rather_than_cut_it() -> None:
    """On 40 columns, an hour into a run at 7%, '1:00:00<12:29:42' was cut to
    '1:00:00<12:29': 12 minutes left, to the eye, for 12 hours.  Where the times do not
    fit whole, what is left is not shown (the run time and the message are).  A start
    far off (a clock set wrong) put the end past the year 9999: an OverflowError that
    ended the bar's thread.  (Where the times do not fit beside a bar, the line goes
    without one: :func:`narrow_line`.)"""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=3600)
    long_run = Record(id="20261202T052231-d0437e7889df", tool="run_backtest",
                      state=JobState.RUNNING, started_at=started,
                      progress=Progress(fraction=0.0741, message="loading data",
                                        started_at=started, updated_at=now))
    for columns in (36, 40, 42):
        line = bar_line(long_run, columns)
        assert cells(line) <= columns - 1, (columns, line)
        # the times whole or what is left not at all: never '1:00:00<12:29'
        assert re.search(r" 7% 1:00:0\d(<12:2\d:\d\d)?( |$)", line), (columns, line)
    assert re.search(r"   7% 1:00:0\d<12:2\d:\d\d loading data$", bar_line(long_run, 80))
    ancient = datetime(1, 1, 1, tzinfo=UTC)
    far_off = Record(id="old", tool="run_backtest", state=JobState.RUNNING,
                     started_at=ancient,
                     progress=Progress(fraction=0.02, started_at=ancient, updated_at=now))
    assert left_s(far_off, now) == pytest.approx(49 * (now - ancient).total_seconds())
    assert "<" in bar_line(far_off, 200)


def test_wait_draws_a_bar_on_a_terminal_and_lines_elsewhere(root: Path,
                                                            env: dict[str, str]) -> None:
    drop(root, "barred")
    master, slave = open_pty()
    cwd = Path(env["SPOOL_DIR"]).parent
    on_tty = subprocess.Popen([*CLI, "wait", "barred", "--timeout", "60"], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=slave)
    piped = subprocess.Popen([*CLI, "submit", "echo", "--id", "piped", "--wait"], env=env,
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    spool = spool_of(root)
    claim = spool.claim("barred")
    assert claim is not None
    started = datetime.now(UTC) - timedelta(seconds=20)  # half way in 20 s: 20 s to go
    spool.mover.publish(spool.layout.progress_file("barred"), Progress(
        fraction=0.5, message="half way", started_at=started,
        updated_at=datetime.now(UTC)).model_dump_json().encode())
    seen = bytearray()
    read_until(master, b"half way", seen)
    spool.complete(claim, spool.record_of_claim(claim, JobState.DONE))
    deadline = time.monotonic() + 30
    while not (root / "pending" / "piped.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    finish(root, "piped", JobState.DONE, result={"message": None})
    out, _ = on_tty.communicate(timeout=30)
    read_until(master, b"\x00never", seen, deadline_s=1)
    os.close(master)
    piped_out, piped_err = piped.communicate(timeout=30)
    assert on_tty.returncode == 0 and b"state       done" in out
    assert b"\rbarred running [############............]  50%" in seen
    assert re.search(rb"  50% 0:(19|2[0-9])<0:(0[0-9]|1[0-9]|20) half way", seen), seen
    assert b"half way" in seen and seen.endswith(b"\r")  # the bar is cleared at the end
    assert piped.returncode == 0
    assert piped_out.decode().startswith("piped\n") and "state       done" in piped_out.decode()
    assert piped_err.decode().splitlines()[-1] == "piped: done" and b"\r" not in piped_err


# -- ls -------------------------------------------------------------------------------------


def test_ls_filters_pages_and_tables(root: Path, env: dict[str, str]) -> None:
    for i in range(7):  # j6 is the newest
        drop(root, f"j{i}", tool="sleep" if i % 2 == 0 else "echo", age_s=100 - i)
    finish(root, "j1", JobState.DONE)
    finish(root, "j3", JobState.FAILED)
    everything, done, sleeps, failed_echo, text, garbage = run_all(
        env, ["ls", "--json"], ["ls", "--state", "done", "--json"],
        ["ls", "--tool", "sleep", "--json"],
        ["ls", "--state", "failed", "--tool", "echo", "--json"], ["ls", "--limit", "3"],
        ["ls", "--cursor", "garbage"])
    assert [t["id"] for t in data(everything)["tasks"]] == [f"j{i}" for i in range(6, -1, -1)]
    assert data(everything)["next_cursor"] is None
    assert [t["id"] for t in data(done)["tasks"]] == ["j1"]
    assert [t["id"] for t in data(sleeps)["tasks"]] == ["j6", "j4", "j2", "j0"]
    failed = data(failed_echo)["tasks"]
    assert [t["id"] for t in failed] == ["j3"] and failed[0]["error"]["type"] == "tool_error"
    rows = text.stdout.splitlines()
    assert rows[0].split() == ["ID", "STATE", "TOOL", "SUBMITTED", "(UTC)", "TIME", "ERROR"]
    assert [r.split()[0] for r in rows[1:]] == ["j6", "j5", "j4"]
    assert "spoolq ls --limit 3 --cursor " in text.stderr
    refused(garbage, 2, "cursor")
    seen, cursor = [], None
    for _ in range(5):
        page = data(spoolq(env, "ls", "--limit", "4", "--json",
                           *(["--cursor", cursor] if cursor else [])))
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in data(everything)["tasks"]]


# -- cancel, retry, purge -------------------------------------------------------------------


def test_cancel_pending_at_once_and_running_by_request(root: Path, env: dict[str, str]) -> None:
    drop(root, "c1")
    drop(root, "finished")
    finish(root, "finished", JobState.DONE)
    record = data(spoolq(env, "cancel", "c1", "--json"))
    assert record["state"] == "failed" and record["error"]["type"] == "cancelled"
    assert files(root, "pending") == set()
    on_disk = orjson.loads((root / "failed" / "c1.json").read_bytes())
    assert on_disk["error"]["type"] == "cancelled"
    drop(root, "busy")
    claim = spool_of(root).claim("busy")  # running, with no processor to act on a request
    assert claim is not None
    try:
        again, unknown, done, running = run_all(
            env, ["cancel", "c1"], ["cancel", "nobody"], ["cancel", "finished"],
            ["cancel", "busy", "--timeout", "0.3", "--json"])
    finally:
        claim.close()
    refused(again, 1, "already finished")
    refused(unknown, 1, "no job nobody")
    refused(done, 1, "already finished")
    assert data(running)["state"] == "running" and (root / "cancel" / "busy").is_file()
    assert "no processor is running" in running.stderr


def test_cancel_waits_as_long_as_its_timeout_says(root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``cancel --timeout 7`` waits up to 7 s for a running job to stop, for one id and
    for several (one wait for all); the default (5 s) in its place went unseen.  The
    client's waits are spied on in process and cut short, so the test takes no 7 s."""
    from spool.client import Client  # noqa: PLC0415 - the class whose waits are spied on

    asked: list[float] = []
    cancel, outcome = Client.cancel, Client.cancel_outcome

    def spy_cancel(self: Client, job_id: str, wait_s: float = 0.0) -> Record:
        asked.append(wait_s)
        return cancel(self, job_id, wait_s=0.01)

    def spy_outcome(self: Client, ask: Any, deadline: float) -> Record:
        asked.append(round(deadline - time.monotonic()))
        return outcome(self, ask, time.monotonic() + 0.01)

    monkeypatch.setattr(Client, "cancel", spy_cancel)
    monkeypatch.setattr(Client, "cancel_outcome", spy_outcome)
    for job_id in ("one", "two", "three"):
        drop(root, job_id)
    claims = [spool_of(root).claim(job_id) for job_id in ("two", "three")]
    try:
        base = ["--spool-dir", str(root), "--fsync", "never", "cancel", "--timeout", "7"]
        assert spoolq_main([*base, "one", "--json"]) == 0
        assert spoolq_main([*base, "two", "three", "--json"]) == 0
    finally:
        for claim in claims:
            assert claim is not None
            claim.close()
    assert asked == [7.0, 7, 7]


def test_retry_moves_a_failed_job_back_with_attempts_reset(root: Path,
                                                           env: dict[str, str]) -> None:
    drop(root, "r1", max_attempts=2)
    finish(root, "r1", JobState.FAILED)
    drop(root, "ok")
    finish(root, "ok", JobState.DONE)
    assert orjson.loads((root / "failed" / "r1.json").read_bytes())["attempts"] == 1
    retried, done, unknown = run_all(env, ["retry", "r1", "--json"], ["retry", "ok"],
                                     ["retry", "nobody"])
    record = data(retried)
    assert (record["state"], record["attempts"]) == ("pending", 0)
    job = orjson.loads((root / "pending" / "r1.json").read_bytes())
    assert (job["attempts"], job["max_attempts"], job["error"]["type"]) == (0, 2, "tool_error")
    assert not (root / "failed" / "r1.json").exists()
    refused(done, 1, "job ok is done", "only failed jobs")
    refused(unknown, 1, "no job nobody")


def test_purge_removes_old_finished_records_only(root: Path, env: dict[str, str]) -> None:
    for job_id, state in (("d-old", JobState.DONE), ("d-new", JobState.DONE),
                          ("f-old", JobState.FAILED)):
        drop(root, job_id)
        finish(root, job_id, state)
    drop(root, "waiting", age_s=10 * 86_400)
    three_days_ago = time.time() - 3 * 86_400
    for path in (root / "done" / "d-old.json", root / "failed" / "f-old.json"):
        os.utime(path, (three_days_ago, three_days_ago))
    dry, bad, bare = run_all(env, ["purge", "--older-than", "2d", "--dry-run", "--json"],
                             ["purge", "--older-than", "soon"], ["purge", "--older-than", "7"])
    assert data(dry) == {"removed": 2, "kept": 1, "held": [], "unreadable": [],
                         "unremoved": [], "dry_run": True}
    refused(bad, 2, "not a duration")
    # 7 seconds to us, maybe 7 days to whoever typed it (find -mtime): a unit is required.
    refused(bare, 2, "--older-than", "'7' needs a unit", "7d")
    assert files(root, "done") == {"d-old.json", "d-new.json"}
    assert data(spoolq(env, "purge", "--older-than", "2d", "--state", "done", "--json")) == \
        {"removed": 1, "kept": 1, "held": [], "unreadable": [], "unremoved": [],
         "dry_run": False}
    assert files(root, "done") == {"d-new.json"} and files(root, "failed") == {"f-old.json"}
    text = spoolq(env, "purge", "--older-than", "48h")
    assert text.returncode == 0 and "removed 1 record(s)" in text.stdout
    assert files(root, "failed") == set() and files(root, "done") == {"d-new.json"}
    assert files(root, "pending") == {"waiting.json"}


def test_a_dry_run_purge_says_what_it_would_remove_not_that_it_did(
        root: Path, env: dict[str, str]) -> None:
    """Without --json a dry run's line must not read "removed" (an operator trying it
    first took it for done); it removes nothing."""
    drop(root, "old")
    finish(root, "old", JobState.DONE)
    three_days_ago = time.time() - 3 * 86_400
    os.utime(root / "done" / "old.json", (three_days_ago, three_days_ago))
    dry = spoolq(env, "purge", "--older-than", "2d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 1 record(s) older than 2d; kept 0"), dry.stdout
    assert files(root, "done") == {"old.json"}


@pytest.mark.parametrize(("given", "said"), [
    ("3m", "3m"), ("90s", "90s"), ("1.5h", "90m"), ("36h", "36h"), ("7d", "1w"),
    ("0.5s", "0.5s"), ("0s", "0s")])
def test_a_purge_says_its_age_as_given_not_rounded(given: str, said: str) -> None:
    """"older than 3.0m" for ``--older-than 3m`` (h386): the age in the largest unit it
    is a whole number of."""
    assert parse.duration_text(parse.age(given)) == said


# -- stats, tools, schema, data -------------------------------------------------------------


def _status(owner: str) -> OwnerStatus:
    now = datetime.now(UTC)
    return OwnerStatus(owner=owner, pid=os.getpid(), host="test", version="0", started_at=now,
                       heartbeat_at=now, job_num=4, busy_workers=1, tools=[{
                           "name": "echo", "category": "query", "execution_mode": "fast",
                           "execution_timeout": 10.0, "max_attempts": 1,
                           "description": "echo it",
                           "params_schema": {"properties": {"message": {}}}}])


def test_stats_and_tools_of_a_live_processor(root: Path, env: dict[str, str]) -> None:
    drop(root, "p1", age_s=30)
    drop(root, "d1")
    finish(root, "d1", JobState.DONE)
    layout = Layout(root)
    idle_stats, installed = run_all(env, ["stats", "--json"], ["tools", "--json"])
    stats = data(idle_stats)
    assert stats["counts"] == {"pending": 1, "running": 0, "done": 1, "failed": 0}
    assert stats["oldest_pending_age_s"] >= 0
    assert stats["processor"] == {"alive": False, "heartbeat_at": None, "count": 0,
                                  "io_trouble": 0}
    assert (stats["job_num"], stats["busy_workers"]) == (0, 0)
    tools = {t["name"]: t for t in data(installed)}
    assert tools["sleep"]["mode"] == "compute"
    assert "seconds" in tools["sleep"]["params_schema"]["properties"]
    assert "installed processor" in installed.stderr

    lease = OwnerLease(layout.owner_lock("proc-1"))
    try:
        spool_of(root).mover.publish(layout.owner_status("proc-1"),
                                     _status("proc-1").model_dump_json().encode())
        live_stats, live_tools, table = run_all(env, ["stats", "--json"], ["tools", "--json"],
                                                ["stats"])
    finally:
        lease.release()
    stats = data(live_stats)
    assert stats["processor"]["alive"] is True and stats["processor"]["count"] == 1
    assert (stats["job_num"], stats["busy_workers"]) == (4, 1)
    assert data(live_tools) == [{"name": "echo", "mode": "fast", "timeout": 10.0,
                                 "category": "query", "max_attempts": 1,
                                 "description": "echo it",
                                 "params_schema": {"properties": {"message": {}}}}]
    assert "running processor (proc-1)" in live_tools.stderr
    assert "processor up" in table.stdout and "1 busy of 4" in table.stdout


def test_tools_of_a_catalogue_with_odd_values_print_a_table(root: Path,
                                                           env: dict[str, str]) -> None:
    """A status file another writer left (or one edited) whose tool has no timeout, or one
    of the wrong type: ``spoolq tools`` failed formatting None as a number (exit 1,
    "unexpected TypeError ... a bug in spoolq").  What is absent prints as -."""
    layout = Layout(root)
    status = _status("proc-odd").model_copy(update={"tools": [
        {"name": "echo", "execution_timeout": "10", "params_schema": ["message"]},
        {"name": "sleep", "execution_mode": "compute"}]})
    lease = OwnerLease(layout.owner_lock("proc-odd"))
    try:
        spool_of(root).mover.publish(layout.owner_status("proc-odd"),
                                     status.model_dump_json().encode())
        text, as_json = run_all(env, ["tools"], ["tools", "--json"])
    finally:
        lease.release()
    assert text.returncode == 0, text.stderr
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines()[1:]}
    assert rows["echo"][:3] == ["echo", "-", "-"] and rows["sleep"][:3] == ["sleep",
                                                                           "compute", "-"]
    assert [t["timeout"] for t in data(as_json)] == [None, None]


def test_tools_cut_descriptions_on_a_terminal_only(root: Path, env: dict[str, str]) -> None:
    """Cut to fit a terminal's row; through a pipe (``| grep``) or into a file a
    description was cut as well, its end out of reach but for ``--json`` (h386)."""
    long = "Reads the tape and " + "does more " * 10 + "to the end"
    layout = Layout(root)
    status = _status("proc-long").model_copy(update={"tools": [
        {"name": "echo", "execution_mode": "fast", "description": long}]})
    lease = OwnerLease(layout.owner_lock("proc-long"))
    master, slave = open_pty()
    try:
        spool_of(root).mover.publish(layout.owner_status("proc-long"),
                                     status.model_dump_json().encode())
        piped = spoolq(env, "tools")
        on_tty = subprocess.Popen([*CLI, "tools"], env=env, cwd=Path(env["SPOOL_DIR"]).parent,
                                  stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        seen = bytearray()
        read_until(master, b"Reads the tape", seen)
        assert on_tty.wait(30) == 0
        read_until(master, b"\x00never", seen, deadline_s=0.5)
    finally:
        os.close(master)
        lease.release()
    assert piped.returncode == 0 and long in piped.stdout, piped.stdout
    row = next(line for line in seen.decode().splitlines() if "Reads the tape" in line)
    assert long not in row and row.rstrip().endswith("..."), row


def test_schema(root: Path, env: dict[str, str]) -> None:
    both, job, record = run_all(env, ["schema"], ["schema", "job"], ["schema", "record",
                                                                     "--json"])
    assert data(both) == {"job": data(job), "record": data(record)}
    assert data(job)["required"] == ["tool"]
    assert {"id", "state", "result", "error"} <= set(data(record)["properties"])
    # A job's times may be epoch seconds (DESIGN section 9): the published schema said
    # only "string, date-time", so a client validating with it refused what we take.
    validator = jsonschema.Draft202012Validator(data(job))
    for when in (1_764_000_000, 1_764_000_000.5, "2026-11-28T12:00:00Z", None):
        for field in ("not_before", "submitted_at"):
            validator.validate({"tool": "echo", field: when})
            Job.model_validate({"tool": "echo", field: when})
    assert not validator.is_valid({"tool": "echo", "not_before": [1]})
    # ... and the same epoch numbers: the schema took 1e20, the model refuses it.
    for when in (EPOCH_FIRST_S, EPOCH_END_S - 0.5, EPOCH_FIRST_S - 0.5, EPOCH_END_S, 1e20):
        taken = validator.is_valid({"tool": "echo", "not_before": when})
        try:
            Job.model_validate({"tool": "echo", "not_before": when})
        except ValidationError:
            assert not taken, when
        else:
            assert taken, when


def test_data_synth_writes_seeded_csv(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = data(spoolq(env, "data", "synth", "--symbols", "3", "--bars", "40", "--seed",
                         "1", "--data-dir", str(out), "--json"))
    assert report == {"data_dir": str(out), "symbols": 3, "bars": 40, "seed": 1}
    csvs = sorted(out.glob("*.csv"))
    assert len(csvs) == 3 and all(len(p.read_text().splitlines()) == 41 for p in csvs)


# -- README and CI --------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = readme.split("```sh\n")[1:]
    commands = [b.split("\n```")[0].strip() for b in blocks]
    test_command = next(c for c in commands if "pytest" in c)
    ci = REPO / ".ci" / "run"
    lines = ci.read_text().splitlines()
    assert test_command in lines and lines[-1] == test_command
    assert "set -euo pipefail" in lines and os.access(ci, os.X_OK)


def test_readme_exit_codes_name_every_code_the_cli_returns() -> None:
    """The README's exit-code list is what a script reads to handle spoolq: a Ctrl-C
    (130) and a reader gone (141, ``| head``) are codes every command can return
    (spool.cli.main, spool.stdio), and were missing from it."""
    from spool.cli.main import EXIT_INTERRUPTED  # noqa: PLC0415 - only this test
    from spool.stdio import EXIT_BROKEN_PIPE  # noqa: PLC0415 - only this test

    readme = (REPO / "README.md").read_text()
    paragraph = readme[readme.index("Exit codes:"):].split("\n\n")[0]
    assert "An error is one" in paragraph
    codes = paragraph[:paragraph.index("An error is one")]
    for code in (0, 1, 2, 3, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE):
        assert re.search(rf"\b{code}\b", codes), f"exit {code} not in: {codes}"


def test_a_missing_default_spool_says_spool_dir_is_not_set(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """With SPOOL_DIR not exported (a new shell) the error named ~/.local/state/spoolq and
    said "run 'spoolq init'": followed, that made a second, empty spool beside the one
    the user meant.  The line says the path is the default because SPOOL_DIR is unset;
    a SPOOL_DIR or --spool-dir that names a missing spool is said as before."""
    home = tmp_path / "home"
    home.mkdir()
    unset = {k: v for k, v in env.items() if k != "SPOOL_DIR"} | {"HOME": str(home)}
    proc = subprocess.run([*CLI, "ls"], env=unset, cwd=home, capture_output=True,
                          text=True, timeout=60, check=False)
    refused(proc, 1, str(home / ".local/state/spoolq"), "SPOOL_DIR is not set")
    for given in (spoolq(env, "ls"), spoolq(unset | {"SPOOL_DIR": env["SPOOL_DIR"]}, "ls"),
                  subprocess.run([*CLI, "ls", "--spool-dir", env["SPOOL_DIR"]], env=unset,
                                 cwd=home, capture_output=True, text=True, timeout=60,
                                 check=False)):
        refused(given, 1, env["SPOOL_DIR"], "is not an initialised spool")
        assert "SPOOL_DIR is not set" not in given.stderr


def test_a_missing_spool_other_than_the_default_is_not_said_to_be_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """SPOOL_DIR unset, the note "that is its default" was added to any spool that is not
    one, whatever its path: the demo's own temporary spool, gone under it (a tmp cleaner),
    was said to be SPOOL_DIR's default (QA h378).  The note is for the default's path
    only, a symlink on the way to it (HOME through a link) the same path."""
    from spool.cli import demo  # noqa: PLC0415 - only this test

    real = tmp_path / "real-home"
    real.mkdir()
    (tmp_path / "home").symlink_to(real)
    monkeypatch.delenv("SPOOL_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(real)  # no .env
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(demo, "_synth", lambda *_: None)

    def start_and_lose_the_spool(_daemons: Any, root: Path, *_: Any) -> int:
        for folder in root.iterdir():
            if folder.is_dir():
                folder.rmdir()
        return 1

    monkeypatch.setattr(demo, "_start_daemons", start_and_lose_the_spool)
    assert spoolq_main(["demo", "--symbols", "3", "--bars", "50"]) == 1
    err = capsys.readouterr().err
    assert "spoolq-demo-" in err and "is not an initialised spool" in err, err
    assert "SPOOL_DIR is not set" not in err, err
    assert spoolq_main(["ls"]) == 1  # the default, through the link: said so
    err = capsys.readouterr().err
    assert "is not an initialised spool" in err and "SPOOL_DIR is not set" in err, err


def test_tools_says_what_the_running_processors_catalogues_disagree_on(
        root: Path, env: dict[str, str]) -> None:
    """Two processors with different tools (a rolling upgrade's mixed SPOOL_TOOLS) or
    params: the merged list alone said nothing of it (h394).  A note on stderr names each
    tool some do not offer, and each whose params differ; stdout stays the list."""
    layout = Layout(root)
    sleep = {"name": "sleep", "execution_mode": "compute",
             "params_schema": {"properties": {"seconds": {}}}}
    first = _status("proc-a").model_copy(update={"tools": [*_status("x").tools, sleep]})
    second = _status("proc-b").model_copy(update={"tools": [
        {**_status("x").tools[0], "params_schema": {"properties": {"text": {}}}}]})
    leases = [OwnerLease(layout.owner_lock(s.owner)) for s in (first, second)]
    try:
        for status in (first, second):
            spool_of(root).mover.publish(layout.owner_status(status.owner),
                                         status.model_dump_json().encode())
        text, as_json = run_all(env, ["tools"], ["tools", "--json"])
        # The one that offers it stopping: named so, as the others leave it no job (h398).
        spool_of(root).mover.publish(layout.owner_status("proc-a"), first.model_copy(
            update={"stopping": True}).model_dump_json().encode())
        [stopping] = run_all(env, ["tools"])
    finally:
        for lease in leases:
            lease.release()
    assert "sleep: offered by proc-a (stopping) only, of the 2 running processors" \
        in stopping.stderr, stopping.stderr
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr
    assert [t["name"] for t in data(as_json)] == ["echo", "sleep"]
    for result in (text, as_json):
        assert "sleep: offered by proc-a only, of the 2 running processors" in result.stderr
        assert "echo: the running processors take different params (shown: proc-a's)" \
            in result.stderr


def test_stats_says_a_local_pool_whose_workers_cannot_start(root: Path,
                                                           env: dict[str, str]) -> None:
    """A local processor whose workers cannot start (its SPOOL_TOOLS module removed
    since it started) publishes ``compute_room`` 0: ``spoolq stats`` says so as such, not
    as a Dask cluster's lack (h394)."""
    layout = Layout(root)
    status = _status("proc-local").model_copy(update={"compute_room": 0})
    lease = OwnerLease(layout.owner_lock("proc-local"))
    try:
        spool_of(root).mover.publish(layout.owner_status("proc-local"),
                                     status.model_dump_json().encode())
        [shown] = run_all(env, ["stats"])
    finally:
        lease.release()
    assert shown.returncode == 0, shown.stderr
    assert "room for 0 now: workers cannot start" in shown.stdout
    assert "Dask" not in shown.stdout
