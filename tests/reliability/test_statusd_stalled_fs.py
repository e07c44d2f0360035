"""statusd on a spool whose filesystem stops answering (a hung NFS server, a stopped FUSE
daemon: here bindfs, SIGSTOPped), or goes and is mounted again.

The stats, the tools and /metrics read the processors' state (``owners/``) on the event
loop: one such request on a stalled filesystem froze statusd whole, ``/healthz`` too, so
monitoring took statusd for hung (QA).  They read it off the loop and answer 503
``processors_unknown`` (or /metrics without the processors' gauges) after 2 s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from daemonkit import bindfs_daemon, bindfs_spool
from relkit import Daemon, statusd_port, wait_for


def _get(port: int, path: str, timeout: float = 20.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def fuse_root(tmp_path: Path) -> Iterator[Path]:
    with bindfs_spool(tmp_path) as root:
        yield root


def test_a_stalled_filesystem_does_not_freeze_statusd(fuse_root: Path, tmp_path: Path) -> None:
    d = Daemon(fuse_root, tmp_path / "statusd.log", module="statusd",
               STATUSD_HOST="127.0.0.1", STATUSD_PORT="0")
    d.start(wait_ready=False)
    server = bindfs_daemon(fuse_root.parent)
    try:
        port = statusd_port(d)
        assert _get(port, "/api/v1/stats")[0] == 200
        server.suspend()
        try:
            for path in ("/api/v1/stats", "/api/v1/tools"):
                started = time.monotonic()
                status, body = _get(port, path)
                assert status == 503, body
                assert orjson.loads(body)["error"]["type"] == "processors_unknown", body
                assert time.monotonic() - started < 10
            status, body = _get(port, "/metrics")
            assert status == 200 and b"spoolq_statusd_processors_ok 0.0" in body, body
            assert _get(port, "/healthz", timeout=10)[0] in (200, 503), \
                "statusd answers while the filesystem stalls"
        finally:
            server.resume()
        assert _get(port, "/api/v1/stats")[0] == 200
        assert d.stop() == 0
    finally:
        server.resume()
        d.abort()


def _watched_devices(pid: int) -> set[tuple[int, int]]:
    """The (major, minor) of the filesystems process ``pid``'s inotify watches are on."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("inotify wd:"):
                    sdev = int(line.split("sdev:")[1].split()[0], 16)
                    found.add((sdev >> 20, sdev & 0xFFFFF))
    return found


def test_a_spool_mounted_again_is_followed_by_a_feed_of_the_new_mount(
        fuse_root: Path, tmp_path: Path) -> None:
    """statusd said "following it again" of a spool whose FUSE daemon died and was
    mounted again, and kept its watches of the mount that went: it followed the spool by
    rescans alone (QA: 867 jobs said pending 16 s after they were done)."""
    mnt = fuse_root.parent
    d = Daemon(fuse_root, tmp_path / "statusd.log", module="statusd",
               STATUSD_HOST="127.0.0.1", STATUSD_PORT="0", SPOOL_SCAN_S="0.5")
    d.start(wait_ready=False)
    try:
        statusd_port(d)
        assert d.proc is not None
        before = os.stat(mnt).st_dev
        assert _watched_devices(d.proc.pid) == {(os.major(before), os.minor(before))}
        bindfs_daemon(mnt).kill()
        wait_for(lambda: "the spool is gone" in d.logs() or "cannot look at the spool's "
                 "folders" in d.logs(), 20, "statusd to see the spool gone")
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=True)
        subprocess.run(["bindfs", str(mnt.parent / "under"), str(mnt)], check=True)
        after = os.stat(mnt).st_dev
        assert after != before
        wait_for(lambda: "following it again" in d.logs(), 20, "statusd to see it back")
        wait_for(lambda: _watched_devices(d.proc.pid) == {(os.major(after), os.minor(after))},
                 10, "watches of the new mount only")
        assert d.stop() == 0
    finally:
        d.abort()
