"""sd_notify against a real datagram socket standing in for systemd (see notifykit)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
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

        messages = listener.until("WATCHDOG=1")
        messages += listener.until("WATCHDOG=1")
        messages += listener.until("WATCHDOG=1")
        pings = [m.at for m in messages if m.text == "WATCHDOG=1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Half of WatchdogSec=1 s; systemd kills the service if a gap reaches 1 s.
        assert len(gaps) >= 2 and all(0.35 < g < 1.0 for g in gaps), gaps

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
