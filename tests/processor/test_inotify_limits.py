"""The processor with inotify's kernel limits reached: it scans instead, and says so once.

``fs.inotify.max_user_instances`` and ``max_user_watches`` are per user and shared by
every program of that user: a desktop's file indexer, an IDE or a leaky service can
use them all up.  The processor then could not start: ``cannot use the spool:
inotify_init: Too many open files``, or with a watch refused ``cannot watch
.../pending: No space left on device`` (read as a full disk), exit 75, and systemd
restarted it into the same refusal for as long as the limit was reached.

The limits are lowered for the processor alone: it runs in a user namespace of its
own (``unshare --user --map-root-user``), whose ``/proc/sys/user/max_inotify_*`` bound
it and not the host.  Skipped where user namespaces cannot be made.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, drop, wait_for, wait_record

LIMITED = ('echo "$1" > /proc/sys/user/max_inotify_instances && '
           'echo "$2" > /proc/sys/user/max_inotify_watches && shift 2 && exec "$@"')


def limited(instances: int, watches: int) -> list[str]:
    """A command prefix: what follows runs with these inotify limits (skips the test
    where they cannot be set)."""
    prefix = ["unshare", "--user", "--map-root-user", "sh", "-c", LIMITED, "sh",
              str(instances), str(watches)]
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to lower inotify's limits")
    tried = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if tried.returncode != 0:
        pytest.skip(f"cannot lower inotify's limits in a user namespace: {tried.stderr.strip()}")
    return prefix


@pytest.fixture
def started(spool_root: Path, tmp_path: Path) -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        d.abort()


def _warnings(d: Daemon) -> list[dict[str, object]]:
    return [e for e in d.events() if e.get("msg", "").startswith("inotify limit reached")]


@pytest.mark.parametrize(("instances", "watches"), [(0, 1000), (1000, 0)],
                         ids=["no-instance", "no-watch"])
def test_the_processor_scans_when_inotify_is_used_up(
        spool_root: Path, tmp_path: Path, started: list[Daemon], instances: int,
        watches: int) -> None:
    d = Daemon(spool_root, tmp_path / "daemon.log", prefix=limited(instances, watches))
    started.append(d)
    d.start()
    drop(spool_root, "fast", {"tool": "echo", "params": {"message": "hi"}})
    drop(spool_root, "compute", {"tool": "sleep", "params": {"seconds": 0}})
    (spool_root / "pending" / "bad.json").write_bytes(b'{"tool": ')
    assert wait_record(spool_root, "fast")["result"] == {"message": "hi"}
    assert wait_record(spool_root, "compute")["state"] == "done"
    bad = wait_record(spool_root, "bad")
    assert bad["error"]["type"] == "invalid_job"
    assert (spool_root / "failed" / "bad.orig").read_bytes() == b'{"tool": '
    drop(spool_root, "later", {"tool": "echo", "params": {"message": 2}})
    assert wait_record(spool_root, "later")["state"] == "done"
    assert d.stop() == 0
    said = _warnings(d)
    assert len(said) == 1, said  # once, not at each of its tries since (every heartbeat)
    assert "SPOOL_SCAN_S" in str(said[0]["msg"])
    assert ("Too many open files" if instances == 0 else "No space left on device") \
        in str(said[0]["error"])


def test_the_feed_comes_back_once_inotify_is_free_again(
        spool_root: Path, tmp_path: Path, started: list[Daemon]) -> None:
    d = Daemon(spool_root, tmp_path / "daemon.log", SPOOL_SCAN_S="3600",
               prefix=limited(0, 1000))
    started.append(d)
    d.start()
    assert len(_warnings(d)) == 1
    # The limit raised in the processor's namespace, as an operator would with sysctl.
    raised = subprocess.run(["nsenter", f"--user=/proc/{d.pid}/ns/user", "sh", "-c",
                             "echo 128 > /proc/sys/user/max_inotify_instances"],
                            capture_output=True, text=True, check=False)
    if raised.returncode != 0:
        pytest.skip(f"cannot enter the processor's user namespace: {raised.stderr.strip()}")
    wait_for(lambda: any(e.get("msg") == "inotify back: watching pending/ and cancel/ again"
                         for e in d.events()), 10, "the feed to come back")
    # With an hour between scans, only the feed brings this drop in.
    drop(spool_root, "fed", {"tool": "echo", "params": {"message": 1}})
    assert wait_record(spool_root, "fed", 30)["state"] == "done"
    assert d.stop() == 0
    assert len(_warnings(d)) == 1
