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
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from statusd_daemonkit import quick_tracker, statusd_daemon
from statusdkit import claim, finish, request, submit

from spool.transitions import Spool

QUICK_REWATCH_S = 0.25
"""How often statusd tries the feed again here (statusd.hints.REWATCH_S ships 1 s)."""
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
                        argv=quick_tracker(REWATCH_S=QUICK_REWATCH_S),
                        prefix=limited(instances, watches)) as (port, _proc):
        base = f"http://127.0.0.1:{port}"
        assert _counts(base)["pending"] == 1
        submit(spool, "after")
        deadline = time.monotonic() + 10
        while _counts(base)["pending"] != 2:
            assert time.monotonic() < deadline, "the new drop was never seen"
            time.sleep(0.1)
        time.sleep(3 * QUICK_REWATCH_S)  # three more tries of the feed, no more warnings
    said = [line for line in log if "inotify limit reached" in line]
    assert len(said) == 1, log
    assert ("Too many open files" if instances == 0 else "No space left on device") in said[0]


def _done_echo(base: str) -> float:
    reply = request(base, "GET", "/metrics")
    assert reply.status == 200
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == "spoolq_transitions_total" and sample.labels == {
                    "tool": "echo", "outcome": "done"}:
                return sample.value
    return 0.0


def _wait(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within 10 s"
        time.sleep(0.1)


def test_a_run_that_ends_behind_a_new_drop_is_counted_by_the_rescans(spool: Spool) -> None:
    """Following the spool by rescans, the run of an id that ended while a new drop of
    the id waited was never counted: only a hint from done/ counted it, and with no
    inotify there is none (2 of 6 runs in /metrics, re-dropping a fixed id before each
    run ended)."""
    with statusd_daemon(spool.layout.root, SPOOL_SCAN_S="0.1",
                        prefix=limited(0, 1000)) as (port, _proc):
        base = f"http://127.0.0.1:{port}"
        submit(spool, "nightly")
        first = claim(spool, "nightly")
        _wait("the run seen", lambda: _counts(base)["running"] == 1)
        submit(spool, "nightly")  # the next night's drop, while the first still runs
        _wait("the new drop seen", lambda: _counts(base)["pending"] == 1)
        finish(spool, first)
        _wait("the first run counted", lambda: _done_echo(base) == 1)
        second = claim(spool, "nightly")
        submit(spool, "nightly")
        _wait("the second run and its re-drop seen", lambda: _counts(base)["pending"] == 1)
        finish(spool, second)
        _wait("the second run counted", lambda: _done_echo(base) == 2)
        finish(spool, claim(spool, "nightly"))
        _wait("the third run counted", lambda: _done_echo(base) == 3)
        submit(spool, "nightly")  # a re-drop of the ended id: its record is no new run
        _wait("the re-drop seen", lambda: _counts(base)["pending"] == 1)
        claim(spool, "nightly").close()  # claimed: the record stays behind it
        _wait("the claim seen", lambda: _counts(base)["running"] == 1)
        time.sleep(0.5)  # a few rescans more (SPOOL_SCAN_S=0.1): none counted again
        assert _done_echo(base) == 3
