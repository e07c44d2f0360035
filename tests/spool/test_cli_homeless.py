"""``spoolq`` run by a user with no home: HOME unset and no passwd entry for the uid,
as a container run with an arbitrary ``--user`` has."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import LOAD_SPOOL, has_passwd_entry

HOMELESS_UID = 54321
# Imported first (the interpreter may sit where that uid cannot read, as under /root),
# then the credentials are dropped, then ``main`` runs.
AS_HOMELESS = (LOAD_SPOOL + "import os, sys\nfrom spool.cli.main import main\n"
               f"os.setgroups([]); os.setgid({HOMELESS_UID}); os.setuid({HOMELESS_UID})\n"
               "sys.exit(main(sys.argv[1:]))")


@pytest.mark.skipif(os.geteuid() != 0 or has_passwd_entry(HOMELESS_UID),
                    reason="needs root and a uid with no passwd entry")
@pytest.mark.parametrize("home", [None, ""], ids=["unset", "empty"])
@pytest.mark.parametrize(("spool_dir", "words"), [
    (None, "SPOOL_DIR is not set"), ("~/spool", "~/spool starts with ~")])
def test_a_user_with_no_home_is_told_to_set_spool_dir(tmp_path: Path, env: dict[str, str],
                                                      spool_dir: str | None,
                                                      words: str, home: str | None) -> None:
    """With no SPOOL_DIR (or one starting with ~) the default's ``expanduser`` raised
    RuntimeError: "spoolq: error: unexpected RuntimeError: Could not determine home
    directory. (a bug in spoolq; please report it)", exit 1.  It is a setting to give,
    exit 2, named in one line.  An empty HOME (some cron setups) is no home either: it
    put the spool at ``/.local/state/spoolq``."""
    run_env = {k: v for k, v in env.items() if k not in ("HOME", "SPOOL_DIR")}
    if home is not None:
        run_env["HOME"] = home
    if spool_dir is not None:
        run_env["SPOOL_DIR"] = spool_dir
    tmp_path.chmod(0o755)  # the homeless user's working directory
    proc = subprocess.run([sys.executable, "-c", AS_HOMELESS, "ls"], env=run_env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("spoolq: error: "), lines
    assert words in lines[0] and "bug" not in lines[0], lines


@pytest.mark.parametrize(("spool_dir", "under_home"), [
    (None, ".local/state/spoolq"), ("~/spool", "spool"), ("~", "")])
def test_an_empty_home_is_taken_for_unset(tmp_path: Path, env: dict[str, str],
                                          spool_dir: str | None, under_home: str) -> None:
    """``HOME=`` (a cron line, a unit's ``Environment=HOME=``): the default spool was
    ``/.local/state/spoolq`` and ``~/spool`` was ``/spool``, folders at the root of the
    filesystem.  As with HOME unset, the home is this user's passwd entry's.  spoolq,
    spool-processor and spool-statusd read it through one ``load_settings``."""
    run_env = {k: v for k, v in env.items() if k != "SPOOL_DIR"}
    run_env["HOME"] = ""
    if spool_dir is not None:
        run_env["SPOOL_DIR"] = spool_dir
    proc = subprocess.run(
        [sys.executable, "-c", "from spool.settings import load_settings\n"
         "print(load_settings().spool_dir)"], env=run_env, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert proc.stdout.strip() == str(Path(home, under_home)), proc.stdout
