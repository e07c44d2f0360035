"""``python -m statusd`` as a real subprocess on 127.0.0.1, for tests that need the
daemon itself (its runner, its memory), not the app in a test thread.

Not a test module; the tests import it by name, as they do statusdkit.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from statusd.listening import said

INDEXED = re.compile(r"INFO spoolq\.statusd: indexed \d+ records in ")
READY_TIMEOUT_S = 30.0
"""How long statusd may take to index its spool and log that it listens."""

_QUICK = """
import sys
from statusd import __main__, applying, hints
for name, value in zip(sys.argv[1::2], sys.argv[2::2], strict=True):
    module = applying if hasattr(applying, name) else hints
    assert hasattr(module, name), name
    setattr(module, name, float(value))  # each read as the tracker runs, or is made
sys.exit(__main__.main([]))
"""


def quick_tracker(**clocks: float) -> list[str]:
    """``argv`` for :func:`statusd_daemon`: statusd with clocks of its tracker shortened,
    for a test that waits them out several times over: ``VANISH_GRACE_S`` (how long an id
    in no state folder is still shown, 2 s as shipped: :mod:`statusd.applying`),
    ``REWATCH_S`` (how often a feed short of inotify is tried again, 1 s:
    :mod:`statusd.hints`)."""
    return ["-c", _QUICK, *(str(part) for item in clocks.items() for part in item)]


def wait_listening(proc: subprocess.Popen[Any], logs: Callable[[], str],
                   timeout: float = READY_TIMEOUT_S, *, indexed: bool = True) -> int:
    """The port a ``python -m statusd`` started with STATUSD_PORT=0 logged (``logs()``
    returns its log so far), once it has also logged its index loaded (``indexed``:
    statusd listens before, and answers 503 meanwhile where the index is needed; on a
    small spool the two lines come a moment apart, in either order); AssertionError
    when it exits, or is not there within ``timeout`` seconds, first.  Shared with the
    reliability suite (relkit)."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None
        text = logs()
        if (found := said(text, "127.0.0.1")) and (not indexed or INDEXED.search(text)):
            return found.port
        if exited:
            raise AssertionError(f"statusd exited {proc.returncode} before listening:\n"
                                 f"{text[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"statusd did not listen within {timeout:.0f} s:\n"
                                 f"{text[-4000:]}")
        time.sleep(0.02)


