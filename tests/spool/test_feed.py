"""spool.feed.ChangeFeed: a replaced folder is watched again; stop() ends everything.

Real folders, the real inotify thread.  statusd's end-to-end check (a drop into a
replaced ``pending/`` reaches the REST list) is in tests/statusd/test_statusd_live.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spool.feed import IN_PLACE_QUIET_S, ChangeFeed, PolledFeed

pytestmark = pytest.mark.usefixtures("no_leaks")

RESCAN = ("", "")


class Reports:
    """What a feed reported, from its thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, folder: str, name: str) -> None:
        with self._lock:
            self.calls.append((folder, name))

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def replace(folder: Path, how: str) -> None:
    if how == "moved away":
        folder.rename(folder.with_name(folder.name + ".old"))
    else:
        shutil.rmtree(folder)


@pytest.mark.parametrize("how", ["removed", "moved away"])
def test_a_replaced_folder_is_watched_again(tmp_path: Path, how: str) -> None:
    pending = tmp_path / "pending"
    pending.mkdir()
    reports = Reports()
    with ChangeFeed([pending], reports) as feed:
        replace(pending, how)
        wait_for(lambda: RESCAN in reports.calls, "the rescan report")
        assert feed.unwatched == {pending}
        assert not feed.rewatch()  # not back yet
        pending.mkdir()
        assert feed.rewatch()
        assert feed.unwatched == frozenset()
        reports.take()
        (pending / "a.json").write_bytes(b"{}")
        wait_for(lambda: ("pending", "a.json") in reports.calls, "the new folder's event")
        if how == "moved away":  # the old folder's watch is gone with it
            (tmp_path / "pending.old" / "b.json").write_bytes(b"{}")
            (pending / "c.json").write_bytes(b"{}")
            wait_for(lambda: ("pending", "c.json") in reports.calls, "the next event")
            assert ("pending", "b.json") not in reports.calls


def test_a_folder_back_at_once_is_watched_again_by_the_feed_itself(tmp_path: Path) -> None:
    """When the feed thread learns of the lost watch, a folder is back at the path: the
    feed watches it itself, with no ``rewatch()`` from its owner."""
    pending = tmp_path / "pending"
    pending.mkdir()
    reports = Reports()
    with ChangeFeed([pending], reports) as feed:
        # "At once" as the feed thread sees it: it takes this lock before handling a
        # lost watch, so it cannot look at the path between the two steps (it did, once
        # in a full run, on a host that stalled the test thread after the rename; the
        # folder was missing then and, rightly, left for the owner's rewatch()).
        with feed._lock:
            pending.rename(tmp_path / "pending.old")
            pending.mkdir()
        wait_for(lambda: RESCAN in reports.calls, "the rescan report")
        wait_for(lambda: not feed.unwatched, "the path watched again")
        (pending / "a.json").write_bytes(b"{}")
        wait_for(lambda: ("pending", "a.json") in reports.calls, "the new folder's event")


def test_stop_reports_nothing_re_adds_no_watch_and_ends_its_thread(tmp_path: Path) -> None:
    """Stopping removes every watch, and inotify reports each removal as a lost watch:
    none of them may be watched again or reported as a rescan."""
    folders = [tmp_path / name for name in ("pending", "running", "done")]
    for folder in folders:
        folder.mkdir()
    before = set(threading.enumerate())
    reports = Reports()
    feed = ChangeFeed(folders, reports)
    feed.start()
    shutil.rmtree(folders[2])  # one folder gone and unwatched when stop() comes
    wait_for(lambda: RESCAN in reports.calls, "the lost watch's rescan report")
    assert feed.unwatched == {folders[2]}
    reports.take()
    feed.stop()
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
    assert reports.take() == []
    folders[2].mkdir()
    assert not feed.rewatch()
    assert feed.unwatched == frozenset()
    for folder in folders:
        (folder / "late.json").write_bytes(b"{}")
    time.sleep(0.2)
    assert reports.take() == []
    feed.stop()  # a second stop is harmless


