"""sd_notify against a real datagram socket standing in for systemd (see notifykit)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from notifykit import Listener

from processor import notify
from processor.notify import SystemdNotifier
from spool.fsops import Mover
from spool.layout import Layout
from spool.settings import FsyncMode


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    lst = Listener(f"@spoolq-test-{os.getpid()}-{os.urandom(4).hex()}")
    yield lst
    lst.close()


def test_each_message_reaches_a_path_socket_from_our_pid(listener: Listener) -> None:
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "4000000"})
    assert n.enabled and n.watchdog_interval_s == 2.0
    n.ready("JOB_NUM=2")
    n.watchdog()
    n.status("busy: 3 running")
    n.extend_timeout(45_000_000)
    n.stopping()
    got = [listener.next() for _ in range(5)]
    assert [m.text for m in got] == ["READY=1\nSTATUS=JOB_NUM=2", "WATCHDOG=1",
                                     "STATUS=busy: 3 running", "EXTEND_TIMEOUT_USEC=45000000",
                                     "STOPPING=1"]
    assert {m.pid for m in got} == {os.getpid()}
    assert listener.nothing()


def test_an_abstract_socket_name(abstract_listener: Listener) -> None:
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": abstract_listener.address})
    n.ready()
    n.stopping()
    assert [abstract_listener.next().text for _ in range(2)] == ["READY=1", "STOPPING=1"]


def test_status_text_cannot_inject_other_assignments(listener: Listener) -> None:
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": listener.address})
    n.status("bad\nREADY=1\r\nMAINPID=1")
    n.ready("two\nlines")
    assert listener.next().text == "STATUS=bad READY=1 MAINPID=1"
    assert listener.next().text == "READY=1\nSTATUS=two lines"


@pytest.mark.parametrize(("env", "pings"), [
    ({"WATCHDOG_USEC": "1000000"}, True),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "{me}"}, True),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "{other}"}, False),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "not-a-pid"}, False),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""}, False),
    ({"WATCHDOG_USEC": "0"}, False),
    ({"WATCHDOG_USEC": "-5"}, False),
    ({"WATCHDOG_USEC": "soon"}, False),
    ({}, False),
])
def test_watchdog_pings_only_when_meant_for_this_process(
        listener: Listener, env: dict[str, str], pings: bool) -> None:
    """sd_watchdog_enabled(3): WATCHDOG_USEC > 0, and WATCHDOG_PID unset or ours."""
    filled = {k: v.format(me=os.getpid(), other=os.getpid() + 1) for k, v in env.items()}
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": listener.address, **filled})
    assert (n.watchdog_interval_s == 0.5) is pings
    assert n.watchdog_interval_s is None or pings
    n.watchdog()
    n.stopping()  # a marker: whatever came before it was sent by watchdog()
    assert [m.text for m in listener.until("STOPPING=1")] == (
        ["WATCHDOG=1", "STOPPING=1"] if pings else ["STOPPING=1"])


def test_without_notify_socket_everything_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    n = SystemdNotifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready("x")
    n.watchdog()
    n.status("y")
    n.extend_timeout(1)
    n.stopping()
    assert not caplog.records


@pytest.mark.parametrize("address", ["/nonexistent/notify.sock", "relative.sock",
                                     "vsock:2:1234", "@"])
def test_a_failed_send_never_raises_and_is_logged_once(
        caplog: pytest.LogCaptureFixture, address: str) -> None:
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    with caplog.at_level(logging.WARNING, logger="spoolq.notify"):
        n.ready()
        for _ in range(5):
            n.watchdog()
        n.stopping()
    warnings = [r for r in caplog.records if r.name == "spoolq.notify"]
    assert len(warnings) == 1 and address in warnings[0].getMessage()


def test_a_stalled_receiver_cannot_block_the_sender(
        listener: Listener, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A receiver that never reads fills its queue; further sends give up, logged once."""
    monkeypatch.setattr(notify, "SEND_TIMEOUT_S", 0.05)
    queue_len = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "2000000"})
    with caplog.at_level(logging.WARNING, logger="spoolq.notify"):
        for _ in range(queue_len + 3):
            n.watchdog()
    warnings = [r for r in caplog.records if r.name == "spoolq.notify"]
    assert len(warnings) == 1
    received = 0
    while not listener.nothing(0.05):
        received += 1
    assert 1 <= received < queue_len + 3


# -- the real daemon -----------------------------------------------------------------------


