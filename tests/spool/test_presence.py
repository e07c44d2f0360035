"""spool.presence: which sidecar names may exist, followed through inotify.

A processor's Spool (``follow=True``) skips removing a progress file, cancel
request or stale record that is certainly not there.  These tests pin down
"certainly": whatever appears by any route before the check is removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from spoolkit import FakeClock, done_record, listing, make_spool, read_json, submit

from spool import presence as presence_mod
from spool.presence import Presence
from spool.states import JobState
from spool.transitions import Spool

pytestmark = pytest.mark.usefixtures("no_leaks")

D, F = JobState.DONE, JobState.FAILED


@pytest.fixture
def followed(tmp_path: Path, clock: FakeClock) -> Iterator[Spool]:
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True, follow=True)
    assert spool.presence is not None, "tmp_path should be on a local filesystem"
    yield spool
    spool.mover.drop_spares()
    spool.close()


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Presence, list[Path]]]:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        path.mkdir()
    (paths[0] / "there-at-start").write_bytes(b"")
    presence = Presence([str(p) for p in paths])
    assert presence.start()
    yield presence, paths
    presence.close()


def test_names_follow_creates_renames_links_and_removals(
        folders: tuple[Presence, list[Path]], tmp_path: Path) -> None:
    presence, (a, b) = folders
    assert presence.may_exist(0, "there-at-start")
    assert not presence.may_exist(0, "new") and not presence.may_exist(1, "there-at-start")
    (a / "new").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.write_bytes(b"y")
    os.rename(outside, b / "moved-in")
    os.link(a / "new", b / "linked")
    os.symlink("/nowhere", b / "symlink")
    os.mkdir(b / "subdir")
    presence.refresh()
    assert presence.may_exist(0, "new")
    for name in ("moved-in", "linked", "symlink", "subdir"):
        assert presence.may_exist(1, name), name
    os.unlink(a / "new")
    os.rename(b / "moved-in", tmp_path / "moved-out")
    presence.refresh()
    assert not presence.may_exist(0, "new") and not presence.may_exist(1, "moved-in")


def test_a_removed_folder_is_no_longer_trusted(folders: tuple[Presence, list[Path]]) -> None:
    presence, (_, b) = folders
    assert not presence.may_exist(1, "anything")
    shutil.rmtree(b)
    presence.refresh()
    assert presence.may_exist(1, "anything"), "an unfollowed folder: every name may exist"


def test_lost_events_list_the_folders_again(folders: tuple[Presence, list[Path]]) -> None:
    presence, (a, _) = folders
    (a / "late").write_bytes(b"")
    presence.refresh()
    assert presence.may_exist(0, "late")
    os.unlink(a / "late")
    (a / "later").write_bytes(b"")
    assert presence._apply(-1, presence_mod.inotify_c.InotifyConstants.IN_Q_OVERFLOW, b"") \
        is False
    presence._list_all()  # what refresh does on an overflow
    presence.refresh()
    assert presence.may_exist(0, "later") and not presence.may_exist(0, "late")


def test_not_followed_on_a_filesystem_other_hosts_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence_mod, "filesystem_type", lambda path: "nfs4")
    presence = Presence([str(tmp_path)])
    assert not presence.start()
    assert presence.may_exist(0, "anything")


def test_complete_removes_sidecars_made_at_any_time(followed: Spool) -> None:
    layout = followed.layout
    submit(followed, "a")
    submit(followed, "b")
    claim = followed.claim("a")
    assert claim is not None
    layout.progress_file("a").write_bytes(b"{}")  # written while it runs
    layout.cancel_request("a").write_bytes(b"{}")
    followed.complete(claim, done_record(claim, "A"))
    assert listing(layout.progress) == [] and listing(layout.cancel) == []
    claim = followed.claim("b")
    assert claim is not None
    followed.complete(claim, done_record(claim, "B"))  # nothing to remove: no syscall needed
    assert read_json(layout.job(D, "b"))["result"] == "B"


def test_a_rerun_replaces_the_failed_record_seen_at_start(
        tmp_path: Path, clock: FakeClock) -> None:
    first = make_spool(tmp_path / "spool", clock=clock)
    submit(first, "again")
    claim = first.claim("again")
    assert claim is not None
    first.fail(claim, done_record(claim, state=F))
    assert (first.layout.job(F, "again")).exists()
    spool = make_spool(tmp_path / "spool", clock=clock, recycle=True, follow=True)
    try:
        submit(spool, "again")
        claim = spool.claim("again")
        assert claim is not None
        spool.complete(claim, done_record(claim, "ok"))
        assert not spool.layout.job(F, "again").exists(), "the stale failed record stays"
        assert read_json(spool.layout.job(D, "again"))["result"] == "ok"
        submit(spool, "again")  # and once more, after a failure this Spool saw happen
        claim = spool.claim("again")
        assert claim is not None
        spool.fail(claim, done_record(claim, state=F))
        submit(spool, "again")
        claim = spool.claim("again")
        assert claim is not None
        spool.complete(claim, done_record(claim, "ok2"))
        assert not spool.layout.job(F, "again").exists()
    finally:
        spool.mover.drop_spares()
        spool.close()


def test_a_tracked_folder_tells_the_names_changed_since_last_taken(
        folders: tuple[Presence, list[Path]], tmp_path: Path) -> None:
    presence, (a, b) = folders
    assert presence.take_changed(0) is None  # not tracked: nothing to tell
    assert presence.track(0)
    (a / "new").write_bytes(b"x")
    (a / "there-at-start").unlink()
    (b / "elsewhere").write_bytes(b"x")  # b is not tracked
    outside = tmp_path / "outside"
    outside.write_bytes(b"y")
    os.rename(outside, a / "new")  # renamed over: the same name, another file
    presence.refresh()
    assert presence.take_changed(0) == {"new", "there-at-start"}
    assert presence.take_changed(0) == set()
    (a / "later").write_bytes(b"")
    presence.refresh()
    assert presence.take_changed(0) == {"later"}


def test_a_tracked_folder_that_goes_tells_that_changes_were_lost(
        folders: tuple[Presence, list[Path]]) -> None:
    presence, (a, _b) = folders
    assert presence.track(0)
    shutil.rmtree(a)
    a.mkdir()
    (a / "in-the-new-folder").write_bytes(b"")
    presence.refresh()
    assert presence.take_changed(0) is None  # list it again
    assert not presence.track(0)  # and no longer followed: nothing more to tell
    assert presence.take_changed(0) is None


def test_a_btrfs_subvolumes_filesystem_is_known(tmp_path: Path) -> None:
    """A btrfs subvolume's st_dev is never the one mountinfo shows: its type was None,
    and the follower was off on btrfs, which LOCAL_FILESYSTEMS lists (QA)."""
    if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
        pytest.skip("needs btrfs-progs")
    image, mnt = tmp_path / "btrfs.img", tmp_path / "m n t"  # a blank: mountinfo's \040
    with image.open("wb") as f:
        f.truncate(256 << 20)
    mnt.mkdir()
    if subprocess.run(["mkfs.btrfs", "-q", str(image)], capture_output=True,
                      check=False).returncode != 0 or subprocess.run(
            ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True,
            check=False).returncode != 0:
        pytest.skip("cannot make and mount a btrfs here")
    try:
        subprocess.run(["btrfs", "subvolume", "create", str(mnt / "sub")], check=True,
                       capture_output=True)
        (mnt / "sub" / "folder").mkdir()
        assert presence_mod.filesystem_type(mnt) == "btrfs"
        assert presence_mod.filesystem_type(mnt / "sub" / "folder") == "btrfs"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_follower_whose_read_fails_stops_then_starts_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel fails a read of the descriptor (here its FIONREAD: a folder's descriptor
    put in its place).  Raised, it ended the processor mid-record (QA); the follower stops
    (every name "may exist"), and starts again RESTART_S later, not never (a review)."""
    folder = tmp_path / "f"
    folder.mkdir()
    p = Presence([str(folder)])
    assert p.start()
    try:
        (folder / "there").touch()
        p.refresh()
        assert not p.may_exist(0, "absent") and p.may_exist(0, "there")
        broken = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        os.dup2(broken, p._fd)  # FIONREAD on a folder: ENOTTY
        os.close(broken)
        p.refresh()
        assert p.may_exist(0, "absent")  # followed no more
        p.refresh()
        assert p.may_exist(0, "absent")  # not before RESTART_S
        monkeypatch.setattr(presence_mod, "RESTART_S", 0.0)
        p.refresh()
        (folder / "new").touch()
        p.refresh()
        assert not p.may_exist(0, "absent") and p.may_exist(0, "new")
    finally:
        p.close()
