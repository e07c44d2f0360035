"""``spoolq demo``: spoolq doing its main job, end to end, in under a minute.

Makes seeded demo data, starts ``spool-processor`` and ``spool-statusd`` on a
fresh spool as subprocesses, submits a backtest over many symbols and a
factor analysis as job files, shows their live progress, prints the results
and the dashboard URL, and stops both daemons (SIGTERM, then waits) at the
end or on Ctrl-C.  ``--keep`` leaves them running and prints their pids.

A SIGTERM or a hangup (SIGHUP: the terminal closed) stops it as Ctrl-C does.  The
daemons run in sessions of their own (a Ctrl-C is the demo's to pass on), so a
hangup reached the demo alone: it died of it, and both daemons ran on for good.

The daemons are separate programs reached only through the spool and HTTP,
exactly as in production; this module never imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from spool.cli import parse
from spool.cli.command import UsageError
from spool.cli.progress import terminal_columns
from spool.cli.render import emit_json, fit, printable, record_json
from spool.client import Client
from spool.durability import FsyncMode
from spool.errors import SpoolError
from spool.fsops import Mover
from spool.layout import Layout
from spool.states import TERMINAL
from spool.stdio import to_devnull

if TYPE_CHECKING:
    from spool.models import Record

START_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
BAR_WIDTH = 28
MESSAGE_ROOM = 40
"""Columns a bar leaves for its label, percent and message: on a terminal under
`BAR_WIDTH + MESSAGE_ROOM` it is shorter, so the message is cut later."""
DEMO_FSYNC = FsyncMode.BATCH
SPOOL_DIR_HELP = ("a new or empty folder to make the demo's spool in (default: a new folder "
                  "in the temporary directory; SPOOL_DIR is not used)")
FSYNC_HELP = f"durability of the demo spool's writes (default: {DEMO_FSYNC.value})"


@dataclass(slots=True)
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def register(subparsers: Any) -> None:
    """Add ``demo`` to the CLI's subcommands."""
    parser = subparsers.add_parser(
        "demo", help="run a backtest and a factor analysis on demo data, end to end",
        description=__doc__.split("\n\n")[1].replace("``", "") if __doc__ else None)
    # Two at least: a factor analysis ranks symbols against each other (QUANT.md), and
    # with one the demo made its data, started both daemons and failed its second job.
    parser.add_argument("--symbols", type=parse.two_or_more, default=200, metavar="N",
                        help="symbols of demo data, 2 or more (default 200)")
    parser.add_argument("--bars", type=parse.positive_int, default=2520, metavar="T",
                        help="daily bars per symbol (default 2520, ten years)")
    parser.add_argument("--seed", type=parse.seed, default=7, metavar="S",
                        help="random seed of the demo data (default 7)")
    parser.add_argument("--port", type=parse.port, default=0, metavar="PORT",
                        help="statusd port (default: a free one)")
    parser.add_argument("--job-num", type=parse.positive_int, default=None, metavar="N",
                        help="COMPUTE workers (default: JOB_NUM, else the CPU count)")
    parser.add_argument("--keep", action="store_true", help="leave both daemons running")
    parser.add_argument("--json", action="store_true", help="print {spool, dashboard, "
                        "records: [the two records]} on stdout; the narration goes to stderr")
    parser.set_defaults(func=run)


def _fresh(root: Path) -> None:
    """The demo makes a spool of its own: a folder with anything in it is refused (a live
    spool's data files were replaced by the demo's, a second processor started there)."""
    try:
        with os.scandir(root) as entries:
            taken = next(entries, None) is not None
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UsageError(f"--spool-dir {root} is not a folder") from None
    except OSError as exc:
        raise UsageError(f"--spool-dir {root}: {exc.strerror}") from None
    if taken:
        raise UsageError(f"--spool-dir {root} is not empty: the demo makes a fresh spool "
                         "(name a new or empty folder, or leave --spool-dir out)")


