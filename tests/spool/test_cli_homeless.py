"""``spoolq`` run by a user with no home: HOME unset and no passwd entry for the uid,
as a container run with an arbitrary ``--user`` has."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from spoolkit import LOAD_SPOOL

HOMELESS_UID = 54321
# Imported first (the interpreter may sit where that uid cannot read, as under /root),
# then the credentials are dropped, then ``main`` runs.
AS_HOMELESS = (LOAD_SPOOL + "import os, sys\nfrom spool.cli.main import main\n"
               f"os.setgroups([]); os.setgid({HOMELESS_UID}); os.setuid({HOMELESS_UID})\n"
               "sys.exit(main(sys.argv[1:]))")


def _has_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0 or _has_entry(HOMELESS_UID),
                    reason="needs root and a uid with no passwd entry")
@pytest.mark.parametrize(("spool_dir", "words"), [
    (None, "SPOOL_DIR is not set"), ("~/spool", "~/spool starts with ~")])
def test_a_user_with_no_home_is_told_to_set_spool_dir(tmp_path: Path, env: dict[str, str],
                                                      spool_dir: str | None,
                                                      words: str) -> None:
    """With no SPOOL_DIR (or one starting with ~) the default's ``expanduser`` raised
    RuntimeError: "spoolq: error: unexpected RuntimeError: Could not determine home
    directory. (a bug in spoolq; please report it)", exit 1.  It is a setting to give,
    exit 2, named in one line."""
    run_env = {k: v for k, v in env.items() if k not in ("HOME", "SPOOL_DIR")}
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
