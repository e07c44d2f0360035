"""``spoolq`` beside a real ``spool-processor``: what a script learns from the processor.

* ``submit`` of a tool the running processor does not offer (its status file lists
  its catalogue) is refused, exit 2, with nothing dropped: before, the drop was
  accepted and failed ``unknown_tool`` a moment later.  ``--any-tool`` submits it
  anyway; with no processor running nothing is checked.
* ``wait`` and ``submit --wait`` say once, on stderr, when no processor seems to be
  running, and wait on: before, they waited in silence for ever.

The processor is the real one (``python -m processor``), started and stopped by pid.
The waits that sit out the quiet period before that note run ``quick_cli.py``: the
shipped CLI with the period 1 s, not 3.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from quick_cli import QUICK_CLI, QUIET_ENV
from spoolkit import (
    Proc,
    open_pty,
    read_until,
    run_all,
    spoolq,
    start_processor,
    stop_processor,
)

from spool.fsops import Mover
from spool.layout import Layout
from spool.lease import OwnerLease
from spool.models import Job, OwnerStatus
from spool.settings import FsyncMode
from spool.transitions import Spool

NO_PROCESSOR = "no processor seems to be running"
QUIET_S = 1.0
"""The lookout's quiet period in the waits below (``spoolq`` ships 3 s): the note on a
spool with no status file comes that long after the wait began (quick_cli.py)."""

Start = Callable[[], subprocess.Popen[bytes]]


def spool_of(root: Path) -> Spool:
    layout = Layout(root)
    return Spool(layout, Mover(layout, FsyncMode.NEVER))


def refused(proc: Proc, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, one ``spoolq: error:`` line naming ``words``."""
    assert proc.returncode == code, (proc.args, proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def processor(root: Path, env: dict[str, str], tmp_path: Path
              ) -> Iterator[Start]:
    """Start a real processor on ``root`` (its status file written); each is stopped by
    SIGTERM (killed if it does not stop) when the test ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = start_processor(root, env, tmp_path / f"processor-{len(started)}.log",
                               JOB_NUM="1", SPOOL_SCAN_S="1")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_processor(proc)


# -- submit: the running processor's catalogue --------------------------------------------


def test_submit_refuses_a_tool_the_running_processor_does_not_offer(
        root: Path, env: dict[str, str], processor: Start, tmp_path: Path) -> None:
    processor()
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "NOSUCHTOOL", "params": {"x": 1}}))
    options, from_file, waiting, typo, anyway, known = run_all(
        env, ["submit", "NOSUCHTOOL"], ["submit", "--file", str(job_file)],
        ["submit", "NOSUCHTOOL", "--wait", "--json"], ["submit", "ehco", "-p", "message=hi"],
        ["submit", "NOSUCHTOOL", "--any-tool", "--id", "anyway"],
        ["submit", "echo", "-p", "message=hi", "--wait", "--json"])
    for proc in (options, from_file, waiting):
        line = refused(proc, 2, "unknown tool 'NOSUCHTOOL'", "echo, get_kline",
                       "spoolq tools", "--any-tool")
        assert "running processor" in line, line
    refused(typo, 2, "unknown tool 'ehco'", "did you mean 'echo'?")
    assert anyway.returncode == 0 and anyway.stdout == "anyway\n", anyway
    assert anyway.stderr == ""
    assert known.returncode == 0, known.stderr
    assert orjson.loads(known.stdout)["result"] == {"message": "hi"}
    assert NO_PROCESSOR not in known.stderr
    # Only the job submitted --any-tool reached the spool; the processor fails it.
    ran = spoolq(env, "wait", "anyway", "--json", "--timeout", "30")
    assert ran.returncode == 1 and orjson.loads(ran.stdout)["error"]["type"] == "unknown_tool"
    listed = orjson.loads(spoolq(env, "ls", "--json").stdout)["tasks"]
    assert sorted(r["tool"] for r in listed) == ["NOSUCHTOOL", "echo"]


def test_submit_refuses_params_the_running_processors_tool_does_not_take_or_lacks(
        root: Path, env: dict[str, str], processor: Start, tmp_path: Path) -> None:
    """A misspelt param was dropped, and failed ``invalid_params`` once claimed (h331);
    by the catalogue, names the tool does not take (its params forbid others) or needs
    are refused, as an unknown tool is; their values stay the tool's to judge."""
    processor()
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "echo", "params": {"mesage": "hi"}}))
    typo, from_file, missing, anyway, wrong_type = run_all(
        env, ["submit", "echo", "-p", "mesage=hi"], ["submit", "--file", str(job_file)],
        ["submit", "get_kline", "-p", "limit=3"],
        ["submit", "echo", "-p", "mesage=hi", "--any-tool", "--id", "anyway"],
        ["submit", "get_kline", "-p", "symbol=S0000", "-p", "limit=many", "--id", "typed"])
    for proc in (typo, from_file):
        refused(proc, 2, "tool 'echo' takes no param 'mesage' (did you mean 'message'?)",
                "its params are message", "--any-tool")
    line = refused(missing, 2, "tool 'get_kline' needs 'symbol'", "--any-tool")
    assert "takes no param" not in line, line
    assert anyway.returncode == 0 and anyway.stdout == "anyway\n", anyway
    assert wrong_type.returncode == 0, wrong_type.stderr  # a value: the tool's to judge
    for job_id in ("anyway", "typed"):
        ran = spoolq(env, "wait", job_id, "--json", "--timeout", "30")
        assert ran.returncode == 1, ran
        assert orjson.loads(ran.stdout)["error"]["type"] == "invalid_params"
    listed = orjson.loads(spoolq(env, "ls", "--json").stdout)["tasks"]
    assert sorted(r["id"] for r in listed) == ["anyway", "typed"]