@contextmanager
def statusd_daemon(root: Path, *, ready_timeout: float = READY_TIMEOUT_S,
                   log: list[str] | None = None, argv: Sequence[str] = ("-m", "statusd"),
                   prefix: Sequence[str] = (), indexed: bool = True,
                   **env_vars: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run statusd on the spool at ``root``; yields its port and process (once it listens
    and, with ``indexed``, has its index loaded: :func:`wait_listening`); stops it with
    SIGTERM and checks it exits 0.  A statusd that has not logged that it listens within
    ``ready_timeout`` seconds is killed and the test fails with its log.  ``log``, when
    given, receives the daemon's stderr lines as they come; ``argv``: the interpreter's
    arguments (a script that changes statusd before it runs it); ``prefix``: a command
    that runs the interpreter (``unshare ...``)."""
    env = {**os.environ, "SPOOL_DIR": str(root), "SPOOL_FSYNC": "never",
           "STATUSD_HOST": "127.0.0.1", "STATUSD_PORT": "0", "SPOOL_LOG_LEVEL": "INFO",
           **env_vars}
    proc = subprocess.Popen([*prefix, sys.executable, *argv], env=env, cwd=root.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = log if log is not None else []
    # Read stderr from the start, so the wait has a deadline and the daemon never
    # blocks on a full pipe.
    drain = threading.Thread(target=seen.extend, args=(proc.stderr,), name="statusd-stderr")
    drain.start()
    started = False
    try:
        port = wait_listening(proc, lambda: "".join(seen), ready_timeout, indexed=indexed)
        started = True
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if started else signal.SIGKILL)
        try:
            code: int | None = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None  # failed below, with what it logged
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(10)
            proc.stderr.close()
        assert code is not None, f"statusd still ran 20 s after SIGTERM: {seen[-20:]}"
        if started:
            assert code == 0, (code, seen[-20:])


# statusd with one step of its index's load held until the file argv[1] exists: "scan"
# (the start's scan of the folders) or "read" (the records' read, after the scan); a
# request's wait for the index (statusd.indexing.INDEX_WAIT_S) is argv[3] seconds, and
# the stop's wait for requests in flight (statusd.__main__.STOP_S) argv[4] where given.
_HELD = """
import sys
import time
from pathlib import Path
import statusd.__main__ as main
import statusd.indexing
from statusd.loader import Loader
from statusd.tracker import Tracker
release, step = Path(sys.argv[1]), sys.argv[2]
statusd.indexing.INDEX_WAIT_S = float(sys.argv[3])
if len(sys.argv) > 4:
    main.STOP_S = float(sys.argv[4])
def hold(loading):
    print(f"load held: {step}", file=sys.stderr, flush=True)
    while not release.exists():
        loading.advance(0)  # LoadStopped once statusd stops, as between real reads
        time.sleep(0.01)
if step == "scan":
    scan = Tracker._scan_at_start
    def held_scan(self, behind, unreadable):
        hold(self.loading)
        return scan(self, behind, unreadable)
    Tracker._scan_at_start = held_scan
else:
    load_all = Loader.load_all
    def held_load(self, stamps, unreadable=None, loading=None):
        hold(loading)
        return load_all(self, stamps, unreadable, loading)
    Loader.load_all = held_load
sys.exit(main.main([]))
"""


@contextmanager
def held_statusd(root: Path, release: Path, step: str, wait_s: float, *,
                 log: list[str] | None = None, stop_s: float | None = None,
                 **env_vars: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """:func:`statusd_daemon` with ``step`` of its index's load (``scan`` or ``read``)
    held from outside until the file ``release`` exists (the hold sees statusd's stop as
    its reads do); a request's wait for the index is ``wait_s``, the stop's wait for
    requests in flight ``stop_s`` (statusd's STOP_S unless given).  Yields once statusd
    listens and the hold is reached: its base URL and process."""
    seen: list[str] = log if log is not None else []
    argv = ["-c", _HELD, str(release), step, str(wait_s),
            *([] if stop_s is None else [str(stop_s)])]
    with statusd_daemon(root, indexed=False, log=seen, argv=argv, **env_vars
                        ) as (port, proc):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not any("load held" in line for line in seen):
            assert time.monotonic() < deadline, f"the load was not held: {seen[-20:]}"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", proc


def peak_rss_bytes(proc: subprocess.Popen[str]) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@functools.cache
def strace_usable() -> str | None:
    """strace, if it is installed and may attach here (ptrace can be forbidden)."""
    found = shutil.which("strace")
    if found is None:
        return None
    probe = subprocess.run([found, "-o", "/dev/null", "true"], check=False,
                           capture_output=True, timeout=30)
    return found if probe.returncode == 0 else None


def strace_or_skip() -> str:
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    return strace


@contextmanager
def failing(strace: str, pid: int, paths: Sequence[Path], calls: Sequence[str],
            err: Path, *, when: str = "1+", error: str = "EIO") -> Iterator[None]:
    """strace attached to ``pid`` for the block: each of ``calls`` on ``paths`` fails with
    ``error`` (from its ``when``-th call on); then it detaches and the process runs on."""
    injects = [arg for call in calls
               for arg in ("-e", f"inject={call}:error={error}:when={when}")]
    with open(err, "wb") as out:
        tracer = subprocess.Popen(
            [strace, "-f", "-o", "/dev/null", "-p", str(pid),
             *(arg for path in paths for arg in ("-P", str(path))),
             "-e", f"trace={','.join(calls)}", *injects],
            stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while b"attached" not in err.read_bytes():
            assert time.monotonic() < deadline, f"strace not attached: {err.read_text()}"
            time.sleep(0.02)
        yield
    finally:
        tracer.send_signal(signal.SIGTERM)  # detaches: the process runs on
        tracer.wait(20)
