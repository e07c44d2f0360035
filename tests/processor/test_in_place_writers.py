"""Writers that change a whole drop by path after closing it, straight into ``pending/``.

``shutil.copy`` sets the copy's mode by path after its close, ``shutil.copy2`` its
times too, ``install -m`` its mode: a claim in between failed that call, and the
writer took a job that ran for one not delivered (QA h388: 20 of 40 ``shutil.copy``
drops to an idle processor, 10 of 30 ``install -m``).  A file written in place is left
to its writer a moment after its close; one renamed in is claimed at once.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from daemonkit import Daemon, locations, wait_record

from spool.client import Client
from spool.feed import IN_PLACE_QUIET_S
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job
from spool.settings import FsyncMode


def test_copies_into_pending_that_set_the_mode_after_the_close_all_succeed(
        spool_root: Path, daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon()
    pending = spool_root / "pending"
    sources = []
    for n in range(40):
        source = tmp_path / f"src-{n}.json"
        source.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": n}}))
        source.chmod(0o640)
        sources.append(source)
    failures = []
    for n, source in enumerate(sources):
        copy = (shutil.copy, shutil.copy2)[n % 2]
        try:
            copy(source, pending / f"copied-{n}.json")
        except OSError as exc:
            failures.append(f"copied-{n}: {exc}")
        time.sleep(0.02)  # an idle processor's claim comes at once: it raced each one
    for n in range(10):
        done = subprocess.run(["install", "-m", "0644", str(sources[n]),
                               str(pending / f"installed-{n}.json")],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            failures.append(f"installed-{n}: {done.stderr.strip()}")
    assert failures == [], failures
    ids = [f"copied-{n}" for n in range(40)] + [f"installed-{n}" for n in range(10)]
    for job_id in ids:
        record = wait_record(spool_root, job_id)
        assert record["state"] == "done" and record["attempts"] == 1, record
    where = locations(spool_root)
    assert all(where[job_id] == ["done"] for job_id in ids), where


def test_a_writer_that_changes_its_drop_a_moment_after_writing_it_is_left_to_do_so(
        spool_root: Path, daemon: Callable[..., Daemon]) -> None:
    """The same, slowed down (a loaded host): a whole job written in place and changed by
    path 50 ms after its close, or closed 50 ms after its last write.  Claimed in between,
    its chmod failed (the job run) every time."""
    daemon()
    pending = spool_root / "pending"
    job = orjson.dumps({"tool": "echo", "params": {"message": "hi"}})
    failures = []
    for n in range(5):
        closed_first, open_long = pending / f"closed-{n}.json", pending / f"open-{n}.json"
        with open(closed_first, "wb") as out:
            out.write(job)
        time.sleep(0.05)
        try:
            closed_first.chmod(0o644)  # as shutil.copy's copymode, by path
        except OSError as exc:
            failures.append(f"{closed_first.name}: {exc}")
        with open(open_long, "wb") as out:
            out.write(job)
            out.flush()
            time.sleep(0.05)  # whole, and still open
        try:
            open_long.chmod(0o644)
        except OSError as exc:
            failures.append(f"{open_long.name}: {exc}")
    assert failures == [], failures
    for n in range(5):
        for job_id in (f"closed-{n}", f"open-{n}"):
            assert wait_record(spool_root, job_id)["state"] == "done"


def test_a_drop_renamed_in_is_not_left_waiting(spool_root: Path,
                                               daemon: Callable[..., Daemon]) -> None:
    """The wait is for files written in place only: the documented drop (a write in
    ``tmp/`` and a rename) runs as soon as it is seen."""
    daemon()
    waits = []
    for n in range(5):
        staged = spool_root / "tmp" / f"renamed-{n}.json"
        staged.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": n}}))
        waits.append(_to_record(spool_root, f"renamed-{n}", functools.partial(
            staged.rename, spool_root / "pending" / f"renamed-{n}.json")))
    # The best of five, each well under the wait a file written in place gets.
    assert min(waits) < IN_PLACE_QUIET_S / 2, waits


def test_a_drop_renamed_in_before_its_writer_closes_it_is_not_left_waiting(
        spool_root: Path, daemon: Callable[..., Daemon]) -> None:
    """A writer that renames its file into ``pending/`` inside its ``with`` (the close
    after the rename), or links an unnamed file (``O_TMPFILE``) in: the file was whole
    before its name came, and each such drop waited the 0.2 s of a file written in place
    (h391: 203 to 207 ms from drop to record, against 21 for a rename after the close)."""
    daemon()
    pending, tmp = spool_root / "pending", spool_root / "tmp"
    waits: dict[str, list[float]] = {"renamed": [], "linked": []}
    for n in range(5):
        job = orjson.dumps({"tool": "echo", "params": {"message": n}})

        def rename_before_the_close(n: int = n, job: bytes = job) -> None:
            with open(tmp / f"renamed-{n}.json", "wb") as out:
                out.write(job)
                out.flush()
                os.rename(tmp / f"renamed-{n}.json", pending / f"renamed-{n}.json")

        waits["renamed"].append(_to_record(spool_root, f"renamed-{n}",
                                           rename_before_the_close))
        waits["linked"].append(_to_record(spool_root, f"linked-{n}", functools.partial(
            _link_unnamed, pending, job, pending / f"linked-{n}.json")))
    # The best of five, each well under the wait a file written in place gets.
    assert all(min(each) < IN_PLACE_QUIET_S / 2 for each in waits.values()), waits


def test_a_drop_linked_in_is_not_left_waiting(spool_root: Path,
                                              daemon: Callable[..., Daemon]) -> None:
    """A hard link into ``pending/`` (``ln``, a maildir-style writer, spoolq's own submit
    where the filesystem has no RENAME_NOREPLACE), or an unnamed file (``O_TMPFILE``) made
    in ``tmp/`` and linked in: never written through its name there, its drop waited the
    0.2 s of a file being written (h391: 204 ms each, against 21 for a rename).  Nobody has
    it open for writing (a read lease says so), and no close of it is on the feed."""
    daemon()
    pending, tmp = spool_root / "pending", spool_root / "tmp"
    waits: dict[str, list[float]] = {"linked": [], "unnamed": [], "submitted": []}
    mover = Mover(Layout(spool_root), FsyncMode.NEVER)
    mover._noreplace_native = False  # as on NFS, CIFS, FUSE: a link and an unlink
    client = Client(Layout(spool_root), mover)
    for n in range(5):
        job = orjson.dumps({"tool": "echo", "params": {"message": n}})
        (tmp / f"linked-{n}.json").write_bytes(job)

        def link_then_unlink(n: int = n) -> None:
            os.link(tmp / f"linked-{n}.json", pending / f"linked-{n}.json")
            os.unlink(tmp / f"linked-{n}.json")

        waits["linked"].append(_to_record(spool_root, f"linked-{n}", link_then_unlink))
        waits["unnamed"].append(_to_record(spool_root, f"unnamed-{n}", functools.partial(
            _link_unnamed, tmp, job, pending / f"unnamed-{n}.json")))
        waits["submitted"].append(_to_record(spool_root, f"submitted-{n}", functools.partial(
            client.submit, Job(tool="echo", params={"message": n}), f"submitted-{n}")))
    assert all(min(each) < IN_PLACE_QUIET_S / 2 for each in waits.values()), waits


def _to_record(spool_root: Path, job_id: str, drop: Callable[[], object]) -> float:
    """Seconds from ``drop()`` to the record of ``job_id``."""
    dropped = time.monotonic()
    drop()
    wait_record(spool_root, job_id)
    return time.monotonic() - dropped


def _link_unnamed(folder: Path, data: bytes, to: Path) -> None:
    """Write ``data`` to an unnamed file (``O_TMPFILE``) in ``folder`` and link it in as
    ``to``."""
    fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.write(fd, data)
        # linkat(AT_SYMLINK_FOLLOW): os.link calls link() unless given a dir_fd
        os.link(f"proc/self/fd/{fd}", to, src_dir_fd=root)
    finally:
        os.close(root)
        os.close(fd)