def test_the_processor_says_ready_after_recovery_pings_and_says_stopping(
        tmp_path: Path, listener: Listener) -> None:
    """What systemd sees of ``Type=notify``, ``WatchdogSec=1``, ``NotifyAccess=main``."""
    root = tmp_path / "spool"
    layout = Layout(root)
    Mover(layout, FsyncMode.NEVER).make_folders()
    # An orphan of a processor that died: recovery must settle it before READY=1.
    (root / "running" / "orphan.json").write_bytes(
        orjson.dumps({"tool": "echo", "params": {"message": "x"}, "max_attempts": 1}))
    env = {**os.environ, "SPOOL_DIR": str(root), "JOB_NUM": "1", "SPOOL_FSYNC": "never",
           "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}
    # systemd sets WATCHDOG_PID to the main pid: exec keeps the shell's pid.
    argv = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$0" -m processor', sys.executable]
    log_path = tmp_path / "processor.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        ready = listener.until("READY=1", timeout=60, sender=proc,
                               said=lambda: log_path.read_text(errors="replace"))[-1]
        orphan = orjson.loads((root / "failed" / "orphan.json").read_bytes())
        assert orphan["error"]["type"] == "abandoned"
        assert not (root / "running" / "orphan.json").exists()

        messages = []
        for _ in range(5):
            messages += listener.until("WATCHDOG=1")
        pings = [m.at for m in messages if m.text == "WATCHDOG=1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Half of WatchdogSec=1 s; systemd kills the service if a gap reaches 1 s.  A
        # ping more may come from the thread that pings while the loop waits on its log
        # (a write the loaded host held 0.25 s: a gap of 0.26 s in a full run), so the
        # cadence is the gaps' median.
        assert len(gaps) >= 4 and all(g < 1.0 for g in gaps), gaps
        assert 0.35 < statistics.median(gaps) < 1.0, gaps

        proc.send_signal(signal.SIGTERM)
        stopping = listener.until("STOPPING=1")
        # And systemctl status says so: it showed the READY line through the grace (QA).
        said = [m for m in [*stopping, *(listener.next() for _ in range(2))]
                if m.text.startswith("STATUS=")]
        assert said and said[0].text.startswith("STATUS=stopping: 0 running, "), said
        assert proc.wait(timeout=60) == 0
        assert {m.pid for m in [ready, *messages, *stopping]} == {proc.pid}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "cannot notify systemd" not in log_path.read_text(errors="replace")


def test_a_log_reader_that_stops_reading_does_not_starve_the_watchdog(
        tmp_path: Path, listener: Listener) -> None:
    """The loop waits in a write its log's reader does not take (journald stalled): the
    pings went with it, systemd killed the processor past ``WatchdogSec`` (a restart
    that helps nothing: its running jobs requeued with their attempt counted, or failed
    ``abandoned``).  A thread pings while the loop waits only for its log, and the wait
    is said once the reader reads again."""
    root = tmp_path / "spool"
    Mover(Layout(root), FsyncMode.NEVER).make_folders()
    env = {**os.environ, "SPOOL_DIR": str(root), "JOB_NUM": "1", "SPOOL_FSYNC": "never",
           "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}
    read, write = os.pipe()
    # A pipe of 16 KiB, not the default 64: some 50 jobs fill it, not 220, which a loaded
    # host took over 30 s to run (27034 bytes in the pipe at the deadline).
    fcntl.fcntl(read, F_SETPIPE_SZ, 16384)
    jobs = 150  # some 330 bytes of log a job: three pipes' worth
    proc = subprocess.Popen([sys.executable, "-m", "processor"], env=env, cwd=tmp_path,
                            stdout=write, stderr=write)
    os.close(write)
    log = bytearray()
    try:
        listener.until("READY=1", timeout=60, sender=proc)
        for i in range(jobs):
            (root / "tmp" / f"f{i}").write_bytes(orjson.dumps(
                {"tool": "echo", "params": {"message": "m" * 100}}))
            os.rename(root / "tmp" / f"f{i}", root / "pending" / f"f{i:03d}.json")

        def queued() -> int:
            return struct.unpack("i", fcntl.ioctl(read, termios.FIONREAD, b"\0" * 4))[0]

        full = fcntl.fcntl(read, F_GETPIPE_SZ)
        # The deadlines are a hung test's, not a speed asked of the processor: a slow host's.
        deadline, last, since = time.monotonic() + 180, -1, time.monotonic()
        while last < full // 2 or time.monotonic() - since < 1:  # held in a write then
            assert time.monotonic() < deadline, f"the log never filled its pipe: {last}"
            if (now := queued()) != last:
                last, since = now, time.monotonic()
            time.sleep(0.05)
        while not listener.nothing(0.05):
            pass  # what was sent before the stall
        stalled_at = time.monotonic()
        pings = [m.at for m in listener.until("WATCHDOG=1", timeout=3)]
        while time.monotonic() - stalled_at < 4:
            with contextlib.suppress(TimeoutError):
                message = listener.next(0.2)
                if message.text == "WATCHDOG=1":
                    pings.append(message.at)
        gaps = [b - a for a, b in itertools.pairwise([stalled_at, *pings, time.monotonic()])]
        assert max(gaps) < 1.0, gaps  # systemd's WatchdogSec=1 s
        assert len(os.listdir(root / "done")) < jobs  # the loop was held all along

        def drain() -> None:
            while chunk := os.read(read, 65536):
                log.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        deadline = time.monotonic() + 180
        while len(os.listdir(root / "done")) < jobs:
            assert time.monotonic() < deadline, "not every job done"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read)
    said = [orjson.loads(line) for line in log.splitlines() if b'"waited_s"' in line]
    assert said and said[0]["level"] == "warning" and said[0]["waited_s"] >= 4, said
