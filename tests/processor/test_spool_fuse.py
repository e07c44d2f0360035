"""A spool on a FUSE filesystem (bindfs, a passthrough on libfuse's high-level API).

bindfs has no ``renameat2(RENAME_NOREPLACE)``, so a claim moves by a hard link and an
unlink, and it gives the new name a lock of its own: a claim's lease covered nothing in
``running/``, and the processor's own recovery scan took its running jobs for orphans
(QA: a job run to the end three times, two runs of one id at once in two processors).
Debian's ``bindfs`` is installed by ``.ci/run``; where FUSE cannot mount, these skip.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from daemonkit import (
    Daemon,
    bindfs_daemon,
    bindfs_spool,
    drop,
    make_spool,
    wait_for,
    wait_record,
)

from spool import fsops
from spool.errors import SpoolIOError
from spool.fsops import Mover
from spool.in_progress import in_progress_in, in_progress_of
from spool.layout import Layout
from spool.models import Job
from spool.reader import SpoolReader
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool
from statusd.scan import scan_spool


@pytest.fixture
def fuse_root(tmp_path: Path) -> Iterator[Path]:
    with bindfs_spool(tmp_path) as root:
        yield root


def _locked_elsewhere(path: Path) -> bool:
    """Whether another open of ``path`` finds its flock held."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_claim_holds_its_lease_on_the_name_in_running(fuse_root: Path) -> None:
    layout = Layout(fuse_root)
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    for job_id in ("a", "b"):  # the first claim learns the filesystem, the second knows
        spool.submit(Job(tool="echo"), job_id)
        claim = spool.claim(job_id)
        assert claim is not None
        try:
            assert _locked_elsewhere(layout.job(JobState.RUNNING, job_id)), \
                "a recovery scan would take the running job for an orphan"
            assert not os.path.lexists(layout.job(JobState.PENDING, job_id))
        finally:
            claim.close()
        assert not _locked_elsewhere(layout.job(JobState.RUNNING, job_id))


def test_a_running_job_outlives_its_processors_scans(fuse_root: Path, tmp_path: Path) -> None:
    d = Daemon(fuse_root, tmp_path / "daemon.log", JOB_NUM="1", SPOOL_SCAN_S="0.3")
    try:
        d.start()
        drop(fuse_root, "long", {"tool": "sleep", "params": {"seconds": 2},
                                 "max_attempts": 3})
        record = wait_record(fuse_root, "long", 30)
        assert (record["state"], record["attempts"]) == ("done", 1), record
        assert d.stop() == 0
    finally:
        d.abort()
    assert not [e for e in d.events() if "orphan" in str(e)], d.logs()


