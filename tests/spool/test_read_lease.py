"""The read lease intake asks a file with (``spool.lease.open_for_writing``).

The lease sits on the open file, which a process forked while it is held shares: given up
only by the close, a FAST tool's ``os.fork`` in that instant kept it, and a writer's next
open of the file waited for the kernel's lease-break time (45 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from spool import lease
from spool.lease import open_for_writing


@pytest.mark.usefixtures("sigio_ignored")
def test_a_process_forked_while_the_lease_is_held_keeps_no_writer_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{"tool": ')
    children: list[int] = []
    real_close = os.close

    def fork_then_close(fd: int) -> None:
        """A FAST tool's thread forks just before intake closes the leased file."""
        with warnings.catch_warnings():  # 3.12+: a fork of a process with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: holds every descriptor a while
            # Longer than the bound below by far (it is killed below): a writer that
            # waits on its lease waits the kernel's lease-break time (45 s), or this
            # sleep out, either way told from a prompt open on a loaded host (a 5 s
            # sleep against a 3 s bound left a Python start 2 s).
            time.sleep(120)
            os._exit(0)
        children.append(pid)
        real_close(fd)

    monkeypatch.setattr(lease.os, "close", fork_then_close)
    try:
        assert open_for_writing(str(path), path.stat().st_ino) is False
    finally:
        monkeypatch.undo()
    try:
        assert children, "the close was not reached"
        # A writer's open, in a process of its own: it blocks while a lease stands.
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", f"open({str(path)!r}, 'ab').close()"],
                       check=True, timeout=90)
        assert time.monotonic() - started < 20, "the writer waited on the child's lease"
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@pytest.mark.usefixtures("sigio_ignored")
def test_the_lease_tells_a_writer_from_none(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    with path.open("wb"):
        assert open_for_writing(str(path), path.stat().st_ino) is True
    assert open_for_writing(str(path), path.stat().st_ino) is False
    assert open_for_writing(str(path), path.stat().st_ino + 1) is None  # not that file


def test_a_process_sigio_would_end_cannot_tell(tmp_path: Path) -> None:
    assert signal.getsignal(signal.SIGIO) is signal.SIG_DFL
    path = tmp_path / "x.json"
    path.write_bytes(b"")
    assert open_for_writing(str(path), path.stat().st_ino) is None
