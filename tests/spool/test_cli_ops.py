"""``spoolq`` as ops people script it and read it: what a fresh audit of the CLI found.

Each test runs the real CLI (``python -m spool.cli.main``) as a subprocess on a
real spool, on a pseudo-terminal where a person would be watching, and checks
what they would: exit codes, the one error line, that a hint printed for the
next command works when run as printed, and what reaches the terminal.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from spoolkit import CLI, open_pty, read_line, read_until, stop, strace_path
from spoolkit import BytesProc as Proc
from spoolkit import refused_bytes as refused
from spoolkit import spoolq_bytes as spoolq

from spool.claim import Claim
from spool.client import Client
from spool.errors import ErrorType, SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import ErrorInfo, Job, Progress
from spool.settings import FsyncMode
from spool.states import JobState
from spool.stdio import EXIT_BROKEN_PIPE
from spool.transitions import Spool


def spool_of(root: Path) -> Spool:
    layout = Layout(root)
    return Spool(layout, Mover(layout, FsyncMode.NEVER))


def columns_of(text: str) -> int:
    """How many terminal cells ``text`` takes: East Asian wide and full-width characters
    two, combining marks none."""
    cells = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        cells += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return cells


# -- what reaches the terminal --------------------------------------------------------------


INVISIBLE = {"\u200b": "zero-width space", "\u202e": "right-to-left override",
             "\u2066": "left-to-right isolate", "\ufeff": "zero-width no-break space",
             "\u061c": "Arabic letter mark"}


def test_invisible_and_bidi_characters_reach_the_terminal_as_escapes(
        root: Path, env: dict[str, str]) -> None:
    """Whoever can write to pending/ chose these strings.  'run_backtest' with a
    zero-width space looked like the real tool in ``ls`` (and ``ls --tool run_backtest``
    then said no jobs); U+202E made an error read backwards.  The dashboard shows them
    as escapes 'as the CLI does': the CLI did not."""
    (root / "pending" / "spoof.json").write_bytes(orjson.dumps({
        "tool": "run_backtest\u200b",
        "params": {"message": "evil \u202edlrow \u2066x\u2069 \ufeff \u061c"}}))
    listed, shown = spoolq(env, "ls"), spoolq(env, "show", "spoof")
    for proc in (listed, shown):
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout.decode()
        for char, name in INVISIBLE.items():
            assert char not in text, (name, text)
    assert "run_backtest\\u200b" in listed.stdout.decode().splitlines()[1]
    assert "tool        run_backtest\\u200b" in shown.stdout.decode()
    assert "evil \\u202edlrow \\u2066x\\u2069 \\ufeff \\u061c" in shown.stdout.decode()
    record = orjson.loads(spoolq(env, "show", "spoof", "--json").stdout)
    assert record["tool"] == "run_backtest\u200b"  # --json keeps the data as it is



def _done_and_drawn(spool: Spool, claim: Claim, waiting: subprocess.Popen[bytes], master: int,
                    seen: bytearray) -> str:
    """Complete the job ``spoolq wait`` waits for; what it drew on the terminal ``master``
    (into ``seen``), once it has exited 0 showing the record."""
    spool.complete(claim, spool.record_of_claim(claim, JobState.DONE))
    out, _ = waiting.communicate(timeout=30)
    read_until(master, b"\x00never", seen, deadline_s=1)
    os.close(master)
    assert waiting.returncode == 0 and b"state       done" in out
    return seen.decode()

def test_the_progress_bar_fits_the_terminal_with_wide_characters(
        root: Path, env: dict[str, str]) -> None:
    """The bar is redrawn with a carriage return, so it must never wrap: it was cut to
    the terminal's width in characters, and a progress message in Chinese (two cells a
    character) wrapped it, leaving a new line on the screen at every redraw."""
    columns = 60
    spool = spool_of(root)
    spool.submit(Job(tool="run_backtest"), "wide")
    master, slave = open_pty(columns)
    waiting = subprocess.Popen([*CLI, "wait", "wide", "--timeout", "60"], env=env,
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    claim = spool.claim("wide")
    assert claim is not None
    message = "回测进度 已完成 120 只股票中的 60 只 正在计算夏普比率"
    seen = bytearray()
    for fraction, text in ((0.5, message), (0.6, "ok")):  # a long line, then a short one
        spool.mover.publish(spool.layout.progress_file("wide"),
                            Progress(fraction=fraction, message=text).model_dump_json()
                            .encode())
        read_until(master, f"{fraction:.0%}".encode(), seen)
    drawn = _done_and_drawn(spool, claim, waiting, master, seen)
    assert "回测进度" in drawn and "\n" not in drawn
    for segment in drawn.split("\r"):  # each redraw, and the blank that clears the bar
        assert columns_of(segment) < columns, (columns_of(segment), segment)
    assert drawn.endswith("\r")


def test_the_progress_bar_fits_the_terminal_where_stderr_escapes(
        root: Path, env: dict[str, str]) -> None:
    """Where stderr is not UTF-8 (PYTHONIOENCODING=ascii, LC_ALL=C with PYTHONUTF8=0) it
    writes a Chinese progress message as escapes, six columns a character, but the bar
    was cut to the terminal by the characters' own two: it wrapped, a new line on the
    screen at every redraw (as ls's columns stood off, f1ad7b1)."""
    columns = 60
    spool = spool_of(root)
    spool.submit(Job(tool="run_backtest"), "escaped")
    master, slave = open_pty(columns)
    waiting = subprocess.Popen([*CLI, "wait", "escaped", "--timeout", "60"],
                               env={**env, "PYTHONIOENCODING": "ascii"}, cwd=root.parent,
                               stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    claim = spool.claim("escaped")
    assert claim is not None
    spool.mover.publish(spool.layout.progress_file("escaped"), Progress(
        fraction=0.5, message="回测进度 已完成 60 只 é").model_dump_json().encode())
    seen = bytearray()
    read_until(master, b"50%", seen)
    read_until(master, b"\\u", seen)
    drawn = _done_and_drawn(spool, claim, waiting, master, seen)
    assert "\\u56de\\u6d4b" in drawn and "\n" not in drawn
    for segment in drawn.split("\r"):  # each redraw, and the blank that clears the bar
        assert columns_of(segment) < columns, (columns_of(segment), segment)


# -- scripts --------------------------------------------------------------------------------


def test_submit_file_from_a_closed_stdin_is_one_error_line(root: Path,
                                                            env: dict[str, str]) -> None:
    """``spoolq submit --file - <&-`` (a cron line or a unit with no stdin) was
    "unexpected AttributeError ... (a bug in spoolq)"."""
    proc = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *CLI, "submit", "--file", "-"],
                          env=env, cwd=root.parent, capture_output=True, timeout=60,
                          check=False)
    refused(proc, 1, "standard input", "closed")
    assert list((root / "pending").iterdir()) == []


