"""The systemd units: they verify, they say what ops rely on, and their commands work.

Three levels, from cheap to close-to-real:

1. ``systemd-analyze verify`` on every unit and drop-in.  verify checks that
   ``ExecStart=`` names an existing executable, so each unit is rendered into
   ``tmp_path`` with ``/opt/spoolq/bin/`` replaced by the directory where pip
   put *this* interpreter's console scripts (``sysconfig``, not a pyenv shim):
   the check is real, not skipped.  verify exits 0 on mere warnings ("Unknown
   key ..., ignoring"), so any line on stderr about our files fails the test,
   and a test shows that a typo, a bad value and a missing binary are caught.
2. Each unit's ``ExecStart=`` run as a plain subprocess with the environment
   systemd would pass (``Environment=`` + ``spoolq.env.example``, spool and
   port moved into ``tmp_path``): the daemons come up and exit 0 on SIGTERM,
   the purge removes what it should.
3. The same commands inside a stand-in for the units' sandboxes
   (``sandbox.py``: mount namespace with ProtectSystem=strict, PrivateTmp,
   ReadWritePaths/ReadOnlyPaths placed as systemd places them, seccomp
   SystemCallFilter and RestrictAddressFamilies, MemoryDenyWriteExecute,
   NoNewPrivileges).  These need root and Linux 6.3+, and are skipped
   otherwise.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import unitkit
from notifykit import Listener
from unitkit import UNITS, Unit, load

from spool.settings import Settings
from statusd.listening import Listening, said

SERVICES = ["spool-processor.service", "spool-statusd.service", "spoolq-purge.service"]
DROPINS = {"spool-processor.service": ["dask.conf.example"],
           "spool-statusd.service": ["writes.conf.example"]}
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
             "ProtectHome": "yes", "SystemCallFilter": "@system-service", "User": "spoolq",
             "Group": "spoolq", "UMask": "0027", "ProtectKernelTunables": "yes",
             "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
             "RestrictNamespaces": "yes", "LockPersonality": "yes",
             "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": ""}
TOKEN = "ops-test-token"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (.ci/run does)")


def dropin(unit: str, name: str) -> str:
    return (UNITS / f"{unit}.d" / name).read_text()


# -- 1. verify --------------------------------------------------------------------------------


def verify(paths: list[Path], where: Path) -> list[str]:
    """Every complaint of ``systemd-analyze verify`` about files under ``where``."""
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, check=False)
    problems = [line for line in proc.stderr.splitlines() if str(where) in line]
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}: {proc.stderr.strip()}")
    return problems


def render_all(target: Path) -> list[Path]:
    paths = [unitkit.render(name, target) for name in [*SERVICES, "spoolq-purge.timer"]]
    for unit, names in DROPINS.items():
        (target / f"{unit}.d").mkdir()
        for name in names:  # installed as NAME.conf: verify reads the .d folder beside a unit
            conf = target / f"{unit}.d" / name.removesuffix(".example")
            conf.write_text(dropin(unit, name))
    return paths


@needs_analyze
def test_every_unit_and_drop_in_passes_systemd_analyze_verify_without_a_word(
        tmp_path: Path) -> None:
    assert verify(render_all(tmp_path), tmp_path) == []


@needs_analyze
@pytest.mark.parametrize(("old", "new"), [
    ("Type=notify", "Type=notifyy"),  # a bad value: only a warning, exit 0
    ("KillMode=mixed", "KilMode=mixed"),  # a typo'd key: only a warning, exit 0
    ("/opt/spoolq/bin/spool-processor", "/opt/spoolq/bin/no-such-daemon"),  # exit 1
])
def test_verify_as_run_here_catches_broken_units(tmp_path: Path, old: str, new: str) -> None:
    text = (UNITS / "spool-processor.service").read_text()
    assert old in text
    broken = unitkit.render("spool-processor.service", tmp_path, text.replace(old, new))
    assert verify([broken], tmp_path)


# -- what the unit files say ------------------------------------------------------------------


def test_the_processor_unit_says_what_ops_rely_on() -> None:
    u = load("spool-processor.service")
    assert (u.get("Type"), u.get("NotifyAccess"), u.get("Restart")) == (
        "notify", "main", "on-failure")
    assert u.get("KillMode") == "mixed" and u.get("OOMPolicy") == "continue"
    assert u.get("RestartPreventExitStatus") == "2"  # spool-processor's config-error status
    grace = Settings.model_fields["grace_s"].default
    watchdog, stop = int(u.get("WatchdogSec") or 0), int(u.get("TimeoutStopSec") or 0)
    assert watchdog > 0 and stop > grace + 10, "SIGKILL must not cut the grace period short"
    # One entry: each ReadWritePaths= entry is its own mount, and renames across fail.
    assert u.all("ReadWritePaths") == [unitkit.SPOOL]
    assert u.all("RestrictAddressFamilies") == ["AF_UNIX"]
    for key, value in HARDENING.items():
        assert u.get(key) == value, key
    dask = load("spool-processor.service", [dropin("spool-processor.service",
                                                    "dask.conf.example")])
    assert set(dask.all("RestrictAddressFamilies")) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_statusd_is_read_only_on_the_spool_unless_the_writes_drop_in_is_installed() -> None:
    u = load("spool-statusd.service")
    assert u.all("ReadOnlyPaths") == [unitkit.SPOOL] and not u.all("ReadWritePaths")
    for key, value in HARDENING.items():
        assert u.get(key) == value, key
    w = load("spool-statusd.service", [dropin("spool-statusd.service", "writes.conf.example")])
    assert w.all("ReadWritePaths") == [unitkit.SPOOL]
    # On an equal path systemd keeps the read-only entry: the drop-in must clear it.
    assert unitkit.SPOOL not in w.all("ReadOnlyPaths")
    assert all(p.lstrip("-").startswith(unitkit.SPOOL + "/") for p in w.all("ReadOnlyPaths"))


def test_the_purge_timer_runs_the_purge_service_daily() -> None:
    timer = load("spoolq-purge.timer")
    assert (timer.get("OnCalendar"), timer.get("Persistent")) == ("daily", "true")
    assert timer.get("RandomizedDelaySec")
    service = load("spoolq-purge.service")
    assert service.get("Type") == "oneshot"
    assert "purge --older-than ${SPOOL_RETENTION} --state all" in service.settings["ExecStart"][0]
    for key, value in HARDENING.items():
        assert service.get(key) == value, key


def test_the_environment_example_names_every_setting_with_its_default() -> None:
    text = unitkit.ENV_EXAMPLE.read_text()
    named = set(re.findall(r"^#?([A-Z_]+)=", text, re.MULTILINE))
    aliases = {str(f.validation_alias) for f in Settings.model_fields.values()}
    assert aliases | {"SPOOL_RETENTION"} <= named, aliases - named
    for f in Settings.model_fields.values():
        if isinstance(f.default, int | float | str) and f.default not in ("", None):
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            assert re.search(rf"^#?{f.validation_alias}={re.escape(shown)}$", text,
                             re.MULTILINE), f.validation_alias
    assert re.search(r"^SPOOL_DIR=/var/spool/spoolq$", text, re.MULTILINE)
    # Each variable has a comment line right above it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^#?[A-Z_]+=", line):
            assert lines[i - 1].startswith("#"), line


def test_every_line_of_the_environment_example_uncommented_as_it_is_gives_the_defaults(
        tmp_path: Path) -> None:
    """"Uncomment to change": a line uncommented before its value is filled in (``JOB_NUM=``)
    must leave the default, not stop every daemon with exit 2."""
    root = tmp_path / "spool"
    init_spool(root)
    text = re.sub(r"^#([A-Z_]+=)", r"\1", unitkit.ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    uncommented = tmp_path / "spoolq.env"
    uncommented.write_text(text)
    env = {**unitkit.env_file(uncommented), "SPOOL_DIR": str(root),
           "PATH": unitkit.SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": "/"}
    assert env["JOB_NUM"] == ""
    for argv in (["spool-processor", "tools"], ["spoolq", "stats", "--json"]):
        argv[0] = str(unitkit.scripts_dir() / argv[0])
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                              cwd="/")
        assert proc.returncode == 0, proc.stderr
    stats = orjson.loads(proc.stdout)
    assert stats["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 0}


# -- helpers for running the daemons ----------------------------------------------------------




def statusd_port(daemons: Daemons, proc: subprocess.Popen[bytes], name: str) -> int:
    """The port a statusd started with STATUSD_PORT=0 said it listens on.  A port picked
    here, let go and bound by statusd after its start-up could be taken meanwhile by
    another xdist worker's bind or outgoing connection."""
    def listens() -> Listening | None:
        # Gone before it said: said now, with its log (not after the 60 s wait).
        assert proc.poll() is None, daemons.log(name)
        return said(daemons.log(name), "127.0.0.1")

    return int(wait_until(listens, "statusd's 'listening on' line").port)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http(port: int, method: str, path: str, body: dict[str, Any] | None = None,
         token: str | None = None) -> tuple[int, Any]:
    """Status and body (parsed when JSON, else text) of one request to 127.0.0.1."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=orjson.dumps(body) if body is not None else None,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, _body(resp.headers.get_content_type(), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _body(exc.headers.get_content_type(), exc.read())


def _body(content_type: str, data: bytes) -> Any:
    return orjson.loads(data) if content_type == "application/json" else data.decode()


def healthy(port: int) -> bool:
    try:
        return http(port, "GET", "/healthz")[0] == 200
    except OSError:
        return False


def drop(root: Path, job_id: str, job: dict[str, Any]) -> None:
    staged = root / "tmp" / f"test-{job_id}"
    staged.write_bytes(orjson.dumps(job))
    os.rename(staged, root / "pending" / f"{job_id}.json")


def init_spool(root: Path) -> None:
    subprocess.run(["spoolq", "init", "--spool-dir", str(root)], check=True,
                   capture_output=True)


def old_and_new_records(root: Path) -> None:
    """failed/old.json (cancelled 30 days ago) and failed/new.json (just now), for the purge."""
    for job_id in ("old", "new"):
        drop(root, job_id, {"tool": "echo", "params": {"message": job_id}})
        subprocess.run(["spoolq", "cancel", job_id, "--spool-dir", str(root)], check=True,
                       capture_output=True)
    month_ago = time.time() - 30 * 86400
    os.utime(root / "failed" / "old.json", (month_ago, month_ago))


class Daemons:
    """Started processes, each with a log file; stop() by pid, always."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:  # cwd: systemd's default
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd="/")
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    yield d
    d.kill_all()


