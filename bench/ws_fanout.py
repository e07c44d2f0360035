"""Benchmark of spool-statusd's WebSocket fan-out under a burst of records, next to a
naive aiohttp broadcast measured with the same clients in the same run.

Run from the repository root: ``python -m bench.ws_fanout [--clients N] [--records M]
[--rounds R] [--quick]`` (``--help`` for the rest).

Each round (default 3), for each server in turn (statusd, then the baseline):

* **statusd**: a fresh spool (``spoolq init``) under ``--dir`` (default: a temporary
  folder in the repository, removed afterwards) and ``python -m statusd --port 0`` as a
  subprocess, waited for until it logs ``indexed N records``.  ``--records`` done
  records are staged first, each built and encoded as the processor builds and writes
  an ``echo`` job's record (``record_from_job`` + ``record_bytes``), in a folder on the
  spool's filesystem; the burst renames them into ``done/`` one after the other, as
  fast as a thread of this process can.  statusd sees them through its folder watch,
  reads and indexes each record and publishes one ``transition`` per record.
* **baseline**: a minimal aiohttp app (``--serve-baseline``, a subprocess of this
  module, same machine, 127.0.0.1), the same ``/healthz`` and events path, that on a
  ``POST /burst`` broadcasts pre-made messages the naive way: ``for message: for
  client: await ws.send_str(message)``.  The messages are the frames statusd sent the
  first client for the round's first record, that record's id replaced by each
  record's id (same sizes): for a record that appears straight in ``done/``, statusd
  sends three, two ``"inferred": true`` transitions (to pending, to running) and the
  terminal one, so the baseline sends three per record too, and both deliver the same
  frames and bytes.

Both are measured alike: ``--clients`` raw-socket WebSocket clients on
``/api/v1/ws/events?view=brief`` (asyncio protocols in this process that parse frames
and answer pings, connected before the burst), and a ``/healthz`` poller in its own
process (one request at a time, one started every 50 ms or when the last one ends).
Figures per server and round:

* *span*: from just before the first rename (statusd) or the ``POST`` (baseline) to the
  last terminal event at the last client; *first*: to the first terminal event at any
  client;
* *events/s*: terminal events delivered in total (clients x records when complete) /
  span;
* *healthz*: the slowest ``/healthz`` among the polls overlapping the span, and their
  median (the poller waits for each answer, so a stall also means fewer polls);
* *server CPU*: the server's utime + stime (``/proc/PID/stat``) from just before the
  burst to the last event; *client CPU*: this process's CPU meanwhile (the clients and
  the renames): on a small machine the clients compete with the server for the CPUs,
  and when the client CPU nears the span, the figure is the clients' limit, not the
  server's;
* *burst*: how long the renames took (statusd), or the ``POST``'s round trip
  (baseline: its answer waits for the broadcast, which never yields to the loop
  while the sockets take what is written);
* *frames*: text frames received by all clients;
* *got*: terminal events received / expected.  Every client must get every record's
  terminal event: anything less is printed as FAILED and the exit status is 1.

Ratios spoolq/baseline (events/s, worst healthz) are given per round and as medians.

What differs, so read the ratio as the price of statusd's whole path, not of its
fan-out alone: statusd also watches the folder, reads, parses and indexes each record,
builds each message (once per event, shared by the clients), goes through a bounded
queue per client and a pump task per client that writes batches of frames, and keeps a
heartbeat and a stall guard per socket; the baseline has its messages in memory before
the clock starts, is triggered by one request rather than 3,000 renames, and awaits
each ``send_str`` in turn (no queue, no batching, so one slow client would stall all
the others; none is slow here).  The baseline's events also start at once, whereas
statusd's first event waits for its watch to fire.

Every process started here is stopped by its pid; the spools and staging folders are
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.wsclients import (
    EVENTS_PATH,
    POLL_S,
    WS_PATH,
    BenchError,
    Fleet,
    start_poller,
    stop_poller,
)
from spool.jobfile import record_from_job
from spool.models import Job, record_bytes
from spool.states import JobState

REPO = Path(__file__).resolve().parents[1]
# Both servers' line: statusd's (statusd.listening.MESSAGE) and the baseline's (below).
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
STATUSD_READY = re.compile(rb"indexed \d+ records")
BASELINE_READY = re.compile(rb"baseline ready")
START_TIMEOUT_S = 60.0
STOP_S = 10.0


# -- servers ---------------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess on 127.0.0.1, its output in ``log``."""

    label: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def cpu_s(self) -> float:
        """utime + stime of the process so far (all its threads)."""
        data = Path(f"/proc/{self.proc.pid}/stat").read_bytes()
        fields = data[data.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def notes(self) -> list[str]:
        """Log lines worth a look: warnings, errors, dropped clients."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines
                if " WARNING " in line or " ERROR " in line or "dropped" in line]


def start_server(label: str, argv: list[str], log: Path, ready: re.Pattern[bytes]) -> Server:
    """Start ``argv``; return once its log has the listening line and ``ready``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=_server_env())
    server = Server(label, proc, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_bytes()
        found = LISTENING.search(text)
        if found and ready.search(text):
            server.port = int(found.group(1))
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise BenchError(f"{label} did not start: {log.read_text(errors='replace')[-2000:]}")


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATUSD_", "SPOOL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_statusd(root: Path) -> Server:
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--spool-dir", str(root)],
                   cwd=REPO, check=True, capture_output=True, env=_server_env())
    return start_server("statusd", [sys.executable, "-m", "statusd", "--spool-dir", str(root),
                                    "--host", "127.0.0.1", "--port", "0"],
                        root.parent / f"{root.name}.log", STATUSD_READY)


