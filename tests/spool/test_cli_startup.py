"""Each ``spoolq`` command imports what it runs on, and no more (``spool.cli``'s docstring).

Every run of the CLI starts a fresh interpreter, so what it imports is paid for on
every ``spoolq stats --json`` of an ops script: ``--help`` loaded pydantic, the
settings library, the record models, the transitions and watchdog; ``ls``, ``show``
and ``stats`` the transitions, purge and watchdog.  A real process runs one command
through ``spool.cli.main.main`` and reports which of those modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode

PROBE = """
import json, sys
from spool.cli.main import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:  # --help
    code = exc.code
loaded = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
with open(sys.argv[3], "w") as fh:
    json.dump({"code": code, "loaded": loaded}, fh)
"""
MODELS = ("pydantic", "pydantic_settings", "asyncio", "spool.models", "spool.reader")
WRITES = ("spool.transitions",)
FOLLOW = ("spool.purge", "spool.kept", "spool.presence", "watchdog")
"""Purge's modules, and the inotify that only a processor's Spool follows."""


def _loaded(env: dict[str, str], tmp_path: Path, args: list[str]) -> tuple[int, set[str]]:
    out = tmp_path / "probe.json"
    names = [*MODELS, *WRITES, *FOLLOW]
    subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(names),
                    str(out)], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    report = json.loads(out.read_text())
    return report["code"], set(report["loaded"])


@pytest.fixture
def job_id(root: Path) -> str:
    """A pending job to show, wait for and cancel."""
    layout = Layout(root)
    return Client(layout, Mover(layout, FsyncMode.NEVER)).submit(Job(tool="echo"))


@pytest.mark.parametrize(("args", "expected"), [
    (["--help"], (0, MODELS + WRITES + FOLLOW)),
    (["stats", "--json"], (0, WRITES + FOLLOW)),
    (["ls"], (0, WRITES + FOLLOW)),
    (["show", "{id}"], (0, WRITES + FOLLOW)),
    (["wait", "{id}", "--timeout", "0.1", "--quiet"], (3, FOLLOW)),
    (["submit", "echo", "-p", "message=hi"], (0, FOLLOW)),
    (["cancel", "{id}"], (0, FOLLOW)),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_a_command_imports_only_what_it_runs_on(
        env: dict[str, str], tmp_path: Path, job_id: str, args: list[str],
        expected: tuple[int, tuple[str, ...]]) -> None:
    """``expected``: the exit code, and the modules the command must not import."""
    code, absent = expected
    ran, loaded = _loaded(env, tmp_path, [arg.format(id=job_id) for arg in args])
    assert ran == code
    assert not loaded & set(absent), f"spoolq {args[0]} imported {sorted(loaded & set(absent))}"