def _page_hint(proc: Proc) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    hints = [line for line in proc.stderr.decode().splitlines()
             if line.startswith("spoolq: more: ")]
    assert len(hints) == 1, proc.stderr
    words = shlex.split(hints[0].removeprefix("spoolq: more: "))
    assert words[0] == "spoolq"
    return words[1:]


def test_the_next_page_hint_runs_as_printed(tmp_path: Path, env: dict[str, str]) -> None:
    """The hint of ``ls`` dropped ``--spool-dir`` (so it listed the default spool, or
    said to run init) and did not quote a tool name with a space (the shell split it)."""
    root = tmp_path / "a spool"
    spool = Spool(Layout(root), Mover(Layout(root), FsyncMode.NEVER))
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    for job_id in ("one", "two", "three"):
        spool.submit(Job(tool="my tool"), job_id)
    other = {**env, "SPOOL_DIR": str(tmp_path / "elsewhere")}  # no spool there
    after = spoolq(other, "ls", "--spool-dir", str(root), "--tool", "my tool", "--limit", "1")
    before = spoolq(other, "--spool-dir", str(root), "ls", "--tool", "my tool", "--limit", "1")
    for proc in (after, before):
        assert proc.stdout.decode().splitlines()[1].startswith("three "), proc.stdout
        hint = _page_hint(proc)
        page = spoolq(other, *hint, "--json")
        assert page.returncode == 0, (hint, page.stderr)
        assert [t["id"] for t in orjson.loads(page.stdout)["tasks"]] == ["two"], hint
    second = spoolq(other, *_page_hint(after))
    last = spoolq(other, *_page_hint(second))
    assert last.returncode == 0 and last.stdout.decode().splitlines()[1].startswith("one ")


def test_the_next_page_hint_keeps_the_state_and_the_page_size(root: Path,
                                                               env: dict[str, str]) -> None:
    """``ls --state failed --limit 1`` must hint at the next failed job, one a page: a
    hint without ``--state`` lists every state from the cursor on (a pending job shown
    as the next page of failed ones), one without ``--limit`` 50 a page."""
    spool = spool_of(root)
    start = datetime.now(UTC) - timedelta(minutes=10)
    for n in range(6):  # j5 is the newest
        spool.submit(Job(tool="t", submitted_at=start + timedelta(seconds=n)), f"j{n}")
    assert spoolq(env, "cancel", "j0", "j2", "j4").returncode == 0  # failed; the rest pending
    first = spoolq(env, "ls", "--state", "failed", "--limit", "1")
    assert first.stdout.decode().splitlines()[1].startswith("j4 "), first.stdout
    hint = _page_hint(first)
    page = spoolq(env, *hint, "--json")
    assert page.returncode == 0, (hint, page.stderr)
    assert [t["id"] for t in orjson.loads(page.stdout)["tasks"]] == ["j2"], hint
    assert orjson.loads(page.stdout)["next_cursor"] is not None


