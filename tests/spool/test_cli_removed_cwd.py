"""``spoolq`` run from a working directory that was removed (``cd dir; rmdir dir;
spoolq ls``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from spoolkit import CLI

GONE_CWD = ["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"']
"""A prefix that runs the command in the folder given after it, removed first."""


def run_in_removed_dir(tmp_path: Path, env: dict[str, str], *args: str
                       ) -> subprocess.CompletedProcess[str]:
    gone = tmp_path / "gone"
    gone.mkdir()
    return subprocess.run([*GONE_CWD, str(gone), *CLI, *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_relative_spool_dir_from_a_removed_directory_is_named(
        tmp_path: Path, root: Path, env: dict[str, str]) -> None:
    """It said "spoolq: error: No such file or directory", exit 1, naming no file (the
    path's abspath asks for the working directory).  A relative path there reaches
    nothing: a setting to give whole, exit 2.  An absolute one works as anywhere."""
    relative = run_in_removed_dir(tmp_path, {**env, "SPOOL_DIR": "spool"}, "ls")
    lines = relative.stderr.splitlines()
    assert relative.returncode == 2, (relative.returncode, lines)
    assert lines == ["spoolq: error: invalid setting SPOOL_DIR: spool is "
                     "relative, and the working directory it is relative to was removed; "
                     "give the whole path"], lines
    absolute = run_in_removed_dir(tmp_path, env, "ls")
    assert (absolute.returncode, absolute.stderr) == (0, "spoolq: no jobs\n"), absolute
