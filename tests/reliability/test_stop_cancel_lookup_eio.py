"""A stop whose look for a run's cancel request the disk fails (EIO on its ``lstat``):
strace, attached to a real processor, fails every ``newfstatat`` of ``cancel/<id>``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from relkit import Daemon, drop, locations, strace_usable, wait_for, wait_record

from spool.client import Client
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode
from spool.states import JobState

UNREAD = "cannot read a cancel request; asked again at each scan"


def test_a_cancel_the_stop_cannot_look_up_is_left_to_recovery_not_lost(
        spool_root: Path, tmp_path: Path) -> None:
    """The grace period over, the stop looks for each run's cancel request: a cancel asked
    wins over the requeue.  ``os.path.lexists`` took the lookup's EIO for no request:
    the run was requeued as cut short into a new file, the request (naming the run's
    file) was then dropped as another run's, and the job ran again though ``spoolq
    cancel`` had said the request stays for its processor.  The run is left in
    ``running/`` instead, and the next processor's recovery cancels it."""
    strace = strace_usable()
    if strace is None:
        pytest.skip("strace is not available here")
    layout = Layout(spool_root)
    d = Daemon(spool_root, tmp_path / "p.log", SPOOL_GRACE_S="0", SPOOL_SCAN_S="0.5")
    tracer: subprocess.Popen[bytes] | None = None
    try:
        d.start()
        drop(spool_root, "unwanted", {"tool": "sleep", "params": {"seconds": 120}})
        wait_for(lambda: locations(spool_root).get("unwanted") == ["running"], 30,
                 "the job to run")
        err = tmp_path / "strace.err"
        with open(err, "wb") as out:
            tracer = subprocess.Popen(
                [strace, "-f", "-o", "/dev/null", "-p", str(d.pid), "-P",
                 str(layout.cancel / "unwanted"), "-e", "trace=newfstatat",
                 "-e", "inject=newfstatat:error=EIO:when=1+"],
                stdout=subprocess.DEVNULL, stderr=out)
        wait_for(lambda: b"attached" in err.read_bytes(), 20, "strace attached")
        client = Client(layout, Mover(layout, FsyncMode.NEVER))
        assert client.cancel("unwanted", wait_s=0).state is JobState.RUNNING
        wait_for(lambda: [e for e in d.events() if e.get("msg") == UNREAD], 30,
                 "the request's trouble said")
        assert d.stop(60) == 0, d.logs()[-3000:]
        tracer.wait(20)
        assert locations(spool_root)["unwanted"] == ["running"], d.logs()[-3000:]
        assert (layout.cancel / "unwanted").exists()
        left = [e for e in d.events() if e.get("id") == "unwanted"
                and "cancel request" in str(e.get("error", ""))]
        assert left and left[-1]["level"] == "error", d.logs()[-3000:]
        again = Daemon(spool_root, tmp_path / "p2.log", SPOOL_GRACE_S="0")
        try:
            again.start()
            found = wait_record(spool_root, "unwanted", 60)
            assert (found["state"], found["error"]["type"]) == ("failed", "cancelled")
            assert again.stop(60) == 0
        finally:
            again.abort()
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.send_signal(signal.SIGTERM)
            tracer.wait(20)
        d.abort()
