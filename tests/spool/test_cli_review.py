"""``spoolq`` as a demanding ops user drives it: hostile arguments, settings and spools.

Each test runs the real CLI (``python -m spool.cli.main``) as a subprocess on a
real spool and checks what a script would: exit codes, that stdout holds data
only (JSON that parses, with ``--json``), and that every error is one
``spoolq: error:`` line on stderr, never a traceback nor a "bug in spoolq".
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import resource
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from spoolkit import CLI, LOAD_SPOOL, NOBODY, needs_root, read_until, strace_path
from spoolkit import BytesProc as Proc
from spoolkit import refused_bytes as refused
from spoolkit import spoolq_bytes as spoolq

from spool.cli import parse
from spool.cli.overview import _page_limit, not_counted, stats_lines
from spool.cli.render import (
    cells,
    human_duration,
    printable,
    record_lines,
    record_row,
    when,
)
from spool.cursor import MAX_PAGE
from spool.errors import ErrorType
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import ErrorInfo, Job, Record, Source, record_bytes
from spool.settings import FsyncMode
from spool.states import JobState

Arg = str | bytes


def data(proc: Proc) -> Any:
    assert proc.returncode == 0, (proc.args, proc.stderr)
    return orjson.loads(proc.stdout)


def pending(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "pending").iterdir())


# -- arguments ------------------------------------------------------------------------------


def test_arguments_that_are_not_utf8_are_usage_errors(root: Path,
                                                      env: dict[str, str]) -> None:
    """Such bytes cannot be JSON: refused before a job is built, not a crash."""
    refused(spoolq(env, "submit", "echo", "-p", b"message=\xff"), 2, "-p", "UTF-8")
    refused(spoolq(env, "submit", "echo", "-p", b"\xff=1"), 2, "-p", "UTF-8")
    refused(spoolq(env, "submit", b"ec\xffho", "--json"), 2, "UTF-8")
    assert pending(root) == []


def test_durations_past_any_clock_are_usage_errors(root: Path, env: dict[str, str]) -> None:
    """400 digits is a float's infinity: purge overflowed, a timeout of inf became none."""
    huge = "9" * 400
    refused(spoolq(env, "purge", "--older-than", f"{huge}d", "--json"), 2, "--older-than",
            "too large")
    refused(spoolq(env, "submit", "echo", "--timeout", huge), 2, "--timeout", "too large")
    refused(spoolq(env, "wait", "x", "--timeout", f"{huge}s"), 2, "--timeout", "too large")
    assert pending(root) == []


@pytest.mark.parametrize("levels", [230, 300])
def test_a_job_nested_deeper_than_intake_takes_is_refused(root: Path, env: dict[str, str],
                                                          levels: int) -> None:
    """With ``--params``, 230 levels was accepted (exit 0), then quarantined by intake;
    300 could not even be written (orjson stops at 254)."""
    params = orjson.dumps({"x": "[" * levels + "]" * levels}).decode()
    deep = params.replace('"[', "[").replace(']"', "]")
    refused(spoolq(env, "submit", "echo", "--params", deep), 1, "nested more than 200")
    job = root.parent / "deep.json"
    job.write_text('{"tool": "echo", "params": ' + deep + "}")
    refused(spoolq(env, "submit", "--file", str(job)), 1, "not a valid job")
    assert pending(root) == []


def test_a_huge_job_file_is_refused_unread(tmp_path: Path, root: Path,
                                           env: dict[str, str]) -> None:
    """``submit --file`` read the whole file before anything else: ``/dev/zero`` or a
    mistaken multi-gigabyte export used up the memory (here: 512 MiB of address space)."""
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as fh:
        fh.truncate(2 << 30)  # sparse: 2 GiB of zeros that take no disk
    capped = subprocess.run(
        [*CLI, "submit", "--file", str(huge)], env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20)))
    refused(capped, 1, "huge.json is too large", "SPOOL_MAX_JOB_BYTES")
    assert pending(root) == []


# -- wait -----------------------------------------------------------------------------------