def test_submit_notes_a_timeout_above_the_tools_limit(
        root: Path, env: dict[str, str], processor: Start, tmp_path: Path) -> None:
    """A job's ``timeout`` may only lower its tool's (DESIGN section 9): asking for more
    was taken without a word, and the job killed at the tool's limit (h380).  The
    submit goes ahead; a note says so."""
    processor()
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": "hi"},
                                       "timeout": 90}))
    above, from_file, below = run_all(
        env, ["submit", "echo", "-p", "message=hi", "--timeout", "60", "--id", "above"],
        ["submit", "--file", str(job_file), "--id", "from-file"],
        ["submit", "echo", "-p", "message=hi", "--timeout", "5", "--id", "below"])
    for proc, job_id, asked in ((above, "above", "60 s"), (from_file, "from-file", "90 s")):
        assert proc.returncode == 0 and proc.stdout == f"{job_id}\n", proc
        assert proc.stderr == (f"spoolq: tool echo stops a job after 10 s (its "
                               f"execution_timeout); the job's timeout of {asked} does not "
                               "raise it\n"), proc.stderr
    assert below.returncode == 0 and below.stdout == "below\n" and below.stderr == "", below
    for job_id in ("above", "from-file", "below"):
        assert spoolq(env, "wait", job_id, "--timeout", "30").returncode == 0


