"""statusd's writes when the disk fails once the write is made (QA, h319).

The real ``python -m statusd``; strace, attached to it, fails one kind of call on one
path while a write is asked, then detaches.

A submit whose job was in ``pending/`` when the index's look-up of it failed with an
error the look-up does not classify (EACCES on the lstat of ``done/<id>.json``) answered
500 ``internal``: a client that retried the 500 submitted the job twice.  It answers 202
with the id, and the index shows the job once it can look (at the latest its rescan).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
from statusd_daemonkit import failing, statusd_daemon
from statusdkit import TOKEN, request

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


def _strace_or_skip() -> str:
    strace = _strace()
    if strace is None:
        pytest.skip("strace is not available here")
    return strace


def test_a_submit_whose_look_up_fails_after_the_write_answers_its_id(
        spool: Spool, tmp_path: Path) -> None:
    strace = _strace_or_skip()
    root = spool.layout.root
    log: list[str] = []
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        with failing(strace, proc.pid, [root / "done" / "DUPX.json"], ["newfstatat", "statx"],
                     tmp_path / "strace.err", error="EACCES"):
            reply = request(base, "POST", "/api/v1/tasks?any_tool=1",
                            {"tool": "echo", "id": "DUPX"}, token=TOKEN)
        assert (reply.status, reply.json()) == (202, {"task_id": "DUPX"}), reply
        assert (root / "pending" / "DUPX.json").is_file()
        got = request(base, "GET", "/api/v1/tasks/DUPX")
        assert (got.status, got.json()["state"]) == (200, "pending"), got
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
    assert "DUPX is written, but the index could not look at it now" in text, text[-3000:]
