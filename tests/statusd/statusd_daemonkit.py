"""``python -m statusd`` as a real subprocess on 127.0.0.1, for tests that need the
daemon itself (its runner, its memory), not the app in a test thread.

Not a test module; the tests import it by name, as they do statusdkit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LISTENING = re.compile(r"statusd listening on http://127\.0\.0\.1:(\d+)")


@contextmanager
def statusd_daemon(root: Path, **env_vars: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run statusd on the spool at ``root``; yields its port and process; stops it with
    SIGTERM and checks it exits 0."""
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never",
           "STATUSD_HOST": "127.0.0.1", "STATUSD_PORT": "0", "SPOOL_LOG_LEVEL": "INFO",
           **env_vars}
    proc = subprocess.Popen([sys.executable, "-m", "statusd"], env=env, cwd=root.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    port = None
    for line in proc.stderr:
        seen.append(line)
        if match := LISTENING.search(line):
            port = int(match.group(1))
            break
    # Keep reading stderr so the daemon never blocks on a full pipe.
    drain = threading.Thread(target=seen.extend, args=(proc.stderr,), name="statusd-stderr")
    drain.start()
    try:
        assert port is not None, f"statusd did not start: {seen}"
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(10)
            proc.stderr.close()
        assert code == 0, (code, seen[-20:])


def peak_rss_bytes(proc: subprocess.Popen[str]) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")