def run(args: argparse.Namespace) -> int:
    import tempfile  # noqa: PLC0415 - lazy, see spool.cli

    given = getattr(args, "spool_dir", None)
    if given:
        _fresh(Path(given))
    root = Path(given) if given else Path(tempfile.mkdtemp(prefix="spoolq-demo-"))
    out = sys.stderr if args.json else sys.stdout  # with --json stdout holds the JSON only
    layout = Layout(root)
    Mover(layout, FsyncMode.NEVER).make_folders()
    data_dir = root / "data"
    fsync = getattr(args, "fsync", None) or DEMO_FSYNC.value
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_DATA_DIR": str(data_dir),
           # No --port: statusd binds a port the kernel picks (0) and the demo reads it
           # from statusd's "listening on" line.  A port picked here and bound by
           # statusd later (after the data's synth) could be taken meanwhile by any
           # other process's bind or outgoing connection: "did not start".
           "SPOOL_FSYNC": fsync, "STATUSD_HOST": "127.0.0.1", "STATUSD_PORT": str(args.port),
           "SPOOL_SCAN_S": "2"}
    if args.job_num:
        env["JOB_NUM"] = str(args.job_num)
    out.write(f"spool      {root}\n")
    _step(out, f"demo data: {args.symbols} symbols x {args.bars} daily bars",
          lambda: _synth(data_dir, args.symbols, args.bars, args.seed))
    daemons: list[Daemon] = []
    terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # hung up, it is silenced
    ran = False
    try:
        with _interrupts_as_keyboard(terminal):
            port = _start_daemons(daemons, root, env, args.port, out)
            url = f"http://127.0.0.1:{port}/"
            out.write(f"dashboard  {url}\n\n")
            records = _run_jobs(root, args.symbols, out)
            ran = True
            if args.json:
                emit_json({"spool": str(root), "dashboard": url,
                           "records": [record_json(r) for r in records]})
            else:
                _summary(records, out)
            if args.keep:
                out.write(f"\ndashboard  {url}\n")
            else:
                out.write(f"\ndashboard  {url} stops with the demo, now ('spoolq demo "
                          "--keep' leaves both daemons running)\n")
            return 0 if all(r.state.value == "done" for r in records) else 1
    except KeyboardInterrupt:
        out.write("\ninterrupted: stopping the daemons (running jobs may finish first: "
                  "Ctrl-C again to stop them now)\n")
        args.keep = False
        return 130
    finally:
        # Left running only when both are (a demo whose start-up failed stops the other).
        if args.keep and daemons and all(d.proc.poll() is None for d in daemons):
            pids = ", ".join(f"{d.name} {d.proc.pid}" for d in daemons)
            out.write(f"left running: {pids} (stop them with kill -TERM)\n")
        else:
            _stop_daemons(daemons, out, terminal)
        if not given:  # a folder of ours in the temporary directory: say it is there
            out.write(f"spool      {root} stays for a look ('spoolq --spool-dir {root} "
                      "ls'); remove it when done\n")
        elif not ran:  # the same command again is refused, the folder no longer empty
            out.write(f"spool      {root} keeps this try's files and logs; to run the demo "
                      "again, remove it or name a new --spool-dir\n")


# -- set-up ------------------------------------------------------------------------------