def test_a_number_for_a_param_the_tool_takes_as_text_stays_text(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """``-p symbol=600519`` (a ticker: A-shares, Tokyo) read as JSON was the number
    600519, and the job failed invalid_params "Input should be a valid string"; only
    ``'"600519"'`` got it through.  By the running processor's catalogue, a number for a
    param taken as text (or a list of text) is the text given; a number param is not."""
    processor()  # its status file, with its catalogue, written
    ids = ("kline", "backtest", "limit")
    for job_id, params in zip(ids, (["symbol=600519", "limit=7"], ["symbols=600519"],
                                    ["symbol=S0000", "limit=7.0"]), strict=True):
        tool = "run_backtest" if job_id == "backtest" else "get_kline"
        args = [a for p in params for a in ("-p", p)]
        done = spoolq(env, "submit", tool, *args, "--id", job_id)
        assert done.returncode == 0, done.stderr
    shown = {job_id: spoolq(env, "show", job_id, "--json") for job_id in ids}
    got = {job_id: orjson.loads(proc.stdout)["params"] for job_id, proc in shown.items()}
    assert got["kline"] == {"symbol": "600519", "limit": 7}, got
    assert got["backtest"] == {"symbols": "600519"}
    assert got["limit"] == {"symbol": "S0000", "limit": 7.0}  # a number param: as given
    # A number the spool's JSON cannot hold was refused though the tool takes it as text;
    # for a number param it still is, naming the option.
    big = "123456789012345678901234567890"
    for value in (big, "1e999"):
        kept = spoolq(env, "submit", "get_kline", "-p", f"symbol={value}", "--json")
        assert kept.returncode == 0, kept.stderr
        shown = spoolq(env, "show", orjson.loads(kept.stdout)["id"], "--json")
        assert orjson.loads(shown.stdout)["params"] == {"symbol": value}
    refused = spoolq(env, "submit", "get_kline", "-p", "symbol=S0000", "-p", f"limit={big}")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"spoolq: error: argument -p: limit: the integer {big} does not fit 64 bits "
        "(-9223372036854775808 to 18446744073709551615); quote it to send it as a string "
        "(see 'spoolq submit --help')\n")


