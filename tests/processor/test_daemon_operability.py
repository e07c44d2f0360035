"""What ops people see of the processor: stop signals, start-up errors, log lines.

Real daemons, real signals (see daemonkit).  Each test is a defect the sixth
session's review confirmed (docs/reliability.md).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, make_spool, tmpfs, wait_for, wait_record

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

StartDaemon = Callable[..., Daemon]
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
TOOLS = "ptools,optools"
MODES = ("fast", "compute")


def _other_threads(pid: int) -> list[int]:
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """A signal for one thread of ``pid``: where the kernel may put a signal sent to the
    whole process when the main thread cannot take it at once (just after a SIGCONT,
    for one: ``kill -STOP``, ``kill -CONT``, then ``kill -TERM`` lost it about every
    other time)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, signum) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _assert_stopped_cleanly(root: Path, d: Daemon, job_id: str) -> None:
    job = orjson.loads((root / "pending" / f"{job_id}.json").read_bytes())
    assert job["attempts"] == 0, "a run cut short by shutdown does not count"
    assert os.listdir(root / "running") == []
    assert os.listdir(root / "owners") == [], "lease and status file gone"
    assert [e["event"] for e in d.events() if e.get("id") == job_id] == ["claimed", "requeued"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_the_kernel_gives_another_thread_still_stops_it(
        spool_root: Path, daemon: StartDaemon, signum: int) -> None:
    """Python runs signal handlers on the main thread only, which slept in an
    untimed wait: a SIGTERM taken by any other thread was never acted on.  No grace:
    the run is cut short at once, and requeued as a stop leaves it (a grace of 1 s was
    waited out here and in the SIGHUP test below)."""
    d = daemon(SPOOL_GRACE_S="0")
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    _tgkill(d.pid, _other_threads(d.pid)[0], signum)
    assert d.proc is not None
    try:
        assert d.proc.wait(20) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("still running 20 s after the signal (grace: 0 s)")
    stopping = [e for e in d.events() if e.get("msg") == "stopping"]
    assert [e["signal"] for e in stopping] == [signal.Signals(signum).name]
    _assert_stopped_cleanly(spool_root, d, "long")


def test_sighup_stops_the_daemon_as_sigterm_does(spool_root: Path, daemon: StartDaemon
                                                 ) -> None:
    """A closed terminal or a `kill -HUP` ended it at once: jobs left in running/ (an
    attempt spent each at the next start), its lease file and status file left behind,
    and systemd (which counts SIGHUP as a clean end) did not restart it."""
    d = daemon(SPOOL_GRACE_S="0")  # as above: the run is requeued, not waited for
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    assert d.proc.wait(20) == 0
    assert [e["signal"] for e in d.events() if e.get("msg") == "stopping"] == ["SIGHUP"]
    _assert_stopped_cleanly(spool_root, d, "long")


def test_tool_text_that_is_not_utf8_is_recorded_not_fatal(
        spool_root: Path, daemon: StartDaemon) -> None:
    """An error message, an exception or a progress report carrying lone surrogates
    (a file name that is not UTF-8, as os.listdir gives it) crashed the processor
    while it wrote the record or the progress file, with every run in flight.  A FAST
    and a COMPUTE tool of each in one processor (a processor each took a second more)."""
    d = daemon(SPOOL_TOOLS=TOOLS)
    drop(spool_root, "beside", {"tool": "sleep", "params": {"seconds": 1}})
    for mode in MODES:
        for what in ("error", "raise", "progress"):
            drop(spool_root, f"{mode}-{what}", {"tool": f"o_{mode}", "params": {"what": what}})
    for mode in MODES:
        for what in ("error", "raise"):
            rec = wait_record(spool_root, f"{mode}-{what}", 20)
            assert rec["error"]["type"] == "tool_error"
            assert "cannot read name \\xff\\xfe of a file, a lone \\ud800 half" in \
                rec["error"]["message"]
        assert "\\xff" in wait_record(spool_root, f"{mode}-raise")["error"]["traceback"]
        assert wait_record(spool_root, f"{mode}-progress", 20)["state"] == "done"
    assert wait_record(spool_root, "beside", 20)["state"] == "done"
    assert d.running()
    assert d.stop() == 0


def test_warnings_and_errors_in_threads_are_json_lines(
        spool_root: Path, daemon: StartDaemon) -> None:
    """`warnings.warn` (numpy's RuntimeWarnings too) and an exception in a thread a
    tool started came out as plain text on stderr, between the JSON lines.  A FAST and
    a COMPUTE tool of each in one processor; each line names its job."""
    d = daemon(SPOOL_TOOLS=TOOLS)
    for mode in MODES:
        for what in ("warn", "thread"):
            drop(spool_root, f"{mode}-{what}", {"tool": f"o_{mode}", "params": {"what": what}})
            assert wait_record(spool_root, f"{mode}-{what}", 20)["state"] == "done"
    assert d.stop() == 0
    lines = d.logs().splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == []
    entries = [orjson.loads(line) for line in lines]
    for mode in MODES:
        warned = [e for e in entries if f"{mode}-warn: a warning from a tool" in e["msg"]]
        assert [e["level"] for e in warned] == ["warning"], mode
        failed = [e for e in entries
                  if f"{mode}-thread: an error in a thread" in e.get("exc", "")]
        assert [e["level"] for e in failed] == ["error"], mode


def _start_and_fail(root: Path, log: Path, prefix: list[str]) -> list[str]:
    """Start a processor that must refuse to run; its output lines."""
    d = Daemon(root, log, prefix=prefix)
    try:
        d.start(wait_ready=False)
        assert d.proc is not None
        assert d.proc.wait(30) == 2
    finally:
        d.abort()
    return d.logs().splitlines()


def test_an_owners_folder_it_cannot_write_exits_2_with_one_line(spool_root: Path,
                                                                 tmp_path: Path) -> None:
    """It crashed start-up with a traceback and exit status 1, so systemd restarted it
    every 2 s; a broken environment is one line and exit status 2 (docs/operations.md)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    owners = spool_root / "owners"
    owners.chmod(0o555)
    try:
        lines = _start_and_fail(spool_root, tmp_path / "daemon.log", NO_DAC)
    finally:
        owners.chmod(0o755)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"spool-processor: error: cannot take the owner lease {owners}/")
    assert lines[0].endswith(": Permission denied"), lines[0]
    assert os.listdir(owners) == []


@pytest.mark.parametrize("folder", ["pending", "running", "failed", "tmp", "cancel"])
def test_a_state_folder_it_cannot_read_exits_2_with_one_line(spool_root: Path, tmp_path: Path,
                                                             folder: str) -> None:
    """With owners/ writable but another folder not readable (wrong owners after a
    restore, say), start-up crashed: a 'crashed' log line with a traceback and exit
    status 1, so systemd restarted it every 2 s.  Like owners/ above: one line naming
    the folder, exit status 2 (docs/operations.md, Troubleshooting)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    path = spool_root / folder
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        lines = _start_and_fail(spool_root, tmp_path / "daemon.log", NO_DAC)
    finally:
        path.chmod(mode)
    plain = [line for line in lines if not line.startswith("{")]
    assert len(plain) == 1, lines
    assert plain[0].startswith("spool-processor: error: cannot use the spool: "), lines
    assert str(path) in plain[0] and "Permission denied" in plain[0], lines
    assert not any("Traceback" in line or '"crashed"' in line for line in lines), lines


def test_help_is_plain_text_and_says_the_commands_settings_and_exit_codes(
        tmp_path: Path) -> None:
    """``spool-processor --help`` showed reST markup (````spool-processor````), gave
    ``{run,tools}`` no help and named none of the variables the daemon reads beyond its
    three options, nor its exit codes (2: no restart under systemd)."""
    proc = subprocess.run([sys.executable, "-m", "processor", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    flat = " ".join(text.split())
    assert "``" not in text, text
    assert "run: the daemon (the default)" in flat and "tools: print the tool" in flat, text
    for variable in ("SPOOL_DIR", "SPOOL_TOOLS", "SPOOL_GRACE_S", "SPOOL_SCAN_S"):
        assert variable in text, (variable, text)
    assert "Exit status: 0 after a clean stop" in flat, text
    # Each with its default, from the settings model; it sent readers to a source file
    # (spool/settings.py) that an installed package's user does not have.
    assert "settings.py" not in text
    for setting in ("SPOOL_SCAN_S [5.0]", "SPOOL_GRACE_S [30.0]", "SPOOL_FSYNC [always]",
                    "SPOOL_MAX_JOB_BYTES [1048576]", "JOB_NUM [the CPUs it may use]"):
        assert setting in text, (setting, text)


def test_an_empty_spool_dir_option_is_refused_like_an_empty_spool_dir(tmp_path: Path) -> None:
    """``--spool-dir ''`` became Path('.'), the working directory, where ``SPOOL_DIR=``
    and ``spoolq --spool-dir ''`` are refused: a daemon started from inside a spool ran
    on it, from elsewhere it said '. is not an initialised spool'."""
    proc = subprocess.run([sys.executable, "-m", "processor", "--spool-dir", ""],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("SPOOL_")})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is empty" in lines[0], proc.stderr


def test_a_bad_option_value_is_named_as_the_option(tmp_path: Path) -> None:
    """``--job-num 0`` said 'invalid setting job_num: ...', the settings field, not the
    option given (nor the variable JOB_NUM, which was not set)."""
    proc = subprocess.run([sys.executable, "-m", "processor", "--job-num", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("SPOOL_")})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "spool-processor: error: invalid setting --job-num: Input should be greater than "
        "or equal to 1"], proc.stderr


def test_a_malformed_option_is_one_line_too(tmp_path: Path) -> None:
    """argparse's own refusals printed its usage block before the error: 3 to 4 lines
    where operations.md promises one (as ``spoolq`` gives)."""
    for args, says in ((["--job-num", "abc"], "argument --job-num: not a whole number"),
                       (["tools", "--bogus"], "unrecognized arguments: --bogus")):
        proc = subprocess.run([sys.executable, "-m", "processor", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"spool-processor: error: {says}"), \
            proc.stderr
        assert lines[0].endswith("(see 'spool-processor --help')"), proc.stderr


def test_an_argument_a_usage_error_names_as_typed_is_escaped(tmp_path: Path) -> None:
    """argparse names an unrecognized argument as typed, not with ``repr``: an escape in
    it reached the terminal (h411)."""
    proc = subprocess.run([sys.executable, "-m", "processor", "tools", "\x1b[31mX"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "\x1b" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("spool-processor: error: unrecognized arguments: "
                                  "\\x1b[31mX (see "), proc.stderr


def test_a_spool_on_a_read_only_filesystem_exits_2_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        make_spool(mnt / "spool")
        drop(mnt / "spool", "waiting", {"tool": "echo"})
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        lines = _start_and_fail(mnt / "spool", tmp_path / "daemon.log", [])
        assert os.listdir(mnt / "spool" / "pending") == ["waiting.json"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("spool-processor: error: cannot take the owner lease ")
    assert lines[0].endswith(": Read-only file system"), lines[0]


def test_recovery_logs_a_line_per_orphan_it_requeues_or_abandons(spool_root: Path,
                                                                 daemon: StartDaemon) -> None:
    """Recovery's requeues and abandons were only ids in its one summary line: the
    `select(.id=="ID")` and `select(.event=="failed")` queries of docs/operations.md
    missed them, and 400 orphans with long ids made a line of 50 kB, more than
    journald keeps whole (LineMax, 48K), so the whole line was lost to `jq`."""
    d = daemon()
    drop(spool_root, "again", {"tool": "sleep", "params": {"seconds": 30}, "max_attempts": 2})
    drop(spool_root, "once", {"tool": "sleep", "params": {"seconds": 30}})
    wait_for(lambda: len(os.listdir(spool_root / "running")) == 2, 10, "both running")
    d.kill()
    long_ids = [f"{n:03d}-" + "x" * 120 for n in range(400)]
    for job_id in long_ids:  # left by a processor that died, as "once" was
        (spool_root / "running" / f"{job_id}.json").write_bytes(b'{"tool": "echo"}')
    restarted = daemon()
    assert wait_record(spool_root, "once")["error"]["type"] == "abandoned"
    restarted.stop()
    lines = restarted.logs().splitlines()
    assert max(len(line) for line in lines) < 48 * 1024
    entries = [orjson.loads(line) for line in lines]
    abandoned = [e["id"] for e in entries
                 if e.get("event") == "failed" and e.get("error_type") == "abandoned"]
    assert sorted(abandoned) == sorted(["once", *long_ids])
    requeued = [(e["reason"], e.get("tool"), e.get("attempt")) for e in entries
                if e.get("event") == "requeued" and e["id"] == "again"]
    # Once its backoff is over it runs again, and the stop may requeue it for "shutdown".
    assert requeued[:1] == [("orphaned", "sleep", 1)]
    assert [r[0] for r in requeued].count("orphaned") == 1
    # Its line names the backoff its job file carries, in UTC with a Z as ts has it (it
    # said neither the wait nor the error, and a retry_at in the log read +00:00).
    orphaned = next(e for e in entries if e.get("event") == "requeued" and e["id"] == "again")
    assert orphaned["error_type"] == "abandoned", orphaned
    assert 0.0 <= orphaned["retry_in_s"] <= 1.0, orphaned  # after run 1: 0.5 to 1 s drawn
    assert orphaned["retry_at"].endswith("Z") and orphaned["ts"].endswith("Z"), orphaned
    left = datetime.fromisoformat(orphaned["retry_at"]) - datetime.fromisoformat(orphaned["ts"])
    # retry_in_s is the time left when the line is written, as a run's requeue line says
    # it (it was the delay drawn, which the start-up pass's time since had shortened:
    # 0.69 s once under a full run's load): the line's ts, to its millisecond, agrees.
    # A pass slower than the backoff (0.25 s past it once, under a full run's load) says
    # 0 s left, never less.
    slack_s = 0.002  # the ts's milliseconds, retry_in_s's rounding
    expected = max(0.0, left.total_seconds())
    assert -slack_s <= orphaned["retry_in_s"] - expected <= 0.1, orphaned
    # The orphans' lines name their tool and attempt, as a run's own lines do.
    once = [e for e in entries if e.get("event") == "failed" and e["id"] == "once"]
    assert [(e["tool"], e["attempt"]) for e in once] == [("sleep", 1)]
    summary = [e for e in entries if e.get("msg") == "recovery"]
    assert len(summary) == 1 and summary[0]["requeued"] == ["again"]


def test_a_recovery_pass_that_changed_nothing_logs_nothing(spool_root: Path, tmp_path: Path,
                                                           daemon: StartDaemon) -> None:
    """A ``recovery`` summary line comes with the pass that settled an orphan, not with
    every pass: an empty one each ``SPOOL_SCAN_S`` would be 17,000 lines a day."""
    d = daemon()
    for job_id in ("first", "second"):  # left by a processor that died, found by a pass
        left = tmp_path / f"{job_id}.json"
        left.write_bytes(b'{"tool": "echo"}')
        os.rename(left, spool_root / "running" / f"{job_id}.json")
        assert wait_record(spool_root, job_id)["error"]["type"] == "abandoned"
    assert d.stop() == 0
    summary = [e for e in d.events() if e.get("msg") == "recovery"]
    assert [e["abandoned"] for e in summary] == [["first"], ["second"]], summary


def test_a_cancel_asked_while_the_processor_was_down_is_honoured_at_restart(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A cancel of a running job whose processor had died was answered (statusd: 200)
    and kept in cancel/, but the restarted processor's recovery requeued the job and
    removed the request: the job ran again, with its attempt count raised."""
    d = daemon()
    drop(spool_root, "unwanted", {"tool": "sleep", "params": {"seconds": 30},
                                  "max_attempts": 3})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the job to run")
    d.kill()
    layout = Layout(spool_root)
    Client(layout, Mover(layout, FsyncMode.NEVER)).cancel("unwanted", wait_s=0)
    restarted = daemon()
    rec = wait_record(spool_root, "unwanted")
    restarted.stop()
    assert (rec["state"], rec["error"]["type"], rec["attempts"]) == (
        "failed", "cancelled", 1)
    entries = [orjson.loads(line) for line in restarted.logs().splitlines()]
    mine = [(e["event"], e.get("error_type"), e.get("reason")) for e in entries
            if e.get("id") == "unwanted" and "event" in e]
    assert mine == [("failed", "cancelled", "orphaned")]
    assert os.listdir(spool_root / "cancel") == []


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_not_before_that_comes_due_in_the_grace_period_does_not_spin_the_loop(
        spool_root: Path, daemon: StartDaemon) -> None:
    """The loop woke at once, over and over, for a delayed job (or a retry in backoff)
    it would not claim while stopping: a core at 100 % for the rest of the grace."""
    d = daemon(SPOOL_GRACE_S="10")
    # FAST runs wait for the processor's background import of numpy and pandas, seconds
    # on a loaded host, and "later" would be due by the time "behind" ran: over first.
    drop(spool_root, "warm", {"tool": "echo"})
    wait_record(spool_root, "warm", 60)
    drop(spool_root, "long", {"tool": "sleep", "params": {"seconds": 60}})
    wait_for(lambda: os.listdir(spool_root / "running"), 10, "the long job to run")
    # "later" must still be waiting when the stop comes: due 1 s on, it was claimed and
    # run whenever "behind"'s round trip and the signal took longer (a 1 s stall of this
    # thread before the signal did it every time).  The grace outlasts the look below.
    due = time.time() + 3.0
    drop(spool_root, "later", {"tool": "echo", "not_before": due})
    # Taken in (it waits in the processor for its time) once a job dropped after it ran.
    drop(spool_root, "behind", {"tool": "echo"})
    wait_record(spool_root, "behind", 30)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any(e.get("msg") == "stopping" for e in d.events()), 10, "stopping")
    time.sleep(max(0.0, due + 0.2 - time.time()))  # "later" is due now
    before = _cpu_s(d.pid)
    time.sleep(1.5)
    used = _cpu_s(d.pid) - before
    assert used < 0.5, f"the loop used {used:.2f} s of CPU in 1.5 s of grace"
    assert d.stop() == 0
    assert sorted(os.listdir(spool_root / "pending")) == ["later.json", "long.json"]


def test_a_misspelt_setting_is_warned_of_not_silently_its_default(
        spool_root: Path, daemon: StartDaemon) -> None:
    """``SPOOL_FSYNCC=never`` left fsync at its default with no word (QA); the real
    names, and SPOOL_RETENTION (the purge unit's), are no warning."""
    d = daemon(SPOOL_FSYNCC="never", SPOOL_RETENTION="14d", SPOOL_SCAN_S="5")
    warned = [(e.get("setting"), e.get("did_you_mean")) for e in d.events()
              if e.get("level") == "warning" and "unknown setting" in e.get("msg", "")]
    assert warned == [("SPOOL_FSYNCC", "SPOOL_FSYNC")], d.logs()[-2000:]
