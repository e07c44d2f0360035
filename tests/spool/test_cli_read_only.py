"""``spoolq`` on a spool whose filesystem is mounted read-only.

ext4 mounted ``errors=remount-ro`` turns read-only at its next error, and a unit's
``ReadOnlyPaths=`` (or a missing ``ReadWritePaths=``) does the same to one process: the
commands that change the spool must say so, not that "this user may not" write there
and to "run it as the spool user" (advice root, the spool user, cannot follow).

Each test runs the real CLI as a subprocess in a mount namespace of its own
(``unshare``), where the spool under ``tmp_path`` is bind-mounted read-only: nothing
outside the test sees the mount, and it goes when the process ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from spoolkit import CLI

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode

READ_ONLY = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"')
"""sh: bind-mount the folder ``$0`` read-only over itself, then run the rest."""


def _unshare() -> list[str] | None:
    """``unshare`` for a private mount namespace (with a user namespace when not root),
    or None when this host cannot make one."""
    path = shutil.which("unshare")
    if path is None:
        return None
    argv = [path, "-m"] if os.geteuid() == 0 else [path, "-r", "-m"]
    probe = subprocess.run([*argv, "sh", "-c", READ_ONLY, str(Path(__file__).parent), "true"],
                           capture_output=True, timeout=30, check=False)
    return argv if probe.returncode == 0 else None


UNSHARE = _unshare()
pytestmark = pytest.mark.skipif(UNSHARE is None,
                                reason="needs unshare and a mount namespace of its own")


def read_only(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``spoolq ARGS`` with the spool's filesystem read-only to it."""
    assert UNSHARE is not None
    spool = env["SPOOL_DIR"]
    return subprocess.run([*UNSHARE, "sh", "-c", READ_ONLY, spool, *CLI, *args], env=env,
                          cwd=Path(spool).parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("args", "code"), [
    (["submit", "echo"], 1),
    (["submit", "echo", "--wait"], 2),  # exit 1 would read as "the job failed"
    (["cancel", "waiting"], 1),
    (["retry", "failing"], 1),
    (["purge", "--older-than", "1s"], 1),
])
def test_a_read_only_spool_is_named_as_such(root: Path, env: dict[str, str],
                                            args: list[str], code: int) -> None:
    layout = Layout(root)
    client = Client(layout, Mover(layout, FsyncMode.NEVER))
    client.submit(Job(tool="echo"), "waiting")
    client.submit(Job(tool="echo"), "failing")
    client.cancel("failing")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    proc = read_only(env, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), proc.stderr
    assert "read-only filesystem" in lines[0], lines[0]
    assert "this user may not" not in lines[0] and "spool user" not in lines[0], lines[0]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