def test_submit_with_no_processor_running_checks_no_tool(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """No status file (no processor ever ran, or it stopped cleanly): nothing to check
    against, and a spool is a queue: the job waits for a processor that may know it."""
    never = spoolq(env, "submit", "NOSUCHTOOL", "--id", "before")
    assert (never.returncode, never.stdout, never.stderr) == (0, "before\n", "")
    proc = processor()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not list((root / "owners").iterdir())  # the clean stop removed its status file
    after = spoolq(env, "submit", "NOSUCHTOOL", "--id", "after")
    assert (after.returncode, after.stdout, after.stderr) == (0, "after\n", "")


def test_submit_wait_quiet_prints_only_the_id_and_exits_as_wait_does(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """``submit --wait -q``: the id for a script to keep, then wait's exit code (0 done,
    1 failed) with nothing else; ``-q`` without ``--wait`` is a usage error."""
    processor()
    done, failed, alone = run_all(
        env, ["submit", "echo", "--id", "ok", "--wait", "-q"],
        ["submit", "sleep", "-p", "seconds=-1", "--id", "bad", "--wait", "--quiet"],
        ["submit", "echo", "--id", "alone", "-q"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    assert (failed.returncode, failed.stdout, failed.stderr) == (1, "bad\n", "")
    assert spoolq(env, "show", "bad", "--json").stdout.count("invalid_params") == 1
    refused(alone, 2, "--quiet", "--wait")
    assert not os.path.lexists(root / "pending" / "alone.json")


# -- wait: no processor -------------------------------------------------------------------


def _quick(env: dict[str, str]) -> dict[str, str]:
    """``env`` for :data:`QUICK_CLI` with the lookout's quiet period :data:`QUIET_S`."""
    return {**env, QUIET_ENV: str(QUIET_S)}


def _stderr_until(path: Path, proc: subprocess.Popen[str], text: str) -> str:
    deadline = time.monotonic() + 30
    while text not in (seen := path.read_text()):
        assert proc.poll() is None, (proc.returncode, seen)
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    return seen


def test_wait_says_once_that_no_processor_runs_and_waits_on(
        root: Path, env: dict[str, str], processor: Start, tmp_path: Path) -> None:
    err_path = tmp_path / "wait.err"
    with open(err_path, "w") as err:
        waiting = subprocess.Popen([*QUICK_CLI, "submit", "echo", "-p", "message=late", "--id",
                                    "late", "--wait"], env=_quick(env), cwd=tmp_path, text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=err)
    try:
        said = _stderr_until(err_path, waiting, NO_PROCESSOR)
        processor()  # the job may be picked up later: the wait goes on, and ends with it
        out, _ = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err_path.read_text()
    assert out.startswith("late\n") and "state       done" in out
    lines = err_path.read_text().splitlines()
    assert [line for line in lines if NO_PROCESSOR in line] == [said.splitlines()[-1]]
    note = said.splitlines()[-1]
    assert note.startswith("spoolq: ") and f"no status file in {root}/owners/" in note, note
    assert "late" in note and lines[-1] == "late: done", lines


def test_wait_says_at_once_when_the_processor_was_killed(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """A SIGKILLed processor leaves its status file, its lock free: said at once (the
    wait's --timeout of 1 s ends before a spool with no status file at all is noted)."""
    proc = processor()
    ran = spoolq(env, "submit", "echo", "--id", "ran", "--wait")
    assert ran.returncode == 0, ran.stderr
    proc.kill()
    proc.wait(10)
    spool_of(root).submit(Job(tool="echo"), "orphaned")
    waited, finished = run_all(env, ["wait", "orphaned", "--timeout", "1"], ["wait", "ran"])
    # A finished job's wait ends at once: no word about processors, whatever owners/ holds.
    assert (finished.returncode, finished.stderr) == (0, "ran: done\n"), finished.stderr
    assert waited.returncode == 3, waited.stderr
    notes = [line for line in waited.stderr.splitlines() if NO_PROCESSOR in line]
    assert len(notes) == 1, waited.stderr
    assert f"pid {proc.pid}" in notes[0] and "last heartbeat" in notes[0], notes
    assert "holds no lock" in notes[0] and f"{root}/owners/" in notes[0], notes


@contextlib.contextmanager
def _hung(root: Path, heartbeat_at: datetime) -> Iterator[None]:
    """A processor ``hung-1`` (this pid, on host ``test``) holding its lock, its last
    heartbeat at ``heartbeat_at``: SIGSTOPped or hung, as readers see it."""
    layout = Layout(root)
    lease = OwnerLease(layout.owner_lock("hung-1"))
    try:
        spool_of(root).mover.publish(layout.owner_status("hung-1"), OwnerStatus(
            owner="hung-1", pid=os.getpid(), host="test", version="0",
            started_at=heartbeat_at, heartbeat_at=heartbeat_at,
            tools=[{"name": "echo"}]).model_dump_json().encode())
        yield
    finally:
        lease.release()


def test_wait_says_at_once_when_a_live_processor_stopped_heartbeating(
        root: Path, env: dict[str, str]) -> None:
    """Its lock held (a SIGSTOPped or hung processor) but its heartbeat 2 minutes old."""
    spool_of(root).submit(Job(tool="echo"), "stuck")
    old = datetime.now(UTC) - timedelta(minutes=2)
    with _hung(root, old):
        began = datetime.now(UTC)
        waited = spoolq(env, "wait", "stuck", "--timeout", "1")
        ended = datetime.now(UTC)
    assert waited.returncode == 3, waited.stderr
    notes = [line for line in waited.stderr.splitlines() if NO_PROCESSOR in line]
    assert len(notes) == 1, waited.stderr
    assert "hung-1" in notes[0] and "holds its lock" in notes[0], notes
    # The heartbeat's age when the note was written, in minutes to a tenth: 2.0m at
    # once, more on a loaded host ("2.1m": spoolq's start and wait took 3 s there).
    age = re.search(r"last heartbeat (\d+\.\d)m ago", notes[0])
    assert age is not None, notes
    least, most = ((at - old).total_seconds() / 60 for at in (began, ended))
    assert round(least, 1) <= float(age.group(1)) <= round(most, 1), (notes, least, most)


def test_stats_names_a_processor_that_holds_its_lock_but_stopped_heartbeating(
        root: Path, env: dict[str, str]) -> None:
    """``stats`` said only "processor down: no live processor on this spool" of a
    SIGSTOPped or hung one, which ``wait`` names (QA h377): the operator looked for a
    process that had died, not one to kill.  It names it as ``wait`` does."""
    with _hung(root, datetime.now(UTC) - timedelta(minutes=2)):
        table = spoolq(env, "stats")
    assert table.returncode == 0, table.stderr
    down = [line for line in table.stdout.splitlines()
            if line.startswith("processor down:")]
    assert len(down) == 1, table.stdout
    assert re.fullmatch(rf"processor down: pid {os.getpid()} on test holds its lock, last "
                        r"heartbeat 2\.\dm ago \(stopped or hung\?\)", down[0]), down
    gone = spoolq(env, "stats")  # the lock let go: a processor gone, nothing to name
    assert "processor down: no live processor on this spool" in gone.stdout, gone.stdout


def test_stats_names_a_hung_processor_beside_a_live_one(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """Two processors on one spool, one SIGSTOPped or hung (its lock held, its heartbeat
    2 minutes old): ``stats`` said "processor up: 1 live" and "0 busy" and nothing of
    the other, whose running jobs no live processor takes and which wait for it (QA
    h388: a job shown "running" for minutes, nothing saying why).  The held one is named,
    as when it is the only one."""
    processor()
    with _hung(root, datetime.now(UTC) - timedelta(minutes=2)):
        table = spoolq(env, "stats")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.startswith("processor up: 1 live") for line in lines), table.stdout
    hung = [line for line in lines if line.startswith("processor hung:")]
    assert len(hung) == 1, table.stdout
    assert re.fullmatch(rf"processor hung: pid {os.getpid()} on test holds its lock, last "
                        r"heartbeat 2\.\dm ago \(stopped or hung\?\); its running jobs "
                        r"wait for it", hung[0]), hung


def test_wait_says_nothing_while_a_processor_runs(
        root: Path, env: dict[str, str], processor: Start) -> None:
    """A job not due for a minute: the wait outlasts the delay before a note, silently."""
    processor()
    later = datetime.now(UTC) + timedelta(minutes=1)
    spool_of(root).submit(Job(tool="echo", not_before=later), "later")
    waited, quiet = run_all(_quick(env), ["wait", "later", "--timeout", "3"],
                            ["wait", "later", "--timeout", "3", "--quiet"], cli=QUICK_CLI)
    assert waited.returncode == 3 and waited.stderr.splitlines() == [
        "later: pending", "spoolq: job later is still pending after 3 s"], waited.stderr
    assert (quiet.returncode, quiet.stderr) == (3, "")


def test_the_note_leaves_the_progress_bar_whole(root: Path, env: dict[str, str]) -> None:
    """On a terminal the bar is cleared, the note gets a line of its own, and the bar is
    drawn again below it."""
    spool_of(root).submit(Job(tool="echo"), "barred")
    master, slave = open_pty(160)
    waiting = subprocess.Popen([*QUICK_CLI, "wait", "barred", "--timeout", "4"], env=_quick(env),
                               cwd=root.parent, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, b"barred pending", seen)
        read_until(master, NO_PROCESSOR.encode(), seen)
        waiting.communicate(timeout=30)
        read_until(master, b"\x00never", seen, deadline_s=1)
    finally:
        os.close(master)
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 3
    drawn = seen.decode()
    before, note_and_after = drawn.split("spoolq: no processor", 1)
    assert before.startswith("\rbarred pending") and before.endswith("\r"), drawn
    assert before.rsplit("\r", 2)[1].strip() == "", drawn  # the bar blanked before it
    note, after = note_and_after.split("\r\n", 1)  # the note: one line of its own
    assert "\r" not in note, drawn
    assert after.startswith("\rbarred pending"), drawn  # the bar again, below the note
    assert NO_PROCESSOR not in after
