"""``spoolq`` with a stderr that cannot be written: a full disk under ``2>>log``, an fd 2
open for reading only.  What it says there is for a person; the command goes on, and
its exit code is its own.  (A reader of stderr gone, EPIPE, is 141: test_cli_ops.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest
from spoolkit import CLI

from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

UNWRITABLE = {"full disk": ("/dev/full", os.O_WRONLY), "read only": ("/dev/null", os.O_RDONLY)}


def spool_of(root: Path) -> Spool:
    layout = Layout(root)
    return Spool(layout, Mover(layout, FsyncMode.NEVER))


def run_with_stderr(env: dict[str, str], how: str, *args: str
                    ) -> subprocess.CompletedProcess[bytes]:
    path, flags = UNWRITABLE[how]
    fd = os.open(path, flags)
    try:
        return subprocess.run([*CLI, *args], env=env, cwd=Path(env["SPOOL_DIR"]).parent,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fd,
                              timeout=60, check=False)
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", list(UNWRITABLE))
def test_wait_with_an_unwritable_stderr_waits_and_exits_with_the_jobs_code(
        root: Path, env: dict[str, str], how: str) -> None:
    """``spoolq wait ID 2>>log`` on a full disk stopped at its first state line (``ID:
    pending``) with exit 1, which says the job failed: it did not wait, and printed no
    record; a done job's ``wait`` exited 1 too, and ``ls`` 1 for its next-page hint."""
    spool = spool_of(root)
    spool.submit(Job(tool="echo"), "waiting")
    spool.submit(Job(tool="echo"), "finished")
    claim = spool.claim("finished")
    assert claim is not None
    spool.complete(claim, spool.record_of_claim(claim, JobState.DONE))

    pending = run_with_stderr(env, how, "wait", "waiting", "--timeout", "0.3", "--json")
    assert pending.returncode == 3, pending
    assert orjson.loads(pending.stdout)["state"] == "pending"
    done = run_with_stderr(env, how, "wait", "finished", "--timeout", "30", "--json")
    assert done.returncode == 0, done
    assert orjson.loads(done.stdout)["state"] == "done"
    unknown = run_with_stderr(env, how, "show", "nosuch")
    assert (unknown.returncode, unknown.stdout) == (1, b""), unknown
    listed = run_with_stderr(env, how, "ls", "--limit", "1")  # its next-page hint lost
    assert listed.returncode == 0, listed
    assert listed.stdout.decode().splitlines()[1].startswith("finished "), listed.stdout
