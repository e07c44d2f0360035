"""The systemd units: they verify, they say what ops rely on, and their commands work."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from spool.settings import Settings

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = ["spool-processor.service", "spool-statusd.service", "spoolq-purge.service"]
ALL_UNITS = [*SERVICES, "spoolq-purge.timer"]
INSTALL_BIN = "/opt/spoolq/bin/"
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
             "ProtectHome=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
             "User=spoolq"]

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (.ci/run installs it)")


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def render(unit: str, target: Path) -> Path:
    """The unit with ExecStart pointing at this environment's console scripts."""
    bindir = str(Path(shutil.which("spoolq") or "spoolq").parent) + "/"
    path = target / unit
    path.write_text((UNITS / unit).read_text().replace(INSTALL_BIN, bindir))
    return path


@needs_analyze
def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    paths = [str(render(unit, tmp_path)) for unit in ALL_UNITS]
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@needs_analyze
def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = render("spool-processor.service", tmp_path)
    broken.write_text(broken.read_text().replace("Type=notify", "Type=notifyy"))
    missing = render("spool-statusd.service", tmp_path)
    missing.write_text(missing.read_text().replace("spool-statusd\n", "no-such-binary\n"))
    for path in (broken, missing):
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode != 0 or proc.stderr.strip(), path.name


def test_the_processor_unit_says_what_ops_rely_on() -> None:
    d = directives("spool-processor.service")
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert d["KillMode"] == ["mixed"] and int(d["WatchdogSec"][0]) > 0
    grace = Settings.model_fields["grace_s"].default
    assert int(d["TimeoutStopSec"][0]) > grace
    assert d["ReadWritePaths"] == ["/var/spool/spoolq"]
    text = (UNITS / "spool-processor.service").read_text()
    assert all(h in text for h in HARDENING)


def test_statusd_is_read_only_on_the_spool_unless_writes_are_enabled() -> None:
    d = directives("spool-statusd.service")
    assert d["ReadOnlyPaths"] == ["/var/spool/spoolq"] and "ReadWritePaths" not in d
    text = (UNITS / "spool-statusd.service").read_text()
    assert all(h in text for h in HARDENING)
    dropin = (UNITS / "spool-statusd.service.d" / "writes.conf.example").read_text()
    assert "ReadWritePaths=" in dropin and "/pending" in dropin


def test_the_purge_timer_runs_the_purge_service() -> None:
    timer = directives("spoolq-purge.timer")
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert "purge --older-than" in directives("spoolq-purge.service")["ExecStart"][0]


def test_the_environment_example_names_every_setting_with_its_default() -> None:
    text = (UNITS / "spoolq.env.example").read_text()
    named = set(re.findall(r"^#?([A-Z_]+)=", text, re.MULTILINE))
    aliases = {str(f.validation_alias) for f in Settings.model_fields.values()}
    assert aliases <= named, aliases - named
    for field in Settings.model_fields.values():
        if isinstance(field.default, int | float | str) and field.default not in ("", None):
            default = field.default
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert re.search(rf"^#?{field.validation_alias}={re.escape(shown)}$", text,
                             re.MULTILINE), field.validation_alias


# -- the units' commands, without systemd ----------------------------------------------------


def unit_environment(unit: str, tmp_path: Path, port: int) -> dict[str, str]:
    """What systemd would pass: Environment=, then the EnvironmentFile (the example)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for value in directives(unit).get("Environment", []):
        key, _, val = value.partition("=")
        env[key] = val
    for line in (UNITS / "spoolq.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.partition("=")
            env[key] = val
    env.update(SPOOL_DIR=str(tmp_path / "spool"), STATUSD_PORT=str(port), SPOOL_FSYNC="never")
    return env


def exec_start(unit: str, env: dict[str, str]) -> list[str]:
    line = directives(unit)["ExecStart"][0]
    line = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), line)
    argv = shlex.split(line)
    argv[0] = shutil.which(Path(argv[0]).name) or argv[0]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_the_units_commands_start_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = unit_environment("spool-processor.service", tmp_path, port)
    subprocess.run(["spoolq", "init"], env=env, check=True, capture_output=True)
    started = []
    try:
        for unit in ("spool-processor.service", "spool-statusd.service"):
            env = unit_environment(unit, tmp_path, port)
            started.append(subprocess.Popen(exec_start(unit, env), env=env,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE))
        owners = tmp_path / "spool" / "owners"
        wait_until(lambda: any(p.suffix == ".json" for p in owners.iterdir()))
        wait_until(lambda: healthz(port))
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
    env = unit_environment("spoolq-purge.service", tmp_path, port)
    purge = subprocess.run(exec_start("spoolq-purge.service", env), env=env,
                           capture_output=True, text=True, check=False)
    assert purge.returncode == 0, purge.stderr
    assert "older than 14.0d" in purge.stdout
