"""statusd on a failing disk: a job whose file it cannot read (EIO) is not a job gone.

The real ``python -m statusd``; strace, attached to it, fails every open of the job's
files in ``running/`` and ``done/`` with EIO while the job moves there, then detaches.

Before, the index's reads took only "out of descriptors" for trouble: an EIO read as a
file that vanished, the job left the index once the vanish grace passed, and a GET
answered 404 ``no task`` for a job in ``done/``, with nothing in the log.  It answers 503
``unavailable`` now (the file said once while it lasts), and the job as it is once
the disk reads.

The same for a look-up the disk fails (lstat's EIO): a GET of an id the index has not
seen, a cancel, and a retry whose check of the spool's folders failed so, answered 500
with a traceback in the log; they answer 503.

A change feed that cannot be read (inotify's read failing, EIO or ENOMEM): the loop
called its reader again at once, and again, each time logging a traceback (2,304 in a
second and a half, at full CPU), and a job that moved meanwhile was seen only at the
periodic rescan.  The feed is dropped with one warning and started again a second
later, and the spool is rescanned meanwhile.

The dashboard's own files on a disk that fails: aiohttp's file server answered the page
an empty 404 when their open failed (EIO, or out of descriptors) and a 500 with a
traceback when their stat did.  Both are 503 ``unavailable`` now.

A large record whose read failed part way through its streaming (its headers sent): the
error went to the error middleware as if nothing had been sent, and the client waited
for the rest of the body for good.  The connection is cut now, as when the record is
cut short on disk.

A record whose inode the disk cannot read (lstat's EIO in the scan): statusd did not
start ("error: Input/output error", exit 1, and systemd restarted it into the same), and
once started every rescan failed on it, so what the feed missed was never found.  The
file is left out of the scan with a warning (the index keeps what it had of it).  An
indexed one left out so was re-read by each rescan as gone, its look-up failed that
rescan's whole refresh, and a new drop only a rescan could find (no inotify watch) was
never listed while the file lasted.  One left out at start and read once the disk
recovered was counted in the metrics as a job that had just finished.  The warning
naming such files was said at each rescan while they lasted (every SPOOL_SCAN_S);
it is said once, and an info line when they can all be looked at again.

A state folder whose stat goes through but whose listing fails (openat EIO): every
rescan failed and /healthz said ok, and the log said so at each rescan; /healthz says
``spool_unreadable`` until a rescan goes through, and the log says it once, and once
when it ends.  /metrics told none of a spool missing or unreadable (its gauges went on
as usual, the index as it was): ``spoolq_statusd_spool_ok`` is 0 meanwhile.

A record whose open or read fails (EIO, its stat working): read at each rescan as a
change, its error failed that rescan's whole refresh, a warning "reading the spool
failed" each rescan, and nothing only a rescan finds was ever listed while it lasted.
It is left out as one that cannot be looked at, said once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson
import psutil
import pytest
from statusd_daemonkit import failing, quick_tracker, statusd_daemon, strace_or_skip
from statusdkit import TOKEN, claim, finish, request, submit, wait_for

import statusd
from spool.errors import ErrorType
from spool.states import JobState
from spool.transitions import Spool

QUICK_VANISH_S = 0.5
"""The vanish grace of the daemon in tests that wait it out (statusd ships 2 s)."""


def test_a_job_statusd_cannot_read_is_unavailable_not_gone(spool: Spool, tmp_path: Path
                                                           ) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    log: list[str] = []
    with statusd_daemon(root, log=log, argv=quick_tracker(VANISH_GRACE_S=QUICK_VANISH_S),
                        SPOOL_SCAN_S="1") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert request(base, "GET", "/api/v1/tasks/j").status == 200
        paths = [root / "running" / "j.json", root / "done" / "j.json"]
        with failing(strace, proc.pid, paths, ["openat"], tmp_path / "strace.err"):
            finish(spool, claim(spool, "j"), {"ok": True})
            answers = set()
            deadline = time.monotonic() + 4 * QUICK_VANISH_S  # well past the vanish grace
            while time.monotonic() < deadline:
                answers.add(request(base, "GET", "/api/v1/tasks/j").status)
                time.sleep(0.2)
        assert 404 not in answers, answers
        assert 503 in answers, answers  # its moves were not read: said so

        def done() -> bool:
            reply = request(base, "GET", "/api/v1/tasks/j")
            return reply.status == 200 and orjson.loads(reply.body)["state"] == "done"

        wait_for(done, 20, "the job read as done once the disk reads")
    assert any("Input/output error" in line for line in log), log[-20:]


def test_a_look_up_the_disk_fails_is_unavailable_not_an_error(spool: Spool, tmp_path: Path
                                                              ) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    finish(spool, claim(spool, "j"), {"ok": True})
    log: list[str] = []
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert request(base, "GET", "/api/v1/tasks/j").status == 200
        # Every lstat of these files fails, as on a disk that cannot read their inodes;
        # then that of the spool's root (a write that found nothing looks at the spool).
        files = [root / state / f"{job_id}.json" for state in ("pending", "running")
                 for job_id in ("j", "unseen")]
        with failing(strace, proc.pid, files, ["newfstatat", "statx"],
                      tmp_path / "strace.err"):
            replies = [request(base, "GET", "/api/v1/tasks/unseen"),
                       request(base, "POST", "/api/v1/tasks/j/cancel", token=TOKEN)]
        with failing(strace, proc.pid, [root], ["newfstatat", "statx"],
                      tmp_path / "strace-root.err"):
            replies.append(request(base, "POST", "/api/v1/tasks/unseen/retry", token=TOKEN))
        for reply in replies:
            assert reply.status == 503, (reply.status, reply.body)
            assert orjson.loads(reply.body)["error"]["type"] == "unavailable"
        assert request(base, "GET", "/api/v1/tasks/unseen").status == 404
        assert request(base, "POST", "/api/v1/tasks/j/cancel", token=TOKEN).status == 409
        assert request(base, "POST", "/api/v1/tasks/unseen/retry", token=TOKEN).status == 404
    assert not any("Traceback" in line for line in log), "".join(log[-40:])


def test_a_change_feed_that_cannot_be_read_is_started_again(spool: Spool, tmp_path: Path
                                                            ) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "before")
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="600") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert request(base, "GET", "/api/v1/tasks/before").status == 200
        with failing(strace, proc.pid, [Path("anon_inode:inotify")], ["read"],
                      tmp_path / "strace.err"):
            finish(spool, claim(spool, "before"), {"ok": True})
            submit(spool, "during")
            wait_for(lambda: _listed(base) == {"before": "done", "during": "pending"}, 10,
                     "the moves made while the feed could not be read listed")
        submit(spool, "after")
        wait_for(lambda: _listed(base).get("after") == "pending", 10,
                 "a job dropped once the feed reads again listed")
    text = "".join(log)
    assert "Traceback" not in text, text[-3000:]
    assert text.count("change feed cannot be read") == 1, text[-3000:]


def _listed(base: str) -> dict[str, str]:
    reply = request(base, "GET", "/api/v1/tasks")
    assert reply.status == 200, reply
    return {task["id"]: task["state"] for task in orjson.loads(reply.body)["tasks"]}


@pytest.mark.parametrize("call", ["openat", "newfstatat,statx"])
def test_the_dashboard_on_a_failing_disk_is_unavailable_not_missing(
        spool: Spool, tmp_path: Path, call: str) -> None:
    strace = strace_or_skip()
    static = Path(statusd.__file__).parent / "static"
    asks = ["/", "/static/app.js", "/static/app.css"]
    log: list[str] = []
    with statusd_daemon(spool.layout.root, log=log) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        paths = [static / "index.html", static / "app.js", static / "app.css"]
        with failing(strace, proc.pid, paths, call.split(","), tmp_path / "strace.err"):
            replies = [request(base, "GET", path) for path in asks]
            missing = request(base, "GET", "/static/nothing.js")
            outside = request(base, "GET", "/static/..%2f__init__.py")
        for path, reply in zip(asks, replies, strict=True):
            assert reply.status == 503, (path, reply.status, reply.body)
            assert orjson.loads(reply.body)["error"]["type"] == "unavailable", reply.body
        assert (missing.status, outside.status) == (404, 404)
        for path in asks:
            assert request(base, "GET", path).status == 200, path
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def test_a_page_file_the_disk_fails_after_one_read_is_served_or_unavailable(
        spool: Spool, tmp_path: Path) -> None:
    """The page's files were read twice a request, by a check and then by aiohttp's file
    server: the disk failing the second open (intermittent EIO) answered an empty 404
    (QA, h319).  One read now: the page, whole, or a 503 that says why."""
    strace = strace_or_skip()
    static = Path(statusd.__file__).parent / "static"
    log: list[str] = []
    with statusd_daemon(spool.layout.root, log=log) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        for ask, name in (("/", "index.html"), ("/static/app.js", "app.js"),
                          ("/static/app.css", "app.css")):
            # strace counts a thread's calls: each thread's first open goes through, and
            # the first GET's open is the first of whichever thread makes it.
            with failing(strace, proc.pid, [static / name], ["openat"],
                         tmp_path / f"strace-{name}.err", when="2+"):
                replies = [request(base, "GET", ask) for _ in range(3)]
            page = (static / name).read_bytes()
            assert (replies[0].status, replies[0].body) == (200, page), \
                (ask, replies[0].status, replies[0].body[:200])
            for reply in replies[1:]:  # the page, or why not (its open failed)
                assert (reply.status, reply.body) == (200, page) or (
                    reply.status, orjson.loads(reply.body)["error"]["message"]) == (
                    503, f"cannot read the dashboard's {name}: Input/output error; "
                    "try again"), (ask, reply.status, reply.body[:200])
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def test_a_record_that_fails_mid_stream_cuts_the_connection_not_hangs(
        spool: Spool, tmp_path: Path) -> None:
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "big")
    finish(spool, claim(spool, "big"), {"x": "a" * (9 << 20)})  # indexed by its head
    size = (root / "done" / "big.json").stat().st_size
    log: list[str] = []
    with statusd_daemon(root, log=log) as (port, proc):
        with failing(strace, proc.pid, [root / "done" / "big.json"], ["pread64"],
                      tmp_path / "strace.err", when="3+"), \
                socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"GET /api/v1/tasks/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = b""
            started = time.monotonic()
            while chunk := sock.recv(1 << 20):  # socket.timeout: the client waited
                got += chunk
            took = time.monotonic() - started
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert 0 < len(body) < size, (len(body), size)
        assert took < 10, took
        reply = request(f"http://127.0.0.1:{port}", "GET", "/api/v1/tasks/big")
        assert reply.status == 200 and len(reply.body) == size
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


@pytest.mark.parametrize(("error", "said"), [("EIO", "Input/output error"),
                                             ("EACCES", "Permission denied")])
def test_a_spool_the_disk_fails_to_show_is_unreadable_not_gone(
        spool: Spool, tmp_path: Path, error: str, said: str) -> None:
    """The disk failing the stat of the spool's folders (EIO) was said as the spool gone:
    ``/healthz`` answered ``spool_missing`` and the log "the spool is gone (unmounted,
    moved?)", sending an operator to look for an unmount where a disk was failing.  It
    is ``spool_unreadable`` and the error; the index is kept as for a spool gone.  So is
    a spool statusd may not enter (EACCES: a restore that left it another user's; QA)."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    log: list[str] = []

    def health() -> tuple[int, str]:
        reply = request(base, "GET", "/healthz")
        return reply.status, orjson.loads(reply.body)["status"]

    with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert health() == (200, "ok")
        time.sleep(1)  # rescans (SPOOL_SCAN_S=0.2) of a spool that is there: nothing said
        assert "the spool's folders are back" not in "".join(log), "".join(log)[-3000:]
        folders = [root / state.value for state in JobState]
        with failing(strace, proc.pid, folders, ["newfstatat", "statx"],
                     tmp_path / "strace.err", error=error):
            # The look for the folders, not the listing after it: strace can attach
            # between the two, and the listing's failure alone says spool_unreadable
            # too (CI's stop 42 left the block on that, before a look had failed).
            wait_for(lambda: health() == (503, "spool_unreadable")
                     and "cannot look at the spool's folders" in "".join(log), 10,
                     "spool_unreadable, the folders' look said")
            assert request(base, "GET", "/api/v1/tasks/j").status == 200  # kept
            assert _spool_ok(base) == 0
        wait_for(lambda: health() == (200, "ok"), 10, "healthy once the disk shows them")
        assert _spool_ok(base) == 1
    text = "".join(log)
    assert "cannot look at the spool's folders" in text, text[-3000:]
    assert said in text, text[-3000:]
    assert "the spool is gone" not in text, text[-3000:]
    # Each said once an outage, not at each rescan.
    assert text.count("the spool's folders are back") == \
        text.count("cannot look at the spool's folders"), text[-3000:]


@pytest.mark.parametrize(("error", "folders", "said"), [
    ("EIO", ("pending", "done"), "Input/output error"),
    ("EACCES", ("done",), "Permission denied")], ids=["EIO", "EACCES"])
def test_a_spool_folder_statusd_cannot_list_is_unreadable_and_said_once(
        spool: Spool, tmp_path: Path, error: str, folders: tuple[str, ...],
        said: str) -> None:
    """The folders' stat went through (their inodes cached) while their listing failed:
    a failing disk (openat EIO), or a folder statusd may no longer list (EACCES: a
    restore that left it root's, a chmod).  Every rescan failed, the index stood still,
    ``/healthz`` said ok, and the failure was logged at each rescan.  It is
    ``spool_unreadable`` until a rescan goes through, the metrics' gauge 0 meanwhile,
    said once an outage and once when it ends."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")

    def health() -> tuple[int, str]:
        reply = request(base, "GET", "/healthz")
        return reply.status, orjson.loads(reply.body)["status"]

    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert health() == (200, "ok")
        assert _spool_ok(base) == 1
        with failing(strace, proc.pid, [root / name for name in folders], ["openat"],
                      tmp_path / "strace.err", error=error):
            wait_for(lambda: health() == (503, "spool_unreadable"), 10, "spool_unreadable")
            assert request(base, "GET", "/api/v1/tasks/j").status == 200  # kept
            assert _spool_ok(base) == 0  # the metrics' gauges say all is well otherwise
            time.sleep(1.5)  # rescans every 0.2 s: seven and more fail meanwhile
        wait_for(lambda: health() == (200, "ok"), 10, "healthy once it lists them")
        assert _spool_ok(base) == 1
    text = "".join(log)
    # Said once an outage, and once when it ends: a line a rescan filled the log.
    assert text.count(said) == 1, text[-3000:]
    assert text.count("cannot list the spool's folders") == 1, text[-3000:]
    assert "can be listed again" in text, text[-3000:]


@pytest.mark.parametrize("error", ["EIO", "EACCES"])
def test_metrics_and_stats_of_a_disk_that_fails_every_listing_say_so(
        spool: Spool, tmp_path: Path, error: str) -> None:
    """A failing disk fails every folder's listing, ``owners/`` (the processors' status
    files) as well as the state folders.  The stats read ``owners/`` at each ask: /metrics
    and /api/v1/stats answered an error, so no scrape ever told
    ``spoolq_statusd_spool_ok`` 0.  /metrics answers, the spool said unreadable (the
    processors' gauges left out: see tests/statusd/test_statusd_processors_unknown.py);
    /api/v1/stats answers 503 naming ``owners/`` (it served the processors as last seen,
    none for a statusd started meanwhile).  So for folders statusd may no longer list
    (EACCES: a restore that left them root's): a 500 and a traceback."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert _spool_ok(base) == 1
        folders = [root / name for name in ("pending", "running", "done", "failed",
                                            "owners")]
        with failing(strace, proc.pid, folders, ["openat"], tmp_path / "strace.err",
                      error=error):
            wait_for(lambda: request(base, "GET", "/healthz").status == 503, 10,
                     "spool_unreadable")
            # Whether a processor is alive cannot be told: said, never made up.
            reply = request(base, "GET", "/api/v1/stats")
            assert reply.status == 503, (reply.status, reply.body)
            assert "cannot list owners/" in orjson.loads(reply.body)["error"]["message"]
            assert _spool_ok(base) == 0
            # The counts all the same: the index, as it was.
            assert 'spoolq_jobs{state="pending"} 1.0' in request(
                base, "GET", "/metrics").body.decode()
        wait_for(lambda: request(base, "GET", "/healthz").status == 200, 10, "healthy")
        assert _spool_ok(base) == 1
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def _spool_ok(base: str) -> float:
    """The ``spoolq_statusd_spool_ok`` gauge of statusd's /metrics: a scrape saw every
    other gauge as usual while /healthz said 503 (no metric told the spool's trouble)."""
    for line in request(base, "GET", "/metrics").body.decode().splitlines():
        if line.startswith("spoolq_statusd_spool_ok "):
            return float(line.split()[1])
    raise AssertionError("no spoolq_statusd_spool_ok in /metrics")


def _bad_and_good_under_strace(spool: Spool, when: str) -> list[str]:
    """Jobs "bad" and "good", done, and the strace prefix that fails the stat of bad's
    record (EIO) at the calls ``when`` names."""
    strace = strace_or_skip()
    root = spool.layout.root
    for job_id in ("bad", "good"):
        submit(spool, job_id)
        finish(spool, claim(spool, job_id), {"ok": True})
    return [strace, "-f", "-o", "/dev/null", "-P", str(root / "done" / "bad.json"),
            "-e", "trace=newfstatat,statx", "-e", f"inject=newfstatat:error=EIO:when={when}",
            "-e", f"inject=statx:error=EIO:when={when}"]


def test_a_record_the_disk_cannot_stat_does_not_stop_statusd(spool: Spool) -> None:
    root = spool.layout.root
    prefix = _bad_and_good_under_strace(spool, "1+")
    log: list[str] = []
    with statusd_daemon(root, log=log, prefix=prefix, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert _listed(base) == {"good": "done"}
        submit(spool, "later")
        wait_for(lambda: _listed(base).get("later") == "pending", 10, "a new drop listed")
        statusd_proc = psutil.Process(proc.pid).children()[0]
        statusd_proc.terminate()  # strace then exits with statusd's status
        proc.wait(20)
    text = "".join(log)
    assert "reading the spool failed" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def test_a_record_the_disk_could_not_stat_at_start_is_no_new_finish(spool: Spool) -> None:
    root = spool.layout.root
    prefix = _bad_and_good_under_strace(spool, "1")  # the start's scan only; not rescans
    log: list[str] = []
    with statusd_daemon(root, log=log, prefix=prefix, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert "could not be looked at" in "".join(log), "".join(log)[-3000:]
        wait_for(lambda: _listed(base) == {"bad": "done", "good": "done"}, 10,
                 "the record listed once the disk reads it")
        metrics = request(base, "GET", "/metrics").body.decode()
        statusd_proc = psutil.Process(proc.pid).children()[0]
        statusd_proc.terminate()  # strace then exits with statusd's status
        proc.wait(20)
    # Both ended before statusd started: neither is a finish it saw.
    assert 'spoolq_transitions_total{outcome="done"' not in metrics, metrics


NO_INOTIFY = ["unshare", "--user", "--map-root-user", "sh", "-c",
              'echo 0 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh"]
"""A command prefix that runs statusd with no inotify watch at all (the limit 0 in a user
namespace of its own): only a rescan finds a new drop."""


def _done_bad(spool: Spool, *, no_inotify: bool = False) -> str:
    """strace's path (else the test is skipped, as without unshare for ``no_inotify``),
    once job ``bad`` is done."""
    strace = strace_or_skip()
    if no_inotify and shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to lower inotify's limits")
    submit(spool, "bad")
    finish(spool, claim(spool, "bad"), {"ok": True})
    return strace


def test_a_record_the_disk_stops_stat_ing_does_not_hide_what_a_rescan_finds(
        spool: Spool, tmp_path: Path) -> None:
    strace = _done_bad(spool, no_inotify=True)
    root = spool.layout.root
    log: list[str] = []
    with statusd_daemon(root, log=log, prefix=NO_INOTIFY,
                        SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert _listed(base) == {"bad": "done"}
        with failing(strace, proc.pid, [root / "done" / "bad.json"],
                      ["newfstatat", "statx"], tmp_path / "strace.err"):
            wait_for(lambda: "could not be looked at" in "".join(log), 10,
                     "a rescan that left the file out")
            submit(spool, "later")
            wait_for(lambda: _listed(base) == {"bad": "done", "later": "pending"}, 10,
                     "a new drop a rescan found, and the index as it was")
            submit(spool, "later2")  # found by a rescan after the one that found later
            wait_for(lambda: _listed(base).get("later2") == "pending", 10,
                     "a second new drop a rescan found")
            # Said once while it lasts, not at each rescan (every SPOOL_SCAN_S).
            assert "".join(log).count("could not be looked at") == 1, "".join(log)[-3000:]
        submit(spool, "after")
        wait_for(lambda: _listed(base).get("after") == "pending", 10,
                 "a drop found once the disk reads")
        wait_for(lambda: "can all be looked at again" in "".join(log), 10,
                 "the file read again, said")
        for job_id in ("after2", "after3"):  # each found by a rescan after that line
            submit(spool, job_id)
            wait_for(lambda job_id=job_id: _listed(base).get(job_id) == "pending", 10,
                     f"{job_id} found by a later rescan")
    text = "".join(log)
    # Said once, not at each rescan once the disk reads (every SPOOL_SCAN_S).
    assert text.count("can all be looked at again") == 1, text[-3000:]
    assert "reading the spool failed" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def test_a_record_the_disk_stops_stat_ing_stays_listed_and_rescans_go_on(
        spool: Spool, tmp_path: Path) -> None:
    strace = _done_bad(spool)
    root = spool.layout.root
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="0.2") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert _listed(base) == {"bad": "done"}
        with failing(strace, proc.pid, [root / "done" / "bad.json"],
                      ["newfstatat", "statx"], tmp_path / "strace.err"):
            wait_for(lambda: "could not be looked at" in "".join(log), 10,
                     "a rescan that left the file out")
            submit(spool, "later")
            wait_for(lambda: _listed(base) == {"bad": "done", "later": "pending"}, 10,
                     "the index as it was, and a new drop")
    assert "reading the spool failed" not in "".join(log), "".join(log)[-3000:]


def test_a_record_the_disk_cannot_read_does_not_hide_what_a_rescan_finds(
        spool: Spool, tmp_path: Path) -> None:
    strace = _done_bad(spool, no_inotify=True)
    root = spool.layout.root
    # No inotify watch (as above): only a rescan finds a new drop.  Every open of bad's
    # record fails (its stat works): never indexed, it is changed at each rescan.
    prefix = [*NO_INOTIFY, strace, "-f", "-o", "/dev/null",
              "-P", str(root / "done" / "bad.json"),
              "-e", "trace=openat", "-e", "inject=openat:error=EIO:when=1+"]
    log: list[str] = []
    with statusd_daemon(root, log=log, prefix=prefix, SPOOL_SCAN_S="0.2") as (port, proc):
        statusd_proc = psutil.Process(proc.pid).children()[0]
        try:
            base = f"http://127.0.0.1:{port}"
            submit(spool, "later")
            wait_for(lambda: _listed(base).get("later") == "pending", 10,
                     "a new drop a rescan found")
            time.sleep(1)  # more rescans (SPOOL_SCAN_S=0.2): said once, not at each
        finally:
            text = "".join(log)
            statusd_proc.terminate()  # strace then exits with statusd's status
            proc.wait(20)
    assert text.count("could not be looked at") == 1, text[-3000:]
    assert "reading the spool failed" not in text, text[-3000:]


_WS_HANDSHAKE = {"Connection": "Upgrade", "Upgrade": "websocket",
                 "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.parametrize("state", ["failed", "pending"])
def test_a_job_statusd_may_not_read_is_no_job_gone(spool: Spool, tmp_path: Path,
                                                   state: str) -> None:
    """A job whose file statusd may not read (EACCES: a record another user wrote 0600,
    a drop that kept a group statusd is not in).  Cancel and retry read it as no file:
    404 ``no job``, an operator told the job did not exist; so did a GET of one the index
    had not seen, and a task stream's handshake.  They answer 503 ``unavailable`` naming
    the file, and act once it reads."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    if state == "failed":
        finish(spool, claim(spool, "j"), error=(ErrorType.TOOL_ERROR, "the tool failed"))
    log: list[str] = []
    with statusd_daemon(root, log=log, STATUSD_TOKEN=TOKEN) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert request(base, "GET", "/api/v1/tasks/j").status == 200
        denied = [root / state / "j.json", root / "pending" / "unseen.json"]
        with failing(strace, proc.pid, denied, ["openat"], tmp_path / "strace.err",
                      error="EACCES"):
            submit(spool, "unseen")
            replies = {action: request(base, "POST", f"/api/v1/tasks/j/{action}",
                                       token=TOKEN) for action in ("retry", "cancel")}
            replies["GET unseen"] = request(base, "GET", "/api/v1/tasks/unseen")
            replies["WS unseen"] = request(base, "GET", "/api/v1/ws/tasks/unseen",
                                           headers=_WS_HANDSHAKE)
            indexed = request(base, "GET", "/api/v1/tasks/j")
        for asked, reply in replies.items():
            assert reply.status == 503, (asked, reply.status, reply.body)
            error = orjson.loads(reply.body)["error"]
            assert error["type"] == "unavailable", (asked, error)
            assert "Permission denied" in error["message"], (asked, error)
        assert indexed.status == 200, (indexed.status, indexed.body)  # as last read
        assert (root / state / "j.json").is_file()  # nothing moved
        action = "retry" if state == "failed" else "cancel"
        reply = request(base, "POST", f"/api/v1/tasks/j/{action}", token=TOKEN)
        assert reply.status == 200, (reply.status, reply.body)
        assert request(base, "GET", "/api/v1/tasks/unseen").status == 200
        assert request(base, "GET", "/api/v1/tasks/never").status == 404
    assert not any("Traceback" in line for line in log), "".join(log[-40:])


def test_a_job_that_moves_to_a_file_statusd_may_not_read_stays_listed(
        spool: Spool, tmp_path: Path) -> None:
    """A job claimed into a file statusd may not read (EACCES: a drop of mode 0600 by
    another user): read as no file, it was taken for one moving, and once the vanish grace
    passed removed from the index (gone from the list and the counts, counted in the stats'
    ``removed``, so a dashboard reloaded its list without it) while a GET said it was
    there.  It is kept as it was, and follows its moves once it reads."""
    strace = strace_or_skip()
    root = spool.layout.root
    submit(spool, "j")
    log: list[str] = []
    with statusd_daemon(root, log=log,
                        argv=quick_tracker(VANISH_GRACE_S=QUICK_VANISH_S)) as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert _listed(base) == {"j": "pending"}
        with failing(strace, proc.pid, [root / "running" / "j.json"], ["openat"],
                      tmp_path / "strace.err", error="EACCES"):
            claim(spool, "j")
            time.sleep(3 * QUICK_VANISH_S)  # three vanish graces: it was removed after one
            assert _listed(base) == {"j": "pending"}  # as last read
            stats = orjson.loads(request(base, "GET", "/api/v1/stats").body)
            assert stats["statusd"]["removed"] == 0, stats
            assert request(base, "GET", "/api/v1/tasks/j").status == 200
        # A hint (IN_CLOSE_WRITE: Path.touch's utime alone is no change the feed tells
        # of, and left it to the next rescan, 5 s on): read again, now it may.
        with (root / "running" / "j.json").open("ab"):
            pass
        wait_for(lambda: _listed(base) == {"j": "running"}, 10, "its claim, once it reads")
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def test_a_hint_batch_with_an_id_the_disk_cannot_look_up_applies_the_others(
        spool: Spool, tmp_path: Path) -> None:
    """A batch of change hints (more than the few looked at on the loop first) holding
    an id each lstat of whose files fails (EIO): the batch's refresh failed whole, and
    the others' moves waited for the next rescan (``SPOOL_SCAN_S``, here 600 s).  They
    are applied; the one that cannot be looked up is kept as it was."""
    strace = strace_or_skip()
    root = spool.layout.root
    ids = [f"ok{n}" for n in range(12)]
    for job_id in ["bad", *ids]:
        submit(spool, job_id)
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="600") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        assert set(_listed(base).values()) == {"pending"}
        paths = [root / state / "bad.json" for state in ("pending", "running", "done",
                                                         "failed")]
        with failing(strace, proc.pid, paths, ["newfstatat", "statx"],
                      tmp_path / "strace.err"):
            proc.send_signal(signal.SIGSTOP)  # every move's hint in one batch
            try:
                for job_id in [*ids, "bad"]:
                    finish(spool, claim(spool, job_id), {"ok": True})
            finally:
                proc.send_signal(signal.SIGCONT)
            wait_for(lambda: all(_listed(base)[job_id] == "done" for job_id in ids), 15,
                     "the others' moves applied (before the 600 s rescan)")
            assert _listed(base)["bad"] == "pending"  # kept as it was
    assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def _wakes(strace: str, pid: int, seconds: float, out: Path) -> int:
    """How many times the process's threads returned from a poll for events (epoll_wait)
    in ``seconds``, strace attached meanwhile."""
    tracer = subprocess.Popen([strace, "-f", "-qq", "-o", str(out), "-p", str(pid),
                               "-e", "trace=epoll_wait,epoll_pwait"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    tracer.send_signal(signal.SIGTERM)
    tracer.wait(20)
    return sum(1 for line in out.read_text().splitlines() if "epoll_" in line and "= " in line)


WAKES_S = 2.0
"""How long the loop's wakes are counted: with the bug, a feed started again woke it 8
times in 4 s (its epoll waits returned twice a second); an idle one, 0."""


def _inotify_fds(pid: int) -> int:
    """How many inotify instances the process holds (its change feed is one)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(fd) == "anon_inode:inotify"
    return count


def test_a_change_feed_started_again_lets_the_loop_sleep(spool: Spool, tmp_path: Path
                                                         ) -> None:
    """Once the feed whose read failed is started again, the tracker woke each second
    (its rewatch cadence) until a change came, on an idle spool, for as long as none
    did.  It sleeps until a change or its rescan."""
    strace = strace_or_skip()
    root = spool.layout.root
    log: list[str] = []
    with statusd_daemon(root, log=log, SPOOL_SCAN_S="600") as (port, proc):
        base = f"http://127.0.0.1:{port}"
        feeds = _inotify_fds(proc.pid)
        quiet = _wakes(strace, proc.pid, WAKES_S, tmp_path / "quiet.trace")
        with failing(strace, proc.pid, [Path("anon_inode:inotify")], ["read"],
                      tmp_path / "strace.err"):
            submit(spool, "during")
            wait_for(lambda: _listed(base) == {"during": "pending"}, 10, "the rescan")
        # The feed was dropped (its read failed: the rescan); it is started again within
        # a second (REWATCH_S), its descriptor back.
        wait_for(lambda: _inotify_fds(proc.pid) >= feeds, 10, "the feed started again")
        after = _wakes(strace, proc.pid, WAKES_S, tmp_path / "after.trace")
        assert after <= quiet + 1, (quiet, after)
        submit(spool, "later")
        wait_for(lambda: _listed(base).get("later") == "pending", 10, "the feed's hint")
    assert "".join(log).count("change feed cannot be read") == 1, "".join(log)[-3000:]
