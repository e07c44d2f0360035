"""The owner lease of a starting processor against readers and other processors' recovery.

A processor opens (creating) ``owners/<owner>.lock`` and then locks it.  Another
processor's recovery pass, between the two, found the file unlocked, took its owner for
dead and removed the file: the new processor then held its lease on a file nobody could
see, and statusd and the CLI called it down for its whole life.  And a reader testing
the lock (statusd, ``spoolq stats``) at the moment the processor locked it made the
start fail ("held by another process").
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from spoolkit import REPO, SleepsClock, listing, make_spool, strace_path

from spool import lease
from spool.lease import OwnerLease, is_locked
from spool.recovery import Recovery

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_a_recovery_pass_between_the_open_and_the_lock_leaves_the_lease_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-b-123")
    real_try_lock = lease.try_lock
    removed: list[int] = []

    def recovery_first(fd: int) -> bool:
        if not removed:  # the new processor's first try: another's pass runs now
            monkeypatch.setattr(lease, "try_lock", real_try_lock)
            removed.append(Recovery(spool).scan().removed)
        return real_try_lock(fd)

    monkeypatch.setattr(lease, "try_lock", recovery_first)
    held = OwnerLease(path)
    try:
        assert removed and removed[0] >= 1, "the pass took the unlocked file for a dead owner's"
        assert listing(spool.layout.owners) == ["host-b-123.lock"]
        assert is_locked(path) is True
    finally:
        held.release()
    assert is_locked(path) is False


def test_a_lock_held_a_moment_is_waited_for(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-c-1")
    reader = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(reader, fcntl.LOCK_EX)  # a reader testing it (is_locked), held for 0.2 s
    timer = threading.Timer(0.2, fcntl.flock, (reader, fcntl.LOCK_UN))
    timer.start()
    try:
        held = OwnerLease(path)
        held.release()
    finally:
        timer.join()
        os.close(reader)


def test_a_lock_held_for_good_still_refuses_the_start(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-d-1")
    other = OwnerLease(path)
    try:
        with pytest.raises(RuntimeError, match="held by another process"):
            OwnerLease(path)
    finally:
        other.release()


LEASE_UNDER_ENOLCK = """
import json, os, sys
from pathlib import Path
from spool.lease import OwnerLease
path = Path(sys.argv[1])
try:
    OwnerLease(path).release()
    said = None
except OSError as exc:
    said = exc.errno
fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
       if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps({"errno": said, "open": [fd for fd in fds if fd == str(path)]}))
"""


def test_a_lock_refused_with_enolck_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """NFS's lock daemon down, ``flock`` fails with ENOLCK: the lease's error reached
    the caller with the lock file still open, a descriptor the caller had no way to
    close (strace fails the call in a process of its own)."""
    strace = strace_path()
    if strace is None:
        pytest.skip("strace is not available here")
    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-e-1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=flock",
         "-e", "inject=flock:error=ENOLCK", sys.executable, "-c", LEASE_UNDER_ENOLCK,
         str(path)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout)
    assert said["errno"] == errno.ENOLCK, said
    assert said["open"] == [], "the lock file's descriptor was left open"


def test_the_lease_says_whether_its_path_still_names_the_locked_file(tmp_path: Path) -> None:
    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-c-7")
    held = OwnerLease(path)
    try:
        assert held.standing() is lease.Standing.HELD
        path.unlink()  # removed in the same spool: others see no lock
        assert held.standing() is lease.Standing.GONE
        assert not is_locked(path)
        held.take_again()
        assert held.standing() is lease.Standing.HELD
        assert is_locked(path)
        (tmp_path / "spool").rename(tmp_path / "spool.old")  # no spool at its path: a
        assert held.standing() is lease.Standing.UNKNOWN  # moment's move, an unmount
        (tmp_path / "spool").mkdir()  # a mount point, its filesystem not mounted yet
        assert held.standing() is lease.Standing.UNKNOWN
        (tmp_path / "spool").rmdir()
        (tmp_path / "spool.old").rename(tmp_path / "spool")  # back: the same files
        assert held.standing() is lease.Standing.HELD
        (tmp_path / "spool").rename(tmp_path / "spool.old")
        make_spool(tmp_path / "spool")  # another one there now: its files are not these
        (tmp_path / "spool" / "owners" / path.name).write_bytes(b"")
        assert held.standing() is lease.Standing.MOVED
    finally:
        held.release()


def test_taking_the_lease_again_from_another_holder_does_not_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its file replaced by one another process holds, the lease was tried for a second
    at each heartbeat, holding the processor's loop (an echo took 2.8 s: the review).
    Told by its tries (one) and its sleeps (none), on a clock of the lease's that moves
    only by its sleeps, which return at once, and a microsecond a reading: a second's
    wait is a hundred tries and sleeps there, however long a loaded host takes over each
    (a wall-clock bound of 0.9 s, 0.1 s from the second it guarded against, was a
    loaded host's to break)."""
    tries: list[int] = []
    real_try_lock = lease.try_lock

    def counted(fd: int) -> bool:
        tries.append(fd)
        return real_try_lock(fd)

    spool = make_spool(tmp_path / "spool")
    path = spool.layout.owner_lock("host-d-9")
    held = OwnerLease(path)
    try:
        path.unlink()
        other = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            monkeypatch.setattr(lease, "try_lock", counted)
            monkeypatch.setattr(lease, "time", clock := SleepsClock(tick=1e-6))
            with pytest.raises(RuntimeError, match="held by another process"):
                held.take_again()
            monkeypatch.undo()
            assert len(tries) == 1 and not clock.slept, (len(tries), clock.slept)
        finally:
            os.close(other)
        assert held.standing() is lease.Standing.GONE  # still its old file's lock
    finally:
        held.release()


def test_a_forked_child_does_not_hold_the_lease_past_its_parent(tmp_path: Path) -> None:
    """The lease is taken before the tools load: a child a tools module forked at its
    import (or a FAST tool's fork) shared the locked open file, and once the processor
    was SIGKILLed its lock stayed held for as long as the child lived (h415)."""
    path = tmp_path / "owner.lock"
    held = OwnerLease(path)
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: says it runs (its fork handlers done), waits for the parent
        os.write(from_child, b"r")
        os.read(to_child, 1)
        os._exit(0)
    try:
        assert os.read(to_parent, 1) == b"r"
        assert is_locked(path), "the parent's lock stays held"
        held.release()  # as the parent's death does
        assert is_locked(path) is False, "the child held the lease's lock"
    finally:
        os.write(from_parent, b"x")
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, to_parent, from_child):
            os.close(fd)