def test_ctrl_c_during_wait_names_the_job_that_goes_on(root: Path, env: dict[str, str]) -> None:
    """On a terminal the bar is cleared at the end: after ``submit --wait --json`` nothing
    showed the id of the job just submitted, and nothing said it still runs."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen([*CLI, "submit", "echo", "--id", "ctrlc", "--wait", "--json"],
                            env=env, cwd=root.parent, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, b"ctrlc pending", seen)  # the bar is up: it is waiting
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        read_until(master, b"\x00never", seen, deadline_s=1)
    finally:
        os.close(master)
        if proc.poll() is None:  # the test failed before the wait ended: not left to run
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and out == b""
    shown = seen.decode().replace("\r\n", "\n").rsplit("\r", 1)[-1]  # after the bar
    assert shown.startswith("spoolq: interrupted: stopped waiting for job ctrlc "
                            "(last seen pending)"), seen
    assert "Traceback" not in seen.decode()
    assert pending(root) == ["ctrlc.json"]  # the job goes on


# -- standard streams -----------------------------------------------------------------------


def closed(stream: str, *args: Arg) -> list[Arg]:
    """The CLI run with a standard stream closed, as ``spoolq ... >&-`` (``2>&-``) runs it."""
    return ["sh", "-c", f'exec "$@" {stream}>&-', "sh", *CLI, *args]


def run(env: dict[str, str], argv: list[Arg]) -> Proc:
    return subprocess.run(argv, env=env, cwd=Path(env["SPOOL_DIR"]).parent,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)


def test_a_closed_stdout_is_refused_before_anything_is_done(root: Path,
                                                             env: dict[str, str]) -> None:
    """Python's print drops text for a closed stdout without a word: submit exited 0 and the
    id of the job it dropped went nowhere; --json crashed as 'a bug in spoolq'."""
    for args in (["submit", "echo"], ["submit", "echo", "--json"], ["ls"], ["ls", "--json"]):
        refused(run(env, closed("1", *args)), 1, "standard output is closed")
    assert pending(root) == []
    (root / "pending" / "quiet.json").write_bytes(b'{"tool": "echo"}')
    waited = run(env, closed("1", "wait", "quiet", "--timeout", "0.2", "-q"))
    assert (waited.returncode, waited.stderr) == (3, b"")  # -q prints nothing: it may run


def test_a_closed_stdout_is_a_usage_error_for_a_wait(root: Path, env: dict[str, str]
                                                     ) -> None:
    """``spoolq wait ID >&-`` exited 1, which to a script says the job failed, for a job
    that had not even started; ``submit --wait`` likewise, before submitting."""
    (root / "pending" / "waited.json").write_bytes(b'{"tool": "echo"}')
    for args in (["wait", "waited", "--timeout", "0.2"], ["submit", "echo", "--wait"]):
        refused(run(env, closed("1", *args)), 2, "standard output is closed", "--quiet")
    assert pending(root) == ["waited.json"]


def test_a_closed_stdout_refuses_a_quiet_submit_wait_before_submitting(
        root: Path, env: dict[str, str]) -> None:
    """``submit --wait --quiet`` still prints the id, but its --quiet let it past the
    closed-stdout check: the job was dropped, then the id's print failed as 'unexpected
    AttributeError (a bug in spoolq)', exit 1 (the job failed, to a script, which
    submitted it again), and nothing was waited for."""
    for args in (["submit", "echo", "--wait", "--quiet"],
                 ["submit", "echo", "--wait", "-q", "--json", "--any-tool"]):
        refused(run(env, closed("1", *args)), 2, "standard output is closed",
                "nothing was submitted")
    assert pending(root) == []


def test_a_closed_stderr_keeps_errors_out_of_stdout(root: Path, env: dict[str, str]) -> None:
    """``print(file=None)`` writes to stdout: the error line became a script's data."""
    proc = run(env, closed("2", "show", "nosuch", "--json"))
    assert (proc.returncode, proc.stdout) == (1, b"")
    shown = run(env, closed("2", "ls", "--json"))
    assert data(shown) == {"tasks": [], "next_cursor": None}


def test_help_and_usage_errors_keep_their_codes_with_stderr_closed(env: dict[str, str]
                                                                    ) -> None:
    """Flushing the streams after argparse exits touched a closed (None) stderr: --help
    exited 1, not 0, and a usage error 1, not 2 (an AttributeError past main)."""
    helped = run(env, closed("2", "--help"))
    assert helped.returncode == 0 and b"usage: spoolq" in helped.stdout
    assert run(env, closed("2", "ls", "--no-such-option")).returncode == 2


# -- retry ----------------------------------------------------------------------------------


def test_retry_answers_with_the_job_as_it_now_stands(root: Path, env: dict[str, str]) -> None:
    """It answered with the failed run's start, duration, host and backoff on a pending job,
    fields ``show`` a moment later did not have."""
    now = datetime.now(UTC)
    (root / "failed" / "again.json").write_bytes(record_bytes(Record(
        id="again", state=JobState.FAILED, tool="sleep", params={"seconds": 1},
        max_attempts=3, attempts=2, submitted_at=now - timedelta(minutes=5),
        not_before=now - timedelta(minutes=1), started_at=now - timedelta(seconds=30),
        finished_at=now - timedelta(seconds=20), duration_s=10.0, host="old", pid=4242,
        error=ErrorInfo(type=ErrorType.TIMEOUT, message="killed after 10 s"))))
    retried = data(spoolq(env, "retry", "again", "--json"))
    assert retried == data(spoolq(env, "show", "again", "--json"))
    assert (retried["state"], retried["attempts"], retried["max_attempts"]) == ("pending", 0, 3)
    assert retried["error"]["type"] == "timeout"  # the last error goes with it (DESIGN 9)
    for gone in ("started_at", "finished_at", "duration_s", "host", "pid", "not_before"):
        assert retried.get(gone) is None, gone


