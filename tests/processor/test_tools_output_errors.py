"""``spool-processor tools`` whose catalogue cannot be written says so: one line, exit 1.

An ops script's ``spool-processor tools --json > catalogue.json`` on a full disk got
a ``crashed`` line and a Python traceback; with standard output closed (``>&-``) the
text catalogue went nowhere and the command exited 0, as if it had been written, and
``--json`` crashed.  (``spoolq tools`` already said "cannot write to standard output".)
Real ``python -m processor`` processes.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _env(spool_root: Path) -> dict[str, str]:
    return {**os.environ, "SPOOL_DIR": str(spool_root), "SPOOL_TOOLS": "",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_full_disk_under_the_catalogue_is_one_line_and_exit_1(
        spool_root: Path, as_json: bool) -> None:
    argv = [sys.executable, "-m", "processor", "tools", *(["--json"] if as_json else [])]
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, env=_env(spool_root), stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "spool-processor: error: cannot write to standard output: No space left on device"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_catalogue_cut_short_by_the_disk_is_one_line_and_exit_1(
        spool_root: Path, tmp_path: Path, as_json: bool) -> None:
    """A write the kernel cuts short (the disk full part way, here the file size limit)
    returns the bytes it took and no error: a catalogue over a stream's buffer (8 KiB)
    was left cut in ``> catalogue.json`` and the exit was 0, as if it were whole (h342)."""
    env = {**_env(spool_root), "SPOOL_TOOLS": "widetools", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "processor", "tools", *(["--json"] if as_json else [])]
    whole = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert whole.returncode == 0 and len(whole.stdout) > 3 * 8192, whole.stderr
    limit = 8192 + 100  # the ninth KiB is where the descriptor stops taking it

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(tmp_path / "catalogue", "wb") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False, preexec_fn=limited)
    assert (tmp_path / "catalogue").stat().st_size == limit
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "spool-processor: error: cannot write to standard output: File too large"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_closed_standard_output_is_one_line_and_exit_1(spool_root: Path,
                                                         as_json: bool) -> None:
    command = (f"exec {sys.executable} -m processor tools"
               f"{' --json' if as_json else ''} >&-")
    done = subprocess.run(["sh", "-c", command], env=_env(spool_root), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "spool-processor: error: cannot write to standard output: it is closed"]


def test_a_stdout_that_is_not_utf8_still_gets_the_catalogue(spool_root: Path) -> None:
    """A tool described in words outside ASCII (an en dash) crashed ``tools --json``
    with a UnicodeEncodeError traceback under an ASCII stdout (``PYTHONIOENCODING=ascii``,
    a C locale without UTF-8 mode), as the text list did for a tool or a parameter named
    so: the JSON is UTF-8, as JSON is, and the text shows such names as escapes."""
    env = {**_env(spool_root), "SPOOL_TOOLS": "stricttools", "PYTHONIOENCODING": "ascii",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "processor", "tools"]
    text = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert (text.returncode, text.stderr) == (0, b""), text.stderr
    assert b"s_fast" in text.stdout
    done = subprocess.run([*argv, "--json"], env=env, capture_output=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    tools = {t["name"]: t for t in orjson.loads(done.stdout)}
    assert tools["s_fast"]["description"] == (
        "Orders at a time, a window of bars, a side \N{EN DASH} strict all of them.")


def test_the_daemon_and_spoolq_print_one_catalogue_as_one_table(spool_root: Path) -> None:
    """``spool-processor tools`` printed a line a tool (``params: symbol, start``), no
    required mark and no description, where ``spoolq tools`` printed a table: one
    catalogue, two formats.  With no processor running, ``spoolq tools`` lists the
    installed one, so the two print the same table."""
    env = _env(spool_root)
    daemon = subprocess.run([sys.executable, "-m", "processor", "tools"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    client = subprocess.run([sys.executable, "-m", "spool.cli.main", "tools"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert (daemon.returncode, client.returncode) == (0, 0), (daemon.stderr, client.stderr)
    assert daemon.stdout == client.stdout
    header, *rows = daemon.stdout.splitlines()
    assert header.split() == ["TOOL", "MODE", "TIMEOUT", "PARAMS", "(*", "required)",
                              "DESCRIPTION"]
    echo = next(row for row in rows if row.startswith("echo "))
    assert echo.split()[:4] == ["echo", "fast", "10s", "message"]