# -- 2. the units' commands, without systemd --------------------------------------------------


def test_the_units_commands_come_up_and_stop_on_sigterm(tmp_path: Path,
                                                        daemons: Daemons) -> None:
    root = tmp_path / "spool"
    init_spool(root)
    moved = {"SPOOL_DIR": str(root), "STATUSD_PORT": "0", "SPOOL_FSYNC": "never",
             "JOB_NUM": "2"}
    started = {}
    for name in ("spool-processor.service", "spool-statusd.service"):
        unit = load(name)
        env = unitkit.unit_env(unit, **moved)
        started[name] = daemons.start(unitkit.exec_argv(unit, env), env, name)
    port = statusd_port(daemons, started["spool-statusd.service"], "spool-statusd.service")
    owners = root / "owners"
    wait_until(lambda: any(p.suffix == ".json" for p in owners.iterdir()),
               "the processor's status file")
    wait_until(lambda: healthy(port), "statusd's /healthz")
    drop(root, "hello", {"tool": "echo", "params": {"message": "hi"}})
    wait_until((root / "done" / "hello.json").exists, "the echo job's record")
    for name, proc in started.items():
        assert daemons.stop(proc) == 0, daemons.log(name)

    old_and_new_records(root)
    unit = load("spoolq-purge.service")
    env = unitkit.unit_env(unit, SPOOL_DIR=str(root))
    argv = unitkit.exec_argv(unit, env)
    assert argv[1:] == ["purge", "--older-than", "14d", "--state", "all"]
    purge = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert purge.returncode == 0, purge.stderr
    assert os.listdir(root / "failed") == ["new.json"]
    assert os.listdir(root / "done") == ["hello.json"]