def test_demo_help_says_what_the_demo_does_with_its_spool(env: dict[str, str]) -> None:
    """``demo --help`` said ``--spool-dir`` defaults to SPOOL_DIR and ``--fsync`` to
    SPOOL_FSYNC: the demo makes a fresh spool and ignored both (an ops person with
    SPOOL_DIR set to the production spool read that the demo would run there); its
    description showed reST markup (````--keep````) and ``--seed`` had no help."""
    proc = spoolq(env, "demo", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    flat = " ".join(text.split())
    assert "default: SPOOL_DIR" not in flat and "SPOOL_DIR is not used" in flat
    assert "default: SPOOL_FSYNC" not in flat and "(default: batch)" in flat
    assert "``" not in text and "--seed S random seed" in flat


def test_submit_help_says_timeout_limits_the_run_not_the_wait(env: dict[str, str]) -> None:
    """``submit --timeout``'s help ended mid-phrase ("may only lower the tool's") and did
    not say it is the job's limit: ``spoolq submit sleep --wait --timeout 3`` reads as a
    3 s wait, and waited for ever with no processor running."""
    proc = spoolq(env, "submit", "--help")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.decode().split())
    assert "may only lower the tool's execution_timeout" in flat
    assert "not how long --wait waits" in flat


def test_a_job_option_out_of_range_is_named_as_the_option(env: dict[str, str]) -> None:
    """``--max-attempts 0`` said 'max_attempts: Input should be greater than or equal to
    1', the record's field, where every other bad option is named as given
    ('argument --timeout: ...'), and pointed to no help, where the others do (h365)."""
    spoolq(env, "init")
    for args, option in ((["--max-attempts", "0"], "--max-attempts"),
                         (["--max-attempts", "101"], "--max-attempts"),
                         (["--priority", str(10**30)], "--priority")):
        refused(spoolq(env, "submit", "echo", *args), 2, f"argument {option}: Input should be",
                "(see 'spoolq submit --help')")
    assert os.listdir(Path(env["SPOOL_DIR"]) / "pending") == []


def test_an_unknown_option_points_to_its_commands_help(env: dict[str, str]) -> None:
    """``spoolq tools --bogus`` said "(see 'spoolq --help')", whose page lists no
    command's options, where every other usage error names the command's own help."""
    for args, where in ((["tools", "--bogus"], "spoolq tools --help"),
                        (["ls", "--state", "done", "extra"], "spoolq ls --help"),
                        (["data", "synth", "--bogus"], "spoolq data synth --help")):
        refused(spoolq(env, *args), 2, "unrecognized arguments", f"(see '{where}')")


def test_init_help_gives_stage_its_own_mode(env: dict[str, str]) -> None:
    """``init --help`` said every folder but pending/ and tmp/ gets 0750; stage/, the
    processor's own staging, gets 0700 (docs/operations.md, Permissions)."""
    proc = spoolq(env, "init", "--help")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.decode().split())
    assert "stage/ (the processor's own staging) gets 0700" in flat, flat


def test_a_state_folder_that_is_a_file_is_named_as_such(env: dict[str, str]) -> None:
    """A regular file named done/ in the spool: every command said the spool was not
    initialised ('missing done; run spoolq init'), and 'spoolq init' then failed with
    'File exists': advice that went round in a circle."""
    spoolq(env, "init")
    done = Path(env["SPOOL_DIR"]) / "done"
    done.rmdir()
    done.write_bytes(b"")
    for args in (["ls"], ["stats"], ["show", "x"], ["init"]):
        line = refused(spoolq(env, *args), 1, f"{done} is not a directory",
                       "move it out of the way")
        assert "missing" not in line and "File exists" not in line, line


def test_an_empty_spool_dir_option_is_named_as_the_option(env: dict[str, str]) -> None:
    """``spoolq --spool-dir '' ls`` said 'invalid setting spool_dir: ...', the settings
    field, where ``SPOOL_DIR=`` is named SPOOL_DIR."""
    refused(spoolq(env, "--spool-dir", "", "ls"), 2, "invalid setting --spool-dir: ",
            "is empty")


