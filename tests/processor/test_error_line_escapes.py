"""``spool-processor``'s one error line when a setting holds control characters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemonkit import REPO


def test_the_error_line_shows_control_characters_as_escapes(tmp_path: Path) -> None:
    """A SPOOL_DIR ending in a carriage return (read from a file with CRLF line ends)
    went into the one error line as it was: on a terminal the rest of the line wrote
    over its start, and journalctl shows such a message as ``[blob data]``; a newline
    cut the line in two."""
    for end, shown in (("\r", "\\r"), ("\n", "\\n")):
        env = {**os.environ, "SPOOL_DIR": f"{tmp_path}/spool{end}",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "processor"], env=env, cwd=tmp_path,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"spool-processor: error: {tmp_path}/spool{shown} is "
                                      "not an initialised spool".encode()), proc.stderr
        assert b"\r" not in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr
