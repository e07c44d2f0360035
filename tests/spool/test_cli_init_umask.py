"""``spoolq init`` under the umasks ops scripts run it with: the folders it makes."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from spoolkit import CLI


@pytest.mark.parametrize("umask", ["000", "002", "022"])
def test_init_makes_no_folder_others_may_write_to(tmp_path: Path, env: dict[str, str],
                                                  umask: str) -> None:
    """Under umask 000 (a cron job's, a container's) the spool root and the folders
    init made above it were 0777: any local user could rename ``pending/`` or ``done/``
    away and put a folder of their own in its place.  They are 0755 now, the state
    folders 0750, as under umask 022."""
    root = tmp_path / "above" / "spool"
    proc = subprocess.run(["sh", "-c", f'umask {umask} && exec "$@"', "sh", *CLI, "init",
                           "--spool-dir", str(root)], env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    modes = {path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
             for path in [tmp_path / "above", root, *root.iterdir()]}
    assert modes.pop("above") == modes.pop("above/spool") == 0o755, modes
    assert set(modes.values()) == {0o750}, {k: oct(v) for k, v in modes.items()}
