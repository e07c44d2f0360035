"""A start refused its owner lock (ENOLCK) removes only the lock file it made.

An owner id is the host name, the pid and 16 random bits: two processors in pid
namespaces of their own (containers sharing the host name, each its processor at the
same pid) draw the same id once in 65,536 starts, and a start the lock daemon refuses
is made again every few seconds under the unit.  A lock file that was there before the
start is another's (a live processor of that id, or a dead one's that recovery settles
under its lock), never this start's to remove.  strace fails ``flock`` in a process of
its own while this test holds the lock, as the live processor would.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode

REPO = Path(__file__).resolve().parents[2]
OWNER = "host-1-abcd"
TAKE_LEASE = """
import sys
from pathlib import Path
from processor import lifecycle
from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.transitions import Spool
layout = Layout(Path(sys.argv[1]))
try:
    lifecycle.take_lease(Spool(layout, Mover(layout, FsyncMode.NEVER)), sys.argv[2])
except SpoolIOError as exc:
    print(exc)
"""


def _take_lease_refused(root: Path) -> str:
    """What ``take_lease`` of OWNER says, every ``flock`` failing with ENOLCK."""
    strace = shutil.which("strace")
    if strace is None or subprocess.run([strace, "-o", os.devnull, "true"], check=False,
                                        capture_output=True, timeout=30).returncode:
        pytest.skip("strace is not available here")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=flock",
         "-e", "inject=flock:error=ENOLCK", sys.executable, "-c", TAKE_LEASE, str(root),
         OWNER], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_refused_start_keeps_the_lock_file_of_a_live_owner_of_its_id(
        tmp_path: Path) -> None:
    """The lock file of a live processor of the same id was removed: statusd and the CLI
    then said it was down, and its lease no longer named the file anyone could test."""
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    path = layout.owner_lock(OWNER)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the live processor's lease
        said = _take_lease_refused(layout.root)
        assert "No locks available" in said, said
        assert os.path.samestat(os.lstat(path), os.fstat(fd)), "its lock file was removed"
    finally:
        os.close(fd)


def test_a_refused_start_removes_the_lock_file_it_made(tmp_path: Path) -> None:
    """Made by this start and never locked: removed, as the ENOLCK start-up test says."""
    layout = Layout(tmp_path / "spool")
    Mover(layout, FsyncMode.NEVER).make_folders()
    said = _take_lease_refused(layout.root)
    assert "No locks available" in said, said
    assert os.listdir(layout.owners) == []