def test_data_synth_help_gives_the_seed_default(env: dict[str, str]) -> None:
    """``--symbols`` and ``--bars`` said their defaults and ``--seed`` did not (it is 0,
    where the demo's is 7): the same data again needs the seed it was made with."""
    proc = spoolq(env, "data", "synth", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--seed S random seed (default 0)" in " ".join(proc.stdout.decode().split())


def test_data_synth_takes_the_global_options_after_its_name(tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    """Every command takes ``--spool-dir`` and ``--fsync`` before or after its name (the
    README): ``spoolq data synth --symbols 2 --spool-dir DIR`` was a usage error."""
    spools = [tmp_path / name for name in ("after", "between", "before")]
    synth = ["--symbols", "2", "--bars", "30", "--json"]
    procs = [spoolq(env, "data", "synth", *synth, "--spool-dir", str(spools[0]),
                    "--fsync", "never"),
             spoolq(env, "data", "--spool-dir", str(spools[1]), "synth", *synth),
             spoolq(env, "--spool-dir", str(spools[2]), "data", "synth", *synth)]
    for proc, spool in zip(procs, spools, strict=True):
        assert proc.returncode == 0, proc.stderr
        assert orjson.loads(proc.stdout)["data_dir"] == str(spool / "data")
        assert len(list((spool / "data").iterdir())) == 2


def test_data_synth_says_what_other_files_it_left_beside_its_own(
        tmp_path: Path, env: dict[str, str]) -> None:
    """A second run with fewer symbols left the first run's extra files as they were,
    unsaid: analyze_factor without symbols then read both data sets (QA)."""
    data = tmp_path / "data"
    first = spoolq(env, "data", "synth", "--symbols", "4", "--bars", "30", "--data-dir",
                   str(data))
    assert first.returncode == 0 and not first.stderr, first.stderr
    again = spoolq(env, "data", "synth", "--symbols", "2", "--bars", "30", "--data-dir",
                   str(data))
    assert again.returncode == 0, again.stderr
    said = again.stderr.decode()
    assert said.startswith(f"note: 2 other CSV file(s) in {data} were left as they were "
                           "(S0002.csv, S0003.csv)"), said
    assert sorted(p.name for p in data.iterdir()) == [f"S000{i}.csv" for i in range(4)]


def _run_to(env: dict[str, str], stdout: int, *args: str) -> Proc:
    return subprocess.run([*CLI, *args], env=env, cwd=Path(env["SPOOL_DIR"]).parent,
                          stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=60, check=False)


def test_a_stdout_that_fails_is_an_exit_code_not_interpreter_noise(
        root: Path, env: dict[str, str]) -> None:
    """With stdout buffered (no PYTHONUNBUFFERED, as in an ops shell or a unit) the
    output went out at the interpreter's exit: ``spoolq ls | true`` printed "Exception
    ignored ... BrokenPipeError" and exited 120, and so did ``spoolq submit > file`` on
    a full disk (OSError), its job in pending/ and its id nowhere."""
    spool_of(root).submit(Job(tool="echo"), "listed")
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    for how, run_env in (("buffered", buffered), ("unbuffered", {**env,
                                                                 "PYTHONUNBUFFERED": "1"})):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader went away before anything was written
        try:
            gone = _run_to(run_env, write_end, "ls")
        finally:
            os.close(write_end)
        assert (gone.returncode, gone.stderr) == (141, b""), (how, gone)
        with open("/dev/full", "wb") as full:
            listed = _run_to(run_env, full.fileno(), "ls")
            submitted = _run_to(run_env, full.fileno(), "submit", "echo", "--id", how)
        for proc in (listed, submitted):
            assert proc.returncode == 1, (how, proc)
            lines = proc.stderr.decode().splitlines()
            assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), (how, lines)
            assert "No space left on device" in lines[0], (how, lines)
        assert f"job {how} was submitted" in submitted.stderr.decode(), how
        assert (root / "pending" / f"{how}.json").exists()


def test_a_remark_follows_the_output_it_is_about(root: Path, env: dict[str, str]) -> None:
    """``spoolq ls >> log 2>&1`` (or cron's mail) put the next-page hint above the
    table: stdout was buffered until exit, stderr was not."""
    for job_id in ("older", "newer"):
        spool_of(root).submit(Job(tool="echo"), job_id)
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([*CLI, "ls", "--limit", "1"], env=buffered, cwd=root.parent,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60, check=False)
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 0 and len(lines) == 3, lines
    assert lines[0].startswith("ID ") and lines[2].startswith("spoolq: more: "), lines


def test_a_cancel_the_run_finished_before_is_no_success(root: Path,
                                                        env: dict[str, str]) -> None:
    """A running job that ended on its own while its cancel request waited for the
    processor: ``cancel`` printed the done record and exited 0, so ``spoolq cancel ID &&
    ...`` took a job that ran to the end (its side effects done) for a cancelled one."""
    spool = spool_of(root)
    spool.submit(Job(tool="echo"), "quick")
    claim = spool.claim("quick")  # the test stands in for the processor
    assert claim is not None
    cancel = subprocess.Popen([*CLI, "cancel", "quick", "--json", "--timeout", "30"],
                              env=env, cwd=root.parent, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (root / "cancel" / "quick").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    spool.complete(claim, spool.record_of_claim(claim, JobState.DONE))  # before it acted
    out, err = cancel.communicate(timeout=60)
    assert cancel.returncode == 1, err
    assert orjson.loads(out)["state"] == "done"
    assert err.decode().splitlines() == [
        "spoolq: error: job quick finished (done) before the cancel took effect"]


def test_ctrl_c_as_cancel_waits_says_the_request_stays(root: Path,
                                                       env: dict[str, str]) -> None:
    """A Ctrl-C while ``cancel`` waited for the processor to act on a running job ended it
    with 130 and not a word, its request left in cancel/: the job was cancelled all the
    same, by a command its user took for stopped before it did anything."""
    spool = spool_of(root)
    spool.submit(Job(tool="echo"), "long")
    claim = spool.claim("long")  # the test stands in for a processor that is slow to act
    assert claim is not None
    try:
        cancel = subprocess.Popen([*CLI, "cancel", "long", "--timeout", "60"], env=env,
                                  cwd=root.parent, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not (root / "cancel" / "long").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        cancel.send_signal(signal.SIGINT)
        out, err = cancel.communicate(timeout=60)
    finally:
        claim.close()
    assert (cancel.returncode, out) == (130, b""), err
    assert err.decode().splitlines() == [
        "spoolq: interrupted: stopped waiting for job long; its cancel request stays in "
        "cancel/, for its processor to act on (spoolq show long tells the outcome)"]
    assert (root / "cancel" / "long").exists()


def test_a_cancel_of_several_running_jobs_asks_them_all_first(root: Path,
                                                               env: dict[str, str]) -> None:
    """Several ids were cancelled one after another, each running job's wait before the
    next request: 100 running jobs with no processor acting took 100 times the wait.
    Every request is written first; the outcomes are waited for within one timeout, a
    line each in the order given; a Ctrl-C names the requests that stay."""
    spool = spool_of(root)
    ids = ["r1", "p1", "r2", "r3"]
    claims = []
    for job_id in ids:
        spool.submit(Job(tool="echo"), job_id)
        if job_id.startswith("r"):
            claim = spool.claim(job_id)  # the test stands in for the processor
            assert claim is not None
            claims.append(claim)
    try:
        # the processor acts on r1 and r2 once all three requests are in
        cancel = subprocess.Popen([*CLI, "cancel", *ids, "--timeout", "60"], env=env,
                                  cwd=root.parent, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        requests = [root / "cancel" / job_id for job_id in ("r1", "r2", "r3")]
        deadline = time.monotonic() + 20
        while not all(map(os.path.exists, requests)) and time.monotonic() < deadline:
            assert cancel.poll() is None
            time.sleep(0.01)
        assert all(map(os.path.exists, requests)), "every request written before a wait"
        for claim in claims[:2]:  # as the processor does
            record = spool.record_of_claim(claim, JobState.FAILED).model_copy(update={
                "error": ErrorInfo(type=ErrorType.CANCELLED, message="cancelled while running")})
            spool.fail(claim, record)  # and drops its request
        said = [read_line(cancel, timeout=20) for _ in range(3)]
        cancel.send_signal(signal.SIGINT)  # r3 waits on
        out, err = cancel.communicate(timeout=60)
    finally:
        for claim in claims:
            claim.close()
        if cancel.poll() is None:
            stop(cancel)
    assert cancel.returncode == 130, err
    assert [line.decode() for line in said] == [
        "r1 failed cancelled: cancelled while running\n",
        "p1 failed cancelled: cancelled while pending\n",
        "r2 failed cancelled: cancelled while running\n"]
    assert out == b""
    assert err.decode().splitlines() == [
        "spoolq: interrupted: stopped waiting; the cancel requests of r3 stay in cancel/, "
        "for their processors to act on (spoolq show ID tells the outcome)"]


def test_a_cancel_of_several_says_those_cancelled_before_the_spool_failed_it(
        client: Client, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Spool trouble (EIO) asking the second id's cancel ended the command with nothing
    said of the first, cancelled on disk all the same (the review)."""
    from spool.cli.jobs import _cancel_several  # noqa: PLC0415 - the command's own step

    for job_id in ("a", "b", "c"):
        client.spool.submit(Job(tool="echo"), job_id)
    real = client.ask_cancel

    def failing(job_id: str) -> Any:
        if job_id == "b":
            raise SpoolIOError("cannot write cancel/b: Input/output error")
        return real(job_id)

    monkeypatch.setattr(client, "ask_cancel", failing)
    with pytest.raises(SpoolIOError):
        _cancel_several(client, ["a", "b", "c"], 1.0, False)
    out, err = capsys.readouterr()
    assert out == "a failed cancelled: cancelled while pending\n"
    assert err == "spoolq: not tried: c\n"
    assert client.reader.get("c").state is JobState.PENDING


def test_the_progress_bar_shows_the_message_on_an_80_column_terminal(
        root: Path, env: dict[str, str]) -> None:
    """The message is what tells a long run's progress ('backtested 100/200 symbols'):
    behind a generated id (28 characters), the state, a 24-cell bar, the percentage and
    the time, an 80-column terminal had 5 columns left for it ('backt')."""
    job_id = "20261129T120000-0123456789ab"  # as long as the ids spoolq makes
    spool = spool_of(root)
    spool.submit(Job(tool="run_backtest"), job_id)
    master, slave = open_pty(80)
    waiting = subprocess.Popen([*CLI, "wait", job_id, "--timeout", "60"], env=env,
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    claim = spool.claim(job_id)
    assert claim is not None
    spool.mover.publish(spool.layout.progress_file(job_id), Progress(
        fraction=0.5, message="backtested 100/200 symbols").model_dump_json().encode())
    seen = bytearray()
    read_until(master, b"symbols", seen)
    drawn = _done_and_drawn(spool, claim, waiting, master, seen)
    assert " 50% " in drawn and "backtested 100/200 symbols" in drawn, drawn
    assert all(columns_of(segment) < 80 for segment in drawn.split("\r")), drawn


def test_a_stderr_whose_reader_went_away_keeps_the_exit_code(root: Path,
                                                              env: dict[str, str]) -> None:
    """``spoolq show ID 2>&1 | true``-like: with the error line undeliverable the exit
    status was the interpreter's 120 (its final flush of stderr failed), not the
    command's 1; the next-page hint of ``ls`` likewise."""
    for job_id in ("older", "newer"):
        spool_of(root).submit(Job(tool="echo"), job_id)
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    results = []
    for args in (["show", "nobody"], ["ls", "--limit", "1"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            results.append(subprocess.run([*CLI, *args], env=buffered, cwd=root.parent,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=write_end, timeout=60, check=False))
        finally:
            os.close(write_end)
    missing, listed = results
    assert (missing.returncode, missing.stdout) == (1, b"")
    assert listed.returncode == 141  # as for a reader of stdout gone: SIGPIPE's status
    assert listed.stdout.decode().splitlines()[1].startswith("newer "), listed.stdout


def test_help_to_a_reader_that_went_away_is_quiet(env: dict[str, str]) -> None:
    """``spoolq ls --help | true``: the help went out at the interpreter's exit, which
    printed "Exception ignored ... BrokenPipeError" and made the status 120.  Quiet now,
    with 141 as every other output of the CLI to a reader gone (a death by SIGPIPE, as
    a shell reports it; spool.stdio.EXIT_BROKEN_PIPE), since the help's write is checked
    (045583a); it was 0."""
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*CLI, "ls", "--help"], env=buffered, stdin=subprocess.DEVNULL,
                              stdout=write_end, stderr=subprocess.PIPE, timeout=60,
                              check=False)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (EXIT_BROKEN_PIPE, b""), proc


def _sigterm_during_wait(root: Path, env: dict[str, str], job_id: str, prefix: list[str],
                         *options: str) -> tuple[subprocess.Popen[bytes], bytearray]:
    """``spoolq wait`` of a new pending job on a terminal (run through ``prefix``), sent
    SIGTERM once its bar shows: the ended process and what it drew."""
    spool_of(root).submit(Job(tool="echo"), job_id)
    master, slave = open_pty(160)
    waiting = subprocess.Popen([*prefix, *CLI, "wait", job_id, *options], env=env,
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()
    read_until(master, f"{job_id} pending".encode(), seen)
    waiting.send_signal(signal.SIGTERM)
    waiting.communicate(timeout=30)
    read_until(master, b"\x00never", seen, deadline_s=1)
    os.close(master)
    return waiting, seen


def test_sigterm_clears_the_progress_bar(root: Path, env: dict[str, str]) -> None:
    """``timeout 60 spoolq wait ID`` (SIGTERM) left the bar on the terminal, with the
    shell's prompt after it on the same line; Ctrl-C already cleared it."""
    waiting, seen = _sigterm_during_wait(root, env, "slow", [])
    assert waiting.returncode == -signal.SIGTERM  # it still ends by the signal
    drawn = seen.decode()
    assert "slow pending" in drawn and drawn.endswith("\r"), drawn
    assert drawn.rsplit("\r", 2)[1].strip() == "", drawn  # the last thing drawn: blanks


def test_an_ignored_sigterm_stays_ignored_while_the_bar_is_drawn(root: Path,
                                                                 env: dict[str, str]) -> None:
    """A SIGTERM its parent set to be ignored (``trap '' TERM`` in a script) ended
    ``spoolq wait`` on a terminal: the bar's handler replaced SIG_IGN and ended the
    process by the signal.  It waits on, to its timeout (exit 3), as it did."""
    ignoring = ["sh", "-c", "trap '' TERM; exec \"$@\"", "sh"]  # SIG_IGN outlives exec
    waiting, seen = _sigterm_during_wait(root, env, "kept", ignoring, "--timeout", "3")
    assert waiting.returncode == 3, seen.decode()


_STUCK_BAR = """
import fcntl, os, sys, time
from datetime import UTC, datetime
from spool.cli.progress import ProgressBar
from spool.models import Record
from spool.states import JobState
fd = int(sys.argv[1])
bar = ProgressBar(os.fdopen(fd, "w"))
with bar:
    bar.update(Record(id="stuck", tool="echo", state=JobState.RUNNING,
                      submitted_at=datetime.now(UTC)))
    while not bar._shown:
        time.sleep(0.01)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:  # the terminal reads nothing more (Ctrl-S): the next write blocks
            os.write(fd, b"x" * 4096)
    except BlockingIOError:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    print("stuck", file=sys.stderr, flush=True)
"""


def test_sigterm_while_the_bar_is_blanked_on_a_stuck_terminal_ends_the_process() -> None:
    """SIGTERM while the wait's end blanks the bar on a terminal that reads nothing
    (Ctrl-S, then ``timeout``'s SIGTERM): the handler ran inside that blocked write, under
    the bar's lock, and waited for that lock for ever; once the terminal reads again the
    process ends by the signal (a pipe stands for the stuck terminal)."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", _STUCK_BAR, str(write_end)],
                             pass_fds=(write_end,), stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        assert read_line(child, child.stderr) == b"stuck\n"
        time.sleep(0.3)  # into the bar's blank, blocked in its flush
        child.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        os.set_blocking(read_end, False)
        deadline = time.monotonic() + 10
        while child.poll() is None and time.monotonic() < deadline:
            try:
                os.read(read_end, 1 << 16)  # the terminal reads again
            except BlockingIOError:
                time.sleep(0.02)
        ended = child.poll()
    finally:
        told = (stop(child)[1] or b"").decode()
        os.close(read_end)
    assert ended == -signal.SIGTERM, told[-2000:]  # None: it hung


def test_the_bar_says_a_run_past_its_estimate_is_overdue(root: Path,
                                                         env: dict[str, str]) -> None:
    """Half way in 20 s, its last report 40 s ago: at that pace it should have ended 20 s
    ago.  The bar said ``<0:00`` for as long as the run went on, a countdown stuck at its
    end; it says the run is overdue instead, with no time left."""
    spool = spool_of(root)
    spool.submit(Job(tool="run_backtest"), "late")
    master, slave = open_pty(100)
    waiting = subprocess.Popen([*CLI, "wait", "late", "--timeout", "60"], env=env,
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    claim = spool.claim("late")
    assert claim is not None
    now = datetime.now(UTC)
    spool.mover.publish(spool.layout.progress_file("late"), Progress(
        fraction=0.5, message="slow part", started_at=now - timedelta(seconds=60),
        updated_at=now - timedelta(seconds=40)).model_dump_json().encode())
    seen = bytearray()
    read_until(master, b"slow part", seen)
    read_until(master, b"\x00never", seen, deadline_s=1.5)  # redrawn for a second or so
    drawn = _done_and_drawn(spool, claim, waiting, master, seen)
    assert "slow part" in drawn, drawn
    assert "<0:00" not in drawn and "<" not in drawn, drawn
    assert re.search(r"  50% \d:\d\d overdue slow part", drawn), drawn


@pytest.mark.parametrize("columns", [5, 8, 10])
def test_the_progress_bar_fits_a_narrow_terminal(root: Path, env: dict[str, str],
                                                 columns: int) -> None:
    """The bar took 10 columns at least, whatever the terminal's width: under 11 columns
    each redraw wrapped, a new line on the screen each second.  Each redraw fits one
    line; a terminal too narrow for a bar shows the fraction and times alone."""
    spool = spool_of(root)
    spool.submit(Job(tool="run_backtest"), "narrow")
    master, slave = open_pty(columns)
    waiting = subprocess.Popen([*CLI, "wait", "narrow", "--timeout", "60"], env=env,
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    claim = spool.claim("narrow")
    assert claim is not None
    spool.mover.publish(spool.layout.progress_file("narrow"), Progress(
        fraction=0.5, message="half way there").model_dump_json().encode())
    seen = bytearray()
    read_until(master, b"50%", seen)
    read_until(master, b"\x00never", seen, deadline_s=1.5)  # a redraw a second or so
    # A note (no processor running, after 3 s on a loaded machine) is a line of its own.
    drawn = re.sub(r"spoolq: [^\r\n]*\r\n", "", _done_and_drawn(spool, claim, waiting,
                                                                master, seen))
    assert "50%" in drawn and "\n" not in drawn, drawn
    for segment in drawn.split("\r"):  # each redraw, and the blank that clears the bar
        assert columns_of(segment) < columns, (columns_of(segment), segment)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_wait_that_cannot_write_its_outcome_is_no_failed_job(root: Path, env: dict[str, str],
                                                             unbuffered: bool) -> None:
    """``spoolq wait ID > out`` on a full disk exited 1, which a script reads as "the job
    failed", for a job that was done.  Other commands exit 1 when stdout cannot be
    written; wait (and ``submit --wait``) exits 2, as it does for a closed stdout, with
    the one error line saying how the job ended."""
    spool = spool_of(root)
    for job_id in ("fine", "also"):
        spool.submit(Job(tool="echo"), job_id)
        claim = spool.claim(job_id)
        assert claim is not None
        spool.complete(claim, spool.record_of_claim(claim, JobState.DONE))
    run_env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        run_env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "wb") as full:
        runs = {what: _run_to(run_env, full.fileno(), *args) for what, args in (
            ("wait", ("wait", "fine")), ("json", ("wait", "fine", "--json")),
            ("several", ("wait", "fine", "also")),
            ("submit", ("submit", "echo", "--id", "later", "--wait", "--any-tool")))}
        shown = _run_to(run_env, full.fileno(), "show", "fine")
    for what, proc in runs.items():
        lines = proc.stderr.decode().splitlines()
        errors = [line for line in lines if line.startswith("spoolq: error: ")]
        assert proc.returncode == 2, (what, proc.returncode, lines)
        assert len(errors) == 1 and "standard output: No space left on device" in errors[0], \
            (what, lines)
    for what in ("wait", "json"):
        assert "job fine is done, but" in runs[what].stderr.decode(), what
    assert "job later was submitted" in runs["submit"].stderr.decode()
    assert (root / "pending" / "later.json").exists()  # not waited for: its id is nowhere
    assert shown.returncode == 1, shown  # a command that is no wait: 1, as before


def test_an_interrupted_purge_says_what_stays_and_how_to_finish(
        root: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C during a purge exited 130 saying nothing, thousands of records removed by
    then (QA).  strace slows each removal so the interrupt comes mid-way."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    done = root / "done"
    old = time.time() - 3600
    for n in range(300):
        path = done / f"old-{n}.json"
        path.write_bytes(orjson.dumps({"id": f"old-{n}", "state": "done", "tool": "echo"}))
        os.utime(path, (old, old))
    proc = subprocess.Popen(
        [strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=unlink,unlinkat",
         "-e", "inject=unlink,unlinkat:delay_enter=20000", *CLI, "purge", "--older-than", "1m"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(done)) >= 290:  # removals under way
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.02)
        traced = psutil.Process(proc.pid).children()[0]  # the CLI, strace's tracee
        traced.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted: what was removed so far stays removed" in err, err
    assert 0 < len(os.listdir(done)) < 300


def test_cancel_and_retry_take_several_ids_a_line_each(root: Path,
                                                       env: dict[str, str]) -> None:
    """One call a job cost an operator 0.25 s of start-up each: 40 minutes for 10,000
    ids (QA).  Several ids are done one after another, each said on a line as ``wait``
    says several; one refused is an error line, exit 1, and the others go on."""
    for job_id in ("m1", "m2", "m3"):
        assert spoolq(env, "submit", "echo", "--id", job_id).returncode == 0
    cancelled = spoolq(env, "cancel", "m1", "nope", "m2")
    assert cancelled.returncode == 1
    assert cancelled.stdout.splitlines() == [b"m1 failed cancelled: cancelled while pending",
                                             b"m2 failed cancelled: cancelled while pending"]
    assert cancelled.stderr == b"spoolq: error: no job nope\n"
    retried = spoolq(env, "retry", "--json", "m1", "m2", "m3")
    assert retried.returncode == 1 and b"job m3" in retried.stderr
    rows = [orjson.loads(line) for line in retried.stdout.splitlines()]
    assert [(r["id"], r["state"]) for r in rows] == [("m1", "pending"), ("m2", "pending")]
    assert spoolq(env, "cancel", "m1", "m2", "m3").returncode == 0
    # One id: as before, the record shown whole.
    one = spoolq(env, "retry", "m1")
    assert one.returncode == 0 and one.stdout.startswith(b"id          m1\n")


def test_a_retry_of_several_names_the_ids_spool_trouble_left_untried(
        client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    """Spool trouble retrying the second id ended the command with the first one said
    and nothing of the third (a cancel of several names them; left by the fifty-second
    session's review)."""
    from spool.cli.jobs import _each  # noqa: PLC0415 - the command's own step

    for job_id in ("a", "b", "c"):
        client.spool.submit(Job(tool="echo"), job_id)
        client.cancel(job_id)
    real = client.retry

    def failing(job_id: str) -> Any:
        if job_id == "b":
            raise SpoolIOError("cannot write pending/b.json: Input/output error")
        return real(job_id)

    with pytest.raises(SpoolIOError):
        _each(["a", "b", "c"], failing, False)
    out, err = capsys.readouterr()
    assert out.startswith("a pending")
    assert err == "spoolq: not tried: c\n"
    assert client.reader.get("c").state is JobState.FAILED