def test_stop_while_folders_are_being_replaced_ends_promptly(tmp_path: Path) -> None:
    """The feed thread re-adds watches while stop() removes them: stop still ends it,
    and leaves no watch, thread or descriptor behind (no_leaks)."""
    folders = [tmp_path / f"f{n}" for n in range(4)]
    for _ in range(20):
        for folder in folders:
            folder.mkdir(exist_ok=True)
        before = set(threading.enumerate())
        feed = ChangeFeed(folders, Reports())
        feed.start()
        for folder in folders:
            replace(folder, "removed")
            folder.mkdir()
        feed.stop()
        assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
        assert not feed.rewatch()


def test_an_event_during_stop_does_not_break_its_wake_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() said it was stopping, let go of the lock, then wrote to the wake pipe: an
    event in between woke the feed thread, which saw it stopping, returned and closed
    the pipe's read end, and the write failed with EPIPE, the write end left open (once
    in a full run under load; 1 in 2,000 stops right after a drop, in a loop on a
    shared 2-CPU host).  Here the event comes, and the thread is given a
    second to end, just before the wake-up is written."""
    pending = tmp_path / "pending"
    pending.mkdir()
    feed = ChangeFeed([pending], Reports())
    feed.start()
    thread = feed._thread
    assert thread is not None
    write = os.write

    def event_first(fd: int, data: bytes) -> int:
        if fd == feed._wake_w:
            (pending / "late.json").write_bytes(b"{}")
            thread.join(timeout=1)  # had it seen "stopping", it would have ended here
        return write(fd, data)

    monkeypatch.setattr(os, "write", event_first)
    feed.stop()
    assert not thread.is_alive()
    assert feed._wake_w == -1


def test_a_second_stop_after_one_that_timed_out_ends_the_feed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop whose join timed out (the thread inside on_change) leaves the feed's wake
    pipe and inotify descriptor for a later stop.  That one wrote its wake-up again,
    into a pipe whose read end the thread had closed as it ended on the first one's:
    BrokenPipeError out of stop(), the write end and the inotify instance left open for
    good (h354).  The thread ends on the first wake-up; the second stop only closes."""
    pending = tmp_path / "pending"
    pending.mkdir()
    inside, release = threading.Event(), threading.Event()

    def slow(folder: str, name: str) -> None:
        inside.set()
        release.wait(10)

    feed = ChangeFeed([pending], slow)
    feed.start()
    thread = feed._thread
    assert thread is not None
    (pending / "a.json").write_bytes(b"{}")
    assert inside.wait(5)
    join = thread.join
    monkeypatch.setattr(thread, "join", lambda timeout=None: join(0.1))  # 5 s, else
    feed.stop()
    assert thread.is_alive()  # inside on_change: the feed's descriptors stay
    wake_w = feed._wake_w
    release.set()
    join(5)
    assert not thread.is_alive()
    feed.stop()
    assert feed._wake_w == -1
    with pytest.raises(OSError):
        os.fstat(wake_w)


def test_a_stop_right_after_the_start_leaves_no_descriptor(tmp_path: Path) -> None:
    """watchdog's ``InotifyFD`` thread, which the feed ran on, kept its inotify descriptor
    and wake pipe open when stopped before it first read: 71 stops in 100 right after a
    start, each an inotify instance of the user's 128 gone (the 129th start failed with
    EMFILE).  The feed owns its descriptors and closes them at stop (no_leaks)."""
    folders = [tmp_path / f"f{n}" for n in range(2)]
    for folder in folders:
        folder.mkdir()
    reports = Reports()
    for _ in range(150):  # past fs.inotify.max_user_instances' default of 128
        feed = ChangeFeed(folders, reports)
        feed.start()
        feed.stop()
    with ChangeFeed(folders, reports):
        (folders[0] / "a.json").write_bytes(b"{}")
        wait_for(lambda: ("f0", "a.json") in reports.calls, "the last feed's event")


