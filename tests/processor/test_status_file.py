"""The status file a real processor writes (``owners/<owner>.json``): every field of
``OwnerStatus`` in its order (the heartbeat builds it as a plain dict, not through the
model), counts that follow finished jobs within a heartbeat, and the file replaced by
two inodes taking turns (``Mover.publish_advisory``), none freed a heartbeat."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

from processor import status as status_module
from processor.status import StatusFile
from spool.clock import SystemClock
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import OwnerStatus
from spool.settings import FsyncMode
from spool.transitions import Spool

StartDaemon = Callable[..., Daemon]


def test_the_status_file_has_the_models_fields_and_two_inodes_take_turns(
        spool_root: Path, daemon: StartDaemon) -> None:
    d = daemon()
    # The first FAST job waits for start-up's background import (numpy, pandas), which
    # may take seconds on a loaded host and a periodic heartbeat with it: out of the way.
    drop(spool_root, "warm", {"tool": "echo"})
    wait_record(spool_root, "warm")
    wait_for(lambda: d.status()["done_last_60s"] == 1, 20, "the heartbeat after warm")
    first = d.status()
    assert list(first) == list(OwnerStatus.model_fields)
    model = OwnerStatus.model_validate(first)
    assert model.model_dump(mode="json")["tools"] == first["tools"] != []
    assert (first["pid"], first["busy_workers"], first["stopping"]) == (d.pid, 0, False)
    owners = spool_root / "owners"
    path = next(owners / n for n in os.listdir(owners) if n.endswith(".json"))
    # An O_PATH handle keeps each inode from being freed and its number reused (which no
    # lease sees): the file replaced a heartbeat ago is kept, and back two heartbeats on.
    handles, beats = [], set()
    try:
        for i in range(4):  # each finished job brings the next heartbeat within 0.1 s
            handles.append(os.open(path, os.O_PATH))
            drop(spool_root, f"e{i}", {"tool": "echo", "params": {"message": i}})
            wait_record(spool_root, f"e{i}")
            status = wait_for(lambda n=i: (s := d.status())["done_last_60s"] == n + 2 and s,
                              20, "the heartbeat after the job")
            beats.add(datetime.fromisoformat(status["heartbeat_at"]))
        inodes = [os.fstat(fd).st_ino for fd in handles]
        assert len(beats) == 4
        assert [os.fstat(fd).st_nlink for fd in handles] == [1] * 4, "none freed"
        assert inodes[0::2] == [inodes[0]] * 2 and inodes[1::2] == [inodes[1]] * 2, inodes
    finally:
        for fd in handles:
            os.close(fd)
    assert status["busy_workers"] == 0 and status["failed_last_60s"] == 0
    assert d.stop() == 0
    assert os.listdir(spool_root / "owners") == []
    assert [n for n in os.listdir(spool_root / "tmp") if n.startswith("+spare")] == []


def test_the_last_minutes_counts_take_an_entry_a_second_not_a_run(
        spool_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``done_last_60s`` and ``failed_last_60s`` kept one entry a finished run for a
    minute: 13,000 at 220 jobs/s (helper h117's soak), some 360,000 at W1's 6,000
    jobs/s.  An entry a second now, and the counts as before."""
    clock = [1000.25]
    monkeypatch.setattr(status_module.time, "monotonic", lambda: clock[0])
    layout = Layout(spool_root)
    status = StatusFile(Spool(layout, Mover(layout, FsyncMode.NEVER)), "o", None,  # type: ignore[arg-type]
                        SystemClock(), [])
    for n in range(30_000):
        status.count(n % 3 != 0)
        clock[0] += 0.001  # 30 s of 1,000 runs a second
    assert len(status.finished_at) <= 31
    assert status.finished_last_60s == {True: 20_000, False: 10_000}
    clock[0] += 31.5  # the first second is now over 60 s old, the last 31.5 s
    status.forget_old_counts()
    assert status.finished_last_60s[True] + status.finished_last_60s[False] < 30_000
    assert status.finished_last_60s[True] + status.finished_last_60s[False] >= 28_000
    clock[0] += 31
    status.forget_old_counts()
    assert status.finished_last_60s == {True: 0, False: 0} and not status.finished_at


def test_a_status_file_that_cannot_be_written_warns_once_an_outage(
        spool_root: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The status file is advisory: a write that fails warns once while the writes keep
    failing (not every heartbeat), and again at the next outage once one went through."""
    layout = Layout(spool_root)
    mover = Mover(layout, FsyncMode.NEVER)
    status = StatusFile(Spool(layout, mover), "o", _Executor(),  # type: ignore[arg-type]
                        SystemClock(), [])
    real, full = mover.publish_advisory, [True]

    def publish(dest: Path, data: bytes) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
        real(dest, data)

    monkeypatch.setattr(mover, "publish_advisory", publish)

    def warned() -> int:
        return sum(r.getMessage() == "cannot write status file" for r in caplog.records)

    for outage in (1, 2):
        full[0] = True
        for _ in range(3):
            status.write(0, False, None)
        assert warned() == outage
        full[0] = False
        status.write(0, False, None)
        assert (spool_root / "owners" / "o.json").exists() and warned() == outage


def test_the_status_file_keeps_room_to_say_its_trouble_on_a_full_ext4(
        tmp_path: Path) -> None:
    """Rewritten in place, the status file grew by its I/O trouble's text into one more
    block: on an ext4 out of blocks the rewrite failed, the heartbeat stopped, and a
    minute later readers called the live processor down (QA, h315; tmpfs allocates no
    blocks, where it showed up)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4")
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    if subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-m", "0", str(image)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("mkfs.ext4 failed here")
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("cannot mount a loop image here")
    saved = signal.signal(signal.SIGIO, signal.SIG_IGN)  # as the processor has it
    try:
        layout = Layout(mnt / "spool")
        mover = Mover(layout, FsyncMode.NEVER, recycle=True)
        mover.make_folders()
        status = StatusFile(Spool(layout, mover), "o", _Executor(),  # type: ignore[arg-type]
                            SystemClock(), [])
        status.write(0, False, None)
        status.write(0, False, None)  # both inodes of the file made
        with contextlib.suppress(OSError), open(mnt / "fill", "wb", buffering=0) as fill:
            while True:  # no block left
                fill.write(b"\0" * 1024)
        trouble = {"error": "cannot publish x.json: " + "e" * 1500, "since": None}
        status.write(0, False, None, trouble)
        written = orjson.loads((layout.owners / "o.json").read_bytes())
        assert written["io_trouble"] == trouble
        assert not status.failing_writes
        mover.drop_spares()
    finally:
        signal.signal(signal.SIGIO, saved)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class _Executor:
    """The executor's part a status file reads."""

    name = "local"

    def capacity(self) -> int:
        return 1

    def room(self) -> int:
        return 1

    def busy(self) -> int:
        return 0
