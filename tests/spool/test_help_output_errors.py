"""``--help`` and ``--version`` that cannot be written say so: one line, exit 1.

argparse drops an OSError as it writes its help, so ``spoolq --help > /dev/full`` (and
``spoolq ls --help``, ``spool-processor --help``, ``spool-statusd --help``) exited 0
without a word under ``PYTHONUNBUFFERED=1``, or, buffered, the daemons' 120 with
Python's "Exception ignored" at the exit; ``--version`` there was a traceback.  Every
other output of the CLI that cannot be written is one line and exit 1 (and a reader gone
is a quiet 141).  Real processes on a real ``/dev/full`` and a real pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = {"spoolq": "spool.cli.main", "spool-processor": "processor",
            "spool-statusd": "statusd"}
CASES = [("spoolq", ["--help"]), ("spoolq", ["ls", "--help"]), ("spoolq", ["--version"]),
         ("spool-processor", ["--help"]), ("spool-processor", ["--version"]),
         ("spool-statusd", ["--help"]), ("spool-statusd", ["--version"])]


def _run(tmp_path: Path, prog: str, args: list[str], unbuffered: bool, stdout: int
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(PYTHONPATH=str(REPO), SPOOL_DIR=str(tmp_path / "nothing"))
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-m", PROGRAMS[prog], *args], env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60, check=False)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(("prog", "args"), CASES, ids=[" ".join([p, *a]) for p, a in CASES])
def test_a_full_disk_under_help_or_version_is_one_line_and_exit_1(
        tmp_path: Path, prog: str, args: list[str], unbuffered: bool) -> None:
    with open("/dev/full", "w") as full:
        done = _run(tmp_path, prog, args, unbuffered, full.fileno())
    assert (done.returncode, done.stderr.splitlines()) == (1, [
        f"{prog}: error: cannot write to standard output: No space left on device"])


@pytest.mark.parametrize(("prog", "args"), CASES, ids=[" ".join([p, *a]) for p, a in CASES])
def test_help_or_version_to_a_reader_gone_is_a_quiet_141(tmp_path: Path, prog: str,
                                                         args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _run(tmp_path, prog, args, False, write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.parametrize(("prog", "args"), CASES, ids=[" ".join([p, *a]) for p, a in CASES])
def test_help_and_version_still_print_and_exit_0(tmp_path: Path, prog: str,
                                                 args: list[str]) -> None:
    done = _run(tmp_path, prog, args, False, subprocess.PIPE)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"usage: {' '.join([prog, *args[:-1]])}"
                                  if args[-1] == "--help" else f"{prog} "), done.stdout