def _polled(root: Path) -> tuple[PolledFeed, Path, Path]:
    """A feed of arrivals on ``root/pending`` and ``root/cancel``, following the writes in
    pending/ (as the processor's)."""
    if not PolledFeed.available():
        pytest.skip("raw inotify is Linux's")
    pending, cancel = root / "pending", root / "cancel"
    pending.mkdir()
    cancel.mkdir()
    feed = PolledFeed([pending, cancel], lambda folder, name: None, arrivals_only=True,
                      follow_writes=pending)
    feed.start()
    return feed, pending, cancel


@contextlib.contextmanager
def _linked_unnamed(path: Path, data: bytes) -> Iterator[None]:
    """An unnamed file (O_TMPFILE) in ``path``'s folder holding ``data``, linked in as
    ``path`` and held open for the block."""
    fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o640)
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.write(fd, data)
        # linkat(AT_SYMLINK_FOLLOW): os.link calls link() unless given a dir_fd
        os.link(f"proc/self/fd/{fd}", path, src_dir_fd=root)
        yield
    finally:
        os.close(root)
        os.close(fd)


def _written(feed: PolledFeed, path: Path) -> bool:
    return feed.being_written(path.name, path.lstat().st_ino)


def test_a_file_is_being_written_from_its_creation_until_its_writer_closes_it(
        tmp_path: Path) -> None:
    """What the feed saw is what the kernel said of any user's file: created and not
    closed after writing (a read lease is only its owner's to ask)."""
    feed, pending, cancel = _polled(tmp_path)
    try:
        slow = pending / "slow.json"
        writer = slow.open("wb")
        feed.drain()
        assert _written(feed, slow)
        writer.write(b'{"tool": ')
        writer.flush()
        slow.read_bytes()  # a reader's open and close change nothing
        feed.drain()
        assert _written(feed, slow)
        writer.close()
        feed.drain()
        assert not _written(feed, slow)

        # Another file renamed over a name being written: that file was written elsewhere.
        open_again = (pending / "over.json").open("wb")
        (tmp_path / "staged").write_bytes(b"{}")
        feed.drain()
        assert _written(feed, pending / "over.json")
        (tmp_path / "staged").rename(pending / "over.json")
        feed.drain()
        assert not _written(feed, pending / "over.json")
        open_again.close()

        (pending / "sub").mkdir()
        feed.drain()
        assert not _written(feed, pending / "sub")
        # Only pending/'s writes are followed: cancel/'s names were kept for good (review).
        with (cancel / "c.json").open("wb"):
            feed.drain()
            assert not feed.being_written("c.json", (cancel / "c.json").lstat().st_ino)
        os.symlink("nowhere", cancel / "link")
        feed.drain()
        assert feed._writes == set()
    finally:
        feed.stop()


def test_an_unnamed_file_linked_in_is_closed_under_its_inode(tmp_path: Path) -> None:
    """O_TMPFILE then linkat: its close comes under the name ``#<inode>`` (review)."""
    feed, pending, _ = _polled(tmp_path)
    try:
        with _linked_unnamed(pending / "tmp.json", b"{bad"):
            feed.drain()
            assert _written(feed, pending / "tmp.json")
        feed.drain()
        assert not _written(feed, pending / "tmp.json")
    finally:
        feed.stop()


