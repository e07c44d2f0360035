"""A real processor whose claim finds its job's NFS handle gone stale (the claim's fstat
failing with ESTALE, injected by strace attached to the processor and failing that one
call on the job's path) waits the trouble out and runs the job once it passes.  The
error got out of the claim raw (an ``OSError``): the processor crashed (a traceback,
exit 1)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from spoolkit import make_spool, read_json, start_processor, stop_processor, strace_path, submit

from spool.states import JobState

pytestmark = pytest.mark.usefixtures("no_leaks")

CLAIMS_FSTAT = 3
"""The processor's looks at ``pending/j1.json`` by newfstatat: intake's lstat and fstat,
then the claim's fstat."""


def _wait(what: str, until: float, ok: Callable[[], bool]) -> None:
    while not ok():
        if time.monotonic() > until:
            raise AssertionError(f"no {what} in time")
        time.sleep(0.05)


@pytest.fixture
def daemon(root: Path, env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_processor(root, env, tmp_path / "processor.log", JOB_NUM="1")
    yield proc
    stop_processor(proc)


def test_a_claim_whose_fstat_finds_a_stale_handle_waits_it_out(
        root: Path, daemon: subprocess.Popen[bytes], tmp_path: Path) -> None:
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    spool = make_spool(root)
    job = root / "pending" / "j1.json"
    err = tmp_path / "strace.err"
    with open(err, "wb") as out:
        tracer = subprocess.Popen(
            [strace, "-f", "-o", "/dev/null", "-p", str(daemon.pid), "-P", str(job),
             "-e", "trace=newfstatat",
             "-e", f"inject=newfstatat:error=ESTALE:when={CLAIMS_FSTAT}"],
            stderr=out)
    try:
        _wait("strace attached", time.monotonic() + 20, lambda: b"attached" in err.read_bytes())
        submit(spool, "j1", params={"message": "hi"})
        done = root / "done" / "j1.json"
        _wait("done record", time.monotonic() + 30,
              lambda: done.exists() or daemon.poll() is not None)
    finally:
        tracer.terminate()
        tracer.wait(10)
    log = (tmp_path / "processor.log").read_text()
    assert daemon.poll() is None, f"the processor exited {daemon.returncode}:\n{log[-3000:]}"
    assert read_json(done)["state"] == JobState.DONE
    assert "cannot claim j1: Stale file handle" in log, log[-3000:]