def _synth(data_dir: Path, symbols: int, bars: int, seed: int) -> None:
    cmd = [sys.executable, "-m", "processor.quant.synth", "--symbols", str(symbols),
           "--bars", str(bars), "--seed", str(seed), "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # its last line says why (as data synth's error does)
        last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SpoolError(f"making demo data failed: {last[0]}")


def _start_daemons(daemons: list[Daemon], root: Path, env: dict[str, str], port: int,
                   out: TextIO) -> int:
    """Start both daemons into ``daemons`` as each is spawned, so the caller stops every one
    that started, whatever ends the start-up (Ctrl-C, a busy port); the port statusd
    listens on (``port``, or the one it was given by the kernel where ``port`` is 0)."""
    for name, module in (("spool-processor", "processor"), ("spool-statusd", "statusd")):
        daemons.append(_spawn(name, module, root, env))
    deadline = time.monotonic() + START_TIMEOUT_S
    listening: list[int] = []
    checks = {"spool-processor": lambda: _processor_up(root),
              "spool-statusd": lambda: _statusd_up(daemons[1], port, listening)}
    for d in daemons:
        while not checks[d.name]():
            if d.proc.poll() is not None or time.monotonic() > deadline:
                tail = d.log.read_text(errors="replace").strip().splitlines()[-3:]
                said = " | ".join(tail)
                if port and "address already in use" in said.lower():
                    # Its line names STATUSD_PORT, which the user did not set (QA h377).
                    said += f" (--port {port}: pick another, or leave --port out)"
                raise SpoolError(f"{d.name} did not start: {said}")
            time.sleep(0.05)
        out.write(f"started    {d.name} (pid {d.proc.pid}, log {d.log})\n")
    return listening[0]


def _spawn(name: str, module: str, root: Path, env: dict[str, str]) -> Daemon:
    log = root / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return Daemon(name, proc, log)


def _processor_up(root: Path) -> bool:
    return any(p.suffix == ".json" for p in (root / "owners").iterdir())


def _statusd_up(statusd: Daemon, port: int, listening: list[int]) -> bool:
    """The demo's statusd serves: it said it listens on ``port`` (any port where ``port``
    is 0, the one it says put in ``listening``) (another server there answered /healthz
    all the same: the demo showed that one's dashboard, and said its own statusd, gone
    with 'address already in use', was running: QA), and answers."""
    import urllib.request  # noqa: PLC0415 - lazy, see spool.cli

    from statusd.listening import said  # noqa: PLC0415 - lazy, see spool.cli

    address = said(statusd.log.read_text(errors="replace"), "127.0.0.1")
    if address is None or (port and address.port != port):
        return False
    port = address.port
    listening[:] = [port]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _stop_daemons(daemons: list[Daemon], out: TextIO, terminal: list[int]) -> None:
    """SIGTERM both and wait: the processor gives running jobs its grace period.  A
    Ctrl-C (or SIGTERM, or a hangup) meanwhile is passed on as a second SIGTERM, which
    ends that grace period at once, and the wait goes on: the demo never leaves a daemon
    behind."""
    hurry: list[int] = []

    def hurried(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            _silence(terminal)
        hurry.append(signum)

    handlers = {sig: signal.signal(sig, hurried)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        _terminate(daemons)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        passed_on = 0
        for d in daemons:
            while d.proc.poll() is None and time.monotonic() < deadline:
                if len(hurry) > passed_on:
                    passed_on = len(hurry)
                    out.write("stopping now: running jobs are stopped and requeued\n")
                    _terminate(daemons)
                time.sleep(0.05)
            if d.proc.poll() is None:
                d.proc.kill()
            out.write(f"stopped    {d.name} (exit {d.proc.wait()})\n")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _terminate(daemons: list[Daemon]) -> None:
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def _interrupts_as_keyboard(terminal: list[int]) -> Iterator[None]:
    """SIGTERM or SIGHUP to the demo stops it like Ctrl-C does: daemons are stopped
    either way."""
    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            _silence(terminal)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, was in old.items():
            signal.signal(sig, was)


def _silence(terminal: list[int]) -> None:
    """The terminal hung up: what the demo still says goes to ``/dev/null``.  Each write
    to a hung-up terminal fails (EIO): the "interrupted" line's would end the demo with
    a traceback, its wait for the daemons cut short."""
    to_devnull(*terminal)


def _step(out: TextIO, what: str, action: Any) -> None:
    start = time.monotonic()
    out.write(f"making     {what} ...")
    out.flush()
    try:
        action()
    except Exception:
        out.write(" failed\n")  # the error line that follows gets a line of its own
        raise
    out.write(f" {time.monotonic() - start:.1f} s\n")


# -- the jobs -----------------------------------------------------------------------------


def _run_jobs(root: Path, symbols: int, out: TextIO) -> list[Record]:
    from spool.models import Job  # noqa: PLC0415 - lazy, see spool.cli
    from spool.settings import load_settings  # noqa: PLC0415 - lazy, see spool.cli

    client = Client.from_settings(load_settings(spool_dir=root, fsync=FsyncMode.NEVER))
    names = [f"S{i:04d}" for i in range(symbols)]
    jobs = {
        "backtest": Job(tool="run_backtest", params={
            "symbols": names, "strategy": "ma_crossover", "fast": 10, "slow": 50},
            meta={"demo": True}),
        "factor": Job(tool="analyze_factor", params={
            "factor": "momentum", "factor_params": {"lookback": 20}, "symbols": names,
            "horizons": [1, 5, 10]}, meta={"demo": True}),
    }
    ids = {label: client.submit(job) for label, job in jobs.items()}
    for label, job_id in ids.items():
        out.write(f"submitted  {label:<8} {job_id}\n")
    return _watch(client, ids, out)


def redraws(out: TextIO) -> bool:
    """Whether the bars are redrawn in place, by cursor moves: on a terminal that has
    them (``TERM=dumb``, an editor's shell or a serial console, printed the escapes as
    text at each redraw: QA h401)."""
    return out.isatty() and os.environ.get("TERM") != "dumb"


def _watch(client: Client, ids: dict[str, str], out: TextIO) -> list[Record]:
    tty = redraws(out)
    latest: dict[str, Record] = {}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    drawn = False
    while time.monotonic() < deadline:
        for label, job_id in ids.items():
            with contextlib.suppress(SpoolError):
                latest[label] = client.get(job_id)
        if tty:
            if drawn:
                out.write(f"\x1b[{len(ids)}F")
            # Each bar on one line of the terminal: one it wraps moves the others down,
            # and going up a line a bar leaves the top of each drawing behind, a new copy
            # of the bars every 0.1 s on a terminal under 80 columns (QA h401).
            room = max(terminal_columns(out) - 1, 0)
            cells = max(0, min(BAR_WIDTH, room - MESSAGE_ROOM))  # the message goes last
            for label in ids:
                line = fit(printable(_bar_line(label, latest.get(label), cells)), room)
                out.write("\x1b[2K" + line.rstrip() + "\n")
            drawn = True
            out.flush()
        if len(latest) == len(ids) and all(r.state in TERMINAL for r in latest.values()):
            break
        time.sleep(0.1)
    if not tty:
        for label in ids:
            out.write(_bar_line(label, latest.get(label)) + "\n")
    missing = [label for label in ids if label not in latest or
               latest[label].state not in TERMINAL]
    if missing:
        raise SpoolError(f"jobs not finished after {JOB_TIMEOUT_S:.0f} s: {', '.join(missing)}")
    return [latest[label] for label in ids]


def _bar_line(label: str, record: Record | None, cells: int = BAR_WIDTH) -> str:
    """``label`` and its job's progress: a bar of ``cells``, the percent, the message."""
    if record is None:
        return f"{label:<9} [{' ' * cells}]   0%  submitted"
    if record.state.value == "done":
        fraction, message = 1.0, f"done in {record.duration_s or 0:.2f} s"
    elif record.state.value == "failed":
        fraction = 0.0
        message = f"failed: {record.error.message if record.error else ''}"[:60]
    else:
        progress = record.progress
        fraction = progress.fraction or 0.0 if progress else 0.0
        message = (progress.message if progress else "") or record.state.value
    filled = round(fraction * cells)
    return f"{label:<9} [{'#' * filled}{'.' * (cells - filled)}] {fraction:4.0%}  {message}"


# -- the summary ----------------------------------------------------------------------------


def _summary(records: list[Record], out: TextIO) -> None:
    for record in records:
        if record.state.value != "done":
            error = record.error
            out.write(f"\n{record.tool} failed: {error.type if error else '?'}: "
                      f"{error.message if error else ''}\n")
        elif record.tool == "run_backtest":
            _backtest_table(record.result, out)
        elif record.tool == "analyze_factor":
            _ic_table(record.result, out)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    # A negative float that rounds to zero prints unsigned ("z"): 0.0%, not -0.0%.
    return format(value, f"z{spec}" if isinstance(value, float) else spec)


def _backtest_table(result: dict[str, Any], out: TextIO) -> None:
    symbols: dict[str, dict[str, Any]] = result["symbols"]
    summary: dict[str, Any] = result.get("summary", {})
    params = result.get("params", {})
    out.write(f"\nBacktest: {result.get('strategy')} fast={params.get('fast')} "
              f"slow={params.get('slow')} fee={params.get('fee')} on {len(symbols)} symbols\n")
    ranked = sorted(symbols.items(), key=lambda kv: kv[1].get("sharpe") or float("-inf"),
                    reverse=True)
    header = (f"  {'symbol':<8} {'total':>8} {'annual':>8} {'vol':>7} {'sharpe':>7} "
              f"{'max dd':>8} {'trades':>6} {'win':>6}")
    out.write(header + "\n")
    shown = ranked[:5] + ranked[-3:] if len(ranked) > 8 else ranked
    for i, (name, m) in enumerate(shown):
        if len(ranked) > 8 and i == 5:
            out.write(f"  {'...':<8}\n")
        out.write(f"  {name:<8} {_fmt(m.get('total_return'), '8.1%')} "
                  f"{_fmt(m.get('annualized_return'), '8.1%')} "
                  f"{_fmt(m.get('annualized_volatility'), '7.1%')} "
                  f"{_fmt(m.get('sharpe'), '7.2f')} {_fmt(m.get('max_drawdown'), '8.1%')} "
                  f"{_fmt(m.get('num_trades'), '6d')} {_fmt(m.get('win_rate'), '6.0%')}\n")
    extras = ", ".join(f"{k}={_summary_value(k, v)}" for k, v in summary.items())
    out.write(textwrap.fill(extras, width=88, initial_indent="  summary: ",
                            subsequent_indent=" " * 11) + "\n")


def _summary_value(key: str, value: Any) -> str:
    """As the table above shows it: returns, drawdowns and win rates in percent."""
    if not isinstance(value, float):
        return str(value)
    percent = any(word in key for word in ("return", "drawdown", "win_rate"))
    return _fmt(value, ".1%" if percent else ".4g")


def _ic_table(result: dict[str, Any], out: TextIO) -> None:
    params = "".join(f" {k}={v}" for k, v in (result.get("params") or {}).items())
    out.write(f"\nFactor analysis: {result.get('factor')}{params} over "
              f"{result.get('symbols')} symbols x {result.get('dates')} dates\n")
    out.write(f"  {'horizon':>7} {'IC mean':>9} {'IC IR':>7} {'t':>6} {'rankIC':>8} "
              f"{'top-bottom':>11} {'rank AC':>8}\n")
    autocorr = result.get("rank_autocorrelation", {})
    for horizon, h in result.get("horizons", {}).items():
        ic, rank_ic = h.get("ic", {}), h.get("rank_ic", {})
        out.write(f"  {horizon:>7} {_fmt(ic.get('mean'), '9.4f')} {_fmt(ic.get('ir'), '7.3f')} "
                  f"{_fmt(ic.get('t_stat'), '6.2f')} {_fmt(rank_ic.get('mean'), '8.4f')} "
                  f"{_fmt(h.get('top_minus_bottom'), '11.2e')} "
                  f"{_fmt(autocorr.get(horizon), '8.3f')}\n")
    out.write("  (t for horizons over 1 bar overstates significance: their ICs overlap)\n")