# -- 3. inside the units' sandboxes -----------------------------------------------------------

WHY_NO_SANDBOX = unitkit.sandbox_missing()
needs_sandbox = pytest.mark.skipif(WHY_NO_SANDBOX is not None, reason=str(WHY_NO_SANDBOX))


def sandboxed(unit: Unit, root: Path, tmp_path: Path,
              **env_overrides: str) -> tuple[list[str], dict[str, str]]:
    """argv and env to run ``unit``'s ExecStart= in its sandbox, the spool at /var/spool."""
    env = unitkit.unit_env(unit, **env_overrides)
    assert env["SPOOL_DIR"] == unitkit.SPOOL  # the real path: the sandbox places it there
    spec = unitkit.sandbox_spec(unit, root, tmp_path / f"private-{unit.name}")
    return unitkit.sandbox_argv(spec, unitkit.exec_argv(unit, env)), env


@needs_analyze
@needs_sandbox
def test_the_processor_runs_real_jobs_inside_its_sandbox(tmp_path: Path,
                                                         daemons: Daemons) -> None:
    root = tmp_path / "spool"
    init_spool(root)
    subprocess.run(["spoolq", "data", "synth", "--symbols", "3", "--bars", "300", "--seed", "1",
                    "--data-dir", str(root / "data")], check=True, capture_output=True)
    listener = Listener(f"@spoolq-units-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        argv, env = sandboxed(load("spool-processor.service"), root, tmp_path,
                              JOB_NUM="2", NOTIFY_SOCKET=listener.address,
                              WATCHDOG_USEC="30000000", SPOOL_TOOLS="ops_probe_tools",
                              PYTHONPATH=str(Path(__file__).parent))
        proc = daemons.start(argv, env, "processor")
        ready = listener.until("READY=1", timeout=60, sender=proc,
                               said=lambda: daemons.log("processor"))[-1]
        assert ready.pid == proc.pid, daemons.log("processor")
        symbols = ["S0000", "S0001", "S0002"]
        jobs: dict[str, dict[str, Any]] = {
            "echo": {"tool": "echo", "params": {"message": "hi"}},
            "sleep": {"tool": "sleep", "params": {"seconds": 0.2}},
            "kline": {"tool": "get_kline", "params": {"symbol": "S0000", "limit": 5}},
            "backtest": {"tool": "run_backtest", "params": {
                "symbols": symbols, "strategy": "ma_crossover", "fast": 5, "slow": 20}},
            "factor": {"tool": "analyze_factor", "params": {
                "factor": "momentum", "symbols": symbols}},
            "probe": {"tool": "ops_probe"},
        }
        for job_id, job in jobs.items():
            drop(root, job_id, job)
        def finished(job_id: str) -> bool:
            return any((root / s / f"{job_id}.json").exists() for s in ("done", "failed"))

        for job_id in jobs:
            wait_until(functools.partial(finished, job_id), f"job {job_id}")
        failed = {p.stem: orjson.loads(p.read_bytes())["error"] for p in
                  (root / "failed").glob("*.json")}
        assert not failed, failed
        probe = orjson.loads((root / "done" / "probe.json").read_bytes())["result"]
        assert probe == {
            "write_etc": "Read-only file system",  # ProtectSystem=strict
            "write_spool": "allowed",  # ReadWritePaths=
            "write_tmp": "allowed",  # PrivateTmp=
            "socket_inet": "Address family not supported by protocol",
            "socket_unix": "allowed",
            "mmap_write_exec": "Permission denied",  # MemoryDenyWriteExecute=
            "mount": "Operation not permitted",  # SystemCallFilter=@system-service
        }
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
        assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE)
        assert daemons.stop(proc) == 0, daemons.log("processor")
        assert [m.text for m in listener.until("STOPPING=1")][-1] == "STOPPING=1"
    finally:
        listener.close()