def test_a_retry_keeps_a_schedule_still_ahead(root: Path, env: dict[str, str]) -> None:
    """A job meant for later, cancelled while it waited, lost its not_before on a retry and
    ran at once (a backoff that has run out is still dropped, above)."""
    later = datetime.now(UTC) + timedelta(days=30)
    submitted = spoolq(env, "submit", "echo", "--id", "later", "--not-before",
                       later.isoformat())
    assert submitted.returncode == 0, submitted.stderr
    assert spoolq(env, "cancel", "later").returncode == 0
    retried = data(spoolq(env, "retry", "later", "--json"))
    assert retried["state"] == "pending"
    assert datetime.fromisoformat(retried["not_before"]) == later


# -- what a terminal is shown ---------------------------------------------------------------


ESC = "\x1b"
TOOL = f"ec{ESC}[31mho\nforged  done"
NAME = f"{ESC}]0;pwned\x07.json"


def test_hostile_strings_reach_the_terminal_as_escapes(root: Path,
                                                      env: dict[str, str]) -> None:
    """Whoever can write to pending/ chose these strings: a tool name with an escape
    sequence and a newline forged a row of ``ls`` and recoloured the terminal."""
    (root / "pending" / "esc.json").write_bytes(orjson.dumps(
        {"tool": TOOL, "params": {"message": "\u009b2J"}}))
    quarantined = Record(id="quar", state=JobState.FAILED, source=Source(name=NAME, size=3),
                         error=ErrorInfo(type=ErrorType.INVALID_JOB,
                                         message=f"bad name {NAME}\nstate       done"))
    (root / "failed" / "quar.json").write_bytes(record_bytes(quarantined))
    listed, shown, showq = (spoolq(env, *args) for args in
                            (["ls"], ["show", "esc"], ["show", "quar"]))
    for proc in (listed, shown, showq):
        assert proc.returncode == 0, proc.stderr
        assert b"\x1b" not in proc.stdout and b"\xc2\x9b" not in proc.stdout, proc.stdout
    rows = listed.stdout.decode().splitlines()
    assert len(rows) == 3 and rows[1].startswith("esc ") and "\\x1b[31m" in rows[1], rows
    assert "forged" in rows[1] and "\\n" in rows[1]
    assert "tool        ec\\x1b[31mho\\nforged  done" in shown.stdout.decode()
    assert not any(line.startswith("state       done")
                   for line in showq.stdout.decode().splitlines())
    assert ESC not in refused(spoolq(env, "retry", "quar"), 1, "quarantined")
    assert data(spoolq(env, "show", "esc", "--json"))["tool"] == TOOL  # data stays as it is


def test_paths_with_escapes_reach_the_terminal_escaped(tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    """``init``, ``data synth`` and the notes printed paths raw: an escape in
    ``SPOOL_DIR`` recoloured the terminal (h401)."""
    where = str(tmp_path / "sp\x1b[31mool")
    said = [spoolq(env, "--spool-dir", where, *args) for args in (
        ["init"], ["data", "synth", "--symbols", "2", "--bars", "30"],
        ["--spool-dir", where + "\x1b[0m", "stats"])]
    assert [proc.returncode for proc in said] == [0, 0, 1], [p.stderr for p in said]
    for proc in said:
        assert b"\x1b" not in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert said[0].stdout.decode() == f"spool ready at {tmp_path}/sp\\x1b[31mool\n"
    assert said[1].stdout.decode().endswith(f" to {tmp_path}/sp\\x1b[31mool/data\n")
    assert b"sp\\x1b[31mool\\x1b[0m" in said[2].stderr, said[2].stderr


def test_init_json_of_a_path_that_is_not_utf8(tmp_path: Path, env: dict[str, str]) -> None:
    """JSON cannot hold such bytes: orjson refused them and spoolq called it a bug."""
    where = os.fsencode(tmp_path) + b"/sp\xffool"
    made = data(spoolq(env, "--spool-dir", where, "init", "--json"))
    assert made["spool"] == f"{tmp_path}/sp\\xffool"
    assert os.path.isdir(where + b"/pending")


# -- demo, data -----------------------------------------------------------------------------


def test_demo_and_data_refuse_impossible_numbers_before_doing_anything(
        tmp_path: Path, env: dict[str, str]) -> None:
    """They made data, started daemons, and then failed with exit 1.  A negative
    ``--seed`` (numpy's seeds are 0 or more) made the spool, then failed with exit 1 and
    "['ValueError: expected non-negative integer']"."""
    for args in (["--symbols", "0"], ["--bars", "-1"], ["--port", "70000"],
                 ["--job-num", "0"], ["--seed", "-1"]):
        demo = tmp_path / "demo"
        refused(spoolq(env, "demo", *args, "--spool-dir", str(demo)), 2, args[0])
        assert not demo.exists()
    for args in (["--symbols", "-1"], ["--bars", "0"], ["--seed", "-1"]):
        refused(spoolq(env, "data", "synth", *args, "--data-dir", str(tmp_path / "d")), 2,
                args[0])
    assert not (tmp_path / "d").exists()


def test_demo_data_that_cannot_be_made_is_said_in_a_plain_line(
        tmp_path: Path, env: dict[str, str]) -> None:
    """The line gave the synth's last stderr line as a Python list:
    "making demo data failed: [\"FileExistsError: ...\"]"; and the step's line on stdout
    was left open, so on a terminal the error line ran on from "making ... ..."."""
    demo = tmp_path / "demo"
    # The demo makes a spool of its own (a folder with anything in it is refused), so the
    # synth fails by a stand-in on PYTHONPATH that raises what it met there before (the
    # data folder's name taken by a file).
    shadow = tmp_path / "shadow" / "processor" / "quant"
    shadow.mkdir(parents=True)
    for package in (shadow.parent, shadow):
        (package / "__init__.py").write_text("")
    (shadow / "synth.py").write_text(
        f"raise FileExistsError(17, 'File exists', {str(demo / 'data')!r})\n")
    env = {**env, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "shadow"), *filter(None, [env.get("PYTHONPATH")])])}
    proc = spoolq(env, "demo", "--symbols", "2", "--bars", "30", "--spool-dir", str(demo))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.splitlines() == [f"spoolq: error: making demo data failed: FileExistsError: "
                                f"[Errno 17] File exists: '{demo / 'data'}'"], err
    assert proc.stdout.decode().endswith(" daily bars ... failed\n"), proc.stdout