def start_baseline(messages: Path) -> Server:
    return start_server("baseline", [sys.executable, "-m", "bench.ws_fanout",
                                     "--serve-baseline", str(messages)],
                        messages.with_suffix(".log"), BASELINE_READY)


# -- the records -----------------------------------------------------------------------


def stage_records(stage: Path, prefix: str, count: int) -> list[str]:
    """``count`` done records of ``echo`` jobs in ``stage``, as the processor writes them."""
    stage.mkdir()
    host, pid = socket.gethostname(), os.getpid()
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    for job_id in ids:
        job = Job.model_validate({"tool": "echo", "params": {"message": job_id}})
        submitted_ns = time.time_ns()
        now = datetime.now(UTC)
        record = record_from_job(job, job_id, JobState.DONE, submitted_ns,
                                 result={"message": job_id}, attempts=1, started_at=now,
                                 finished_at=now, duration_s=0.0004, host=host, pid=pid)
        (stage / f"{job_id}.json").write_bytes(record_bytes(record))
    return ids


def rename_all(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Rename each pair in turn: (monotonic time before the first, after the last)."""
    rename, start = os.rename, time.monotonic()
    for old, new in pairs:
        rename(old, new)
    return start, time.monotonic()


# -- one measurement ---------------------------------------------------------------------


@dataclass
class Outcome:
    """One server's burst, as the clients and the poller saw it."""

    server: str
    clients: int
    records: int
    got: int
    frames: int
    """Text frames received, all clients (one per record and client expected)."""
    span_s: float
    first_s: float
    """From the start to the first terminal event at any client."""
    worst_healthz_s: float
    median_healthz_s: float
    polls: int
    poll_errors: int
    server_cpu_s: float
    client_cpu_s: float
    burst_s: float
    gone: list[str]
    sample: tuple[bytes, list[bytes]] | None
    """A record's id and the frames its first client got for it."""

    @property
    def complete(self) -> bool:
        return self.got == self.clients * self.records and not self.gone

    @property
    def events_per_s(self) -> float:
        return self.got / self.span_s if self.span_s > 0 else 0.0


Fire = Callable[[], Awaitable[tuple[float, float]]]


async def measure(server: Server, clients: int, ids: list[str], fire: Fire) -> Outcome:
    """Connect the clients and the poller, fire the burst, wait for the events."""
    fleet = Fleet()
    try:
        await fleet.connect(server.port, clients)
        fleet.expect(ids)
        poller = start_poller(server.port)
        try:
            await asyncio.sleep(0.5)  # a few polls before the burst
            cpu, own_cpu = server.cpu_s(), time.process_time()
            start, burst_end = await fire()
            await fleet.wait_events()
            cpu, own_cpu = server.cpu_s() - cpu, time.process_time() - own_cpu
            await asyncio.sleep(0.2)
        finally:
            polls = stop_poller(poller)
    finally:
        fleet.close()
    times = [t for c in fleet.clients for t in (min(c.terminal.values(), default=None),
                                                 max(c.terminal.values(), default=None))
             if t is not None] or [start]
    last = max(times)
    window = [p for p in polls if p[0] <= last and p[0] + p[1] >= start]
    first = fleet.clients[0]
    sample = (first.sample_id, first.sample) if first.sample_id and not first.sampling else None
    return Outcome(server.label, clients, len(ids),
                   got=sum(len(c.expected & c.terminal.keys()) for c in fleet.clients),
                   frames=sum(c.frames for c in fleet.clients),
                   span_s=last - start, first_s=min(times) - start,
                   worst_healthz_s=max((p[1] for p in window), default=0.0),
                   median_healthz_s=statistics.median([p[1] for p in window] or [0.0]),
                   polls=len(window), poll_errors=sum(p[2] != 200 for p in window),
                   server_cpu_s=cpu, client_cpu_s=own_cpu, burst_s=burst_end - start,
                   gone=[c.closed for c in fleet.clients if c.closed], sample=sample)


def renames(stage: Path, done: Path, ids: list[str]) -> Fire:
    pairs = [(str(stage / f"{i}.json"), str(done / f"{i}.json")) for i in ids]

    async def fire() -> tuple[float, float]:
        return await asyncio.to_thread(rename_all, pairs)
    return fire


def post_burst(port: int) -> Fire:
    async def fire() -> tuple[float, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        writer.write(b"POST /burst HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        await reader.read()
        writer.close()
        return start, time.monotonic()
    return fire


def baseline_messages(sample: tuple[bytes, list[bytes]] | None, ids: list[str]
                      ) -> list[bytes]:
    """For each id, the frames statusd sent for the round's first record, with that id in
    place of the first record's (all ids have the same length: the same sizes)."""
    if sample is None:  # statusd sent nothing whole: a transition of the same shape
        frame = (b'{"event":"transition","previous":null,"id":"%s","state":"done",'
                 b'"record":{"id":"%s","state":"done","tool":"echo"}}')
        return [frame.replace(b"%s", i.encode()) for i in ids]
    first, frames = sample
    return [frame.replace(first, i.encode()) for i in ids for frame in frames]


# -- the baseline server (a subprocess: ``--serve-baseline MESSAGES``) -------------------


def baseline_app(messages: list[str]) -> web.Application:
    """The naive fan-out: every message to every client, one ``await`` at a time."""
    clients: list[web.WebSocketResponse] = []
    tasks: set[asyncio.Task[None]] = set()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        clients.append(ws)
        try:
            async for _ in ws:
                pass
        finally:
            clients.remove(ws)
        return ws

    async def broadcast() -> None:
        for text in messages:
            for ws in list(clients):
                await ws.send_str(text)

    async def burst(request: web.Request) -> web.Response:
        task = asyncio.create_task(broadcast())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get(EVENTS_PATH, events)
    app.router.add_post("/burst", burst)
    return app


async def serve_baseline(messages_file: Path) -> None:
    messages = messages_file.read_text().splitlines()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(baseline_app(messages), shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"baseline listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    print(f"baseline ready ({len(messages)} messages)", flush=True)
    await stop.wait()
    await runner.cleanup()


# -- the run ---------------------------------------------------------------------------


async def run_round(base: Path, number: int, args: argparse.Namespace) -> list[Outcome]:
    root, stage = base / f"spool-{number}", base / f"stage-{number}"
    statusd = await asyncio.to_thread(start_statusd, root)
    try:
        ids = stage_records(stage, f"burst-r{number}", args.records)
        ours = await measure(statusd, args.clients, ids,
                             renames(stage, root / "done", ids))
    finally:
        statusd.stop()
    notes = statusd.notes()
    messages = base / f"messages-{number}.txt"
    messages.write_bytes(b"\n".join(baseline_messages(ours.sample, ids)) + b"\n")
    baseline = await asyncio.to_thread(start_baseline, messages)
    try:
        theirs = await measure(baseline, args.clients, ids, post_burst(baseline.port))
    finally:
        baseline.stop()
    print_row(number, ours)
    print_row(number, theirs)
    for line in notes[:5]:
        print(f"      statusd log: {line}")
    if len(notes) > 5:
        print(f"      statusd log: ... {len(notes) - 5} more such lines")
    return [ours, theirs]


_COLUMNS = (("round", 5), ("server", 8), ("clients", 7), ("records", 7), ("first_ms", 8),
            ("span_s", 7), ("events/s", 10), ("healthz_ms worst/p50", 20), ("polls", 5),
            ("server_cpu_s", 12), ("client_cpu_s", 12), ("burst_s", 7), ("frames", 9),
            ("got", 0))


def _line(values: tuple[str, ...]) -> str:
    return "  ".join(f"{v:<{w}}" for v, (_, w) in zip(values, _COLUMNS, strict=True)).rstrip()


def print_row(number: int, o: Outcome) -> None:
    values = (str(number), o.server, str(o.clients), str(o.records), f"{1e3 * o.first_s:.1f}",
              f"{o.span_s:.3f}", f"{o.events_per_s:,.0f}",
              f"{1e3 * o.worst_healthz_s:.1f} / {1e3 * o.median_healthz_s:.1f}",
              f"{o.polls}" + (f" ({o.poll_errors} failed)" if o.poll_errors else ""),
              f"{o.server_cpu_s:.2f}", f"{o.client_cpu_s:.2f}", f"{o.burst_s:.3f}",
              str(o.frames), f"{o.got}/{o.clients * o.records}")
    print(_line(values), flush=True)
    if not o.complete:
        print(f"  FAILED: {o.server}: {o.clients * o.records - o.got} terminal events missing; "
              f"{len(o.gone)} clients gone" + (f" (first: {o.gone[0]})" if o.gone else ""),
              flush=True)


def print_ratios(outcomes: list[Outcome]) -> None:
    pairs = list(zip(outcomes[::2], outcomes[1::2], strict=True))
    rate = [a.events_per_s / b.events_per_s if b.events_per_s else 0.0 for a, b in pairs]
    health = [a.worst_healthz_s / b.worst_healthz_s if b.worst_healthz_s else 0.0
              for a, b in pairs]
    print(f"spoolq/baseline events/s:     {' '.join(f'{r:.2f}' for r in rate)}"
          f"  (median {statistics.median(rate):.2f})")
    print(f"spoolq/baseline worst healthz: {' '.join(f'{r:.2f}' for r in health)}"
          f"  (median {statistics.median(health):.2f})")


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name:")), platform.processor() or "unknown CPU")
    return (f"{model}, {os.cpu_count()} CPUs; Linux {platform.release()}; "
            f"Python {platform.python_version()}; aiohttp {aiohttp.__version__}")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def run(base: Path, args: argparse.Namespace) -> int:
    print(f"spoolq ws fan-out: {machine()}")
    print(f"command: python -m bench.ws_fanout {shlex.join(sys.argv[1:])}".rstrip())
    print(f"load average before: {load()}")
    print(f"{args.clients} clients on {WS_PATH}, {args.records} records a burst, "
          f"{args.rounds} rounds; /healthz polled every {1e3 * POLL_S:.0f} ms; under {base}")
    print(_line(tuple(name for name, _ in _COLUMNS)), flush=True)
    outcomes: list[Outcome] = []
    for number in range(1, args.rounds + 1):
        outcomes += await run_round(base, number, args)
    print_ratios(outcomes)
    print(f"load average after: {load()}")
    if failed := [o for o in outcomes if not o.complete]:
        print(f"FAILED: {len(failed)} of {len(outcomes)} bursts did not reach every client "
              "with every event", file=sys.stderr)
        return 1
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients (200)")
    parser.add_argument("--records", type=int, default=3000, help="records a burst (3,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run: 20 clients, 200 records, 1 round")
    parser.add_argument("--dir", type=Path, default=REPO,
                        help="where the temporary folder goes (default: the repository)")
    parser.add_argument("--serve-baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.records, args.rounds = 20, 200, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.serve_baseline is not None:
        asyncio.run(serve_baseline(args.serve_baseline))
        return 0
    base = Path(tempfile.mkdtemp(prefix=".bench-ws-", dir=args.dir))
    try:
        return asyncio.run(run(base, args))
    except BenchError as exc:
        print(f"bench.ws_fanout: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
