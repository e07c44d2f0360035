"""The status file a real processor writes (``owners/<owner>.json``): every field of
``OwnerStatus`` in its order (the heartbeat builds it as a plain dict, not through the
model), counts that follow finished jobs within a heartbeat, and the file replaced by
two inodes taking turns (``Mover.publish_advisory``), none freed a heartbeat."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from daemonkit import Daemon, drop, wait_for, wait_record

from spool.models import OwnerStatus

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