def test_demo_json_is_one_document_on_stdout(tmp_path: Path, env: dict[str, str]) -> None:
    """The narration ('spool ...', 'started ...', bars, 'stopped ...') was on stdout
    with the records, as one JSON line each."""
    demo = tmp_path / "demo"
    proc = spoolq(env, "demo", "--json", "--symbols", "3", "--bars", "300", "--job-num", "1",
                  "--spool-dir", str(demo))
    report = data(proc)
    assert report["spool"] == str(demo)
    assert report["dashboard"].startswith("http://127.0.0.1:")
    assert [(r["tool"], r["state"]) for r in report["records"]] == [
        ("run_backtest", "done"), ("analyze_factor", "done")]
    assert sorted(report["records"][0]["result"]["symbols"]) == ["S0000", "S0001", "S0002"]
    err = proc.stderr.decode()
    assert "stopped    spool-processor (exit 0)" in err
    assert "stopped    spool-statusd (exit 0)" in err


# -- settings -------------------------------------------------------------------------------


def test_empty_spool_dir_is_refused_and_empty_data_dir_is_the_default(
        tmp_path: Path, env: dict[str, str]) -> None:
    """``Path("")`` is the current directory: ``SPOOL_DIR= spoolq init`` built a spool in
    whatever folder it ran in (``/`` for a unit), SPOOL_DATA_DIR= put data there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    refused(spoolq({**env, "SPOOL_DIR": ""}, "init", cwd=cwd), 2, "SPOOL_DIR", "empty")
    refused(spoolq(env, "--spool-dir", "", "init", "--json", cwd=cwd), 2, "empty")
    made = data(spoolq({**env, "SPOOL_DATA_DIR": ""}, "data", "synth", "--symbols", "1",
                       "--bars", "30", "--json", cwd=cwd))
    assert made["data_dir"] == str(Path(env["SPOOL_DIR"]) / "data")
    assert list(cwd.iterdir()) == []


def test_a_dotenv_that_is_not_utf8_is_a_bad_setting(tmp_path: Path, root: Path,
                                                    env: dict[str, str]) -> None:
    (tmp_path / ".env").write_bytes(b"JOB_NUM=\xff\n")
    refused(spoolq(env, "stats", "--json", cwd=tmp_path), 2, ".env", "UTF-8")


def test_integers_are_kept_exact_or_refused(root: Path, env: dict[str, str],
                                            tmp_path: Path) -> None:
    """``-p n=100000000000000000000000`` dropped ``{"n": 1e+23}``, a float (the spool's
    JSON reads an integer past 64 bits as one), as did --params and --meta; --file with
    such a number was "unexpected TypeError ... (a bug in spoolq)"; ``-p n=1e400``
    dropped the string "1e400".  Integers that fit 64 bits are kept exact; numbers the
    spool's JSON cannot hold are refused, naming the value."""
    big = "100000000000000000000000"
    edge = data(spoolq(env, "submit", "echo", "-p", "n=18446744073709551615", "--json",
                       "--params", '{"m": -9223372036854775808}'))["id"]
    assert orjson.loads((root / "pending" / f"{edge}.json").read_bytes())["params"] == \
        {"n": 2**64 - 1, "m": -(2**63)}
    refused(spoolq(env, "submit", "echo", "-p", f"n={big}"), 2, "-p", big, "64 bits")
    refused(spoolq(env, "submit", "echo", "-p", "n=1e400"), 2, "-p", "1e400", "out of range")
    refused(spoolq(env, "submit", "echo", "--params", f'{{"n": [1, {big}]}}'), 2,
            "--params", big)
    refused(spoolq(env, "submit", "echo", "--meta", f'{{"n": -{big}}}'), 2, "--meta", big)
    job_file = tmp_path / "big.json"
    job_file.write_text(f'{{"tool": "echo", "params": {{"n": {big}}}}}')
    refused(spoolq(env, "submit", "--file", str(job_file)), 1, str(job_file), big, "64 bits")
    assert pending(root) == [f"{edge}.json"]


