"""``spoolq`` under ``PYTHONUNBUFFERED=1`` (set in many containers and units): output
that cannot all be written is an error, not a cut that exits 0."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from spoolkit import CLI

from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.transitions import Spool

JOBS = 300  # ls --json of them: some 400 kB, past a pipe's 64 kB


def many_jobs(root: Path) -> None:
    layout = Layout(root)
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    for n in range(JOBS):
        spool.submit(Job(tool="echo", params={"message": "m" * 1000}), f"job{n:04d}")


def test_a_listing_cut_short_by_a_file_size_limit_is_an_error(
        root: Path, env: dict[str, str], tmp_path: Path) -> None:
    """``ulimit -f`` (or a disk filling up): write(2) writes part of the JSON; unbuffered,
    Python dropped the rest and spoolq exited 0, the file holding a cut JSON."""
    many_jobs(root)
    out = tmp_path / "listed.json"
    with out.open("wb") as fh:
        proc = subprocess.run(
            [*CLI, "ls", "--json", "--limit", str(JOBS)], env={**env, "PYTHONUNBUFFERED": "1"},
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.PIPE,
            timeout=60, check=False,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)))
    assert out.stat().st_size == 65536  # the limit was met
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1, (proc.returncode, lines)
    assert len(lines) == 1 and "File too large" in lines[0], lines
    # named as a write at the end is: the copy of a large record said "File too large" alone
    assert "cannot write to standard output" in lines[0], lines


def test_a_reader_gone_mid_listing_is_141(root: Path, env: dict[str, str]) -> None:
    """``spoolq ls --json | head -c 10``: the first write filled the pipe, the reader
    went, and the exit status was 0 instead of SIGPIPE's 141."""
    many_jobs(root)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*CLI, "ls", "--json", "--limit", str(JOBS)],
                            env={**env, "PYTHONUNBUFFERED": "1"}, cwd=root.parent,
                            stdin=subprocess.DEVNULL, stdout=write_end,
                            stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        assert os.read(read_end, 10) == b'{\n  "tasks'
    finally:
        os.close(read_end)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (141, b""), (proc.returncode, err)
