"""``spool-processor --help`` names exit status 75, which start-up gives trouble that
passes (a full disk, an I/O error, NFS's lock daemon down: ENOLCK, since it was added
to ``PASSING_ERRNOS``): it said 2 for "a spool it cannot use", and an operator who saw
75 in the journal found it nowhere in the help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_help_names_the_exit_status_systemd_restarts_after(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "processor", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "75 on a spool it cannot use for now" in flat, proc.stdout
    assert "lock daemon down" in flat and "systemd restarts it" in flat, proc.stdout


def test_help_names_every_signal_the_processor_takes_without_stopping(tmp_path: Path) -> None:
    """The report and timer signals stop nothing (their default action would end the
    processor): an operator reading the help, or the journal's "timer signal ignored",
    finds each named."""
    proc = subprocess.run([sys.executable, "-m", "processor", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    flat = " ".join(proc.stdout.split())
    for name in ("SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF"):
        assert name in flat, proc.stdout