def test_a_value_nested_past_the_stack_is_no_traceback(root: Path, env: dict[str, str]) -> None:
    """The check for inexact numbers parses with the json module, which recursed out of
    the stack on a value 1,500 levels deep: -p and --params printed a raw traceback."""
    deep = "[" * 1500 + "]" * 1500
    kept = spoolq(env, "submit", "echo", "-p", f"message={deep}", "--json")
    assert kept.returncode == 0 and b"Traceback" not in kept.stderr, kept.stderr
    job_id = data(kept)["id"]  # not JSON to orjson (1,024 levels at most): the string
    assert orjson.loads((root / "pending" / f"{job_id}.json").read_bytes())["params"] == \
        {"message": deep}
    refused(spoolq(env, "submit", "echo", "--params", f'{{"m": {deep}}}'), 2, "--params")
    assert pending(root) == [f"{job_id}.json"]


def test_not_before_takes_lowercase_t_and_z_as_a_job_file_does(root: Path,
                                                               env: dict[str, str]) -> None:
    """``--not-before 2026-12-01t00:00:00z`` was 'not a timestamp' (exit 2), though RFC
    3339 allows lowercase t and z and a job file's not_before takes them."""
    for text in ("2026-12-01t00:00:00z", "2026-12-01T00:00:00z", "2026-12-01t00:00:00+00:00"):
        job_id = data(spoolq(env, "submit", "echo", "--not-before", text, "--json"))["id"]
        job = orjson.loads((root / "pending" / f"{job_id}.json").read_bytes())
        assert job["not_before"] == "2026-12-01T00:00:00Z", text
    refused(spoolq(env, "submit", "echo", "--not-before", "2026-12-01t00:00:00"), 2,
            "UTC offset")


# -- a spool this user may not use ----------------------------------------------------------


# The CLI as another user: imported first (the interpreter may sit where that user cannot
# read, as under /root), then the credentials are dropped, then ``main`` runs.
AS_NOBODY = (LOAD_SPOOL + "import os, sys\nfrom spool.cli.main import main\n"
             "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
             "os.setgroups([gid]); os.setgid(gid); os.setuid(uid)\n"
             "sys.exit(main(sys.argv[3:]))")


@needs_root
def test_a_spool_this_user_cannot_use_says_permission_denied(open_dir: Path) -> None:
    """The root-owned spool's folders are 0750: a submit said 'cannot remove <name>.tmp'
    (the clean-up of a file it never made), a retry 'is not a regular file'."""
    assert NOBODY is not None
    spool = open_dir / "spool"
    Mover(Layout(spool), FsyncMode.NEVER).make_folders()
    (spool / "failed" / "gone.json").write_bytes(record_bytes(Record(
        id="gone", state=JobState.FAILED, tool="echo",
        error=ErrorInfo(type=ErrorType.TOOL_ERROR, message="it broke"))))
    env = {**os.environ, "SPOOL_DIR": str(spool), "SPOOL_FSYNC": "never"}
    argv = [sys.executable, "-c", AS_NOBODY, *map(str, NOBODY)]
    submitted = run(env, [*argv, "submit", "echo", "--json"])
    line = refused(submitted, 1, "write to tmp/", "which this user may not")
    assert "cannot remove" not in line
    refused(run(env, [*argv, "retry", "gone"]), 1, "write to failed/", "which this user may not")
    assert (spool / "failed" / "gone.json").exists() and pending(spool) == []


def test_a_spool_root_that_is_a_file(tmp_path: Path, env: dict[str, str]) -> None:
    """'run spoolq init' was the advice, and init fails on a file."""
    (tmp_path / "afile").write_bytes(b"x")
    for args in (["ls"], ["stats", "--json"], ["submit", "echo"], ["show", "x"]):
        line = refused(spoolq({**env, "SPOOL_DIR": str(tmp_path / "afile")}, *args), 1,
                       "is not a directory")
        assert "spoolq init" not in line


