"""``spoolq demo`` end to end: both daemons as subprocesses, real jobs, clean stop."""

from __future__ import annotations

import argparse
import fcntl
import http.server
import io
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from spool.cli import demo
from spool.models import Record

pytestmark = pytest.mark.preload_quant  # the main job, as a user runs it

DEMO = [sys.executable, "-m", "spool.cli.main", "demo"]


def _spool_in(tmp_path: Path) -> list[str]:
    """The demo's spool in the test's own folder (by default it stays in /tmp to look at)."""
    return ["--spool-dir", str(tmp_path / "spool")]


def _spool_of(output: str) -> Path:
    match = re.search(r"^spool\s+(\S+)$", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


def _daemons_of(spool: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("SPOOL_DIR") == str(spool):
            found.append(proc)
    return found


def test_demo_runs_both_jobs_prints_results_and_stops_the_daemons(tmp_path: Path) -> None:
    started = time.monotonic()
    # As the README runs it: the spool a new folder in the temporary directory.
    proc = subprocess.run([*DEMO, "--symbols", "60", "--bars", "800"], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert time.monotonic() - started < 60
    assert "Backtest: ma_crossover fast=10 slow=50" in out
    assert re.search(r"^\s+S\d{4}\s+-?\d+\.\d%", out, re.MULTILINE), "a metrics row"
    assert re.search(r"^\s+1\s+-?\d\.\d{4}", out, re.MULTILINE), "an IC row for horizon 1"
    # Returns in percent, as the table gives them (the summary said 0.4975 under 305.9%).
    assert re.search(r"mean_total_return=-?\d+\.\d%", out), out
    # The URL printed last is dead a moment later: the line says so, and how to keep it.
    assert re.search(r"dashboard\s+http://127\.0\.0\.1:\d+/ stops with the demo, now "
                     r"\('spoolq demo --keep'", out), out
    assert "stopped    spool-processor (exit 0)" in out
    assert "stopped    spool-statusd (exit 0)" in out
    spool = _spool_of(out)
    assert spool.parent == tmp_path
    assert out.splitlines()[-1].startswith(f"spool      {spool} stays for a look"), out
    assert len(os.listdir(spool / "done")) == 2
    _assert_all_gone(spool)


def _assert_all_gone(spool: Path) -> None:
    deadline = time.monotonic() + 10
    while _daemons_of(spool) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [(p.pid, p.cmdline()) for p in _daemons_of(spool)]
    assert left == []


def _demo_running_a_job(tmp_path: Path, *, symbols: int
                        ) -> tuple[subprocess.Popen[str], list[str], Path]:
    """A demo started in ``tmp_path``, once its processor runs a job (or it ended): the
    process, its output lines so far, its spool."""
    proc = subprocess.Popen([*DEMO, "--symbols", str(symbols), "--bars", "2520",
                             *_spool_in(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("submitted"):
            break
    spool = _spool_of("".join(lines))
    deadline = time.monotonic() + 30
    while not (running := os.listdir(spool / "running")) and proc.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    # Past the deadline the callers' interrupt came before any job ran, and the first
    # test passed all the same (h343).
    assert running or proc.poll() is not None, "no job ran within 30 s of the submits"
    return proc, lines, spool


def test_demo_stops_the_daemons_on_interrupt(tmp_path: Path) -> None:
    # The interrupt comes once the processor runs a job (it used to come at the first
    # "submitted", before or after the claim, with 400 symbols to make the jobs long).
    proc, lines, _ = _demo_running_a_job(tmp_path, symbols=100)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "interrupted" in out
    _assert_all_gone(_spool_of(out))


def test_a_second_interrupt_stops_the_running_jobs_now_and_still_stops_the_daemons(
        tmp_path: Path) -> None:
    """The first Ctrl-C gives running jobs the processor's grace period (30 s); a second
    one, as in a terminal, ends it: the demo passes it on and still waits for both daemons.
    It used to end the demo at once (exit 130), leaving the processor running its jobs
    until they finished, with nothing printed about it."""
    proc, lines, spool = _demo_running_a_job(tmp_path, symbols=500)
    deadline = time.monotonic() + 30
    proc.send_signal(signal.SIGINT)
    log = spool / "spool-processor.log"
    while '"msg":"stopping"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(spool / "running"), "the jobs still run at the second interrupt"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "stopped    spool-processor (exit 0)" in out, out
    assert "stopping now" in log.read_text()
    assert len(os.listdir(spool / "pending")) == 2, "both jobs requeued, not run to the end"
    _assert_all_gone(spool)


def test_a_closed_terminal_stops_the_demo_and_both_daemons(tmp_path: Path) -> None:
    """The demo in a terminal of its own (a pty it leads, as a shell's job is), which
    closes while a job runs: the hangup (SIGHUP) stops it as Ctrl-C does.  It killed the
    demo alone (its daemons run in sessions of their own), and both daemons ran on for
    good; the demo's writes to the hung-up terminal fail, which must not cut the stop
    short."""
    spool = tmp_path / "spool"
    pid, master = pty.fork()
    if pid == 0:  # the child: the demo, in a session whose terminal is the pty
        os.execv(sys.executable, [*DEMO, "--symbols", "100", "--bars", "2520",
                                  *_spool_in(tmp_path)])
    try:
        said = b""
        deadline = time.monotonic() + 60
        while b"submitted" not in said and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                said += os.read(master, 4096)
        while not (spool / "running").is_dir() or not os.listdir(spool / "running"):
            assert time.monotonic() < deadline, said.decode(errors="replace")
            time.sleep(0.01)
    finally:
        os.close(master)  # the terminal hangs up
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 130
        _assert_all_gone(spool)
    finally:  # what a failure left running
        for proc in _daemons_of(spool):
            proc.kill()
    # Each stopped by its SIGTERM, not killed at the demo's stop timeout.
    assert '"msg":"stopped"' in (spool / "spool-processor.log").read_text()
    assert "spoolq.statusd: stopping" in (spool / "spool-statusd.log").read_text()


def test_demo_stops_a_daemon_that_started_when_the_other_cannot(tmp_path: Path) -> None:
    """statusd cannot bind a busy port: the processor already started is stopped too."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*DEMO, "--symbols", "20", "--bars", "300", "--port", str(port),
                               *_spool_in(tmp_path)],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "HOME": str(tmp_path)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "spool-statusd did not start" in out, out
    assert "stopped    spool-processor" in out
    _assert_all_gone(_spool_of(out))


# Run in the demo's process (SQUAT_FREED_PORTS, dropped from its environment at once, so
# its daemons run without it): a port the demo bound as 0 and let go is taken straight
# after, as any other process's bind or outgoing connection may take it.
_SQUATTER = """
import os, socket
if os.environ.pop("SQUAT_FREED_PORTS", None):
    _bind, _close, _asked_0, _held = socket.socket.bind, socket.socket.close, set(), []

    def bind(self, address):
        _bind(self, address)
        if isinstance(address, tuple) and address[1] == 0:
            _asked_0.add(id(self))

    def close(self):
        freed = self.getsockname() if id(self) in _asked_0 else None
        _asked_0.discard(id(self))
        _close(self)
        if freed is not None:
            squatter = socket.socket()
            squatter.bind(freed)
            squatter.listen()
            _held.append(squatter)

    socket.socket.bind, socket.socket.close = bind, close
"""


def test_demo_statusd_gets_a_port_no_one_can_take_first(tmp_path: Path) -> None:
    """Without --port the demo picked a free port (bound and let go) and statusd bound it
    only after the demo data was made: another process could take it meanwhile (an
    outgoing connection of any program, a server's port 0), and the demo failed with
    "spool-statusd did not start: ... address already in use"."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SQUATTER)
    env = {**os.environ, "HOME": str(tmp_path), "SQUAT_FREED_PORTS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ["PYTHONPATH"]])}
    proc = subprocess.run([*DEMO, "--symbols", "20", "--bars", "300", *_spool_in(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    port = re.search(r"^dashboard\s+http://127\.0\.0\.1:(\d+)/$", out, re.MULTILINE)
    assert port is not None, out
    assert f"statusd listening on http://127.0.0.1:{port.group(1)}" in (
        _spool_of(out) / "spool-statusd.log").read_text()
    _assert_all_gone(_spool_of(out))


def test_demo_on_a_port_another_server_answers_says_its_statusd_did_not_start(
        tmp_path: Path) -> None:
    """Another server on ``--port`` answered /healthz: the demo took it for its statusd
    (gone with 'address already in use'), printed that server's dashboard, and with
    ``--keep`` said both daemons were left running, exit 0 (QA)."""
    class Anything(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Anything)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        proc = subprocess.run([*DEMO, "--symbols", "20", "--bars", "300", "--keep", "--port",
                               str(other.server_address[1]), *_spool_in(tmp_path)],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "HOME": str(tmp_path)})
    finally:
        other.shutdown()
        other.server_close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "spool-statusd did not start" in out, out
    assert "address already in use" in out, out
    # Its statusd's line names STATUSD_PORT; the user gave --port (QA h377).
    assert f"(--port {other.server_address[1]}: pick another, or leave --port out)" in out, out
    # The same command again is refused ("not empty"): said, with what to do (QA h377).
    assert (f"spool      {tmp_path / 'spool'} keeps this try's files and logs; to run the "
            "demo again, remove it or name a new --spool-dir") in out, out
    assert "left running" not in out and "dashboard" not in out, out
    assert "stopped    spool-processor" in out
    _assert_all_gone(_spool_of(out))


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    """The demo makes a fresh spool: pointed at a live one, it replaced that spool's data
    files with its own and started a second processor beside the first (QA)."""
    spool = tmp_path / "spool"
    subprocess.run([sys.executable, "-m", "spool.cli.main", "--spool-dir", str(spool), "init"],
                   check=True, capture_output=True)
    (spool / "data").mkdir()
    (spool / "data" / "S0000.csv").write_text("theirs\n")
    proc = subprocess.run([*DEMO, "--spool-dir", str(spool)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("spoolq: error: --spool-dir ")
    assert "is not empty" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert (spool / "data" / "S0000.csv").read_text() == "theirs\n"
    assert not _daemons_of(spool)
    assert not list(spool.glob("*.log"))  # no daemon was started there


def test_demo_refuses_one_symbol_before_it_starts_anything(tmp_path: Path) -> None:
    """A factor analysis ranks symbols against each other (QUANT.md: 2 at least): with
    ``--symbols 1`` the demo made its data, started both daemons, ran the backtest and
    exited 1 on its factor job ("needs at least 2 symbols", h340).  A usage error now."""
    spool = tmp_path / "spool"
    proc = subprocess.run([*DEMO, "--symbols", "1", "--spool-dir", str(spool)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("spoolq: error: argument --symbols: '1': must be 2 or more")
    assert not spool.exists()


def test_a_negative_value_that_rounds_to_zero_prints_unsigned() -> None:
    """Python's format kept the sign: -0.0004 printed as -0.0%, a -0.001 sharpe as -0.00."""
    out = io.StringIO()
    demo._backtest_table({
        "strategy": "ma_crossover", "params": {"fast": 10, "slow": 50, "fee": 0.0},
        "symbols": {"AAA": {"total_return": -0.0004, "annualized_return": -0.0004,
                            "annualized_volatility": 0.2, "sharpe": -0.001,
                            "max_drawdown": -0.3, "num_trades": 0, "win_rate": -0.004}},
        "summary": {"mean_total_return": -0.0004, "mean_sharpe": -0.0}}, out)
    demo._ic_table({
        "factor": "momentum", "params": {}, "symbols": 2, "dates": 3,
        "horizons": {"1": {"ic": {"mean": -0.00001, "ir": -0.0001, "t_stat": -0.001},
                           "rank_ic": {"mean": -0.00004}, "top_minus_bottom": -1e-5}},
        "rank_autocorrelation": {"1": -0.0001}}, out)
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert ["AAA", "0.0%", "0.0%", "20.0%", "0.00", "-30.0%", "0", "0%"] in lines
    assert ["summary:", "mean_total_return=0.0%,", "mean_sharpe=0"] in lines
    assert ["1", "0.0000", "0.000", "0.00", "0.0000", "-1.00e-05", "0.000"] in lines


def test_a_demo_whose_job_failed_exits_1(tmp_path: Path, monkeypatch: Any,
                                        capsys: Any) -> None:
    """The exit code tells a script whether the demo worked: 0 only when both jobs are
    done (a job that fails, as the factor analysis of one symbol did before that became
    a usage error).  The daemons and data are stood in for; what is checked is the exit
    code of the records the demo watched end."""
    now = datetime.now(UTC)

    def record(job_id: str, state: str) -> Record:
        return Record.model_validate({
            "id": job_id, "state": state, "tool": "run_backtest", "submitted_at": now,
            "finished_at": now, "attempts": 1, "result": {} if state == "done" else None,
            "error": None if state == "done" else {"type": "invalid_params",
                                                    "message": "needs 2 symbols"}})

    outcomes: list[list[Record]] = [[record("b", "done"), record("f", "failed")],
                                    [record("b", "done"), record("f", "done")]]
    monkeypatch.setattr(demo, "_synth", lambda *args: None)
    monkeypatch.setattr(demo, "_start_daemons", lambda *args: 18590)
    monkeypatch.setattr(demo, "_stop_daemons", lambda *args: None)
    monkeypatch.setattr(demo, "_run_jobs", lambda *args: outcomes.pop(0))
    codes = []
    for n in range(2):
        args = argparse.Namespace(spool_dir=str(tmp_path / f"s{n}"), symbols=2, bars=10,
                                  seed=7, port=18590, job_num=None, keep=False, json=True,
                                  fsync=None)
        codes.append(demo.run(args))
        states = [r["state"] for r in json.loads(capsys.readouterr().out)["records"]]
        assert states == (["done", "failed"] if n == 0 else ["done", "done"])
    assert codes == [1, 0]


def test_the_factor_header_gives_its_params_as_the_backtest_header_does() -> None:
    """The factor header printed the params as a Python dict ("momentum {'lookback': 20}")
    beside the backtest's "fast=10 slow=50": one form, key=value, for both."""
    out = io.StringIO()
    demo._ic_table({"factor": "momentum", "params": {"lookback": 20}, "symbols": 200,
                    "dates": 2490, "horizons": {}, "rank_autocorrelation": {}}, out)
    header = out.getvalue().strip().splitlines()[0]
    assert header == "Factor analysis: momentum lookback=20 over 200 symbols x 2490 dates"


def test_the_live_bars_fit_a_narrow_terminal(tmp_path: Path) -> None:
    """Each bar is redrawn by going up a line per bar: one wider than the terminal wraps,
    and each redraw left the top of the last one behind, a new copy of the bars on the
    screen every 0.1 s on a terminal under about 80 columns (a split pane) (QA h401)."""
    columns = 50
    pid, master = pty.fork()
    if pid == 0:  # the child: the demo, on a terminal of 50 columns
        os.execv(sys.executable, [*DEMO, "--symbols", "5", "--bars", "300", "--job-num", "1",
                                  *_spool_in(tmp_path)])
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    said = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the demo ended and closed the terminal
                    break
                if not chunk:
                    break
                said += chunk
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said.decode(errors="replace")
    bars = re.findall(r"\x1b\[2K([^\r\n]*)\r\n", said.decode())
    assert any(bar.startswith("backtest") for bar in bars), said
    assert max(len(bar) for bar in bars) < columns, bars


def test_the_bars_are_redrawn_only_where_the_terminal_moves_its_cursor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``TERM=dumb`` (an editor's shell, a serial console) has no cursor moves: the
    demo printed its redraw escapes there as text, twice a second (QA h401)."""
    main, other = os.openpty()
    try:
        with os.fdopen(os.dup(other), "w") as tty:
            monkeypatch.setenv("TERM", "xterm-256color")
            assert demo.redraws(tty)
            monkeypatch.setenv("TERM", "dumb")
            assert not demo.redraws(tty)
        assert not demo.redraws(io.StringIO()), "a pipe or a file: one line a job"
    finally:
        os.close(main)
        os.close(other)
