"""Read the unit files the way systemd does, and run their commands without it.

* :func:`load` parses a unit and its drop-ins: later assignments override,
  and for list settings an empty assignment clears what came before.
* :func:`unit_env` is the environment systemd would pass: ``Environment=``,
  then the ``EnvironmentFile=`` (ours: ``spoolq.env.example``), which wins.
* :func:`exec_argv` expands ``${VAR}`` (one word) and ``$VAR`` (split) in
  ``ExecStart=`` as systemd does.
* :func:`sandbox_spec` turns a unit's hardening into the spec ``sandbox.py``
  applies; :func:`syscall_set` expands ``@groups`` from ``systemd-analyze``.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
ENV_EXAMPLE = UNITS / "spoolq.env.example"
INSTALL_BIN = "/opt/spoolq/bin/"
SPOOL = "/var/spool/spoolq"
SANDBOX = Path(__file__).resolve().parent / "sandbox.py"
LISTS = {"Environment", "ReadWritePaths", "ReadOnlyPaths", "RestrictAddressFamilies",
         "SystemCallFilter", "EnvironmentFile", "ExecStart"}
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6,
            "AF_NETLINK": socket.AF_NETLINK}


@dataclass
class Unit:
    name: str
    settings: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self.settings.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        """A list setting's words, every assignment joined (``ReadOnlyPaths=a b``)."""
        return [w for v in self.settings.get(key, []) for w in shlex.split(v)]

    def yes(self, key: str) -> bool:
        return (self.get(key) or "no").lower() in ("yes", "true", "1", "on")


def load(name: str, dropins: list[str] | None = None) -> Unit:
    """``systemd/<name>`` with drop-in texts applied in order."""
    unit = Unit(name)
    for text in [(UNITS / name).read_text(), *(dropins or [])]:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            if key in LISTS and value == "":
                unit.settings[key] = []
            elif key in LISTS:
                unit.settings.setdefault(key, []).append(value)
            else:
                unit.settings[key] = [value]
    return unit


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def unit_env(unit: Unit, **overrides: str) -> dict[str, str]:
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": "/", "USER": "spoolq"}
    for value in unit.all("Environment"):
        key, _, val = value.partition("=")
        env[key] = val
    assert unit.all("EnvironmentFile") == ["-/etc/spoolq/spoolq.env"], unit.name
    env.update(env_file(ENV_EXAMPLE))
    env.update(overrides)
    return env


def exec_argv(unit: Unit, env: dict[str, str]) -> list[str]:
    """``ExecStart=`` as argv, with this environment's console scripts for /opt/spoolq/bin."""
    words = []
    for word in shlex.split(unit.settings["ExecStart"][-1]):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    if words[0].startswith(INSTALL_BIN):
        words[0] = str(scripts_dir() / words[0][len(INSTALL_BIN):])
    return words


def scripts_dir() -> Path:
    """Where pip put this interpreter's console scripts (not a pyenv shim)."""
    return Path(sysconfig.get_path("scripts"))


def render(name: str, target: Path, text: str | None = None) -> Path:
    """The unit with ExecStart= at this environment's console scripts, for verify."""
    path = target / name
    body = (UNITS / name).read_text() if text is None else text
    path.write_text(body.replace(INSTALL_BIN, str(scripts_dir()) + "/"))
    return path


# -- the sandbox -----------------------------------------------------------------------------


@functools.cache
def _syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if not line[0].isspace():
            current = groups.setdefault(item, [])
        else:
            current.append(item)
    return groups


def syscall_set(names: list[str]) -> set[str]:
    groups = _syscall_groups()
    found: set[str] = set()
    for name in names:
        found |= syscall_set(groups[name]) if name.startswith("@") else {name}
    return found


def sandbox_spec(unit: Unit, spool_source: Path, private_tmp: Path) -> dict[str, Any]:
    """What ``sandbox.py`` applies for ``unit``, the spool at its installed path."""
    spec: dict[str, Any] = {
        "place": {SPOOL: str(spool_source)},
        "protect_system_strict": unit.get("ProtectSystem") == "strict",
        "read_write_paths": unit.all("ReadWritePaths"),
        "read_only_paths": unit.all("ReadOnlyPaths"),
        "no_new_privileges": unit.yes("NoNewPrivileges"),
        "memory_deny_write_execute": unit.yes("MemoryDenyWriteExecute"),
        "restrict_namespaces": unit.yes("RestrictNamespaces"),
        "private_network": unit.yes("PrivateNetwork"),
        "umask": int(unit.get("UMask") or "0022", 8),
    }
    if unit.yes("PrivateTmp"):
        spec["private_tmp"] = {}
        for path in ("/tmp", "/var/tmp"):
            source = private_tmp / path.strip("/").replace("/", "-")
            source.mkdir(parents=True, exist_ok=True)
            source.chmod(0o1777)
            spec["private_tmp"][path] = str(source)
    if unit.all("SystemCallFilter"):
        spec["syscall_allow"] = sorted(syscall_set(unit.all("SystemCallFilter")))
        name = unit.get("SystemCallErrorNumber")
        spec["syscall_errno"] = getattr(errno, name) if name else None
    if unit.all("RestrictAddressFamilies"):
        spec["address_families"] = [FAMILIES[f] for f in unit.all("RestrictAddressFamilies")]
    return spec


def sandbox_argv(spec: dict[str, Any], argv: list[str]) -> list[str]:
    import json  # noqa: PLC0415 - only here

    return [sys.executable, str(SANDBOX), json.dumps(spec), "--", *argv]


PRIVATE_TMP_PATHS = (Path("/tmp"), Path("/var/tmp"))
"""What the units' ``PrivateTmp=yes`` hides inside the sandbox, as systemd does."""


def sandbox_missing() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "the sandbox needs root (mount namespaces)"
    for where, path in (("this checkout", REPO), ("this Python's scripts", scripts_dir())):
        hidden = next((t for t in PRIVATE_TMP_PATHS if path.resolve().is_relative_to(t)), None)
        if hidden is not None:
            # The daemons could not be found inside (FileNotFoundError at their exec, or
            # statusd gone before its /healthz), as under systemd: not a defect of theirs.
            return f"{where} is under {hidden}, which the units' PrivateTmp=yes hides"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed (.ci/run installs it)"
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes, ctypes.util; "
         "ctypes.CDLL(ctypes.util.find_library('seccomp') or 'libseccomp.so.2'); "
         "libc = ctypes.CDLL(None, use_errno=True); "
         "assert libc.unshare(0x00020000) == 0, 'unshare'; "
         "assert libc.prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE (Linux 6.3+)'"],
        capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "no libseccomp, mount namespaces or PR_SET_MDWE here: " + (
            probe.stderr.strip().splitlines() or ["?"])[-1]
    return None
