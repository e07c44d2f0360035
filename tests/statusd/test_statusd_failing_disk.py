"""statusd on a failing disk: a job whose file it cannot read (EIO) is not a job gone.

The real ``python -m statusd``; strace, attached to it, fails every open of the job's
files in ``running/`` and ``done/`` with EIO while the job moves there, then detaches.

Before, the index's reads took only "out of descriptors" for trouble: an EIO read as a
file that vanished, the job left the index once the vanish grace passed, and a GET
answered 404 ``no task`` for a job in ``done/``, with nothing in the log.  It answers 503
``unavailable`` now (one warning a rescan), and the job as it is once the disk reads.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from statusd_daemonkit import statusd_daemon
from statusdkit import claim, finish, request, submit, wait_for

from spool.transitions import Spool


@functools.cache
def _strace() -> str | None:
    """strace, if it is installed and may attach here (ptrace can be forbidden)."""
    found = shutil.which("strace")
    if found is None:
        return None
    probe = subprocess.run([found, "-o", "/dev/null", "true"], check=False,
                           capture_output=True, timeout=30)
    return found if probe.returncode == 0 else None


def test_a_job_statusd_cannot_read_is_unavailable_not_gone(spool: Spool, tmp_path: Path
                                                           ) -> None:
    strace = _strace()
    if strace is None:
        pytest.skip("strace is not available here")
    root = spool.layout.root
    submit(spool, "j")
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="1") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert request(base, "GET", "/api/v1/tasks/j").status == 200
        err = tmp_path / "strace.err"
        with open(err, "wb") as out:
            tracer = subprocess.Popen(
                [strace, "-f", "-o", "/dev/null", "-p", str(proc.pid),
                 "-P", str(root / "running" / "j.json"), "-P", str(root / "done" / "j.json"),
                 "-e", "trace=openat", "-e", "inject=openat:error=EIO:when=1+"],
                stdout=subprocess.DEVNULL, stderr=out)
        try:
            wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
            finish(spool, claim(spool, "j"), {"ok": True})
            answers = set()
            deadline = time.monotonic() + 4.0  # well past the 2 s vanish grace
            while time.monotonic() < deadline:
                answers.add(request(base, "GET", "/api/v1/tasks/j").status)
                time.sleep(0.2)
        finally:
            tracer.send_signal(signal.SIGTERM)  # detaches: statusd runs on
            tracer.wait(20)
        assert 404 not in answers, answers
        assert 503 in answers, answers  # its moves were not read: said so

        def done() -> bool:
            reply = request(base, "GET", "/api/v1/tasks/j")
            return reply.status == 200 and orjson.loads(reply.body)["state"] == "done"

        wait_for(done, 20, "the job read as done once the disk reads")
    assert any("Input/output error" in line for line in log), log[-20:]
