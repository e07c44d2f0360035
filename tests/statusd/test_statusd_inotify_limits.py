"""statusd with inotify's kernel limits reached: it follows the spool by rescans.

``fs.inotify.max_user_instances`` and ``max_user_watches`` are per user, shared with
every program of that user.  Reached, statusd did not start at all
(``spool-statusd: error: inotify_init: Too many open files``, exit 1; a watch refused:
``No space left on device``).  The limits are lowered for statusd alone, in a user
namespace of its own (``unshare --user --map-root-user``); skipped where one cannot
be made.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import pytest
from statusd_daemonkit import statusd_daemon
from statusdkit import request, submit

from spool.transitions import Spool

LIMITED = ('echo "$1" > /proc/sys/user/max_inotify_instances && '
           'echo "$2" > /proc/sys/user/max_inotify_watches && shift 2 && exec "$@"')


def limited(instances: int, watches: int) -> list[str]:
    prefix = ["unshare", "--user", "--map-root-user", "sh", "-c", LIMITED, "sh",
              str(instances), str(watches)]
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to lower inotify's limits")
    tried = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if tried.returncode != 0:
        pytest.skip(f"cannot lower inotify's limits in a user namespace: {tried.stderr.strip()}")
    return prefix


def _counts(base: str) -> dict[str, Any]:
    reply = request(base, "GET", "/api/v1/stats")
    assert reply.status == 200, reply.body
    counts: dict[str, Any] = reply.json()["counts"]
    return counts


@pytest.mark.parametrize(("instances", "watches"), [(0, 1000), (1000, 0)],
                         ids=["no-instance", "no-watch"])
def test_statusd_follows_the_spool_by_rescans_when_inotify_is_used_up(
        spool: Spool, instances: int, watches: int) -> None:
    log: list[str] = []
    submit(spool, "before")
    with statusd_daemon(spool.layout.root, log=log, SPOOL_SCAN_S="0.5",
                        prefix=limited(instances, watches)) as (port, _proc):
        base = f"http://127.0.0.1:{port}"
        assert _counts(base)["pending"] == 1
        submit(spool, "after")
        deadline = time.monotonic() + 10
        while _counts(base)["pending"] != 2:
            assert time.monotonic() < deadline, "the new drop was never seen"
            time.sleep(0.1)
        time.sleep(1.5)  # more tries of the feed (every second), no more warnings
    said = [line for line in log if "inotify limit reached" in line]
    assert len(said) == 1, log
    assert ("Too many open files" if instances == 0 else "No space left on device") in said[0]
