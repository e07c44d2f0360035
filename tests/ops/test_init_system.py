"""``spoolq init --system``: Postfix-style permissions on a real spool."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="init --system changes owners: root")


def test_drop_folders_are_setgid_and_group_writable_the_rest_private(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    env = {**os.environ, "SPOOL_DIR": str(root)}
    cmd = [sys.executable, "-m", "spool.cli.main", "init", "--system", "--user", "nobody",
           "--group", "nogroup"]
    for _ in range(2):  # idempotent
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    for name in ("pending", "tmp"):
        st = os.stat(root / name)
        assert stat.S_IMODE(st.st_mode) == 0o3730, name
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nogroup.gr_gid)
    for name in ("running", "done", "failed", "progress", "cancel", "owners"):
        st = os.stat(root / name)
        assert stat.S_IMODE(st.st_mode) == 0o750, name
        assert st.st_uid == nobody.pw_uid and st.st_gid == nobody.pw_gid
    st = os.stat(root / "stage")  # the processor's own staging: nobody else's to read
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == nobody.pw_uid and st.st_gid == nobody.pw_gid


def test_unknown_user_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "SPOOL_DIR": str(tmp_path / "spool")}
    proc = subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system",
                           "--user", "no-such-user-x"], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1 and "useradd" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_submit_under_umask_077_is_still_readable_by_the_submit_group(tmp_path: Path) -> None:
    """docs/operations.md, Permissions: ``spoolq submit`` drops are 0640 whatever the umask
    (an integration's own files follow its umask: with 077 they are quarantined)."""
    root = tmp_path / "spool"
    env = {**os.environ, "SPOOL_DIR": str(root)}
    subprocess.run([sys.executable, "-m", "spool.cli.main", "init", "--system", "--user",
                    "nobody", "--group", "nogroup"], env=env, check=True, capture_output=True)
    submit = ("import os, sys; os.umask(0o077); from spool.cli.main import main; "
              "sys.exit(main(['submit', 'echo', '--id', 'private']))")
    subprocess.run([sys.executable, "-c", submit], env=env, check=True, capture_output=True)
    st = os.stat(root / "pending" / "private.json")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
