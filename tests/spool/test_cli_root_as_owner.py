"""A mutating command run as root acts as the spool's owner (spool.cli.owner).

The spool's root is its service user's, who can put a symlink where ``failed/`` was:
``spoolq purge`` run as root then unlinked the files of the folder the link named, a
root-only one (QA).  Real CLI, real users' ids; root only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.cli.owner import ACTS_AS_OWNER, acts_as_owner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root only")
NOBODY = 65534


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may pass through (pytest's own are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="spoolq-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _spoolq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spool.cli.main", *args], text=True,
                          capture_output=True, timeout=60, check=False,
                          env={**os.environ, "SPOOL_FSYNC": "never"})


def _nobodys_spool(open_dir: Path) -> tuple[Path, Path]:
    """A spool of uid 65534's, and a folder of root's alone beside it."""
    root = open_dir / "spool"
    assert _spoolq("init", "--spool-dir", str(root)).returncode == 0
    for path in [root, *root.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    secret = open_dir / "secret"
    secret.mkdir(mode=0o700)
    return root, secret


def test_roots_purge_does_not_follow_the_owners_symlink_out_of_the_spool(
        open_dir: Path) -> None:
    root, secret = _nobodys_spool(open_dir)
    victim = secret / "victim.json"
    victim.write_text('{"not": "a record"}')
    os.utime(victim, (0, 0))
    shutil.rmtree(root / "failed")
    (root / "failed").symlink_to(secret)  # what the spool's owner may do
    os.lchown(root / "failed", NOBODY, NOBODY)
    done = _spoolq("purge", "--spool-dir", str(root), "--older-than", "1s",
                   "--state", "failed")
    assert victim.exists(), (done.returncode, done.stdout, done.stderr)
    assert done.returncode == 1, (done.stdout, done.stderr)  # the owner may not list it


def test_roots_submit_does_not_write_through_the_owners_symlink(open_dir: Path) -> None:
    """The owner replaced ``tmp/`` with a link to a root-only folder: root's submit
    wrote its staging file there (a file of root's, in a folder of root's choosing
    no longer: the owner may not write there, so the submit fails, saying so)."""
    root, secret = _nobodys_spool(open_dir)
    shutil.rmtree(root / "tmp")
    (root / "tmp").symlink_to(secret)
    os.lchown(root / "tmp", NOBODY, NOBODY)
    done = _spoolq("submit", "--spool-dir", str(root), "echo", "-p", "message=x")
    assert list(secret.iterdir()) == [], (done.returncode, done.stdout, done.stderr)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr


def test_the_commands_that_act_as_the_owner() -> None:
    assert frozenset({"cancel", "retry", "purge", "submit"}) == ACTS_AS_OWNER
    assert acts_as_owner("submit", None) and acts_as_owner("submit", "-")
    assert not acts_as_owner("submit", "/root/job.json")  # root's to read, maybe
    assert not acts_as_owner("ls", None)