def test_names_gone_are_forgotten_and_a_lost_watch_forgets_all(tmp_path: Path) -> None:
    feed, pending, cancel = _polled(tmp_path)
    try:
        held = [(pending / name).open("wb") for name in ("a.json", "b.json")]
        feed.drain()
        inode = (pending / "a.json").lstat().st_ino
        (pending / "a.json").unlink()  # an arrivals-only feed hears no removal
        feed.drain()
        assert feed.being_written("a.json", inode)
        feed.forget_writes({"b.json"})
        assert not feed.being_written("a.json", inode)
        assert _written(feed, pending / "b.json")
        cancel.rmdir()  # a folder gone: events may have been missed meanwhile
        feed.drain()
        assert not _written(feed, pending / "b.json")
        for writer in held:
            writer.close()
    finally:
        feed.stop()
    plain = PolledFeed([pending], lambda folder, name: None)
    plain.start()
    try:
        with (pending / "c.json").open("wb"):
            plain.drain()
            assert not _written(plain, pending / "c.json")
    finally:
        plain.stop()


def test_lost_events_forget_every_file_being_written(tmp_path: Path) -> None:
    """After a queue overflow nothing is known of what was closed meanwhile: a name is
    no longer taken for being written (its reader falls back on its own rules)."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 1 << 16:
        pytest.skip(f"an overflow needs {limit // 2} files here")
    feed, pending, _ = _polled(tmp_path)
    try:
        with (pending / "held.json").open("wb"):
            feed.drain()
            assert _written(feed, pending / "held.json")
            for i in range(limit // 2 + 16):  # a create and a close each
                (pending / f"flood-{i}").touch()
            heard: list[tuple[str, str]] = []
            feed.on_change = lambda folder, name: heard.append((folder, name))
            feed.drain()
            assert ("", "") in heard, "no overflow reported"
            assert not _written(feed, pending / "held.json")
    finally:
        feed.stop()


def test_a_file_written_in_place_is_left_to_its_writer_a_moment_after_its_close(
        tmp_path: Path) -> None:
    feed, pending, _ = _polled(tmp_path)
    try:
        placed = pending / "placed.json"
        with placed.open("wb") as writer:
            writer.write(b"{}")
            feed.drain()
            assert feed.settling_s("placed.json", placed.lstat().st_ino) == IN_PLACE_QUIET_S
        feed.drain()
        assert 0 < feed.settling_s("placed.json", placed.lstat().st_ino) <= IN_PLACE_QUIET_S
    finally:
        feed.stop()


def test_a_file_renamed_in_then_closed_by_its_writer_is_not_left_settling(
        tmp_path: Path) -> None:
    """A writer that renames its file into ``pending/`` before closing it (a ``with``
    around ``os.replace``, ``NamedTemporaryFile(delete=False)``): its close is no write in
    place, and its drop waited 0.2 s as one (h391: 205 ms from drop to record against 21
    for a rename after the close)."""
    feed, pending, _ = _polled(tmp_path)
    staging = tmp_path / "tmp"
    staging.mkdir()
    try:
        with (staging / "renamed.json").open("wb") as writer:
            writer.write(b"{}")
            writer.flush()
            os.rename(staging / "renamed.json", pending / "renamed.json")
        feed.drain()
        assert feed.settling_s("renamed.json", (pending / "renamed.json").lstat().st_ino) == 0
        placed = pending / "renamed.json"  # written in place under that name later: left
        placed.unlink()
        placed.write_bytes(b"{}")
        feed.drain()
        assert feed.settling_s("renamed.json", placed.lstat().st_ino) > 0
    finally:
        feed.stop()


def test_an_unnamed_file_linked_in_and_closed_is_not_left_settling(tmp_path: Path) -> None:
    """O_TMPFILE then linkat: the file was whole before its name came, as a rename's
    (h391: it waited 0.2 s, its close under ``#<inode>`` not taken for its own)."""
    feed, pending, _ = _polled(tmp_path)
    try:
        with _linked_unnamed(pending / "tmp.json", b"{}"):
            pass
        feed.drain()
        assert feed.settling_s("tmp.json", (pending / "tmp.json").lstat().st_ino) == 0
        assert not [name for name in feed._closed_at if name.startswith("#")]
    finally:
        feed.stop()