def _statusd(unit: Unit, root: Path, tmp_path: Path, daemons: Daemons) -> int:
    argv, env = sandboxed(unit, root, tmp_path, STATUSD_PORT="0", STATUSD_TOKEN=TOKEN)
    proc = daemons.start(argv, env, unit.name)
    port = statusd_port(daemons, proc, unit.name)

    def up() -> bool:
        # Gone before it answered: said now, with its log (it waited out the 60 s).
        assert proc.poll() is None, daemons.log(unit.name)
        return healthy(port)

    wait_until(up, "statusd's /healthz")
    return port


@needs_analyze
@needs_sandbox
def test_statusd_in_its_sandbox_reads_but_cannot_write_the_spool(tmp_path: Path,
                                                                 daemons: Daemons) -> None:
    root = tmp_path / "spool"
    init_spool(root)
    drop(root, "later", {"tool": "echo", "not_before": "2099-01-01T00:00:00Z"})
    # A processor outside the sandbox: statusd must see it alive through the
    # read-only spool (its liveness test is a flock on owners/<owner>.lock).
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never", "JOB_NUM": "1"}
    processor = daemons.start(["spool-processor"], env, "processor")
    wait_until(lambda: any(p.suffix == ".json" for p in (root / "owners").iterdir()),
               "the processor's status file")
    port = _statusd(load("spool-statusd.service"), root, tmp_path, daemons)
    status, stats = http(port, "GET", "/api/v1/stats")
    assert status == 200 and stats["counts"]["pending"] == 1
    assert stats["processor"]["alive"] is True, stats
    status, metrics = http(port, "GET", "/metrics")
    assert status == 200 and 'spoolq_jobs{state="pending"} 1.0' in metrics
    assert "spoolq_processor_up 1.0" in metrics
    status, body = http(port, "POST", "/api/v1/tasks", {"tool": "echo"}, token=TOKEN)
    assert status == 503 and "Read-only file system" in body["error"]["message"]
    assert os.listdir(root / "pending") == ["later.json"]
    assert daemons.stop(processor) == 0