def test_a_processor_started_on_a_dead_fuse_mount_says_so_and_exits_75(
        fuse_root: Path, tmp_path: Path) -> None:
    """A FUSE mount whose daemon died answers ENOTCONN: the processor crashed with a
    traceback, exit 1 (QA), where spool trouble that passes is one line and 75 for
    systemd to start it again."""
    bindfs_daemon(fuse_root.parent).kill()
    wait_for(lambda: _not_connected(fuse_root), 10, "the mount dead")
    d = Daemon(fuse_root, tmp_path / "daemon.log")  # its settings, run from elsewhere
    done = subprocess.run(d.argv, env=d.env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 75, done.stderr
    assert "Traceback" not in done.stderr
    assert os.strerror(errno.ENOTCONN) in done.stderr.strip().splitlines()[-1]


def _not_connected(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def test_the_filesystems_link_locks_are_tried_on_files_of_its_own(fuse_root: Path,
                                                                   tmp_path: Path) -> None:
    """Judged from a claim's own names, another processor's recovery scan holding the new
    name's lock in that instant was taken for "one lock a file" for good, and every claim
    after leased nothing in running/ again (the review)."""
    assert Mover(Layout(fuse_root), FsyncMode.NEVER).links_share_locks() is False
    local = tmp_path / "local"
    assert Mover(make_spool(local), FsyncMode.NEVER).links_share_locks() is True
    assert [n for n in os.listdir(fuse_root / "tmp") + os.listdir(local / "tmp")
            if "probe" in n] == []


def test_a_claim_s_hidden_file_is_no_upload_cut_off(fuse_root: Path) -> None:
    """A claim here is a link and an unlink, and a job file open meanwhile (the claim's
    own lease, a reader's) is renamed ``pending/.fuse_hidden...`` by libfuse until it is
    closed: a regular file, dot name, the job's mtime.  A backlog two hours old drained
    under ``spoolq stats`` and statusd's scans counted "1 file under an in-progress name,
    last written 2.0h ago", the documented alert's upload cut off (QA h397)."""
    layout = Layout(fuse_root)
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    pending = layout.folder(JobState.PENDING)
    spool.submit(Job(tool="echo"), "waited")
    two_hours_ago = time.time() - 7200
    os.utime(layout.job(JobState.PENDING, "waited"), (two_hours_ago, two_hours_ago))
    reader_fd = os.open(layout.job(JobState.PENDING, "waited"), os.O_RDONLY)
    try:
        claim = spool.claim("waited")
        assert claim is not None
        try:
            hidden = [n for n in os.listdir(pending) if n.startswith(".fuse_hidden")]
            assert hidden, os.listdir(pending)  # the filesystem's, while the reader reads
            assert in_progress_in(pending).files == 0
            mtimes: list[int] = []
            scan_spool(layout, None, None, mtimes)
            assert in_progress_of(mtimes).files == 0
            assert SpoolReader(layout).stats(partial=True)["in_progress_drops"] == {
                "count": 0, "idle_s": None}
        finally:
            claim.close()
    finally:
        os.close(reader_fd)


def _claiming_by_link(root: Path) -> tuple[Layout, Spool]:
    """A spool at ``root`` whose first claim has learned the filesystem: the next claim
    moves by link."""
    layout = Layout(root)
    spool = Spool(layout, Mover(layout, FsyncMode.NEVER))
    spool.submit(Job(tool="echo"), "warm")
    warm = spool.claim("warm")
    assert warm is not None
    warm.close()
    return layout, spool


def test_an_unlink_the_disk_fails_takes_the_claims_link_back(
        fuse_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new name's lock taken, the old name's unlink failed (EIO): the new name's
    descriptor leaked, holding the job in running/ and pending/ both for good (the
    review).  The link is taken back, the job left pending, no descriptor kept."""
    layout, spool = _claiming_by_link(fuse_root)
    spool.submit(Job(tool="echo"), "x")
    pending = str(layout.job(JobState.PENDING, "x"))
    real_unlink = os.unlink

    def failing(path: str, *args: object, **kwargs: object) -> None:
        if os.fspath(path) == pending:
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(fsops.os, "unlink", failing)
    with pytest.raises(SpoolIOError):
        spool.claim("x")
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert os.path.exists(pending) and not layout.job(JobState.RUNNING, "x").exists()
    claim = spool.claim("x")  # and it can be claimed again
    assert claim is not None
    claim.close()


def test_an_unlink_that_fails_after_removing_keeps_the_claim(
        fuse_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlink the filesystem made but said failed (a network or FUSE filesystem's
    reply lost): taking the claim's link back removed the job's only name, in no folder
    after (the second review)."""
    layout, spool = _claiming_by_link(fuse_root)
    spool.submit(Job(tool="echo"), "x")
    pending = str(layout.job(JobState.PENDING, "x"))
    real_unlink = os.unlink

    def made_then_failed(path: str, *args: object, **kwargs: object) -> None:
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]
        if os.fspath(path) == pending:
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(fsops.os, "unlink", made_then_failed)
    claim = spool.claim("x")
    monkeypatch.undo()
    assert claim is not None, "the move was made: the claim holds it"
    try:
        assert _locked_elsewhere(layout.job(JobState.RUNNING, "x"))
    finally:
        claim.close()


def test_a_claim_holds_its_lease_when_the_lock_probe_fails(
        fuse_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe of the filesystem's link locks cannot make its file (a full disk): a
    claim took "not known" for "one lock a file" and held nothing in running/ (the
    second review)."""
    layout = Layout(fuse_root)
    mover = Mover(layout, FsyncMode.NEVER)
    monkeypatch.setattr(mover, "links_share_locks", lambda: None)
    spool = Spool(layout, mover)
    for job_id in ("a", "b"):
        spool.submit(Job(tool="echo"), job_id)
        claim = spool.claim(job_id)
        assert claim is not None
        try:
            assert _locked_elsewhere(layout.job(JobState.RUNNING, job_id))
        finally:
            claim.close()


@pytest.mark.parametrize("how", ["unmounted", "died"])
def test_a_processor_whose_spool_is_mounted_again_stops_and_leaves_its_runs_to_recovery(
        fuse_root: Path, tmp_path: Path, how: str) -> None:
    """Mounted again under a running processor (a lazy unmount, or its FUSE daemon
    dead, then a new bindfs), the spool showed none of its locks, those on the mount that
    went: its own recovery took its running job for an orphan and ran it again beside
    the first run (h308's QA: "restart the processor" was all the guide said).  It stops
    at once now, exit 75, leaving the run to the next start's recovery, which runs it
    once more."""
    mnt, under = fuse_root.parent, fuse_root.parent.parent / "under"
    d = Daemon(fuse_root, tmp_path / "daemon.log", JOB_NUM="1", SPOOL_SCAN_S="0.3")
    old = None
    try:
        d.start()
        drop(fuse_root, "long", {"tool": "sleep", "params": {"seconds": 4}, "max_attempts": 3})
        # The claim's link made and its old name gone: killed between the two, the FUSE
        # daemon leaves both names, and the next start takes the pending one for a newer
        # drop (seen once in a full run).
        wait_for(lambda: (fuse_root / "running" / "long.json").exists()
                 and not (fuse_root / "pending" / "long.json").exists(), 20, "the run")
        for n in range(40):  # FAST runs in flight and queued as the mount goes
            drop(fuse_root, f"fast-{n}", {"tool": "echo", "params": {"message": n}})
        old = bindfs_daemon(mnt)
        if how == "died":
            old.kill()
            wait_for(lambda: _not_connected(fuse_root), 10, "the mount dead")
        subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=True)
        subprocess.run(["bindfs", str(under), str(mnt)], check=True)
        assert d.proc is not None
        assert d.proc.wait(timeout=20) == 75, d.logs()
        assert "is no longer the directory this processor holds its locks in" in d.logs()
        events = d.events()
        said = next(n for n, e in enumerate(events)
                    if "is no longer the directory" in e.get("msg", ""))
        # Nothing written after it: a FAST run waiting to start ran and recorded its job
        # into the spool it held no lock in (the review).
        assert not [e for e in events[said:] if e.get("event") in ("done", "failed")], \
            d.logs()
        assert not [e for e in d.events() if e.get("event") in ("orphan", "requeued")
                    or e.get("reason") == "orphaned"], d.logs()
        assert not (fuse_root / "done" / "long.json").exists()
        assert (fuse_root / "running" / "long.json").exists()  # left as it was
        again = Daemon(fuse_root, tmp_path / "again.log", JOB_NUM="1")
        try:
            again.start()
            record = wait_record(fuse_root, "long", 30)
            assert (record["state"], record["attempts"]) == ("done", 2), (
                record, d.logs(), again.logs())
            assert again.stop() == 0
        finally:
            again.abort()
    finally:
        d.abort()
        if old is not None:
            with contextlib.suppress(psutil.Error):
                old.kill()  # gone with the processor's descriptors, normally