def test_cancel_of_a_pending_job_does_not_load_numpy(root: Path, env: dict[str, str]) -> None:
    """Writing a record with an ``error`` made orjson look for numpy types before calling
    its ``default`` for the nested model: ``spoolq cancel`` spent 0.1 s importing numpy."""
    submitted = spoolq(env, "submit", "echo", "-p", "message=hi")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.decode().strip()
    probe = ("import sys\nfrom spool.cli.main import main\n"
             f"code = main(['cancel', {job_id!r}])\n"
             "print('numpy loaded' if 'numpy' in sys.modules else 'numpy not loaded', code)")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          timeout=60, check=False)
    assert proc.stdout.decode().splitlines()[-1] == "numpy not loaded 0", proc
    record = data(spoolq(env, "show", job_id, "--json"))
    assert (record["state"], record["error"]["type"]) == ("failed", "cancelled"), record


def test_stats_says_when_no_pending_job_is_due_and_counts_no_workers_without_a_processor(
        root: Path, env: dict[str, str]) -> None:
    """A job meant for 2030 read as "oldest waiting 4 s", like one stuck; with no processor
    the table still said "workers 0 busy of 0 (JOB_NUM)"."""
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert spoolq(env, "submit", "echo", "--id", "later", "--not-before", later).returncode == 0
    table = spoolq(env, "stats")
    assert table.returncode == 0, table.stderr
    text = table.stdout.decode()
    first = text.splitlines()[0]
    assert first.startswith("pending   1  (oldest waiting ") and first.endswith(
        ", none due yet)"), first
    assert "processor down" in text and "busy of" not in text, text
    assert spoolq(env, "submit", "echo", "--id", "now").returncode == 0
    assert b"none due yet" not in spoolq(env, "stats").stdout.splitlines()[0]


def test_stats_names_the_oldest_due_wait_only_apart_from_the_oldest() -> None:
    """The oldest job is most often the oldest due one too, its two ages a rounding
    apart: ``; oldest due for`` is said only when another job's wait is shorter by more
    than a second (a job meant for later is the oldest), not beside the same wait."""
    def first_line(oldest: float, due: float) -> str:
        return stats_lines({
            "counts": {"pending": 2}, "oldest_pending_age_s": oldest,
            "oldest_due_pending_age_s": due, "processor": {"alive": False},
            "throughput": {"done_last_60s": 0, "failed_last_60s": 0}})[0]

    assert "oldest due" not in first_line(300.0, 299.4), first_line(300.0, 299.4)
    assert "; oldest due for " in first_line(300.0, 120.0), first_line(300.0, 120.0)


def test_stats_nulls_what_a_folder_not_looked_into_would_tell() -> None:
    """A state folder this user may not look into is not counted: its count, the total
    and (for done/ and failed/) its throughput are null, never a 0 that reads as "none
    finished", and the table says '?'.  The throughput was left 0 and no test saw it."""
    def counted() -> dict[str, Any]:
        return {"counts": {"pending": 2, "running": 0, "done": 0, "failed": 0}, "total": 2,
                "oldest_pending_age_s": 5.0, "oldest_due_pending_age_s": 5.0,
                "processor": {"alive": False},
                "throughput": {"done_last_60s": 0, "failed_last_60s": 0}}

    blind_done = counted()
    not_counted(blind_done, [JobState.DONE])
    assert blind_done["counts"]["done"] is None and blind_done["total"] is None
    assert blind_done["throughput"] == {"done_last_60s": None, "failed_last_60s": 0}
    assert blind_done["oldest_pending_age_s"] == 5.0 and blind_done["not_counted"] == ["done"]
    assert stats_lines(blind_done)[-1] == "last 60 s ? done, 0 failed"
    blind_pending = counted()
    not_counted(blind_pending, [JobState.PENDING])
    assert blind_pending["throughput"] == {"done_last_60s": 0, "failed_last_60s": 0}
    assert blind_pending["oldest_pending_age_s"] is None
    assert blind_pending["oldest_due_pending_age_s"] is None
    assert blind_pending["in_progress_drops"] is None  # not known, never "none"