@needs_analyze
@needs_sandbox
def test_statusd_with_the_writes_drop_in_submits_cancels_and_retries(
        tmp_path: Path, daemons: Daemons) -> None:
    root = tmp_path / "spool"
    init_spool(root)
    writes = dropin("spool-statusd.service", "writes.conf.example")
    port = _statusd(load("spool-statusd.service", [writes]), root, tmp_path, daemons)
    status, body = http(port, "POST", "/api/v1/tasks", {"tool": "echo"}, token=TOKEN)
    assert status == 202, body
    job_id = body["task_id"]
    assert (root / "pending" / f"{job_id}.json").exists()
    status, record = http(port, "POST", f"/api/v1/tasks/{job_id}/cancel", token=TOKEN)
    assert status == 200 and record["error"]["type"] == "cancelled", record
    assert (root / "failed" / f"{job_id}.json").exists()
    status, record = http(port, "POST", f"/api/v1/tasks/{job_id}/retry", token=TOKEN)
    assert status == 200 and record["state"] == "pending", record
    assert os.listdir(root / "pending") == [f"{job_id}.json"]
    assert not (root / "failed" / f"{job_id}.json").exists()


@needs_analyze
@needs_sandbox
def test_a_drop_in_that_splits_the_spool_into_mounts_breaks_submit(
        tmp_path: Path, daemons: Daemons) -> None:
    """Why writes.conf is one ReadWritePaths= entry: tmp/ -> pending/ crosses mounts."""
    root = tmp_path / "spool"
    init_spool(root)
    split = "[Service]\nReadWritePaths=" + " ".join(
        f"{unitkit.SPOOL}/{d}" for d in ("pending", "tmp", "cancel", "failed", "done"))
    unit = load("spool-statusd.service", [split])
    port = _statusd(unit, root, tmp_path, daemons)
    status, body = http(port, "POST", "/api/v1/tasks", {"tool": "echo"}, token=TOKEN)
    assert status == 503, body
    assert "cross-device" in str(body), body
    assert os.listdir(root / "pending") == []


@needs_analyze
@needs_sandbox
def test_the_purge_runs_inside_its_sandbox(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    init_spool(root)
    old_and_new_records(root)
    argv, env = sandboxed(load("spoolq-purge.service"), root, tmp_path)
    purge = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert purge.returncode == 0, purge.stderr
    assert os.listdir(root / "failed") == ["new.json"]
