"""A cancel request whose lookup the disk fails (EIO on its ``lstat``) while the
processor runs: strace, attached to a real processor, fails every ``newfstatat`` of
``cancel/<id>``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from relkit import Daemon, drop, locations, record, strace_usable, wait_for

UNREAD = "cannot read a cancel request; asked again at each scan"


def test_a_cancel_request_the_disk_cannot_look_up_is_said_and_acted_on_later(
        spool_root: Path, tmp_path: Path) -> None:
    """``os.path.lexists`` took the lookup's EIO for no request: each scan of ``cancel/``
    dropped it again with no word, the job waiting on and nobody told why its cancel
    did nothing.  It is the request's trouble, said once; the cancel goes through once
    the lookup works."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_SCAN_S="0.5")
    tracer: subprocess.Popen[bytes] | None = None
    try:
        d.start()
        drop(spool_root, "x", {"tool": "echo", "params": {"message": 0},
                               "not_before": "2099-01-01T00:00:00Z"})
        drop(spool_root, "j0", {"tool": "echo", "params": {"message": 0}})
        wait_for(lambda: record(spool_root, "j0") is not None, 30, "j0's record")
        err = tmp_path / "strace.err"
        with open(err, "wb") as out:
            tracer = subprocess.Popen(
                [strace, "-f", "-o", "/dev/null", "-p", str(d.pid), "-P",
                 str(spool_root / "cancel" / "x"), "-e", "trace=newfstatat",
                 "-e", "inject=newfstatat:error=EIO:when=1+"],
                stdout=subprocess.DEVNULL, stderr=out)
        wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
        (spool_root / "cancel" / "x").write_bytes(b"{}")
        said = wait_for(lambda: [e for e in d.events() if e.get("msg") == UNREAD], 30,
                        "the request's trouble said")
        assert [e.get("id") for e in said] == ["x"], d.logs()[-3000:]
        assert locations(spool_root)["x"] == ["pending"]
        tracer.send_signal(signal.SIGTERM)  # detached: the lookup works again
        tracer.wait(20)
        # .get: a cancel stages the job before its record lands, in no state folder a moment
        wait_for(lambda: locations(spool_root).get("x") == ["failed"], 30, "x cancelled")
        assert len([e for e in d.events() if e.get("msg") == UNREAD]) == 1
        assert d.stop() == 0
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(20)
        d.abort()