def test_stats_tell_of_uploads_left_under_an_in_progress_name(
        root: Path, env: dict[str, str]) -> None:
    """An upload cut off (``report.json.filepart``) stays in pending/, ignored, and its
    job never arrives; nothing failed, so ``spoolq stats`` said nothing (h388).  It counts
    such regular files (not spoolq's own kept names, symlinks or directories) and says
    how long the stalest has gone unchanged: by its ctime, as a copy's old mtime (rsync
    -t sets it before its rename) is no time without a change (QA h397)."""
    pending = root / "pending"
    (pending / "report.json.filepart").write_bytes(b'{"tool": "ec')  # the stalest
    time.sleep(1.5)
    for name in (".job.json.swp", "UPLOAD.TMP", ".x.json.kept-invalid-1", ".DS_Store",
                 "._report.json"):
        (pending / name).write_bytes(b'{"tool": "ec')
    (pending / "link.part").symlink_to("/etc/passwd")
    (pending / "dir.tmp").mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(pending / "UPLOAD.TMP", (two_hours_ago, two_hours_ago))  # a copy's mtime
    assert spoolq(env, "submit", "echo", "--id", "real").returncode == 0
    doc = data(spoolq(env, "stats", "--json"))
    assert doc["counts"]["pending"] == 1
    assert doc["in_progress_drops"]["count"] == 3, doc
    assert 1.5 <= doc["in_progress_drops"]["idle_s"] < 60, doc
    text = spoolq(env, "stats").stdout.decode()
    assert text.splitlines()[1].startswith(  # under pending's, not failed's (QA h397)
        "          3 files in pending/ under an in-progress name, ignored until renamed; "
        "the stalest unchanged for "), text
    for name in ("report.json.filepart", ".job.json.swp", "UPLOAD.TMP"):
        (pending / name).unlink()
    assert data(spoolq(env, "stats", "--json"))["in_progress_drops"] == {"count": 0,
                                                                          "idle_s": None}
    assert "in-progress" not in spoolq(env, "stats").stdout.decode()


def test_stats_leave_out_an_upload_the_disk_cannot_stat(root: Path,
                                                        env: dict[str, str]) -> None:
    """A client's ``.part`` whose inode the disk fails (EIO, injected by strace) failed
    ``spoolq stats`` whole, exit 1 and no counts, where it never looked at that file
    before in_progress_drops; statusd's scan leaves it out, and so does it (QA h397)."""
    strace = strace_path()
    if strace is None:
        pytest.skip("needs strace, allowed to trace here")
    bad = root / "pending" / "cut.json.part"
    bad.write_bytes(b"{")
    (root / "pending" / "other.json.part").write_bytes(b"{")
    assert spoolq(env, "submit", "echo", "--id", "real").returncode == 0
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-P", str(bad),
         "-e", "trace=newfstatat,statx,lstat", "-e", "inject=newfstatat,statx,lstat:error=EIO",
         *CLI, "stats", "--json"],
        env=env, cwd=root.parent, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = data(proc)
    assert doc["counts"]["pending"] == 1 and doc["in_progress_drops"]["count"] == 1, doc


def test_show_of_a_job_that_never_ran_names_no_pid_it_ran_in(
        root: Path, env: dict[str, str]) -> None:
    """An ended job's host line says "ran in pid N" (h392); one cancelled while pending
    never ran, and its pid is the one of the `spoolq cancel` that wrote its record: "ran
    in pid" named a process that ran nothing (QA h397)."""
    job_id = data(spoolq(env, "submit", "echo", "--json"))["id"]
    assert spoolq(env, "cancel", job_id).returncode == 0
    record = data(spoolq(env, "show", job_id, "--json"))
    assert record.get("started_at") is None and record.get("pid") is not None, record
    shown = spoolq(env, "show", job_id).stdout.decode().splitlines()
    assert f"host        {record['host']} (written by pid {record['pid']})" in shown, shown


def test_not_before_reads_epoch_seconds_as_a_job_file_does() -> None:
    """``--not-before 2026`` in fullwidth digits, ``1e10``, `` 1700000000`` and
    ``1_700_000_000`` were epoch seconds to ``float`` and so to the CLI (the first ran at
    once, in 1970), where a job file's ``not_before`` refuses each (QA)."""
    for text in ("\uff12\uff10\uff12\uff16", "1e10", " 1700000000", "1_700_000_000",
                 "1700000000\n", "0x10", "1700000000", "-5", "1.5", ".5", "7.",
                 "2026-12-01T00:00:00+05:30"):
        try:
            job_time = Job(tool="echo", not_before=text).not_before
        except ValidationError:
            job_time = None
        try:
            cli_time: datetime | None = parse.timestamp(text)
        except argparse.ArgumentTypeError:
            cli_time = None
        assert cli_time == job_time, text
    with pytest.raises(argparse.ArgumentTypeError, match="out of range"):
        parse.timestamp("99999999999999")


def test_each_duration_unit_is_its_number_of_seconds() -> None:
    """``purge --older-than 2w`` must spare a record 13 days old: a week read as a day
    would remove it, and no test said how many seconds each unit is.  A fraction stays
    (``1.5h`` is not ``1h``); ``age`` takes each unit too, only a bare number is refused."""
    cases = {"90": 90.0, "30s": 30.0, "15m": 900.0, "12h": 43_200.0, "7d": 604_800.0,
             "2w": 1_209_600.0, "1.5h": 5_400.0, "0.5d": 43_200.0, " 3 m ": 180.0}
    assert {text: parse.duration(text) for text in cases} == cases
    ages = {text: seconds for text, seconds in cases.items() if text.strip()[-1].isalpha()}
    assert {text: parse.age(text) for text in ages} == ages
    with pytest.raises(argparse.ArgumentTypeError, match="needs a unit"):
        parse.age("90")


def test_ls_takes_a_page_of_exactly_the_most_it_says() -> None:
    """``ls --help`` says "at most 1000" a page: 1000 is taken, 1001 and 0 refused."""
    assert MAX_PAGE == 1000
    assert _page_limit("1000") == MAX_PAGE and _page_limit("1") == 1
    for text in ("1001", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _page_limit(text)


def test_a_duration_never_rounds_up_to_the_next_units_size() -> None:
    """``stats`` and ``ls`` showed 59.99 s as ``60.0s``, 3,599.9 s as ``60.0m``, 86,399 s as
    ``24.0h`` and an infinite span as ``infd`` (QA)."""
    cases = {0.25: "0.25s", 9.994: "9.99s", 9.999: "10.0s", 42: "42.0s", 59.94: "59.9s",
             59.99: "1.0m", 3599.9: "1.0h", 9000: "2.5h", 86_399: "1.0d", 1_209_600: "14.0d",
             float("inf"): "-", float("nan"): "-", None: "-"}
    assert {seconds: human_duration(seconds) for seconds in cases} == cases


def test_ls_and_show_cut_a_tool_name_no_tool_can_have() -> None:
    """A record an older version quarantined keeps a "tool" of any length: a page of
    ``ls`` with one of 300,000 characters printed 1.8 MB, every row padded to it (QA)."""
    now = datetime.now(UTC)
    record = Record.model_validate({
        "id": "long", "state": "failed", "tool": "t" * 300_000, "submitted_at": now,
        "finished_at": now, "attempts": 1,
        "error": {"type": "invalid_job", "message": "tool: at most 128 characters"}})
    cell = record_row(record)[2]
    assert cell == "t" * 128 + "... (300,000 characters)"
    assert f"tool        {cell}" in record_lines(record)
    short = record.model_copy(update={"tool": "t" * 128})
    assert record_row(short)[2] == "t" * 128



@pytest.mark.parametrize(("tool", "cut"), [
    ("\u202e" * 128, 21),   # each shown as the 6 columns of "\u202e"
    ("\u200b" * 30, 21),
    ("日" * 128, 64),        # two columns each
    ("\x1b[31m" * 20, 80),  # "\x1b" four columns, "[31m" four: 16 whole ones
])
def test_ls_and_show_cut_a_tool_name_by_the_columns_it_is_shown_in(tool: str,
                                                                    cut: int) -> None:
    """A tool of 128 characters is no longer than a tool's name may be, but shown as
    escapes (bidi overrides, zero-width spaces) or in wide characters it made each row
    of its ``ls`` page 800 (or 256) columns wide (QA h401)."""
    now = datetime.now(UTC)
    record = Record.model_validate({
        "id": "wide", "state": "failed", "tool": tool, "submitted_at": now,
        "finished_at": now, "attempts": 1,
        "error": {"type": "invalid_job", "message": "unknown tool"}})
    cell = record_row(record)[2]
    assert cell == f"{tool[:cut]}... ({len(tool)} characters)"
    assert cells(printable(tool[:cut])) <= 128 < cells(printable(tool[:cut + 1]))
    assert f"tool        {printable(cell)}" in record_lines(record)


def test_a_quarantined_symlinks_source_has_no_size_to_say() -> None:
    """Only a regular file's bytes are kept: a symlink's source said "? bytes", as if
    its size were lost (QA)."""
    error = ErrorInfo(type=ErrorType.INVALID_JOB, message="symlink (never followed)")
    link = Record(id="l", state=JobState.FAILED, error=error,
                  source=Source(name="l.json", kind="symlink"))
    assert "source      l.json (symlink)" in record_lines(link)
    kept = link.model_copy(update={"source": Source(name="l.json", size=12)})
    assert "source      l.json (file, 12 bytes)" in record_lines(kept)


def test_times_before_year_1000_keep_four_digits() -> None:
    """A job file may say it was submitted in year 1 (``submitted_at``, or an old mtime):
    ``ls`` and ``show`` printed ``1-01-01 00:00:00Z`` (glibc's ``%Y`` does not pad),
    a column narrower than the others, where the record says ``0001-01-01``."""
    assert when(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01 00:00:00Z"
    assert when(datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)) == "0999-12-31 23:59:59Z"
    assert when(datetime(2026, 12, 7, 6, 5, 4, 321, tzinfo=UTC)) == "2026-12-07 06:05:04Z"
    assert when(None) == "-"
